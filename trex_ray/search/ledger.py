"""The run's ledger: ``events.jsonl``, one JSON event per line, append-only.

Each event is checked against its schema (``events.py``), written with its newline in one write,
flushed and fsynced before ``append`` returns, so a change acknowledged to anyone is on disk;
the tree is rebuilt from these lines alone (``Tree.replay``).

The last line, when it lacks its newline, is handled one way, by reader and writer alike:

- it holds a complete event: it is **kept** (the writer adds the newline before appending).
  An event's line is one JSON object, and no strict prefix of a JSON object parses, so a
  complete object is the whole event; whether its ``append`` had returned is unknowable, and
  dropping it could lose an acknowledged change (a finished trial, run again for nothing).
- it does not parse (the writer died mid-line): it is **dropped** (the writer cuts it off).
  Its ``append`` never returned, so nothing acknowledged is lost.

Any other line that is not a valid event (including a last line that has its newline) means
the file was damaged or written by something else: ``LedgerError`` names the line, and the run
is refused before Ray starts. So are sequence numbers that do not strictly increase (two
drivers once wrote this ledger).
"""

from __future__ import annotations

import json
import logging
import os
import time
from pathlib import Path
from typing import Any, Iterator

from trex_ray.guard.redact import scrub_data
from trex_ray.search.events import EventError, check_event

log = logging.getLogger(__name__)

LEDGER_NAME = "events.jsonl"


class LedgerError(ValueError):
    """The ledger cannot be replayed; the message names the file and line."""


class Ledger:
    def __init__(self, run_dir: str | os.PathLike) -> None:
        self.path = Path(run_dir) / LEDGER_NAME
        self.path.parent.mkdir(parents=True, exist_ok=True)
        if self.path.exists():
            _repair_tail(self.path)
        events = list(read_events(self.path)) if self.path.exists() else []
        self.seq = events[-1]["seq"] if events else 0
        self._f = open(self.path, "a", encoding="utf-8")

    def append(self, event: dict[str, Any]) -> dict[str, Any]:
        """Stamp ``event`` with a sequence number and time, make it durable, return it (the
        event as written: secrets in its text scrubbed). An event the schema refuses raises
        EventError and is not written: the ledger only ever holds what a replay accepts."""
        # no secret reaches the ledger (nor the tree, the report and tree.json built from it)
        event = {"seq": self.seq + 1, "ts": round(time.time(), 3), **scrub_data(event)}
        line = json.dumps(event, ensure_ascii=False, default=str)
        written = json.loads(line)  # the event exactly as a replay will read it back
        check_event(written)
        self._f.write(line + "\n")
        self._f.flush()
        os.fsync(self._f.fileno())
        self.seq += 1
        return written

    def close(self) -> None:
        self._f.close()


def read_events(path: str | os.PathLike) -> Iterator[dict[str, Any]]:
    """Events in order, each checked against its schema. The last line without its newline is
    kept when it is a complete event and skipped (with a warning) when torn; anything else that
    is not a valid event raises LedgerError naming the line. Never changes the file."""
    try:
        data = Path(path).read_bytes()
    except OSError as e:
        raise LedgerError(f"{path}: cannot read the ledger ({e.strerror or e})") from None
    lines = data.split(b"\n")  # the last item is b"" when the file ends with its newline
    last_seq = 0
    for n, raw in enumerate(lines, 1):
        if not raw.strip():
            continue
        try:
            ev = json.loads(raw.decode("utf-8"))
        except (UnicodeDecodeError, json.JSONDecodeError):
            if n == len(lines):  # the last line, without its newline: torn mid-write
                log.warning("ignoring a torn last line in %s (the run stopped mid-write)", path)
                return
            raise LedgerError(f"{path}:{n}: corrupt ledger line (not a JSON event)") from None
        try:
            check_event(ev)
        except EventError as e:
            raise LedgerError(f"{path}:{n}: {e}") from None
        if ev["seq"] <= last_seq:
            raise LedgerError(f"{path}:{n}: sequence number {ev['seq']} after {last_seq} "
                              "(two drivers wrote this ledger?)")
        last_seq = ev["seq"]
        yield ev


def _repair_tail(path: Path) -> None:
    """Before appending: end a complete last event with its newline, cut a torn one off."""
    data = path.read_bytes()
    if not data or data.endswith(b"\n"):
        return
    start = data.rfind(b"\n") + 1
    try:
        json.loads(data[start:].decode("utf-8"))
    except (UnicodeDecodeError, json.JSONDecodeError):
        log.warning("dropping a torn last ledger line in %s", path)
        with open(path, "r+b") as f:
            f.truncate(start)
            os.fsync(f.fileno())
        return
    with open(path, "ab") as f:
        f.write(b"\n")
        os.fsync(f.fileno())

