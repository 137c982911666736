"""A small OpenAI-compatible chat client for the LLM Researcher: retries, structured output,
token and cost accounting, a spend budget and a concurrency limit. No Ray here.

Every client of a run charges one ``LLMAccount`` (the Researcher, diagnoses, insights, research,
and every trial's synthesize steps on the workers, through a Ray actor holding it: see
``actors.py``), so the run's token and cost limits hold over all of them together.

Servers differ in how they accept a JSON schema, so that difference lives in one adapter
(``response_format``); everything else is the plain ``openai`` client. The API key is read from
the environment variable the config names and is never logged or stored.
"""

from __future__ import annotations

import json
import logging
import os
import re
import threading
import time
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

from trex_ray.config import ConfigError, LLMConfig
from trex_ray.guard.redact import scrub

log = logging.getLogger(__name__)


class LLMError(RuntimeError):
    """The endpoint did not give a usable answer (after retries), or the budget is spent.
    ``status`` is the HTTP status of the last failed request, when there was one."""

    def __init__(self, message: str, status: int | None = None) -> None:
        super().__init__(message)
        self.status = status


@dataclass
class ToolCall:
    """One function call the model asked for (OpenAI tool calling). ``arguments`` is the raw
    JSON text the model wrote: untrusted, to be validated before anything runs."""

    id: str
    name: str
    arguments: str


def _message_tokens(m: dict[str, Any]) -> int:
    """Estimated tokens of one chat message, tool calls included (their content may be empty)."""
    n = estimate_tokens(m.get("content") or "")
    if m.get("tool_calls"):
        n += estimate_tokens(json.dumps(m["tool_calls"]))
    return n


def estimate_tokens(text: str) -> int:
    """A deliberately pessimistic token count, so that a budget computed with it holds for real
    tokenizers: every digit and punctuation mark counts as one token (BPE vocabularies split
    digits and JSON's brackets and quotes), a run of letters as one token per 4 letters, line
    breaks as one. On JSON-heavy prompts it overcounts SmolLM2's tokenizer by about a third;
    a plain chars/3 rule undercounted it."""
    n = 0
    for piece in _PIECES.findall(text):
        if piece[0].isascii() and piece[0].isalpha():
            n += (len(piece) + 3) // 4
        elif piece.isspace():
            n += 0 if piece == " " else 1
        else:
            n += 1
    return n


_PIECES = re.compile(r"[A-Za-z]+|\s+|.", re.S)


def response_format(dialect: str, name: str, schema: dict[str, Any]) -> dict[str, Any] | None:
    """The ``response_format`` that asks this kind of server for JSON matching ``schema``.

    llama-cpp-python only understands its own ``json_object`` + ``schema`` form (it answers
    OpenAI's ``json_schema`` with HTTP 500); OpenAI and vLLM take ``json_schema``. ``strict`` is
    off because OpenAI's strict mode rejects schemas with optional fields and defaults.
    """
    if dialect == "json_schema":
        return {"type": "json_schema", "json_schema": {"name": name, "schema": schema, "strict": False}}
    if dialect == "llama_cpp":
        return {"type": "json_object", "schema": schema}
    if dialect == "none":
        return None
    raise ValueError(f"unknown structured_output dialect {dialect!r}")


def extract_json(text: str) -> Any:
    """The first JSON object in a model's text answer (code fences and chatter around it are
    ignored). Only ever parsed as JSON data, never evaluated. ValueError if there is none."""
    decoder = json.JSONDecoder()
    start = text.find("{")
    while start != -1:
        try:
            obj, _ = decoder.raw_decode(text, start)
            return obj
        except json.JSONDecodeError:
            start = text.find("{", start + 1)
    raise ValueError("the answer holds no complete JSON object")


@dataclass
class Usage:
    """Tokens and cost of some LLM calls (one call, one expansion or a whole run)."""

    calls: int = 0
    prompt_tokens: int = 0
    completion_tokens: int = 0
    cost: float = 0.0
    retries: int = 0
    estimated: bool = False  # some call's tokens were estimated: the server reported none

    def add(self, other: "Usage") -> None:
        self.calls += other.calls
        self.prompt_tokens += other.prompt_tokens
        self.completion_tokens += other.completion_tokens
        self.cost += other.cost
        self.retries += other.retries
        self.estimated = self.estimated or other.estimated

    def to_dict(self) -> dict[str, Any]:
        return asdict(self) | {"cost": round(self.cost, 6)}


class LLMAccount:
    """The run's one LLM spend account: tokens and cost of every call, whoever made it, against
    the run's limits (``limits.llm_tokens``; the lower of ``limits.llm_cost`` and
    ``llm.max_cost``). Kept in ``path`` (a small JSON file rewritten per charge) so a resumed run
    goes on from what it spent. Thread-safe; a Ray actor holds it to span workers."""

    def __init__(self, max_tokens: int | None = None, max_cost: float | None = None,
                 path: str | os.PathLike | None = None) -> None:
        self.max_tokens, self.max_cost = max_tokens, max_cost
        self.path = Path(path) if path else None
        self.total = Usage()
        self.by: dict[str, Usage] = {}  # who spent it: researcher, synthesis
        self._lock = threading.Lock()
        if self.path is not None and self.path.is_file():
            try:
                saved = json.loads(self.path.read_text(encoding="utf-8"))
                self.total = Usage(**saved["total"])
                self.by = {k: Usage(**v) for k, v in saved.get("by", {}).items()}
            except (ValueError, KeyError, TypeError) as e:
                log.warning("could not read the LLM account %s (%s): starting from zero", self.path, e)

    @staticmethod
    def caps(limits: Any, llm: LLMConfig) -> tuple[int | None, float | None]:
        """(max tokens, max cost) of a run from its ``limits`` (LimitsConfig) and ``llm`` config."""
        costs = [c for c in (limits.llm_cost, llm.max_cost) if c is not None]
        return limits.llm_tokens, (min(costs) if costs else None)

    def why_spent(self) -> str | None:
        """Why no further call may be made, or None."""
        t = self.total
        if self.max_tokens is not None and t.prompt_tokens + t.completion_tokens >= self.max_tokens:
            return f"the run's LLM budget is spent ({t.prompt_tokens + t.completion_tokens} of {self.max_tokens} tokens, limits.llm_tokens)"
        if self.max_cost is not None and t.cost >= self.max_cost:
            return f"the run's LLM budget is spent (cost {t.cost:.4f} of {self.max_cost:g})"
        return None

    def check(self) -> None:
        why = self.why_spent()
        if why:
            raise LLMError(why)

    def charge(self, usage: Usage, who: str = "researcher") -> None:
        with self._lock:
            self.total.add(usage)
            self.by.setdefault(who.split(":")[0], Usage()).add(usage)
            if self.path is not None:
                tmp = self.path.with_suffix(".tmp")
                tmp.write_text(json.dumps(self.snapshot()))
                os.replace(tmp, self.path)

    def snapshot(self) -> dict[str, Any]:
        return {"total": self.total.to_dict(), "by": {k: v.to_dict() for k, v in self.by.items()},
                "max_tokens": self.max_tokens, "max_cost": self.max_cost, "spent": self.why_spent()}


def _retryable(exc: Exception) -> bool:
    """Timeouts, lost connections, 429 and 5xx are worth another try; 4xx other than 429 are
    our request's fault and would fail the same way again."""
    import openai

    if isinstance(exc, (openai.APITimeoutError, openai.APIConnectionError)):
        return True
    if isinstance(exc, openai.APIStatusError):
        return exc.status_code == 429 or exc.status_code >= 500
    return False


class LLMClient:
    """Chat completions against one endpoint, with the run's spend tracked in ``total``."""

    def __init__(self, cfg: LLMConfig, account: Any = None, who: str = "researcher") -> None:
        """``account``: the run's ``LLMAccount`` (or a proxy with its ``check`` and ``charge``,
        such as ``executor.context.SharedAccount``); None: an account of this client alone,
        holding ``cfg.max_cost``. ``who`` names this client in the account."""
        import openai

        if not cfg.base_url or not cfg.model:
            raise LLMError("no LLM configured (llm.base_url and llm.model)")
        self.cfg = cfg
        key_env = cfg.api_key_env
        # Local servers want no key, but the client insists on one; a placeholder is harmless.
        key = os.environ.get(key_env, "") if key_env else "not-needed"
        if not key:
            raise LLMError(f"environment variable {key_env} (llm.api_key_env) is not set")
        self._key = key if key_env else ""  # kept only to scrub it from error messages
        # Our own retry loop (not the client's) so that retries are counted and logged.
        self.client = openai.OpenAI(base_url=cfg.base_url, api_key=key, timeout=cfg.timeout_s, max_retries=0)
        self.total = Usage()  # this client's own calls
        self._lock = threading.Lock()
        self._slots = threading.BoundedSemaphore(cfg.concurrency)
        self.account, self.who = account, who

    def budget_left(self) -> bool:
        if self.account is not None:
            return self.account.why_spent() is None
        limit = self.cfg.max_cost
        return limit is None or self.total.cost < limit

    def check_budget(self) -> None:
        if self.account is not None:
            self.account.check()
        elif not self.budget_left():
            raise LLMError(f"LLM budget spent ({self.total.cost:.4f} of max_cost {self.cfg.max_cost})")

    def _cost(self, prompt_tokens: int, completion_tokens: int) -> float:
        return (prompt_tokens * self.cfg.price_per_1k_input + completion_tokens * self.cfg.price_per_1k_output) / 1000

    def chat(self, messages: list[dict[str, str]], schema: dict[str, Any] | None = None,
             schema_name: str = "answer", max_tokens: int | None = None) -> tuple[str, Usage]:
        """The answer's text and this call's usage (retries included). LLMError when the
        request keeps failing or the answer is empty. The budget is the caller's to check
        (``check_budget``): an expansion under way may finish its calls. ``max_tokens`` may
        lower the configured answer length for one call."""
        kwargs: dict[str, Any] = dict(model=self.cfg.model, messages=messages, temperature=self.cfg.temperature,
                                      max_tokens=min(max_tokens or self.cfg.max_tokens, self.cfg.max_tokens))
        fmt = response_format(self.cfg.structured_output, schema_name, schema) if schema else None
        if fmt is not None:
            kwargs["response_format"] = fmt
        text, _, usage = self._complete(kwargs)
        if not text.strip():
            raise LLMError("the LLM returned an empty answer")
        return text, usage

    def chat_tools(self, messages: list[dict[str, Any]], tools: list[dict[str, Any]],
                   max_tokens: int | None = None) -> tuple[str, list[ToolCall], Usage]:
        """One turn with OpenAI ``tools``: (text, tool calls asked for, usage). A server that
        ignores ``tools`` answers text and no calls; one that rejects them raises LLMError with
        its HTTP ``status``. Retries and accounting as in ``chat``."""
        kwargs: dict[str, Any] = dict(model=self.cfg.model, messages=messages, tools=tools, tool_choice="auto",
                                      temperature=self.cfg.temperature,
                                      max_tokens=min(max_tokens or self.cfg.max_tokens, self.cfg.max_tokens))
        return self._complete(kwargs)

    def _complete(self, kwargs: dict[str, Any]) -> tuple[str, list[ToolCall], Usage]:
        """The request with retries; every attempt's usage goes into ``total`` (and the run's
        account). With an account, every call checks it first: the run's limits hold to within
        the calls already in flight."""
        if self.account is not None:
            self.account.check()
        messages = kwargs["messages"]
        usage = Usage()
        delay = self.cfg.retry_backoff_s
        for attempt in range(self.cfg.max_retries + 1):
            try:
                with self._slots:
                    resp = self.client.chat.completions.create(**kwargs)
                break
            except Exception as e:
                if not _retryable(e) or attempt == self.cfg.max_retries:
                    self._charge(usage)  # the retries still count
                    # scrubbed before it is cut: a key cut in half would no longer match
                    detail = scrub(str(e), [self._key])[:300]
                    raise LLMError(f"LLM request failed after {attempt + 1} attempt(s): {type(e).__name__}: {detail}",
                                   status=getattr(e, "status_code", None)) from None
                usage.retries += 1
                log.warning("LLM request failed (%s); retry %d in %.1fs", type(e).__name__, attempt + 1, delay)
                time.sleep(delay)
                delay *= 2
        msg = resp.choices[0].message if resp.choices else None
        text = (msg.content or "") if msg is not None else ""
        calls = [ToolCall(id=c.id or f"call_{i}", name=c.function.name or "", arguments=c.function.arguments or "")
                 for i, c in enumerate(getattr(msg, "tool_calls", None) or [])
                 if getattr(c, "function", None) is not None]
        u = resp.usage
        if u is not None and u.prompt_tokens is not None:
            usage.prompt_tokens, usage.completion_tokens = u.prompt_tokens, u.completion_tokens or 0
        else:
            usage.prompt_tokens = sum(_message_tokens(m) for m in messages)
            usage.completion_tokens = estimate_tokens(text) + sum(estimate_tokens(c.name + c.arguments) for c in calls)
            usage.estimated = True
        usage.calls = 1
        usage.cost = self._cost(usage.prompt_tokens, usage.completion_tokens)
        self._charge(usage)
        return text, calls, usage

    def _charge(self, usage: Usage) -> None:
        with self._lock:
            self.total.add(usage)
        if self.account is not None:
            self.account.charge(usage, self.who)


def check_llm_config(policy: str, llm: LLMConfig) -> None:
    """Fail fast, before Ray starts, when the LLM policy cannot possibly reach its endpoint.
    Names the missing key variable, never prints a key."""
    if policy != "llm":
        return
    missing = [f"llm.{k}" for k in ("base_url", "model") if not getattr(llm, k)]
    if missing:
        raise ConfigError(f"search.policy=llm needs {' and '.join(missing)}")
    env = llm.api_key_env
    if env and not os.environ.get(env):
        raise ConfigError(f"llm.api_key_env names {env}, which is not set in the environment")
