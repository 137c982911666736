"""The shape every FT-Bench task has, and how its splits are loaded.

A task is plain data plus two functions (answer parsing and scoring). Every task's rows are
normalised to one schema before anything else sees them: ``id`` (unique), the task's input
columns (``input`` or ``prompt``) and ``reference`` (the gold answer as text), plus any
task-specific columns the metric needs (``label``, ``labels``, ...).
"""

from __future__ import annotations

import hashlib
import logging
import os
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Callable

from ftbench.datafiles import EXTENSIONS, TaskDataError, local_file, read_local

__all__ = [
    "SPLITS", "PACKAGE_DATA", "HubSource", "Task", "TaskDataError", "MissingSplitError", "load_split",
    "check_rows", "dev_source", "declared_dev_source", "withheld_test_ids",
]

log = logging.getLogger(__name__)

SPLITS = ("train", "dev", "test")
PACKAGE_DATA = Path(__file__).parent / "data"


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
        source_splits: the splits the source publishes (what ``python -m ftbench list`` reports
            when no local data is given; loading always looks at the data itself).
        dev_from_train: rows carved deterministically from train when the source has no dev split.
        dev_from_test: for a source with neither a dev split nor training data (LawBench): rows
            carved from test as dev, per value of ``dev_strata`` when set. They are removed from
            test for good: ``load_split(task, "test")`` never returns them, so every test score
            of the task excludes them. Never set together with ``dev_from_train``.
        dev_strata: column whose every value gets ``dev_from_test`` dev rows (LawBench's
            ``task_id``: every sub-task is in dev); None carves ``dev_from_test`` rows in all.
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
    source_splits: tuple[str, ...] = ("train", "dev", "test")
    dev_from_train: int = 0
    dev_from_test: int = 0
    dev_strata: str | None = None
    source: str = ""
    licence: str = ""
    normalize: Callable[[dict], dict] | None = None
    read_folder: Callable[[Path, str], list[dict] | None] | None = None
    hub_loader: Callable[[str], list[dict]] | None = None

    def __post_init__(self) -> None:
        if self.dev_from_train and self.dev_from_test:
            raise ValueError(f"task {self.id}: dev is carved from train or from test, not both")

    def format_prompt(self, row: dict, template: str | None = None) -> str:
        return (template or self.prompt_template).format(**row)

    def format_completion(self, row: dict, template: str | None = None) -> str:
        return (template or self.completion_template).format(**row)


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


class MissingSplitError(TaskDataError):
    """The data has no such split at all (as opposed to a split that exists but is unusable)."""


DEV_PUBLISHED, DEV_FROM_TRAIN, DEV_FROM_TEST, DEV_NONE = "published", "train", "test", "none"
DEV_KEEP_FACTOR = 4  # a carved dev slice may take at most a fifth of the rows it comes from


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


def _no_file(task: Task, folder: Path, split: str) -> TaskDataError:
    names = ", ".join(f"{split}{ext}" for ext in EXTENSIONS)
    return MissingSplitError(f"task {task.id}: {folder} holds no {split} split (looked for {names}"
                             f"{' or the source release layout' if task.read_folder else ''})")


def _raw_split(task: Task, split: str, paths: dict) -> list[dict] | None:
    if paths.get(split):
        p = Path(paths[split])
        if not p.is_dir():
            return read_local(p)
        f = local_file(p, split)
        rows = read_local(f) if f else task.read_folder(p, split) if task.read_folder else None
        if rows is None:  # the user named this folder for this split: it must hold it
            raise _no_file(task, p, split)
        return rows
    folder = _folder(task, paths)
    if folder is not None:
        if not folder.is_dir():
            raise TaskDataError(f"task {task.id}: data folder not found: {folder}")
        f = local_file(folder, split)
        if f is not None:
            return read_local(f)
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
    except (KeyError, TypeError, ValueError, AttributeError) as e:
        raise TaskDataError(
            f"task {task.id}: the {split} split does not have the source's schema "
            f"({type(e).__name__}: {e})"
        ) from None


def _has_stored_dev(task: Task, paths: dict) -> bool:
    if paths.get("dev"):
        return True
    folder = _folder(task, paths)
    if folder is not None:
        if local_file(folder, "dev") is not None:
            return True
        return task.read_folder is not None and folder.is_dir() and task.read_folder(folder, "dev") is not None
    return task.hub is not None and "dev" in task.hub.splits


def _clean(paths: dict | None) -> dict:
    return {k: v for k, v in (paths or {}).items() if v}


def _carved_dev(task: Task) -> str:
    if task.dev_from_train:
        return DEV_FROM_TRAIN
    return DEV_FROM_TEST if task.dev_from_test else DEV_NONE


def dev_source(task: Task, paths: dict[str, str | os.PathLike] | None = None) -> str:
    """Where the dev split comes from with these paths: ``"published"`` (a dev split of the source,
    or one the user gives), ``"train"`` or ``"test"`` (carved by a hash of the id), or ``"none"``."""
    return DEV_PUBLISHED if _has_stored_dev(task, _clean(paths)) else _carved_dev(task)


def declared_dev_source(task: Task) -> str:
    """Where dev comes from given the splits the source publishes (``source_splits``), before any
    data is read."""
    return DEV_PUBLISHED if "dev" in task.source_splits else _carved_dev(task)


def _provide_dev(task: Task) -> str:
    return f"provide a dev split for task {task.id} (dev.jsonl in its data folder, or a dev file path)"


def _carved_ids(task: Task, train: list[dict]) -> list[str]:
    """Ids of the train rows that form dev: ``dev_from_train`` of them, but never more than a
    fifth of a small train set, so training data is left."""
    ids = sorted((str(r["id"]) for r in train), key=lambda i: _carve_rank(task, i))
    n = min(task.dev_from_train, len(ids) // (DEV_KEEP_FACTOR + 1))
    if n == 0:
        raise TaskDataError(f"task {task.id}: its train split has only {len(ids)} row(s), too few to "
                            f"carve a dev split from; {_provide_dev(task)}")
    return ids[:n]


def _carved_from_test(task: Task, test: list[dict]) -> list[str]:
    """Ids of the test rows that form dev: ``dev_from_test`` per stratum, the ones ranked first by
    a hash of their id, listed round-robin over the strata (sorted) so that any prefix of dev (a
    dev limit) covers every stratum evenly. A stratum too small to give them and keep four times
    as many for test is refused: dev must stay a small slice."""
    strata: dict[str, list[str]] = {}
    for r in test:
        strata.setdefault(str(r.get(task.dev_strata, "")) if task.dev_strata else "", []).append(str(r["id"]))
    k = task.dev_from_test
    for name, ids in strata.items():
        if len(ids) < k * (DEV_KEEP_FACTOR + 1):
            what = f"rows with {task.dev_strata} {name}" if task.dev_strata else "rows"
            raise TaskDataError(
                f"task {task.id}: its test split has only {len(ids)} {what}, too few to carve {k} dev "
                f"rows from and keep {DEV_KEEP_FACTOR} times as many for test; {_provide_dev(task)}"
            )
        ids.sort(key=lambda i: _carve_rank(task, i))
    return [strata[name][r] for r in range(k) for name in sorted(strata)]


def _carve(task: Task, parent: str, rows: list[dict]) -> list[str]:
    """Ids of the ``parent`` rows that form dev; TaskDataError when there are too few to carve."""
    return _carved_ids(task, rows) if parent == "train" else _carved_from_test(task, rows)


def _held_out(task: Task, parent: str, rows: list[dict]) -> set[str]:
    """The dev ids to leave out of ``parent``: none when dev cannot be carved (too few rows), in
    which case loading dev fails with the reason and ``parent`` is used whole."""
    try:
        return set(_carve(task, parent, rows))
    except TaskDataError:
        return set()


def withheld_test_ids(task: Task, paths: dict[str, str | os.PathLike] | None = None) -> frozenset[str]:
    """Ids of the test rows withheld as dev with these paths (empty unless dev is carved from
    test). ``load_split(task, "test")`` never returns them; reports say how many were withheld."""
    paths = _clean(paths)
    if dev_source(task, paths) != DEV_FROM_TEST:
        return frozenset()
    return frozenset(_held_out(task, "test", _checked(task, "test", paths)))


def _checked(task: Task, split: str, paths: dict) -> list[dict]:
    rows = _stored_split(task, split, paths)
    if rows is None:
        folder = _folder(task, paths)
        raise _no_file(task, folder, split) if folder else MissingSplitError(f"task {task.id} has no {split} split")
    check_rows(task, rows, split)
    return rows


def load_split(
    task: Task,
    split: str,
    paths: dict[str, str | os.PathLike] | None = None,
    limit: int | None = None,
) -> list[dict]:
    """Rows of ``split`` (train, dev or test), schema-checked, in stored order.

    ``paths`` may hold ``data_dir`` (a folder with ``{split}.jsonl``/``.parquet``) and per-split
    files (``train``, ``dev``, ``test``) that override it. Without them the task's packaged data
    and then its hub source are used. When there is no dev split, dev is carved by a hash of the
    id: from train when the task has training data (``dev_from_train``; those rows leave train, and
    dev is never taken from test), else from test (``dev_from_test``; those rows leave test for
    good). ``limit`` keeps the first rows only.
    """
    if split not in SPLITS:
        raise TaskDataError(f"unknown split {split!r}; expected one of {', '.join(SPLITS)}")
    if limit is not None and limit < 1:
        raise ValueError(f"limit must be a positive number of rows or None, not {limit}")
    paths = _clean(paths)
    parent = {DEV_FROM_TRAIN: "train", DEV_FROM_TEST: "test"}.get(dev_source(task, paths))
    if split == "dev" and parent:
        rows = _checked(task, parent, paths)
        by_id = {str(r["id"]): r for r in rows}
        rows = [by_id[i] for i in _carve(task, parent, rows)]
    else:
        rows = _checked(task, split, paths)
        if split == parent:
            held = _held_out(task, split, rows)
            rows = [r for r in rows if str(r["id"]) not in held]
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
