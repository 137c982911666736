"""The run's ledger: ``events.jsonl``, one JSON event per line, append-only.

Each event is flushed and fsynced before ``append`` returns, so a change acknowledged to anyone
is on disk; the tree is rebuilt from these lines alone (``Tree.replay``).
"""

from __future__ import annotations

import json
import logging
import os
import time
from pathlib import Path
from typing import Any, Iterator

log = logging.getLogger(__name__)

LEDGER_NAME = "events.jsonl"


class Ledger:
    def __init__(self, run_dir: str | os.PathLike) -> None:
        self.path = Path(run_dir) / LEDGER_NAME
        self.path.parent.mkdir(parents=True, exist_ok=True)
        if self.path.exists():
            _drop_torn_tail(self.path)
        events = list(read_events(self.path)) if self.path.exists() else []
        self.seq = max((int(e.get("seq", 0)) for e in events), default=0)
        self._f = open(self.path, "a", encoding="utf-8")

    def append(self, event: dict[str, Any]) -> dict[str, Any]:
        """Stamp ``event`` with a sequence number and time, make it durable, return it."""
        self.seq += 1
        event = {"seq": self.seq, "ts": round(time.time(), 3), **event}
        self._f.write(json.dumps(event, ensure_ascii=False, default=str) + "\n")
        self._f.flush()
        os.fsync(self._f.fileno())
        return event

    def close(self) -> None:
        self._f.close()


def read_events(path: str | os.PathLike) -> Iterator[dict[str, Any]]:
    """Events in order. A torn last line (a crash mid-write) is skipped with a warning; a torn
    line anywhere else means the file was damaged and is an error."""
    lines = Path(path).read_text(encoding="utf-8").splitlines()
    for n, line in enumerate(lines, 1):
        if not line.strip():
            continue
        try:
            yield json.loads(line)
        except json.JSONDecodeError:
            if n == len(lines):
                log.warning("ignoring a torn last line in %s (the run stopped mid-write)", path)
                return
            raise ValueError(f"{path}:{n}: corrupt ledger line") from None


def _drop_torn_tail(path: Path) -> None:
    """Cut a last line that lacks its newline (a crash mid-write) so appends start clean."""
    data = path.read_bytes()
    if data and not data.endswith(b"\n"):
        keep = data.rfind(b"\n") + 1
        log.warning("dropping a torn last ledger line in %s", path)
        with open(path, "r+b") as f:
            f.truncate(keep)
