"""The local data catalog the LLM Researcher's tools show: every source this run can reach, with
its exact ``source`` string for recipes, row count, columns and a few truncated example values.
No Ray here.

Sources are the task's own train split (``task:train``; dev and test are listed as held out so
the model knows they exist and must not be trained on), and the files under ``task.extra_sources``
(files, or folders of them one level deep, so the FT-Bench data folder lists the other tasks).
Files of the run's own task found there are left out: its dev/test rows must never become training
data by another name. Cell values are dataset text, i.e. untrusted; callers quote them as data.
"""

from __future__ import annotations

import csv
import json
import logging
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from ftbench.task import Task

log = logging.getLogger(__name__)

DATA_SUFFIXES = (".jsonl", ".json", ".csv", ".parquet", ".arrow")
MAX_ENTRIES = 64  # a catalog longer than this is cut (a huge folder must not flood the prompt)
EXAMPLES = 2  # example rows per entry
VALUE_CAP = 120  # characters of one example value
MAX_COLUMNS = 40


@dataclass
class CatalogEntry:
    """One source the run can reach. ``source`` is None for splits that may not be trained on."""

    name: str
    source: str | None
    rows: int | None
    columns: list[str] = field(default_factory=list)
    examples: list[dict[str, str]] = field(default_factory=list)
    note: str = ""

    def brief(self) -> dict[str, Any]:
        """The entry without example values (for the list view)."""
        d = asdict(self)
        d.pop("examples")
        return {k: v for k, v in d.items() if v not in ("", None) or k in ("source", "rows")}


def _clip(value: Any) -> str:
    text = value if isinstance(value, str) else json.dumps(value, ensure_ascii=False, default=str)
    return text[:VALUE_CAP] + "…" if len(text) > VALUE_CAP else text


def _examples(rows: list[dict]) -> list[dict[str, str]]:
    return [{k: _clip(v) for k, v in list(r.items())[:MAX_COLUMNS]} for r in rows[:EXAMPLES]]


def _columns(rows: list[dict]) -> list[str]:
    cols: dict[str, None] = {}
    for r in rows[:EXAMPLES + 1]:
        cols.update(dict.fromkeys(r))
    return list(cols)[:MAX_COLUMNS]


def describe_file(path: Path) -> tuple[int | None, list[str], list[dict[str, str]]]:
    """(rows, columns, examples) of one local data file or ``save_to_disk`` folder, reading as
    little as the format allows (JSONL lines are counted, not parsed; parquet from its footer)."""
    suffix = path.suffix.lower()
    if path.is_dir():
        import datasets

        ds = datasets.load_from_disk(str(path))  # memory-mapped: cheap however large
        if isinstance(ds, datasets.DatasetDict):
            ds = ds["train"] if "train" in ds else next(iter(ds.values()))
        head = ds.select(range(min(EXAMPLES, len(ds)))).to_list()
        return len(ds), list(ds.column_names)[:MAX_COLUMNS], _examples(head)
    if suffix == ".jsonl":
        head: list[dict] = []
        n = 0
        with open(path, encoding="utf-8") as f:
            for line in f:
                if line.strip():
                    n += 1
                    if len(head) < EXAMPLES + 1:
                        row = json.loads(line)
                        head.append(row if isinstance(row, dict) else {"value": row})
        return n, _columns(head), _examples(head)
    if suffix == ".json":
        data = json.loads(path.read_text(encoding="utf-8"))
        if isinstance(data, dict) and all(isinstance(v, dict) for v in data.values()):
            data = [{"id": k, **v} for k, v in data.items()]
        if not isinstance(data, list) or not all(isinstance(r, dict) for r in data):
            raise ValueError("not a JSON list of records")
        return len(data), _columns(data), _examples(data)
    if suffix == ".csv":
        with open(path, encoding="utf-8", newline="") as f:
            reader = csv.DictReader(f)
            head, n = [], 0
            for row in reader:
                n += 1
                if len(head) < EXAMPLES + 1:
                    head.append(row)
            return n, list(reader.fieldnames or [])[:MAX_COLUMNS], _examples(head)
    if suffix == ".parquet":
        import pyarrow.parquet as pq

        pf = pq.ParquetFile(path)
        head = next(pf.iter_batches(batch_size=EXAMPLES), None)
        rows = head.to_pylist() if head is not None else []
        return pf.metadata.num_rows, list(pf.schema_arrow.names)[:MAX_COLUMNS], _examples(rows)
    if suffix == ".arrow":
        import pyarrow as pa

        with pa.memory_map(str(path)) as f:
            try:
                table = pa.ipc.open_stream(f).read_all()
            except pa.ArrowInvalid:
                f.seek(0)
                table = pa.ipc.open_file(f).read_all()
        return table.num_rows, list(table.column_names)[:MAX_COLUMNS], _examples(table.slice(0, EXAMPLES).to_pylist())
    raise ValueError(f"unsupported file type {suffix!r}")


def _task_entries(task_or_name: "str | Task", paths: dict[str, str | None]) -> tuple[list[CatalogEntry], set[Path]]:
    """Entries for the task's own splits, and the files/folders they come from (to skip later)."""
    from ftbench.task import TaskDataError, load_split, own_data_paths
    from ftbench.tasks import get_task

    task = get_task(task_or_name) if isinstance(task_or_name, str) else task_or_name
    clean = {k: v for k, v in paths.items() if v}
    own = own_data_paths(task, clean)
    out = []
    for split in ("train", "dev", "test"):
        try:
            rows = load_split(task, split, clean)
        except TaskDataError as e:
            out.append(CatalogEntry(name=f"task:{split}", source=None, rows=None, note=f"unavailable: {str(e)[:200]}"))
            continue
        if split == "train":
            entry = CatalogEntry(name="task:train", source="task:train", rows=len(rows), columns=_columns(rows),
                                 examples=_examples(rows), note=f"the {task.id} task's own training data")
        else:  # counts and columns only: no values from held-out rows go into prompts
            entry = CatalogEntry(name=f"task:{split}", source=None, rows=len(rows), columns=_columns(rows),
                                 note=f"held out ({'scores every trial' if split == 'dev' else 'final report'}): never train on it")
        out.append(entry)
    return out, own


def _data_files(root: Path) -> list[Path]:
    """Data files in ``root`` and in its direct subfolders (sorted, so the catalog is stable)."""
    if root.is_file() or (root.is_dir() and (root / "state.json").exists()):
        return [root]
    found = []
    for p in sorted(root.iterdir()):
        if p.is_file() and p.suffix.lower() in DATA_SUFFIXES:
            found.append(p)
        elif p.is_dir():
            if (p / "state.json").exists() or (p / "dataset_dict.json").exists():
                found.append(p)
            else:
                found += [q for q in sorted(p.iterdir()) if q.is_file() and q.suffix.lower() in DATA_SUFFIXES]
    return found


def build_catalog(task: "str | Task | None", paths: dict[str, str | None] | None = None,
                  extra_sources: list[str] | None = None) -> list[CatalogEntry]:
    """Every source the run can reach, the task's own splits first (``task``: an FT-Bench id or
    the run's resolved task). Never raises for one bad source: it is listed with the reason
    instead, so the model sees what is not usable."""
    entries: list[CatalogEntry] = []
    own: set[Path] = set()
    task_name = task if isinstance(task, str) or task is None else task.id
    if task:
        try:
            entries, own = _task_entries(task, paths or {})
        except KeyError as e:
            entries = [CatalogEntry(name="task:train", source=None, rows=None, note=str(e.args[0])[:200])]
    for raw in extra_sources or []:
        if raw.startswith("hub:"):  # read only when a recipe loads it (online)
            entries.append(CatalogEntry(name=raw, source=raw, rows=None, note="Hugging Face Hub dataset (online only)"))
            continue
        root = Path(raw).expanduser().resolve()
        if not root.exists():
            entries.append(CatalogEntry(name=str(root), source=None, rows=None, note="not found"))
            continue
        for p in _data_files(root):
            if len(entries) >= MAX_ENTRIES:
                log.warning("local data catalog cut at %d entries", MAX_ENTRIES)
                return entries
            # The run's own task data, reached by another path, is left out: its dev/test rows
            # would leak into training; its train split is task:train already.
            if p in own or p.parent in own or (task_name and p.parent.name == task_name):
                continue
            if p == root:
                name = p.stem if p.is_file() else p.name
            else:
                name = p.stem if p.parent == root else f"{p.parent.name}/{p.stem}"
            if any(e.name == name for e in entries):
                name = str(p)  # two roots with the same layout: the path tells them apart
            try:
                rows, cols, ex = describe_file(p)
                entries.append(CatalogEntry(name=name, source=str(p), rows=rows, columns=cols, examples=ex))
            except (OSError, ValueError, UnicodeDecodeError) as e:
                entries.append(CatalogEntry(name=name, source=None, rows=None, note=f"unreadable: {type(e).__name__}: {str(e)[:150]}"))
            except Exception as e:  # e.g. a folder that is not a saved dataset
                entries.append(CatalogEntry(name=name, source=None, rows=None, note=f"unreadable: {type(e).__name__}"))
    return entries
