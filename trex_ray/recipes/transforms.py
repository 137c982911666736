"""Row-level operators: shaping, filtering and sizing, each ``(dataset, step, where, num_proc) ->
(dataset, extra stats)``. Only ``datasets`` map/filter/select, so they run unchanged on the worker.

Every operator checks the columns it names before touching the data, so a typo in an LLM-written
recipe fails in one line naming the step and the columns that do exist.
"""

from __future__ import annotations

import re
from typing import Any

import datasets
import numpy as np

from trex_ray.recipes.ops import (
    BalanceLabelsOp, DropEmptyOp, FilterLabelsOp, FilterLengthOp, FilterQualityOp, FilterRegexOp,
    FormatOp, RenameOp, SelectOp, SubsampleOp, template_fields,
)
from trex_ray.recipes.ops import RecipeError

REGEX_TIMEOUT_S = 1.0  # per row; a pattern that needs longer is treated as catastrophic
_WORD = re.compile(r"\S+")

Result = tuple[datasets.Dataset, dict[str, Any]]


def need(ds: datasets.Dataset, columns: list[str] | tuple[str, ...], where: str) -> None:
    """RecipeError naming the step when a column it uses is absent."""
    missing = [c for c in columns if c not in ds.column_names]
    if missing:
        raise RecipeError(f"{where}: column(s) {', '.join(missing)} not in the data "
                          f"(columns: {', '.join(ds.column_names)})")


def column_values(ds: datasets.Dataset, column: str) -> list[Any]:
    """One column as a Python list, through Arrow: ``ds[column]`` is a lazy per-row view in
    ``datasets`` 5 and reads ~10x slower."""
    return ds.select_columns([column]).with_format("arrow")[:].column(0).to_pylist()


def _text(v: Any) -> str:
    return "" if v is None else v if isinstance(v, str) else str(v)


# ---------------------------------------------------------------- shaping
def select(ds: datasets.Dataset, step: SelectOp, where: str, num_proc: int | None) -> Result:
    need(ds, step.columns, where)
    return ds.select_columns(list(step.columns)), {}


def rename(ds: datasets.Dataset, step: RenameOp, where: str, num_proc: int | None) -> Result:
    need(ds, list(step.columns), where)
    clash = [n for o, n in step.columns.items() if n in ds.column_names and n not in step.columns]
    if clash:
        raise RecipeError(f"{where}: new name(s) {', '.join(clash)} already used by other columns")
    return ds.rename_columns(dict(step.columns)), {}


def format_rows(ds: datasets.Dataset, step: FormatOp, where: str, num_proc: int | None) -> Result:
    """trl's conversational prompt/completion rows (the label is kept for statistics)."""
    fields = set(template_fields(step.prompt)) | set(template_fields(step.completion))
    missing = sorted(fields - set(ds.column_names))
    if missing:
        raise RecipeError(f"{where}: template names column(s) {', '.join(missing)} not in the data "
                          f"(columns: {', '.join(ds.column_names)})")
    prompt, completion = step.prompt, step.completion

    def to_chat(row: dict) -> dict:
        return {
            "prompt": [{"role": "user", "content": prompt.format(**row)}],
            "completion": [{"role": "assistant", "content": completion.format(**row)}],
        }

    drop = [c for c in ds.column_names if c != "label"]
    return ds.map(to_chat, remove_columns=drop, num_proc=num_proc), {}


# ---------------------------------------------------------------- filtering
def filter_length(ds: datasets.Dataset, step: FilterLengthOp, where: str, num_proc: int | None) -> Result:
    need(ds, [step.column], where)
    col, lo, hi, tokens = step.column, step.min, step.max, step.unit == "tokens"

    def keep(batch: dict) -> list[bool]:
        out = []
        for v in batch[col]:
            s = _text(v)
            n = len(_WORD.findall(s)) if tokens else len(s)
            out.append(n >= lo and (hi is None or n <= hi))
        return out

    return ds.filter(keep, batched=True, num_proc=num_proc), {}


def filter_regex(ds: datasets.Dataset, step: FilterRegexOp, where: str, num_proc: int | None) -> Result:
    """Single process on purpose: the timeout is what makes an untrusted pattern safe, and a
    timeout must surface as this step's error, not as a worker pool's."""
    import regex

    need(ds, [step.column], where)
    pat = regex.compile(step.pattern, regex.IGNORECASE if step.ignore_case else 0)
    col, want = step.column, step.mode == "keep"

    def keep(batch: dict) -> list[bool]:
        out = []
        for v in batch[col]:
            try:
                hit = pat.search(_text(v), timeout=REGEX_TIMEOUT_S) is not None
            except TimeoutError:
                raise RecipeError(f"{where}: pattern {step.pattern!r} took over {REGEX_TIMEOUT_S:g}s on one "
                                  f"row (catastrophic backtracking); simplify it") from None
            out.append(hit == want)
        return out

    return ds.filter(keep, batched=True), {}


def filter_labels(ds: datasets.Dataset, step: FilterLabelsOp, where: str, num_proc: int | None) -> Result:
    need(ds, [step.column], where)
    wanted, col = {str(k) for k in step.keep}, step.column
    return ds.filter(lambda b: [str(v) in wanted for v in b[col]], batched=True, num_proc=num_proc), {}


def repetition_ratio(text: str) -> float:
    """Share of word trigrams that repeat an earlier one in the same text (0 for short texts)."""
    words = text.split()
    grams = [tuple(words[i : i + 3]) for i in range(len(words) - 2)]
    return 0.0 if not grams else 1 - len(set(grams)) / len(grams)


def non_text_ratio(text: str) -> float:
    """Share of non-blank characters that are not letters."""
    chars = [c for c in text if not c.isspace()]
    return 0.0 if not chars else sum(not c.isalpha() for c in chars) / len(chars)


def filter_quality(ds: datasets.Dataset, step: FilterQualityOp, where: str, num_proc: int | None) -> Result:
    need(ds, [step.column], where)
    col, rep, non = step.column, step.max_repetition, step.max_non_text

    def keep(batch: dict) -> list[bool]:
        texts = [_text(v) for v in batch[col]]
        return [repetition_ratio(t) <= rep and non_text_ratio(t) <= non for t in texts]

    return ds.filter(keep, batched=True, num_proc=num_proc), {}


def drop_empty(ds: datasets.Dataset, step: DropEmptyOp, where: str, num_proc: int | None) -> Result:
    cols = list(step.columns or ds.column_names)
    need(ds, cols, where)

    def blank(v: Any) -> bool:
        return v is None or (isinstance(v, str) and not v.strip()) or (isinstance(v, (list, dict)) and not v)

    def keep(batch: dict) -> list[bool]:
        return [not any(blank(batch[c][i]) for c in cols) for i in range(len(batch[cols[0]]))]

    return ds.filter(keep, batched=True, num_proc=num_proc), {}


# ---------------------------------------------------------------- sizing
def subsample(ds: datasets.Dataset, step: SubsampleOp, where: str, num_proc: int | None) -> Result:
    return ds.shuffle(seed=step.seed).select(range(min(step.n, len(ds)))), {}


def balance_labels(ds: datasets.Dataset, step: BalanceLabelsOp, where: str, num_proc: int | None) -> Result:
    """A seeded sample of at most the cap per label; rows keep their original order."""
    need(ds, [step.column], where)
    by_label: dict[str, list[int]] = {}
    for i, v in enumerate(column_values(ds, step.column)):
        by_label.setdefault(str(v), []).append(i)
    cap = step.max_per_label or min(len(v) for v in by_label.values())
    rng = np.random.default_rng(step.seed)
    keep: list[int] = []
    for label in sorted(by_label):
        idx = by_label[label]
        keep += idx if len(idx) <= cap else sorted(rng.choice(idx, size=cap, replace=False).tolist())
    keep.sort()
    after = {label: min(len(idx), cap) for label, idx in sorted(by_label.items())}
    return ds.select(keep), {"cap_per_label": cap, "labels_after": after}
