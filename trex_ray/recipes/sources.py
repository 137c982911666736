"""Reading recipe sources into ``datasets.Dataset`` objects, and fingerprinting them for the cache.

Local files are read with pyarrow directly (not ``datasets.load_dataset``), which is fast, writes
nothing to the Hugging Face cache and gives errors we can turn into one clear line. Oversized
cells are skipped and counted rather than loaded: one 10 MB row would otherwise dominate memory
and tokenisation for no training value.
"""

from __future__ import annotations

import hashlib
import io
import json
import logging
from pathlib import Path
from typing import Any

import datasets
import pyarrow as pa

from ftbench.task import SPLITS, Task, TaskDataError, load_split
from ftbench.taskfile import TaskFileLoader
from trex_ray.recipes.ops import TASK_DEV, TASK_TRAIN, MixOp, RecipeError, Source, hub_id_problem, template_fields

log = logging.getLogger(__name__)

MAX_CELL_CHARS = 1_000_000  # rows with a longer text field are skipped (counted in the stats)
LOCAL_KINDS = (".jsonl", ".json", ".csv", ".parquet", ".arrow")


# ---------------------------------------------------------------- reading
def _read_bytes_utf8(p: Path, where: str) -> bytes:
    try:
        data = p.read_bytes()
    except OSError as e:
        raise RecipeError(f"{where}: cannot read {p} ({e.strerror or e})") from None
    try:
        data.decode("utf-8")
    except UnicodeDecodeError as e:
        raise RecipeError(f"{where}: {p} is not UTF-8 text (bad byte at offset {e.start})") from None
    return data


def _read_local(p: Path, where: str) -> pa.Table:
    suffix = p.suffix.lower()
    try:
        if suffix == ".jsonl":
            import pyarrow.json as pj

            data = _read_bytes_utf8(p, where)
            opts = pj.ReadOptions(block_size=max(1 << 20, len(data) + 1))  # whole rows, even huge ones
            return pj.read_json(pa.BufferReader(data), read_options=opts)
        if suffix == ".json":
            rows = json.loads(_read_bytes_utf8(p, where))
            if not isinstance(rows, list) or not all(isinstance(r, dict) for r in rows):
                raise RecipeError(f"{where}: {p} must hold a JSON list of records")
            return pa.Table.from_pylist(rows)
        if suffix == ".csv":
            import pyarrow.csv as pc

            return pc.read_csv(io.BytesIO(_read_bytes_utf8(p, where)))
        if suffix == ".parquet":
            import pyarrow.parquet as pq

            return pq.read_table(p)
        if suffix == ".arrow":
            with pa.memory_map(str(p)) as f:
                try:
                    return pa.ipc.open_stream(f).read_all()  # the format datasets writes
                except pa.ArrowInvalid:
                    f.seek(0)
                    return pa.ipc.open_file(f).read_all()
    except RecipeError:
        raise
    except (pa.ArrowException, OSError, ValueError) as e:
        raise RecipeError(f"{where}: cannot read {p} ({type(e).__name__}: {str(e).splitlines()[0][:300]})") from None
    raise RecipeError(f"{where}: unsupported file type {p.suffix!r} (use one of {', '.join(LOCAL_KINDS)})")


def _read_hub(src: Source, where: str) -> pa.Table:
    repo = src.source[len("hub:"):]
    problem = hub_id_problem(repo)  # checked on the driver too; here again, where the read happens
    if problem:
        raise RecipeError(f"{where}: {problem}")
    try:
        ds = datasets.load_dataset(repo, src.config, split=src.split, revision=src.revision)
    except Exception as e:  # offline, unknown id, gated: all the same to the user
        raise RecipeError(
            f"{where}: cannot load {repo!r} from the Hugging Face Hub ({type(e).__name__}); download it "
            f"elsewhere and give its local path as the source (a .jsonl/.csv/.parquet/.arrow file)"
        ) from None
    return ds.data.table


def _drop_huge(table: pa.Table) -> tuple[pa.Table, int]:
    """Rows whose text cells are all at most MAX_CELL_CHARS long, and how many were skipped."""
    import pyarrow.compute as pc

    mask = None
    for name in table.column_names:
        col = table.column(name)
        if pa.types.is_string(col.type) or pa.types.is_large_string(col.type):
            ok = pc.fill_null(pc.less_equal(pc.utf8_length(col), MAX_CELL_CHARS), True)
            mask = ok if mask is None else pc.and_(mask, ok)
    if mask is None:
        return table, 0
    kept = table.filter(mask)
    return kept, table.num_rows - kept.num_rows


def load_source(src: Source, task: Task, paths: dict, where: str, limit: int | None = None,
                stats: dict[str, Any] | None = None) -> datasets.Dataset:
    """Rows of one source (renamed as the source asks); ``limit`` keeps the first rows only."""
    if src.source in (TASK_TRAIN, TASK_DEV):  # the recipe's own rules keep dev rows out of training
        try:
            rows = load_split(task, src.source.removeprefix("task:"), paths, limit=limit)
        except TaskDataError as e:
            raise RecipeError(f"{where}: {e}") from None
        table = pa.Table.from_pylist(rows)
    elif src.source.startswith("hub:"):
        table = _read_hub(src, where)
    else:
        p = Path(src.source).expanduser()
        if p.is_dir():
            table = _read_saved(p, src, where)
        elif not p.exists():
            raise RecipeError(f"{where}: file not found: {p} (sources are task:train, hub:<id> or a local "
                              f"{'/'.join(LOCAL_KINDS)} file)")
        else:
            table = _read_local(p, where)
    if limit is not None:
        table = table.slice(0, limit)
    table, skipped = _drop_huge(table)
    if skipped:
        log.warning("%s: skipped %d row(s) with a text field over %d characters", where, skipped, MAX_CELL_CHARS)
        if stats is not None:
            stats["skipped_huge_rows"] = stats.get("skipped_huge_rows", 0) + skipped
    missing = [old for old in src.rename if old not in table.column_names]
    if missing:
        raise RecipeError(f"{where}: rename names column(s) {', '.join(missing)} not in {src.source} "
                          f"(columns: {', '.join(table.column_names)})")
    if src.rename:
        table = table.rename_columns([src.rename.get(c, c) for c in table.column_names])
    ds = datasets.Dataset(table)
    return derive(ds, src.derive, where) if src.derive else ds


def derive(ds: datasets.Dataset, templates: dict[str, str], where: str) -> datasets.Dataset:
    """Columns made (or replaced) from templates over each row's columns."""
    fields = {f for t in templates.values() for f in template_fields(t)}
    missing = sorted(fields - set(ds.column_names))
    if missing:
        raise RecipeError(f"{where}: derive names column(s) {', '.join(missing)} not in the source "
                          f"(columns: {', '.join(ds.column_names)})")

    def make(row: dict) -> dict:
        return {name: t.format(**row) for name, t in templates.items()}

    # a replaced column is removed first (its new values are text, whatever its old type)
    return ds.map(make, remove_columns=[c for c in templates if c in ds.column_names])


def _read_saved(p: Path, src: Source, where: str) -> pa.Table:
    try:
        ds = datasets.load_from_disk(str(p))
    except Exception as e:
        raise RecipeError(f"{where}: {p} is a folder but not a saved dataset ({type(e).__name__})") from None
    if isinstance(ds, datasets.DatasetDict):
        if src.split not in ds:
            raise RecipeError(f"{where}: {p} has no split {src.split!r} (has {', '.join(ds)})")
        ds = ds[src.split]
    return ds.data.table


# ---------------------------------------------------------------- combining
def concat(parts: list[datasets.Dataset], where: str) -> datasets.Dataset:
    """Rows of all parts, on the columns they all share (cast to the first part's types)."""
    common = [c for c in parts[0].column_names if all(c in p.column_names for p in parts[1:])]
    if not common:
        raise RecipeError(f"{where}: the sources share no column; rename them to match")
    parts = [p.select_columns(common) for p in parts]
    features = parts[0].features
    cast = []
    for i, p in enumerate(parts):
        if p.features != features:
            try:
                p = p.cast(features)
            except (ValueError, TypeError, pa.ArrowException) as e:
                raise RecipeError(f"{where}: part {i} has column types that do not match the first part "
                                  f"({str(e).splitlines()[0][:200]})") from None
        cast.append(p)
    return datasets.concatenate_datasets(cast)


def mix(step: MixOp, task: Task, paths: dict, where: str, limit: int | None,
        stats: dict[str, Any]) -> datasets.Dataset:
    """A seeded sample of each source in the step's proportions, shuffled together."""
    parts = [load_source(s, task, paths, f"{where} source {i}", limit, stats) for i, s in enumerate(step.sources)]
    ratios = [s.ratio for s in step.sources]
    most = int(min(len(p) / r for p, r in zip(parts, ratios)))  # rows available without repeats
    n = most if step.n is None else min(step.n, most) if limit is not None else step.n  # dry run: scale down
    exact = [n * r for r in ratios]
    counts = [int(x) for x in exact]
    for i in sorted(range(len(exact)), key=lambda i: counts[i] - exact[i])[: n - sum(counts)]:
        counts[i] += 1  # largest remainders get the leftover rows, so the parts sum to n
    for i, (p, c) in enumerate(zip(parts, counts)):
        if c > len(p):
            raise RecipeError(f"{where}: source {i} ({step.sources[i].source}) has {len(p)} rows but its ratio "
                              f"{ratios[i]:g} of n={n} needs {c}; lower n or the ratio")
    sampled = [p.shuffle(seed=step.seed).select(range(c)) for p, c in zip(parts, counts)]
    stats["mix_rows"] = counts
    return concat(sampled, where).shuffle(seed=step.seed).flatten_indices()


# ---------------------------------------------------------------- fingerprints
def _stat_files(p: Path, deep: bool = True) -> list[str]:
    """Size and mtime of a file, or of the files in a folder (hidden ones skipped; subfolders
    only when ``deep``, so a run's own cache kept beside the data never changes the key)."""
    if p.is_file():
        st = p.stat()
        return [f"{p.resolve()}|{st.st_size}|{st.st_mtime_ns}"]
    if p.is_dir():
        files = sorted(p.rglob("*") if deep else p.iterdir())[:1000]
        return [x for f in files if f.is_file() and not f.name.startswith(".") for x in _stat_files(f)]
    return [f"{p}|missing"]


def task_fingerprint(task: Task, paths: dict) -> str:
    """Identity of the task's data (all splits: train feeds rows, dev/test feed decontamination),
    from file sizes and modification times, so a cache lookup never has to read the data."""
    parts = [f"task|{task.id}|{task.dev_from_train}|{task.hub}"]
    deep = task.read_folder is not None  # such tasks keep their splits in subfolders
    for key in (*SPLITS, "data_dir"):
        if paths.get(key):
            parts += _stat_files(Path(paths[key]).expanduser(), deep)
    if not paths.get("data_dir") and task.local_dir is not None:
        parts += _stat_files(task.local_dir, deep)
    if isinstance(task.hub_loader, TaskFileLoader):  # a task file: its definition and its files
        parts.append(task.hub_loader.fingerprint())
    return hashlib.sha256("\n".join(parts).encode()).hexdigest()


def source_fingerprint(src: Source, task: Task, paths: dict) -> str:
    if src.source in (TASK_TRAIN, TASK_DEV):
        ident = [task_fingerprint(task, paths)] + ([TASK_DEV] if src.source == TASK_DEV else [])
    elif src.source.startswith("hub:"):
        ident = [src.source, str(src.config), src.split, str(src.revision)]
    else:
        ident = _stat_files(Path(src.source).expanduser())
    return hashlib.sha256("\n".join(ident).encode()).hexdigest()
