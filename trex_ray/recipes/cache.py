"""A content-addressed cache of recipe step outputs, as Parquet files.

Each step's key hashes its input's key with the step itself, so a re-run, or a child recipe that
shares a prefix of steps with its parent, picks up at the last step already built. Files are
written to a temporary name and moved into place (``os.replace``), so a crash or a concurrent
trial never leaves a half-written entry that a later run would trust; an unreadable entry is a
miss, never an error.
"""

from __future__ import annotations

import hashlib
import json
import logging
import os
import tempfile
from pathlib import Path
from typing import Any

import datasets
import pyarrow as pa
import pyarrow.parquet as pq

log = logging.getLogger(__name__)

CACHE_VERSION = "recipes-1"  # bump when an operator's semantics change
_META = b"trex_recipe_stats"


def chain_key(previous: str, *parts: Any) -> str:
    """The key of a step: its input's key plus everything that determines its output."""
    h = hashlib.sha256(previous.encode())
    for p in parts:
        h.update(b"\x00" + json.dumps(p, sort_keys=True, default=str).encode())
    return h.hexdigest()


class StepCache:
    """Step outputs under ``root`` as ``<key>.parquet``, each carrying the statistics so far."""

    def __init__(self, root: str | os.PathLike) -> None:
        # A local folder, or a URI on the run's object storage (s3://, gs://): then every node
        # of the cluster shares the cache. One PUT is atomic there, so no rename is needed.
        from trex_ray.storage import RunStorage, is_remote

        self.store = RunStorage(root) if is_remote(root) else None
        self.root = Path(root) if self.store is None else None

    def _path(self, key: str) -> Path:
        assert self.root is not None
        return self.root / f"{key}.parquet"

    def get(self, key: str) -> tuple[datasets.Dataset, dict[str, Any]] | None:
        if self.store is not None:
            if not self.store.exists(f"{key}.parquet"):
                return None
            p = Path(f"{key}.parquet")  # for the message below
        else:
            p = self._path(key)
            if not p.is_file():
                return None
        try:
            table = (pq.read_table(self.store.path(p.name), filesystem=self.store.fs) if self.store is not None
                     else pq.read_table(p))
            stats = json.loads((table.schema.metadata or {})[_META])
        except (OSError, KeyError, ValueError, pa.ArrowException) as e:
            log.warning("recipe cache entry %s unreadable (%s); rebuilding it", p.name, e)
            return None
        meta = {k: v for k, v in (table.schema.metadata or {}).items() if k != _META}
        return datasets.Dataset(table.replace_schema_metadata(meta)), stats

    def put(self, key: str, ds: datasets.Dataset, stats: dict[str, Any]) -> None:
        """Store ``ds`` (indices applied) atomically; a failure to write only costs the cache."""
        table = ds.with_format("arrow")[:]
        meta = dict(table.schema.metadata or {})
        meta[_META] = json.dumps(stats, default=str).encode()
        if self.store is not None:
            try:
                pq.write_table(table.replace_schema_metadata(meta), self.store.path(f"{key}.parquet"),
                               filesystem=self.store.fs)
            except (OSError, pa.ArrowException) as e:
                log.warning("could not write recipe cache entry %s: %s", key[:16], e)
            return
        assert self.root is not None
        try:
            self.root.mkdir(parents=True, exist_ok=True)
            fd, tmp = tempfile.mkstemp(dir=self.root, prefix=f".{key[:16]}.", suffix=".tmp")
            os.close(fd)
            try:
                pq.write_table(table.replace_schema_metadata(meta), tmp)
                os.replace(tmp, self._path(key))
            finally:
                if os.path.exists(tmp):
                    os.unlink(tmp)
        except (OSError, pa.ArrowException) as e:
            log.warning("could not write recipe cache entry %s: %s", key[:16], e)
