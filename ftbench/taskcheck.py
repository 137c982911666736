"""A task file checked against its data before anything runs.

Every problem is one line naming the field (and, where it helps, an example row): the splits
load and are not empty, the templates and the target name existing columns, every gold answer
has the answer format (a label of the set, a number, a JSON object with the schema's fields),
every label of the set occurs in the data, row ids are unique. The metric's fit to the answer
format is checked when the file itself is validated (``TaskFile``). Train rows whose prompt dev or
test also holds are not a problem but a finding: they are removed from train and reported.
"""

from __future__ import annotations

import json
import logging
from collections import Counter
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from ftbench.formats import field_value
from ftbench.task import SPLITS, TaskDataError
from ftbench.taskfile import TaskFile, TaskFileError, TaskFileLoader, template_fields

log = logging.getLogger(__name__)

MAX_PROBLEMS = 20  # lines; past this the user has enough to fix first
EXCERPT = 80  # characters of a value quoted in a problem


@dataclass
class CheckReport:
    """What the checks found besides problems: split sizes (train after cleaning), the train rows
    removed for overlapping dev or test, whether dev was carved from train, and warnings."""

    rows: dict[str, int] = field(default_factory=dict)
    overlap: list[str] = field(default_factory=list)
    dev_carved: bool = False
    warnings: list[str] = field(default_factory=list)


def _excerpt(value: Any) -> str:
    s = value if isinstance(value, str) else json.dumps(value, ensure_ascii=False)
    return repr(s if len(s) <= EXCERPT else s[: EXCERPT - 1] + "…")


class _Problems:
    """Problem lines in the order found; a problem of a kind already seen (``kind``: e.g. the same
    field's wrong values in many rows) is counted on the first line instead of repeated."""

    def __init__(self) -> None:
        self.lines: dict[str, list] = {}

    def add(self, line: str, kind: str | None = None) -> None:
        entry = self.lines.setdefault(kind or line, [line, 0])
        entry[1] += 1

    def __bool__(self) -> bool:
        return bool(self.lines)

    def render(self) -> list[str]:
        return [line + (f" (and {n - 1} more like it)" if n > 1 else "") for line, n in self.lines.values()]


def _check_columns(tf: TaskFile, loaded: dict[str, list[dict]], out: _Problems) -> set[str]:
    """Templates and target name columns every row has (one line per column, naming the splits);
    returns the splits whose target column is missing."""
    wanted = [("prompt", c) for c in template_fields(tf.prompt)]
    wanted += [("completion", c) for c in template_fields(tf.completion or "")] + [("target", tf.target)]
    no_target = set()
    for key, col in dict.fromkeys(wanted):
        absent = [s for s, rows in loaded.items() if all(col not in r for r in rows)]
        if absent:
            if col == tf.target:
                no_target |= set(absent)
            first = loaded[absent[0]][0]
            renamed = " (after the renames in columns)" if tf.columns else ""
            where = " and ".join(absent) + (" splits" if len(absent) > 1 else " split")
            out.add(f"{key}: column {col!r} is not in the {where}{renamed}; "
                    f"columns: {', '.join(sorted(c for c in first if c != 'reference'))}")
        for split, rows in loaded.items():
            lacking = [r for r in rows if col not in r]
            if lacking and split not in absent:
                if col == tf.target:
                    no_target.add(split)
                out.add(f"{key}: column {col!r} is missing in {len(lacking)} of {len(rows)} {split} rows, "
                        f"e.g. row {lacking[0]['id']!r}")
    return no_target


def _check_gold(tf: TaskFile, split: str, rows: list[dict], raw_targets: list[Any], out: _Problems,
                seen_labels: Counter) -> None:
    """Every gold answer has the answer format."""
    labels = set(tf.labels or [])
    for r, raw in zip(rows, raw_targets):
        ref, rid = r["reference"], r["id"]
        if raw is None or (isinstance(raw, (str, list, dict)) and not raw) or not ref.strip():
            out.add(f"target: {tf.target!r} is empty in {split} row {rid!r}", kind="empty")
            continue
        if tf.answer == "label":
            seen_labels[ref] += 1
            if ref not in labels:
                out.add(f"labels: {split} row {rid!r} has {_excerpt(ref)}, which is not one of the labels "
                        f"{sorted(labels)}", kind="label")
        elif tf.answer == "labels":
            items = [x.strip() for x in ref.split(tf.label_separator.strip())]
            seen_labels.update(items)
            bad = [x for x in items if x not in labels]
            if bad:
                out.add(f"labels: {split} row {rid!r} has {_excerpt(bad[0])}, which is not one of the labels "
                        f"{sorted(labels)} (several labels are separated by {tf.label_separator.strip()!r})",
                        kind="label")
        elif tf.answer == "number":
            if _not_plain(ref):
                out.add(f"target: {split} row {rid!r} has {_excerpt(ref)}, which is not a number", kind="number")
        elif tf.answer == "json":
            _check_object(tf, split, rid, raw, out)


def _not_plain(ref: str) -> bool:
    try:
        float(ref.replace(",", "").strip())
        return False
    except ValueError:
        return True


def _check_object(tf: TaskFile, split: str, rid: str, raw: Any, out: _Problems) -> None:
    obj = raw
    if isinstance(raw, str):
        try:
            obj = json.loads(raw)
        except json.JSONDecodeError:
            obj = None
    if not isinstance(obj, dict):
        out.add(f"target: {split} row {rid!r} is not a JSON object: {_excerpt(raw)}", kind="object")
        return
    fields = tf.json_fields or {}
    extra = [k for k in obj if k not in fields]
    if extra:
        out.add(f"json_fields: {split} row {rid!r} has the field {extra[0]!r}, which json_fields does not list "
                f"(fields: {', '.join(fields)})", kind=f"extra {extra[0]}")
    for name, kind in fields.items():
        value = obj.get(name)
        if value is None:
            continue
        ok = {"string": isinstance(value, str), "boolean": isinstance(value, bool),
              "list": isinstance(value, list) and all(isinstance(v, (str, int, float)) for v in value),
              "integer": (isinstance(value, int) and not isinstance(value, bool))
                         or (isinstance(value, float) and value.is_integer())}.get(kind)
        if ok is None:  # number: a JSON number, or text that is one
            ok = field_value(value, "number") is not None and not isinstance(value, bool) and (
                isinstance(value, (int, float)) or not _not_plain(str(value)))
        if not ok:
            out.add(f"json_fields.{name}: {split} row {rid!r} has {_excerpt(value)}, which is not {kind}",
                    kind=f"type {name}")


def check_task_file(tf: TaskFile) -> CheckReport:
    """Check ``tf`` against its data; TaskFileError lists every problem, one line each."""
    loader = TaskFileLoader(tf)
    out = _Problems()
    report = CheckReport()
    if tf.data_dir and not Path(tf.data_dir).is_dir():
        out.add(f"data_dir: folder not found: {tf.data_dir}")
    for split in SPLITS:  # each split as stored first, so one unreadable split is one line
        try:
            loader.stored(split)
        except TaskDataError as e:
            out.add(f"{split}: {str(e).removeprefix(f'task {tf.id}: ').removeprefix(f'{split}: ')}")
    loaded: dict[str, list[dict]] = {}
    for split in SPLITS if not out else ():
        rows = loader(split)
        if rows is None:
            if split == "train":
                out.add("train: no train split (give train, or data_dir with a train file)")
            elif split == "dev":
                out.add("dev: no dev split, and dev_from_train is 0 (give dev, or rows to carve from train)")
            else:
                report.warnings.append("test: no test split: the run's report will have no held-out score")
        elif not rows:
            out.add(f"{split}: the {split} split is empty")
        else:
            loaded[split] = rows
    no_target = _check_columns(tf, loaded, out)
    seen_labels: Counter = Counter()
    for split, rows in loaded.items():
        counts = Counter(r["id"] for r in rows)
        dupes = [i for i, n in counts.items() if n > 1]
        if dupes:
            out.add(f"id_column: row ids must be unique; {dupes[0]!r} appears {counts[dupes[0]]} times in {split}")
        if split not in no_target:
            _check_gold(tf, split, rows, [loader.target_cell(split, r["id"]) for r in rows], out, seen_labels)
    if tf.labels and loaded and not out:
        unused = [x for x in tf.labels if not seen_labels[x]]
        if unused:
            out.add(f"labels: {unused[0]!r} never occurs in the data's {tf.target!r} column "
                    f"(labels seen: {', '.join(sorted(seen_labels)) or 'none'})")
    if out:
        lines = out.render()
        more = len(lines) - MAX_PROBLEMS
        raise TaskFileError(lines[:MAX_PROBLEMS] + ([f"... and {more} more problem(s)"] if more > 0 else []))
    report.rows = {s: len(r) for s, r in loaded.items()}
    report.overlap = list(loader.overlap)
    report.dev_carved = loader.carved
    if report.overlap:
        report.warnings.append(f"train: {len(report.overlap)} row(s) with the same prompt as a dev or test row "
                               f"were removed from train, e.g. row {report.overlap[0]!r}")
    longest = max((len(r["reference"]) for rows in loaded.values() for r in rows), default=0)
    if longest / 3 > tf.max_new_tokens:  # ~3 characters a token: a rough bound, only a warning
        report.warnings.append(f"max_new_tokens: the longest gold answer has {longest} characters; "
                               f"{tf.max_new_tokens} tokens may cut answers off")
    for w in report.warnings:
        log.warning("task %s: %s", tf.id, w)
    return report
