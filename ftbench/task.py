"""The shape every FT-Bench task has, and how its splits are loaded.

A task is plain data plus two functions (answer parsing and scoring). Every task's rows are
normalised to one schema before anything else sees them: ``id`` (unique), the task's input
columns (``input`` or ``prompt``) and ``reference`` (the gold answer as text), plus any
task-specific columns the metric needs (``label``, ``labels``, ...).
"""

from __future__ import annotations

import csv
import hashlib
import json
import logging
import os
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Callable

log = logging.getLogger(__name__)

SPLITS = ("train", "dev", "test")
PACKAGE_DATA = Path(__file__).parent / "data"


class TaskDataError(ValueError):
    """A split cannot be loaded or does not have the task's schema (message says which)."""


@dataclass(frozen=True)
class HubSource:
    """Where a task lives on the Hugging Face Hub.

    Fields:
        repo_id: dataset id, e.g. ``"nyu-mll/glue"``.
        config: dataset config name, or None.
        splits: our split name -> the hub's split name (``{"train": "train", "test": "validation"}``).
        columns: hub column -> our column (renames applied after loading).
        revision: git revision to pin, or None for the default branch.
    """

    repo_id: str
    config: str | None = None
    splits: dict[str, str] = field(default_factory=dict)
    columns: dict[str, str] = field(default_factory=dict)
    revision: str | None = None


@dataclass(frozen=True)
class Task:
    """One FT-Bench task.

    Fields:
        id: short name (``sst2``).
        name: human title.
        description: the requirement as a user would write it; the Researcher starts from it.
        metric: name of the primary metric (a key of ``score``'s result).
        higher_is_better: direction of the primary metric.
        metric_range: (low, high) of the primary metric, to normalise rewards.
        prompt_template: format string over row columns giving the model input.
        completion_template: format string over row columns giving the training target.
        input_columns: columns the templates and the metric need in every split.
        max_new_tokens: generation budget at evaluation.
        parse: raw generation (and its row) -> parsed answer; never raises.
        score: (raw generations, rows) -> metrics dict holding at least ``metric``.
        hub: where the data lives on the Hub (None when only local data exists).
        local_dir: default local folder with ``{train,dev,test}.jsonl`` (overridable per split).
        dev_from_train: rows carved deterministically from train when the source has no dev split.
        source: where the data and the scoring definition come from.
        licence: the data's licence as stated by its source.
        normalize: stored row (hub or local, raw source schema or already uniform) -> uniform row;
            applied to every loaded row, so a user's copy of the source release loads as is.
        read_folder: (folder, split) -> rows or None, for sources whose release is not one
            ``{split}.jsonl`` file per split (GTA's ``dataset.json``, OpenFinData's per-subset JSON).
        hub_loader: split -> rows, replacing the generic one-repo/one-config hub load for sources
            spread over several configs or repos (TOMG) or kept as raw files (GTA).
    """

    id: str
    name: str
    description: str
    metric: str
    prompt_template: str
    completion_template: str
    input_columns: tuple[str, ...]
    parse: Callable[[str, dict], Any]
    score: Callable[[list[str], list[dict]], dict[str, float]]
    higher_is_better: bool = True
    metric_range: tuple[float, float] = (0.0, 1.0)
    max_new_tokens: int = 16
    hub: HubSource | None = None
    local_dir: Path | None = None
    dev_from_train: int = 0
    source: str = ""
    licence: str = ""
    normalize: Callable[[dict], dict] | None = None
    read_folder: Callable[[Path, str], list[dict] | None] | None = None
    hub_loader: Callable[[str], list[dict]] | None = None

    def format_prompt(self, row: dict, template: str | None = None) -> str:
        return (template or self.prompt_template).format(**row)

    def format_completion(self, row: dict, template: str | None = None) -> str:
        return (template or self.completion_template).format(**row)


def _read_local(path: Path) -> list[dict]:
    if not path.exists():
        raise TaskDataError(f"dataset file not found: {path}")
    if path.suffix == ".parquet":
        import pyarrow.parquet as pq

        return pq.read_table(path).to_pylist()
    if path.suffix == ".csv":
        try:
            with open(path, encoding="utf-8", newline="") as f:
                return list(csv.DictReader(f))
        except (UnicodeDecodeError, csv.Error) as e:
            raise TaskDataError(f"{path}: not a readable CSV file ({e})") from None
    if path.suffix == ".json":
        return _read_json_records(path)
    rows = []
    try:
        with open(path, encoding="utf-8") as f:
            for n, line in enumerate(f, 1):
                if line.strip():
                    try:
                        rows.append(json.loads(line))
                    except json.JSONDecodeError as e:
                        raise TaskDataError(f"{path}:{n}: not valid JSON ({e.msg})") from None
    except UnicodeDecodeError:
        raise TaskDataError(f"{path}: not UTF-8 text") from None
    return rows


def _read_json_records(path: Path) -> list[dict]:
    """Rows of a whole-file JSON: a list of records, or a mapping id -> record (GTA's layout)."""
    try:
        data = json.loads(path.read_text(encoding="utf-8"))
    except (UnicodeDecodeError, json.JSONDecodeError) as e:
        raise TaskDataError(f"{path}: not valid JSON ({e})") from None
    if isinstance(data, dict) and data and all(isinstance(v, dict) for v in data.values()):
        return [{"id": str(k), **v} for k, v in data.items()]
    if isinstance(data, list) and all(isinstance(v, dict) for v in data):
        return data
    raise TaskDataError(f"{path}: expected a JSON list of records or a mapping of id -> record")


def _local_file(folder: Path, split: str) -> Path | None:
    for ext in (".jsonl", ".parquet", ".csv", ".json"):
        if (folder / f"{split}{ext}").exists():
            return folder / f"{split}{ext}"
    return None


def _load_hub(task: Task, split: str) -> list[dict]:
    import datasets

    assert task.hub is not None
    hub_split = task.hub.splits[split]
    try:
        ds = datasets.load_dataset(
            task.hub.repo_id, task.hub.config, split=hub_split, revision=task.hub.revision
        )
    except Exception as e:  # offline, unknown id, gated: all the same to the user
        raise TaskDataError(
            f"task {task.id}: cannot load {task.hub.repo_id} ({split}) from the Hugging Face Hub "
            f"({type(e).__name__}); download it elsewhere and pass a local path instead "
            f"(task.data_dir or task.{split}_path)"
        ) from None
    for old, new in task.hub.columns.items():
        if old in ds.column_names and old != new:
            ds = ds.rename_column(old, new)
    rows = ds.to_list()
    for i, r in enumerate(rows):
        r.setdefault("id", f"{hub_split}/{i}")
    return rows


def _carve_rank(task: Task, row_id: str) -> str:
    return hashlib.sha256(f"{task.id}|dev|{row_id}".encode()).hexdigest()


def _folder(task: Task, paths: dict) -> Path | None:
    return Path(paths["data_dir"]) if paths.get("data_dir") else task.local_dir


def _stored_split(task: Task, split: str, paths: dict) -> list[dict] | None:
    """Rows of a split as its source stores them, or None when the source has no such split.

    An explicit per-split path wins; else a local folder (the user's ``data_dir`` or the task's
    packaged data) supplies every split, with no fallback to the hub so that splits are never
    mixed from two sources; else the hub.
    """
    rows = _raw_split(task, split, paths)
    return None if rows is None else _prepare(task, rows, split)


def _raw_split(task: Task, split: str, paths: dict) -> list[dict] | None:
    if paths.get(split):
        p = Path(paths[split])
        if p.is_dir():
            f = _local_file(p, split)
            if f is None and task.read_folder is not None:
                return task.read_folder(p, split)
            return _read_local(f or p)
        return _read_local(p)
    folder = _folder(task, paths)
    if folder is not None:
        if not folder.is_dir():
            raise TaskDataError(f"task {task.id}: data folder not found: {folder}")
        f = _local_file(folder, split)
        if f is not None:
            return _read_local(f)
        return task.read_folder(folder, split) if task.read_folder is not None else None
    if task.hub_loader is not None:
        try:
            return task.hub_loader(split)
        except TaskDataError:
            raise
        except Exception as e:  # offline, unknown id, gated: all the same to the user
            raise TaskDataError(
                f"task {task.id}: cannot load its {split} split from the Hugging Face Hub "
                f"({type(e).__name__}); download it elsewhere and pass a local folder instead"
            ) from None
    if task.hub is not None and split in task.hub.splits:
        return _load_hub(task, split)
    return None


def _prepare(task: Task, rows: list[dict], split: str) -> list[dict]:
    """Give rows without an id a positional one, then map them to the uniform schema."""
    rows = [r if "id" in r else {**r, "id": f"{split}/{i}"} for i, r in enumerate(rows)]
    if task.normalize is None:
        return rows
    try:
        return [task.normalize(r) for r in rows]
    except (KeyError, TypeError, ValueError) as e:
        raise TaskDataError(
            f"task {task.id}: the {split} split does not have the source's schema "
            f"({type(e).__name__}: {e})"
        ) from None


def _has_stored_dev(task: Task, paths: dict) -> bool:
    if paths.get("dev"):
        return True
    folder = _folder(task, paths)
    if folder is not None:
        if _local_file(folder, "dev") is not None:
            return True
        return task.read_folder is not None and folder.is_dir() and task.read_folder(folder, "dev") is not None
    return task.hub is not None and "dev" in task.hub.splits


def _carved_ids(task: Task, train: list[dict]) -> list[str]:
    """Ids of the train rows that form dev: ``dev_from_train`` of them, but never more than a
    fifth of a small train set, so training data is left."""
    ids = sorted((str(r["id"]) for r in train), key=lambda i: _carve_rank(task, i))
    return ids[: min(task.dev_from_train, len(ids) // 5)]


def load_split(
    task: Task,
    split: str,
    paths: dict[str, str | os.PathLike] | None = None,
    limit: int | None = None,
) -> list[dict]:
    """Rows of ``split`` (train, dev or test), schema-checked, in stored order.

    ``paths`` may hold ``data_dir`` (a folder with ``{split}.jsonl``/``.parquet``) and per-split
    files (``train``, ``dev``, ``test``) that override it. Without them the task's packaged data
    and then its hub source are used. When the source has no dev split, dev is carved from
    train (the ``dev_from_train`` rows ranked first by a hash of their id) and those rows are
    removed from train, so dev never overlaps train and is never taken from test.
    """
    if split not in SPLITS:
        raise TaskDataError(f"unknown split {split!r}; expected one of {', '.join(SPLITS)}")
    paths = {k: v for k, v in (paths or {}).items() if v}
    carved = task.dev_from_train > 0 and not _has_stored_dev(task, paths)
    if split == "dev" and carved:
        train = _stored_split(task, "train", paths) or []
        check_rows(task, train, "train")
        by_id = {str(r["id"]): r for r in train}
        rows = [by_id[i] for i in _carved_ids(task, train)]
    else:
        rows = _stored_split(task, split, paths)
        if rows is not None:
            check_rows(task, rows, split)
        if split == "train" and carved and rows:
            held = set(_carved_ids(task, rows))
            rows = [r for r in rows if str(r["id"]) not in held]
    if rows is None:
        raise TaskDataError(f"task {task.id} has no {split} split")
    check_rows(task, rows, split)
    return rows[:limit] if limit else rows


def check_rows(task: Task, rows: list[dict], split: str) -> None:
    """Raise TaskDataError naming the problem when rows are empty or miss the task's columns."""
    if not rows:
        raise TaskDataError(f"task {task.id}: the {split} split is empty")
    needed = ("id", *task.input_columns)
    missing = [c for c in needed if c not in rows[0]]
    if missing:
        raise TaskDataError(
            f"task {task.id}: the {split} split lacks column(s) {', '.join(missing)} "
            f"(has {', '.join(sorted(rows[0]))})"
        )


def own_data_paths(task: Task, paths: dict[str, str | os.PathLike | None]) -> set[Path]:
    """The files and folders a task's splits are read from, resolved: the per-split files and the
    data folder (the user's ``data_dir``, else the task's packaged one). Whoever reads data for
    training reads the train split through ``load_split`` (which keeps dev rows carved from
    train out of it) and dev and test never, so none of these may be read by path."""
    clean = {k: v for k, v in paths.items() if v}
    own = {Path(v).expanduser().resolve() for v in clean.values()}
    folder = clean.get("data_dir") or task.local_dir
    if folder is not None:
        own.add(Path(folder).expanduser().resolve())
    local = getattr(task.hub_loader, "local_paths", None)  # a task file's own data files and folders
    if local is not None:
        own |= {Path(x).resolve() for x in local()}
    return own
