"""Research tools the LLM Researcher can call: Hugging Face Hub search, arXiv paper search and
the local data catalog. Plain functions, each with a JSON-schema description for OpenAI
``tools=``; no Ray here.

Everything a tool returns (hub cards, paper abstracts, dataset cells) is untrusted text: the
caller quotes it as data in prompts and nothing of it is executed. The online tools fail soft:
offline, unreachable or slow (past ``timeout_s``) they answer a short "unavailable" result
instead of raising, so a research phase never hangs an expansion. Arguments the model sends are
validated with pydantic before a tool runs.
"""

from __future__ import annotations

import json
import logging
import os
import re
import threading
import urllib.parse
import urllib.request
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any, Callable, Literal

if TYPE_CHECKING:
    from ftbench.task import Task

from pydantic import BaseModel, ConfigDict, Field, ValidationError

from trex_ray.researcher.catalog import CatalogEntry, build_catalog

log = logging.getLogger(__name__)

ARXIV_URL = "https://export.arxiv.org/api/query"
ATOM = "{http://www.w3.org/2005/Atom}"
SNIPPET_CAP = 300  # characters of a card or abstract snippet
RESULT_CAP = 3000  # characters of one tool result sent back to the model
CARDS = 3  # hub results whose README is fetched for a snippet


class ToolError(ValueError):
    """A tool call the model got wrong (unknown tool, bad arguments): answered to the model."""


# ---------------------------------------------------------------- arguments (validated)
class _Args(BaseModel):
    model_config = ConfigDict(extra="forbid")


class SearchHubArgs(_Args):
    query: str = Field(min_length=1, max_length=200, description="search words, e.g. 'movie review sentiment'")
    kind: Literal["dataset", "model"] = "dataset"
    limit: int = Field(5, ge=1, le=10)


class SearchPapersArgs(_Args):
    query: str = Field(min_length=1, max_length=200, description="search words, e.g. 'instruction tuning small data'")
    limit: int = Field(3, ge=1, le=5)


class NoArgs(_Args):
    pass


class DescribeArgs(_Args):
    name: str = Field(min_length=1, max_length=300, description="a name from list_local_datasets")


@dataclass
class Result:
    """What a tool found: data for the model, a one-line summary and the citable source ids."""

    data: Any
    summary: str
    sources: list[str] = field(default_factory=list)
    ok: bool = True


# ---------------------------------------------------------------- online tools
def _within(fn: Callable[[], Any], timeout_s: float) -> Any:
    """``fn()`` or TimeoutError after ``timeout_s``. A daemon thread, because the hub client
    retries unreachable hosts for ~20 s and DNS lookups ignore socket timeouts; a late answer
    is simply dropped."""
    box: dict[str, Any] = {}

    def target() -> None:
        try:
            box["value"] = fn()
        except BaseException as e:  # noqa: BLE001 (re-raised in the caller's thread)
            box["error"] = e

    t = threading.Thread(target=target, daemon=True, name="research-tool")
    t.start()
    t.join(timeout_s)
    if t.is_alive():
        raise TimeoutError(f"no answer within {timeout_s:g}s")
    if "error" in box:
        raise box["error"]
    return box["value"]


def _unavailable(what: str, why: str) -> Result:
    return Result(data={"unavailable": f"{what} is unavailable ({why[:150]}); use the local datasets"},
                  summary=f"{what} unavailable offline", ok=False)


def _snippet(text: str | None) -> str:
    """The first prose of a card or abstract: YAML front matter, markup and whitespace removed."""
    if not text:
        return ""
    text = re.sub(r"\A---\n.*?\n---\n", "", text, flags=re.S)
    text = re.sub(r"<[^>]{0,200}>|[#*`|]+", " ", text)
    text = " ".join(text.split())
    return text[:SNIPPET_CAP] + "…" if len(text) > SNIPPET_CAP else text


def _hub_search(args: SearchHubArgs) -> list[dict[str, Any]]:
    from huggingface_hub import HfApi, hf_hub_download

    api = HfApi()
    if args.kind == "dataset":
        infos = list(api.list_datasets(search=args.query, limit=args.limit, full=True))
    else:
        infos = list(api.list_models(search=args.query, limit=args.limit, cardData=True))
    out = []
    for i, info in enumerate(infos):
        item = {"id": info.id, "downloads": getattr(info, "downloads", None), "likes": getattr(info, "likes", None),
                "tags": [t for t in (getattr(info, "tags", None) or []) if ":" not in t][:8]}
        if args.kind == "model":
            item["pipeline_tag"] = getattr(info, "pipeline_tag", None)
        snippet = _snippet(getattr(info, "description", None))
        if not snippet and i < CARDS:
            try:  # the card's README, for the first few results only
                path = hf_hub_download(info.id, "README.md", repo_type=args.kind)
                with open(path, encoding="utf-8", errors="replace") as f:
                    snippet = _snippet(f.read(20_000))
            except Exception:  # no card, gated: the result stands without a snippet
                pass
        item["card"] = snippet
        out.append({k: v for k, v in item.items() if v not in (None, "", [])})
    return out


def search_hub(args: SearchHubArgs, timeout_s: float = 8.0) -> Result:
    """Hugging Face Hub datasets or models matching the query, with card snippets."""
    from huggingface_hub import constants

    if constants.HF_HUB_OFFLINE or os.environ.get("HF_HUB_OFFLINE", "").lower() in ("1", "true", "yes", "on"):
        return _unavailable("Hugging Face Hub search", "HF_HUB_OFFLINE is set")
    try:
        items = _within(lambda: _hub_search(args), timeout_s)
    except Exception as e:  # offline, unreachable, rate-limited: all the same to the search
        return _unavailable("Hugging Face Hub search", f"{type(e).__name__}: {e}")
    # Only datasets are recipe sources, and only as hub:<id>; models are cited, not loaded.
    prefix = "hub:" if args.kind == "dataset" else "model:"
    ids = [f"{prefix}{it['id']}" for it in items]
    return Result(data={"kind": args.kind, "results": items},
                  summary=f"{len(items)} hub {args.kind}s: {', '.join(it['id'] for it in items)[:300]}", sources=ids)


def parse_arxiv(xml_text: str, limit: int = 5) -> list[dict[str, Any]]:
    """Papers of an arXiv API Atom feed. defusedxml refuses DTDs and entities (the feed never
    has them, and entity expansion or external entities are how hostile XML attacks a parser).
    ValueError on anything that is not such a feed."""
    from defusedxml import DefusedXmlException
    from defusedxml.ElementTree import ParseError, fromstring

    try:
        root = fromstring(xml_text, forbid_dtd=True)
    except (ParseError, DefusedXmlException) as e:
        raise ValueError(f"not a safe Atom feed ({type(e).__name__})") from None
    if root.tag != f"{ATOM}feed":
        raise ValueError(f"not an Atom feed (root {root.tag[:80]})")
    papers = []
    for entry in root.findall(f"{ATOM}entry")[:limit]:
        def text(tag: str) -> str:
            node = entry.find(f"{ATOM}{tag}")
            return " ".join((node.text or "").split()) if node is not None else ""

        url = text("id")
        arxiv_id = url.rsplit("/abs/", 1)[-1] if "/abs/" in url else url
        if not arxiv_id:
            continue
        authors = [" ".join((a.findtext(f"{ATOM}name") or "").split()) for a in entry.findall(f"{ATOM}author")]
        papers.append({"id": f"arxiv:{arxiv_id}", "title": text("title")[:300], "published": text("published")[:10],
                       "authors": authors[:3] + (["et al."] if len(authors) > 3 else []),
                       "abstract": _snippet(text("summary"))})
    return papers


def search_papers(args: SearchPapersArgs, timeout_s: float = 8.0) -> Result:
    """arXiv papers matching the query (title, date, first authors, abstract snippet)."""
    words = " AND ".join(f"all:{w}" for w in re.findall(r"[\w-]+", args.query)[:12]) or "all:fine-tuning"
    url = ARXIV_URL + "?" + urllib.parse.urlencode({"search_query": words, "start": 0, "max_results": args.limit,
                                                    "sortBy": "relevance"})

    def fetch() -> str:
        req = urllib.request.Request(url, headers={"User-Agent": "trex-ray-research/0.1"})
        with urllib.request.urlopen(req, timeout=timeout_s) as resp:  # noqa: S310 (fixed https host)
            return resp.read(2_000_000).decode("utf-8", errors="replace")

    try:
        papers = parse_arxiv(_within(fetch, timeout_s), args.limit)
    except Exception as e:  # offline, DNS, timeout, a broken feed
        return _unavailable("arXiv search", f"{type(e).__name__}: {e}")
    return Result(data={"results": papers}, summary=f"{len(papers)} papers: " + "; ".join(p["title"][:80] for p in papers),
                  sources=[p["id"] for p in papers])


# ---------------------------------------------------------------- the toolbox
TOOL_HELP = {
    "list_local_datasets": (NoArgs, "List the datasets this run can train on locally: name, exact `source` string "
                            "for recipe load/mix/concat steps, row count and columns."),
    "describe_local_dataset": (DescribeArgs, "Columns, row count and a few example values of one local dataset."),
    "search_hub": (SearchHubArgs, "Search the Hugging Face Hub for datasets or models; results have card snippets. "
                   "A hub dataset is usable in a recipe only as source \"hub:<id>\". Online only."),
    "search_papers": (SearchPapersArgs, "Search arXiv for papers (title, date, abstract snippet). Online only."),
}
ONLINE = ("search_hub", "search_papers")


def _schema(model: type[BaseModel]) -> dict[str, Any]:
    s = model.model_json_schema()
    s.pop("title", None)
    for p in s.get("properties", {}).values():
        p.pop("title", None)
    return s


class Toolbox:
    """The research tools of one run: the local catalog (built once, lazily) and the online
    tools. ``call`` is the only way the model's requests reach them."""

    def __init__(self, task_name: "str | Task | None", paths: dict[str, str | None] | None = None,
                 extra_sources: list[str] | None = None, online: bool = True, timeout_s: float = 8.0) -> None:
        self.task_name, self.paths, self.extra_sources = task_name, paths or {}, extra_sources or []
        self.online, self.timeout_s = online, timeout_s
        self._catalog: list[CatalogEntry] | None = None

    @property
    def names(self) -> list[str]:
        return [n for n in TOOL_HELP if self.online or n not in ONLINE]

    def openai_tools(self) -> list[dict[str, Any]]:
        """The ``tools=`` list: one function per tool, parameters from the argument models."""
        return [{"type": "function", "function": {"name": n, "description": TOOL_HELP[n][1],
                                                  "parameters": _schema(TOOL_HELP[n][0])}} for n in self.names]

    def catalog(self) -> list[CatalogEntry]:
        if self._catalog is None:
            self._catalog = build_catalog(self.task_name, self.paths, self.extra_sources)
        return self._catalog

    def call(self, name: str, arguments: Any) -> Result:
        """Run one tool on the model's arguments (a dict, or the JSON text of one). ToolError,
        naming the problem, for an unknown tool or arguments that fail validation."""
        if name not in self.names:
            raise ToolError(f"unknown tool {str(name)[:60]!r}; the tools are {', '.join(self.names)}")
        if isinstance(arguments, str):
            try:
                arguments = json.loads(arguments) if arguments.strip() else {}
            except json.JSONDecodeError as e:
                raise ToolError(f"{name}: arguments are not valid JSON ({e.msg})") from None
        try:
            args = TOOL_HELP[name][0].model_validate(arguments if arguments is not None else {})
        except ValidationError as e:
            problems = "; ".join(f"{'.'.join(map(str, err['loc'])) or 'arguments'}: {err['msg']}" for err in e.errors())
            raise ToolError(f"{name}: bad arguments ({problems[:400]})") from None
        if isinstance(args, SearchHubArgs):
            return search_hub(args, self.timeout_s)
        if isinstance(args, SearchPapersArgs):
            return search_papers(args, self.timeout_s)
        if isinstance(args, DescribeArgs):
            entry = next((e for e in self.catalog() if args.name in (e.name, e.source)), None)
            if entry is None:
                raise ToolError(f"describe_local_dataset: no local dataset {args.name[:100]!r}; "
                                f"names: {', '.join(e.name for e in self.catalog())[:500]}")
            d = entry.brief() | {"examples": entry.examples}
            return Result(data=d, summary=f"{entry.name}: {entry.rows} rows, columns {', '.join(entry.columns)[:200]}",
                          sources=[entry.source] if entry.source else [])
        usable = [e for e in self.catalog() if e.source]
        return Result(data={"datasets": [e.brief() for e in self.catalog()]},
                      summary="local datasets: " + ", ".join(f"{e.name} ({e.rows} rows)" for e in usable)[:400],
                      sources=[e.source for e in usable])
