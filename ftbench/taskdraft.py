"""A first task file drafted from a plain-language requirement and the data, by rules (no LLM).

The rules read the columns and their values: the target is the column the requirement points at
(by name, or by what it asks for: a JSON object, a number, a label, a text) and looks like an
answer (few distinct values, lists, objects, numbers); its values decide the answer format and
metric (few distinct values: a label set and macro-F1; lists: several labels; numbers: MAE;
objects: JSON scored field by field; long text: ROUGE-L; short text: token F1). The prompt
shows the main text column and any other column the requirement names. ``render_yaml`` writes
the result with every field's documentation above it, for the user to read and edit.
"""

from __future__ import annotations

import json
import os
import re
import textwrap
from collections import Counter
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import yaml

from ftbench.formats import parse_number
from ftbench.datafiles import local_file
from ftbench.task import SPLITS
from ftbench.taskfile import SplitSource, TaskFile, _read

TARGET_NAMES = {"label", "labels", "category", "class", "target", "answer", "output", "reference", "response",
                "summary", "sentiment", "intent", "tags", "topic", "y", "gold", "result", "score", "rating"}
CUES = {  # words of a requirement -> the answer format it asks for
    "json": ("json", "extract", "fields", "structured", "object"),
    "number": ("how many", "how much", "number", "predict the price", "estimate", "rating", "count", "score"),
    "text": ("summar", "write", "generate", "translate", "rewrite", "explain", "answer the question"),
    "label": ("classify", "categor", "label", "route", "which team", "detect", "sentiment", "decide", "tag"),
}
MAX_LABELS = 30
SAMPLE = 2000  # rows profiled


@dataclass
class Column:
    """What the rules know of one column of the train data."""

    name: str
    kind: str  # json, list, number, text
    distinct: int
    mean_len: float
    values: list[Any]


def data_layout(path: str | Path) -> dict[str, Any]:
    """Task-file data keys for ``path``: ``data_dir`` for a folder of split files, else the
    one file (or a folder's only data file) as train."""
    p = Path(path).expanduser().resolve()
    if p.is_dir():
        if local_file(p, "train") is not None:
            return {"data_dir": str(p)}
        files = sorted(f for f in p.iterdir() if f.suffix in (".jsonl", ".json", ".csv", ".parquet"))
        if len(files) == 1:
            return {"train": str(files[0])}
        raise ValueError(f"--data {path}: a folder needs train.<ext> (and dev/test), or exactly one data file")
    if not p.is_file():
        raise ValueError(f"--data {path}: not found")
    return {"train": str(p)}


def _kind(values: list[Any]) -> str:
    present = [v for v in values if v not in (None, "")]
    if not present:
        return "text"
    objs = [v if isinstance(v, (dict, list)) else _json_or_none(v) for v in present]
    if all(isinstance(o, dict) for o in objs):
        return "json"
    if all(isinstance(o, list) for o in objs):
        return "list"
    if all(not isinstance(v, bool) and (isinstance(v, (int, float)) or _is_number(str(v))) for v in present):
        return "number"
    return "text"


def _json_or_none(v: Any) -> Any:
    if isinstance(v, str) and v.strip()[:1] in ("{", "["):
        try:
            return json.loads(v)
        except json.JSONDecodeError:
            return None
    return None


def _is_number(s: str) -> bool:
    try:
        float(s.replace(",", ""))
        return True
    except ValueError:
        return False


def profile(rows: list[dict]) -> list[Column]:
    names = list(dict.fromkeys(k for r in rows[:SAMPLE] for k in r))
    out = []
    for name in names:
        values = [r.get(name) for r in rows[:SAMPLE]]
        texts = [v if isinstance(v, str) else json.dumps(v, sort_keys=True) for v in values if v is not None]
        out.append(Column(name, _kind(values), len(set(texts)), sum(map(len, texts)) / max(len(texts), 1), values))
    return out


def _few(c: Column, n: int) -> bool:
    return 2 <= c.distinct <= MAX_LABELS and c.distinct <= max(2, n // 4)


def _mentioned(name: str, text: str) -> bool:
    words = name.replace("_", " ").lower()
    return bool(re.search(rf"(?<!\w){re.escape(words)}s?(?!\w)", text.lower()) or
                re.search(rf"(?<!\w){re.escape(name.lower())}(?!\w)", text.lower()))


def choose_target(cols: list[Column], describe: str, n: int) -> Column:
    """The column the requirement most likely asks the model to produce."""
    low = describe.lower()
    asked = {fmt for fmt, words in CUES.items() if any(w in low for w in words)}
    longest = max((c for c in cols if c.kind == "text"), key=lambda c: c.mean_len, default=None)

    def score(c: Column) -> float:
        s = 3.0 if c.name.lower() in TARGET_NAMES else 0.0
        s += {"json": 2, "list": 2}.get(c.kind, 0) + (2 if _few(c, n) else 0)
        if c is longest:  # the longest text is the input in nearly every task (a summary is shorter)
            s -= 2
        elif _mentioned(c.name, describe):
            s += 1.5
        if "json" in asked and c.kind == "json":
            s += 4
        if ("number" in asked and c.kind == "number" and not _few(c, n)) or ("text" in asked and c.kind == "text"
                                                                            and c is not longest):
            s += 3
        if "label" in asked and (_few(c, n) or c.kind == "list"):
            s += 3
        if c.name.lower() == "id" or c.name.lower().endswith("_id"):
            s -= 4
        return s

    return max(reversed(cols), key=score)  # ties: the later column (targets tend to come last)


def _labels(values: list[Any]) -> list[str]:
    counts = Counter(str(v).strip() for v in values if v not in (None, ""))
    return [label for label, _ in counts.most_common()]


def _json_fields(values: list[Any]) -> dict[str, str]:
    fields: dict[str, list[Any]] = {}
    for v in values:
        obj = v if isinstance(v, dict) else _json_or_none(v)
        for k, x in (obj or {}).items():
            fields.setdefault(str(k), []).append(x)
    out = {}
    for k, xs in fields.items():
        xs = [x for x in xs if x is not None]
        if xs and all(isinstance(x, bool) for x in xs):
            out[k] = "boolean"
        elif xs and all(isinstance(x, int) and not isinstance(x, bool) for x in xs):
            out[k] = "integer"
        elif xs and all(isinstance(x, (int, float)) and not isinstance(x, bool) for x in xs):
            out[k] = "number"
        elif xs and all(isinstance(x, list) for x in xs):
            out[k] = "list"
        else:
            out[k] = "string"
    return out


def _slug(text: str) -> str:
    s = re.sub(r"[^a-z0-9]+", "_", text.lower()).strip("_")
    return (s or "my_task")[:40]


def _task_id(data: str | Path) -> str:
    """A file's stem or a folder's name (its parent's, for a folder called data or the like)."""
    p = Path(data).expanduser().resolve()
    if p.is_file():
        return _slug(p.stem)
    return _slug(p.parent.name if p.name.lower() in ("data", "dataset", "datasets", "splits") else p.name)


def rule_draft(describe: str, data: str | Path) -> TaskFile:
    """A task file for ``describe`` over the data at ``data`` (a folder of split files or one file)."""
    layout = data_layout(data)
    first = layout.get("train") or str(local_file(Path(layout["data_dir"]), "train"))
    rows = _read(SplitSource(path=first), "train", "draft")
    if not rows:
        raise ValueError(f"--data {data}: no rows in {first}")
    cols = profile(rows)
    target = choose_target(cols, describe, len(rows))
    texts = [c for c in cols if c is not target and c.kind == "text" and c.name.lower() != "id"]
    main = max(texts, key=lambda c: c.mean_len, default=None)
    inputs = [c.name for c in cols if c is not target and (c is main or (_mentioned(c.name, describe)
                                                                        and c.name.lower() != "id"))]
    keys: dict[str, Any] = {}
    if target.kind == "json":
        keys = {"answer": "json", "json_fields": _json_fields(target.values), "metric": "field_accuracy"}
        ask = f"Answer with one JSON object with the fields {', '.join(keys['json_fields'])} (null when not stated)."
    elif target.kind == "list":
        labels = _labels([x for v in target.values for x in (v if isinstance(v, list) else _json_or_none(v) or [])])
        keys = {"answer": "labels", "labels": labels, "metric": "macro_f1"}
        ask = f"Answer with the labels that apply, separated by '; ', from: {', '.join(labels)}."
    elif _few(target, len(rows)):
        labels = _labels(target.values)
        keys = {"answer": "label", "labels": labels, "metric": "macro_f1"}
        ask = f"Answer with one of: {', '.join(labels)}."
    elif target.kind == "number":
        nums = [parse_number(str(v)) for v in target.values if v not in (None, "")]
        span = max(nums) - min(nums) if nums else 1.0
        keys = {"answer": "number", "metric": "mae", "metric_range": (0.0, float(span or 1.0))}
        ask = "Answer with a number."
    else:
        long = target.mean_len >= 40
        keys = {"answer": "text", "metric": "rougeL" if long else "token_f1"}
        ask = "Answer in free text." if long else "Answer briefly."
    longest = max((len(str(v)) for v in target.values if v is not None), default=8)
    lines = [describe.strip(), "", *(f"{c.replace('_', ' ').capitalize()}: {{{c}}}" for c in inputs), ask]
    return TaskFile(
        id=_task_id(data), name=textwrap.shorten(describe.strip().split(". ")[0], 80, placeholder="…"),
        description=describe.strip(), target=target.name,
        prompt="\n".join(lines), max_new_tokens=min(2048, max(8, longest // 2 + 8)), **layout, **keys)


class _Dumper(yaml.SafeDumper):
    pass


def _str(dumper: yaml.SafeDumper, s: str) -> yaml.Node:
    return dumper.represent_scalar("tag:yaml.org,2002:str", s, style="|" if "\n" in s else None)


_Dumper.add_representer(str, _str)
_Dumper.add_representer(tuple, lambda d, t: d.represent_list(list(t)))
ALWAYS = ("id", "name", "description", "target", "prompt", "answer", "metric", "max_new_tokens")


def render_yaml(tf: TaskFile, relative_to: str | Path | None = None, header: str = "") -> str:
    """The task file as YAML, each field under its documentation; local paths below
    ``relative_to`` (the folder the file is written to) relative to it, others absolute."""
    data = tf.model_dump(exclude_none=True)
    if relative_to is not None:
        base = Path(relative_to).resolve()

        def rel(p: str) -> str:  # below the file's folder: relative to it (the folder can move)
            return os.path.relpath(p, base) if not p.startswith("hub:") and Path(p).is_relative_to(base) else p

        if "data_dir" in data:
            data["data_dir"] = rel(data["data_dir"])
        for split in SPLITS:
            if split in data:
                data[split]["path"] = rel(data[split]["path"])
                data[split] = data[split]["path"] if len(data[split]) == 1 else data[split]
    out = [f"# {line}".rstrip() for line in header.splitlines()] + ([""] if header else [])
    for name, field in TaskFile.model_fields.items():
        if name not in data or (name not in ALWAYS and data[name] == field.get_default(call_default_factory=True)):
            continue
        doc = " ".join((field.description or "").split())
        out += [f"# {line}" for line in textwrap.wrap(doc, 96)]
        out.append(yaml.dump({name: data[name]}, Dumper=_Dumper, sort_keys=False, allow_unicode=True, width=100).rstrip())
    return "\n".join(out) + "\n"
