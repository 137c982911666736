"""Where a task without a train split gets its training rows, decided before Ray starts.

CS-Bench, LawBench, OpenFinData and GTA publish no training data. They can still be searched:
their rows are built from data the user points at (``task.extra_sources``: local files and
folders, ``hub:<id>`` datasets when online), converted to the task's columns, and from examples an
LLM writes in the style of the task's dev rows (the ``synthesize`` operator, when the run has an
endpoint; never from test rows). This module reads each extra source's columns and decides which
fit the task as they are, or after column renames that are safe to infer (one unambiguous
synonym per missing column). The builtin policy plans with those (``TaskSpec.sources``); the LLM
policy also sees every other source in its catalog and may convert it with ``derive`` templates.
No Ray here.
"""

from __future__ import annotations

import logging
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING

import numpy as np

from trex_ray.config import Config, ConfigError
from trex_ray.researcher.catalog import build_catalog
from trex_ray.search.plan import template_fields
from trex_ray.search.request import MIN_RELEVANCE, DataSource, TaskSpec
from trex_ray.tasks import answer_format, task_spec

if TYPE_CHECKING:
    from ftbench.task import Task

log = logging.getLogger(__name__)

# Column names that mean the same thing across datasets: a missing task column is renamed from
# a source column only when exactly one of its synonyms is there (two candidates: ambiguous).
SYNONYMS: tuple[frozenset[str], ...] = (
    frozenset({"input", "prompt", "question", "query", "instruction", "text", "sentence", "content"}),
    frozenset({"reference", "answer", "output", "response", "completion", "target"}),
)
# Evaluation splits of other benchmarks found inside a listed folder are never mixed in by the
# builtin policy: they are someone's test set (a file listed by itself is the user's choice).
EVAL_STEMS = frozenset({"dev", "test", "valid", "validation", "val"})
SAMPLE = 200  # rows of a source (and of dev) compared for relevance
TEXT_CHARS = 2000  # of one row's text


@dataclass
class SourceCheck:
    """One extra source, read before the search: whether it fits the task, and how."""

    source: str  # the exact source string a recipe loads it by
    name: str
    rows: int | None
    columns: list[str] = field(default_factory=list)
    rename: dict[str, str] = field(default_factory=dict)
    problem: str = ""  # why it does not fit (empty: it fits)
    relevance: float | None = None  # likeness to the dev rows (rate_relevance); None: not measured

    @property
    def fits(self) -> bool:
        return not self.problem

    def as_source(self) -> DataSource:
        return DataSource(source=self.source, name=self.name, rows=self.rows or 0, rename=dict(self.rename),
                          relevance=self.relevance)


def needed_columns(task: "Task") -> list[str]:
    """The columns training rows need: the fields of the task's prompt and completion templates."""
    return list(dict.fromkeys(template_fields(task.prompt_template) + template_fields(task.completion_template)))


def infer_rename(columns: list[str], needed: list[str]) -> tuple[dict[str, str] | None, str]:
    """(renames old -> new that give ``columns`` every ``needed`` column, "") or (None, why not)."""
    rename: dict[str, str] = {}
    for want in needed:
        if want in columns:
            continue
        group = next((g for g in SYNONYMS if want.lower() in g), frozenset({want.lower()}))
        taken = set(needed) | set(rename)
        cands = [c for c in columns if c.lower() in group and c not in taken]
        if len(cands) != 1:
            what = f"{' and '.join(cands)} could each be" if cands else "no column is"
            return None, f"lacks {want} ({what} it)"
        rename[cands[0]] = want
    return rename, ""


def check_sources(task: "Task", paths: dict[str, str | None], extra_sources: list[str]) -> list[SourceCheck]:
    """Every data file under ``extra_sources`` (and every ``hub:`` entry), checked against the
    task's needed columns. The task's own files, reached by another path, are left out (the
    catalog's rule: its dev and test rows must never become training data)."""
    needed = needed_columns(task)
    listed = {str(Path(x).expanduser().resolve()) for x in extra_sources if not x.startswith("hub:")}
    local = [x for x in extra_sources if not x.startswith("hub:")]
    out: list[SourceCheck] = []
    for e in build_catalog(task, paths, local):
        if e.name.startswith("task:"):
            continue
        if e.source is None:
            out.append(SourceCheck(source=e.name, name=e.name, rows=None, problem=e.note or "unreadable"))
            continue
        check = SourceCheck(source=e.source, name=e.name, rows=e.rows, columns=list(e.columns))
        where, stem = Path(e.source), Path(e.source).stem.lower()
        if e.source not in listed and stem in EVAL_STEMS:
            check.problem = "an evaluation split found in a folder (list the file itself to train on it)"
        elif e.source not in listed and str(where.parent) not in listed and not stem.startswith("train"):
            # a folder of datasets (the FT-Bench data folder): a subfolder's other files are some
            # benchmark's release files (OpenFinData's subsets, GTA's dataset.json), i.e. its test set
            check.problem = "not a train split of a dataset folder (list the file itself to train on it)"
        elif not e.rows:
            check.problem = "no rows"
        else:
            rename, why = infer_rename(check.columns, needed)
            check.rename, check.problem = rename or {}, why
        out.append(check)
    out += [_check_hub(x, needed) for x in extra_sources if x.startswith("hub:")]
    return out


def _sample_texts(rows: list[dict], fields: list[str]) -> list[str]:
    """Up to SAMPLE rows spread evenly over ``rows``, each as the text of its needed fields."""
    step = max(1, len(rows) // SAMPLE)
    return [" ".join(str(r.get(f) or "") for f in fields)[:TEXT_CHARS] for r in rows[::step][:SAMPLE]]


def rate_relevance(task: "Task", checks: list[SourceCheck], dev: list[dict], paths: dict[str, str | None]) -> None:
    """Set each fitting local source's ``relevance``: how alike its rows (the needed columns, after
    its renames) and the dev rows read, as the cosine of the two samples' mean TF-IDF vectors over
    character 2-4-grams (any language, no model). Near 1: the same kind of text; unrelated data
    (another domain, another language) scores far lower. Hub sources are not read here (None)."""
    from sklearn.feature_extraction.text import TfidfVectorizer

    from trex_ray.recipes.ops import RecipeError, Source
    from trex_ray.recipes.sources import load_source

    fields = needed_columns(task)
    samples: dict[int, list[str]] = {}
    for i, c in enumerate(checks):
        if c.fits and not c.source.startswith("hub:"):
            try:
                ds = load_source(Source(source=c.source, rename=c.rename), task, paths, f"extra source {c.name}")
            except RecipeError as e:
                c.problem = str(e)
                continue
            idx = range(0, len(ds), max(1, len(ds) // SAMPLE))[:SAMPLE]
            samples[i] = _sample_texts(ds.select(idx).to_list(), fields)
    if not samples:
        return
    target = _sample_texts(dev, fields)
    vec = TfidfVectorizer(analyzer="char_wb", ngram_range=(2, 4), sublinear_tf=True, max_features=50_000)
    vec.fit(target + [t for s in samples.values() for t in s])

    def centroid(texts: list[str]) -> np.ndarray:
        m = np.asarray(vec.transform(texts).mean(axis=0)).ravel()
        return m / (np.linalg.norm(m) or 1.0)

    dev_c = centroid(target)
    for i, texts in samples.items():
        checks[i].relevance = round(float(centroid(texts) @ dev_c), 3)


def _check_hub(source: str, needed: list[str]) -> SourceCheck:
    """A ``hub:<id>`` source, described from its card's metadata (nothing is downloaded)."""
    import datasets

    check = SourceCheck(source=source, name=source, rows=None)
    try:
        info = datasets.load_dataset_builder(source[len("hub:"):]).info
    except Exception as e:  # offline, unknown id, gated: all the same here
        check.problem = f"cannot be read from the Hugging Face Hub ({type(e).__name__}); download it and list its local path"
        return check
    check.columns = list(info.features or [])
    train = (info.splits or {}).get("train")
    check.rows = train.num_examples if train is not None else None
    if not check.columns:
        check.problem = "its columns are not stated on the Hub (download it and list its local path)"
        return check
    rename, why = infer_rename(check.columns, needed)
    check.rename, check.problem = rename or {}, why
    check.rows = check.rows or 1  # unknown size: usable, counted as small
    return check


def no_data_error(task: "Task", checks: list[SourceCheck], can_synthesize: bool) -> str | None:
    """The one line a run without training data fails with, naming what to provide; None when
    it can start (a source fits and is related to the task, or an LLM can synthesise from dev)."""
    if can_synthesize or any(c.fits and c.as_source().related for c in checks):
        return None
    for c in checks:
        if c.fits:  # fits the columns, but its text has next to nothing in common with the task's
            c.problem = f"its rows are unrelated to the task's (relevance {c.relevance:.2f} < {MIN_RELEVANCE})"
    cols = ", ".join(needed_columns(task))
    provide = (f"give task.extra_sources with files or folders whose rows have the columns {cols} (or one "
               f"unambiguous synonym of each, e.g. question/answer), or set llm.base_url and llm.model to "
               f"synthesise examples from its dev split")
    if not checks:
        return f"task {task.id} has no train split: {provide}"
    why = "; ".join(f"{c.name}: {c.problem}" for c in checks[:3]) + (f"; {len(checks) - 3} more" if len(checks) > 3 else "")
    return f"task {task.id} has no train split and no extra source fits it ({why}): {provide}"


def can_synthesize(cfg: Config) -> bool:
    """Whether recipes may ``synthesize``: the run names an LLM endpoint."""
    return bool(cfg.llm.base_url and cfg.llm.model)


def no_train_spec(task: "Task", cfg: Config, dev: list[dict]) -> TaskSpec:
    """The TaskSpec of a task without a train split: the extra sources that fit it, and whether
    synthesis from its dev rows is possible; ConfigError naming what to provide when neither is.
    Its columns are the dev split's: the schema every source is renamed to."""
    checks = check_sources(task, cfg.task.paths(), cfg.task.extra_sources)
    rate_relevance(task, checks, dev, cfg.task.paths())
    for c in checks:
        log.info("extra source %s: %s", c.name, f"fits (relevance {c.relevance}"
                 + (f", renames {c.rename})" if c.rename else ")") if c.fits else c.problem)
    problem = no_data_error(task, checks, can_synthesize(cfg))
    if problem:
        raise ConfigError(problem)
    sources = tuple(c.as_source() for c in checks if c.fits)
    log.info("task %s has no train split: training rows come from %s", task.id, " and ".join(
        ([f"{len(sources)} extra source(s) ({sum(s.rows for s in sources)} rows)"] if sources else [])
        + (["examples an LLM synthesises from its dev split"] if can_synthesize(cfg) else [])))
    return task_spec(task, 0, list(dev[0]), answer_format(cfg.task), sources=sources,
                     synthesis=can_synthesize(cfg), dev_rows=len(dev))
