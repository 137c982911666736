"""Build a plan's training data with Hugging Face ``datasets``, then decontaminate it.

Runs inside the trial (on the worker), never on the driver. Output rows are trl's conversational
prompt/completion pairs, so the loss falls on the completion only and the chat template is the
same one evaluation uses.
"""

from __future__ import annotations

import logging
import re
import time
from pathlib import Path
from typing import Any

from ftbench.task import Task, TaskDataError, load_split
from trex_ray.plan import FormatOp, LoadOp, Recipe, SubsampleOp, template_fields

log = logging.getLogger(__name__)

_NON_WORD = re.compile(r"[^\w]+", re.UNICODE)


class RecipeError(ValueError):
    """The recipe cannot be built on this data (the message names the step and the problem)."""


def _normalise(text: str) -> list[str]:
    return _NON_WORD.sub(" ", text.lower()).split()


def _load(step: LoadOp, task: Task, paths: dict):
    import datasets

    if step.source == "task:train":
        return datasets.Dataset.from_list(load_split(task, "train", paths))
    p = Path(step.source).expanduser()
    kind = {".jsonl": "json", ".json": "json", ".parquet": "parquet", ".csv": "csv"}.get(p.suffix)
    if kind is None:
        raise RecipeError(f"load: unsupported source {step.source!r} (task:train or a .jsonl/.parquet/.csv file)")
    if not p.is_file():
        raise RecipeError(f"load: file not found: {p}")
    return datasets.load_dataset(kind, data_files=str(p), split="train")


def _format(ds, step: FormatOp):
    needed = set(template_fields(step.prompt)) | set(template_fields(step.completion))
    missing = sorted(needed - set(ds.column_names))
    if missing:
        raise RecipeError(f"format: template names column(s) {', '.join(missing)} not in the data "
                          f"(columns: {', '.join(ds.column_names)})")

    def to_chat(row: dict) -> dict:
        return {
            "prompt": [{"role": "user", "content": step.prompt.format(**row)}],
            "completion": [{"role": "assistant", "content": step.completion.format(**row)}],
        }

    return ds.map(to_chat, remove_columns=[c for c in ds.column_names if c not in ("label",)])


class Decontaminator:
    """Flags training rows that overlap evaluation rows: the same normalised text, or a shared
    n-gram of ``n`` words. Only the values of the template's fields are compared, never the
    template's fixed wording, which every row shares."""

    def __init__(self, eval_rows: list[dict], fields: list[str], n: int) -> None:
        self.n, self.fields = n, fields
        self.exact: set[str] = set()
        self.grams: set[tuple[str, ...]] = set()
        for r in eval_rows:
            words = self._words(r)
            self.exact.add(" ".join(words))
            self.grams.update(self._ngrams(words))

    def _words(self, row: dict) -> list[str]:
        return _normalise(" ".join(str(row.get(f, "")) for f in self.fields))

    def _ngrams(self, words: list[str]) -> set[tuple[str, ...]]:
        return {tuple(words[i : i + self.n]) for i in range(len(words) - self.n + 1)}

    def contaminated(self, row: dict) -> bool:
        words = self._words(row)
        return " ".join(words) in self.exact or not self.grams.isdisjoint(self._ngrams(words))


def build_recipe(recipe: Recipe, task: Task, paths: dict | None = None) -> tuple[Any, dict[str, Any]]:
    """(dataset of prompt/completion rows, statistics). Raises RecipeError naming the problem."""
    t0 = time.time()
    paths = paths or {}
    stats: dict[str, Any] = {"steps": []}
    ds = None
    try:
        for step in recipe.steps:
            rows_in = 0 if ds is None else len(ds)
            if isinstance(step, LoadOp):
                ds = _load(step, task, paths)
            elif isinstance(step, SubsampleOp):
                ds = ds.shuffle(seed=step.seed).select(range(min(step.n, len(ds))))
            elif isinstance(step, FormatOp):
                if recipe.decontaminate:
                    ds, dropped = _decontaminate(ds, recipe, task, paths)
                    stats["decontamination"] = {"dropped": dropped, "ngram": recipe.decontaminate_ngram}
                ds = _format(ds, step)
            stats["steps"].append({"op": step.op, "rows_in": rows_in, "rows_out": len(ds)})
    except TaskDataError as e:
        raise RecipeError(str(e)) from None
    if not recipe.decontaminate:
        stats["decontamination"] = "off (turned off by the recipe)"
    if ds is None or len(ds) == 0:
        raise RecipeError("the recipe produced no training rows")
    if "label" in ds.column_names:
        labels = ds["label"]
        stats["labels"] = {str(k): labels.count(k) for k in sorted(set(labels), key=str)}
    stats["rows"] = len(ds)
    stats["seconds"] = round(time.time() - t0, 2)
    return ds, stats


def _decontaminate(ds, recipe: Recipe, task: Task, paths: dict):
    """Drop rows overlapping the task's dev or test rows (before formatting, on raw fields)."""
    fields = [f for f in template_fields(recipe.format.prompt) if f in ds.column_names]
    eval_rows: list[dict] = []
    for split in ("dev", "test"):
        try:
            eval_rows += load_split(task, split, paths)
        except TaskDataError:
            log.info("no %s split to decontaminate against", split)
    checker = Decontaminator(eval_rows, fields, recipe.decontaminate_ngram)
    before = len(ds)
    ds = ds.filter(lambda r: not checker.contaminated(r))
    return ds, before - len(ds)
