"""Reading a task's local data files (JSONL, Parquet, CSV, whole-file JSON) into rows.

Every way a file can be unreadable (missing, a folder, not UTF-8, not JSON, a row that is not a
record, a corrupt Parquet file, no permission) ends in one TaskDataError naming the file, so the
user sees one ``error:`` line, never a traceback.
"""

from __future__ import annotations

import csv
import json
from collections.abc import Iterator
from pathlib import Path

EXTENSIONS = (".jsonl", ".parquet", ".csv", ".json")


class TaskDataError(ValueError):
    """A split cannot be loaded or does not have the task's schema (message says which)."""


def read_local(path: Path) -> list[dict]:
    """Rows of one local file, by its extension (anything but .parquet/.csv/.json is JSONL)."""
    if not path.exists():
        raise TaskDataError(f"dataset file not found: {path}")
    if path.is_dir():
        raise TaskDataError(f"{path} is a folder; expected a {'/'.join(EXTENSIONS)} file")
    try:
        if path.suffix == ".parquet":
            return _read_parquet(path)
        if path.suffix == ".csv":
            return _read_csv(path)
        if path.suffix == ".json":
            return read_json_records(path)
        return _read_jsonl(path)
    except OSError as e:
        raise TaskDataError(f"{path}: cannot be read ({e.strerror or type(e).__name__})") from None


def _read_parquet(path: Path) -> list[dict]:
    import pyarrow as pa
    import pyarrow.parquet as pq

    try:
        return pq.read_table(path).to_pylist()
    except (pa.ArrowException, OSError) as e:  # ArrowInvalid for a corrupt footer, OSError for truncation
        first = str(e).splitlines()[0] if str(e) else type(e).__name__
        raise TaskDataError(f"{path}: not a readable Parquet file ({first})") from None


def _read_csv(path: Path) -> list[dict]:
    try:
        with open(path, encoding="utf-8", newline="") as f:
            return list(csv.DictReader(f))
    except (UnicodeDecodeError, csv.Error) as e:
        raise TaskDataError(f"{path}: not a readable CSV file ({e})") from None


def _read_jsonl(path: Path) -> list[dict]:
    return [row for _, row in iter_jsonl(path)]


def iter_jsonl(path: Path) -> Iterator[tuple[int, dict]]:
    """(line number, record) of every non-blank line of a UTF-8 JSONL file (a BOM is allowed)."""
    data = path.read_bytes()
    try:
        text = data.decode("utf-8").removeprefix("\ufeff")
    except UnicodeDecodeError as e:
        line = data.count(b"\n", 0, e.start) + 1
        raise TaskDataError(f"{path}:{line}: not UTF-8 text (byte 0x{data[e.start]:02x}); save it as UTF-8") from None
    for n, line in enumerate(text.split("\n"), 1):  # not splitlines(): JSON strings may hold U+2028
        if not line.strip():
            continue
        try:
            row = json.loads(line)
        except json.JSONDecodeError as e:
            raise TaskDataError(f"{path}:{n}: not valid JSON ({e.msg})") from None
        if not isinstance(row, dict):
            raise TaskDataError(f"{path}:{n}: each line must be a JSON object (a record), got {_json_kind(row)}")
        yield n, row


def _json_kind(value: object) -> str:
    return {list: "a list", str: "a string", int: "a number", float: "a number", bool: "true/false"}.get(
        type(value), "null" if value is None else type(value).__name__
    )


def read_json_records(path: Path) -> list[dict]:
    """Rows of a whole-file JSON: a list of records, or a mapping id -> record (GTA's layout)."""
    try:
        data = json.loads(path.read_text(encoding="utf-8"))
    except (UnicodeDecodeError, json.JSONDecodeError) as e:
        raise TaskDataError(f"{path}: not valid JSON ({e})") from None
    except OSError as e:
        raise TaskDataError(f"{path}: cannot be read ({e.strerror or type(e).__name__})") from None
    if isinstance(data, dict) and data and all(isinstance(v, dict) for v in data.values()):
        return [{"id": str(k), **v} for k, v in data.items()]
    if isinstance(data, list) and all(isinstance(v, dict) for v in data):
        return data
    raise TaskDataError(f"{path}: expected a JSON list of records or a mapping of id -> record")


def local_file(folder: Path, split: str) -> Path | None:
    """``folder/<split>.<ext>`` for the first extension present, else None."""
    for ext in EXTENSIONS:
        if (folder / f"{split}{ext}").is_file():
            return folder / f"{split}{ext}"
    return None
