"""One driver per run: a lock with a lease on the run directory and on the run's storage root,
and run ids that cannot collide.

Two drivers on one run (a second ``--resume`` while the first lives; two jobs started in the
same second on a shared volume) would both hand out ``n0`` and interleave their ledgers. The
driver therefore holds ``.driver.lock`` in the run directory (and under ``run.storage``) for
its whole life, and a crashed driver's successor can take it over. Each store offers
different primitives, so the lock is built from what each one has:

- **Local disks and NFS**: ``flock`` on the lock file. The kernel drops the lock the moment its
  process dies, however it dies, so a successor on the same machine takes over at once; on NFS
  (Linux sends it to the server as a whole-file lock: NFSv4, or v3 with lockd) the server holds
  it and frees it when the dead client's NFS lease runs out. The file also holds a record (host,
  pid, renewal time) that the holder renews every ``ttl/4``: on a mount with locking turned off
  (``nolock``), where every machine's lock succeeds, a fresh record from another host still
  refuses a second driver.
- **Object stores** (s3://, gs://, through pyarrow.fs) have no lock and pyarrow exposes no
  conditional write, but they list and read after write consistently. So a taker never
  overwrites anyone: each writes its own claim object (``.driver.lock.<token>``) and holds the
  run only if, ``settle_s`` after its write, its claim is the one unexpired claim listed (a timed
  protocol in the manner of Fischer's mutual exclusion). Two takers that see each other both
  withdraw (delete their own claim) and are refused; one that sees none but the other's is
  refused; a taker whose list-to-write gap came near the settle delay (a claim could have
  landed after a rival's check) withdraws too. The holder renews its claim every ``ttl/4`` (and
  notices if it was paused so long that a successor took over); a crashed holder's claim is
  ignored after ``ttl_s`` and deleted by the next holder. Clocks across machines must agree to
  well within ``ttl_s`` (NTP does).

A refused driver writes nothing and gets one line naming the holder (``LockHeld``, a
ConfigError: exit 2).
"""

from __future__ import annotations

import json
import logging
import os
import secrets
import socket
import threading
import time
from pathlib import Path
from typing import Any

from trex_ray.config import ConfigError

log = logging.getLogger(__name__)

LOCK_NAME = ".driver.lock"
TTL_S = 60.0  # a crashed driver's lease on an object store is free after this long
SETTLE_S = 2.0  # the object-store protocol's wait between writing a claim and listing the claims


class LockHeld(ConfigError):
    """Another driver runs this run (the message names it and says when to retry)."""


def new_run_id() -> str:
    """A timestamp (runs sort by start) and 8 random hex digits: two runs started in the same
    second, on one machine or on two sharing a volume, get different ids (and ``open_run``
    creates the directory exclusively, drawing again in the one-in-four-billion case)."""
    return f"{time.strftime('%Y%m%d-%H%M%S')}-{secrets.token_hex(4)}"


def _describe(rec: dict[str, Any] | None) -> str:
    if not rec:
        return "another driver"
    age = time.time() - float(rec.get("renewed", 0))
    return (f"another driver (pid {rec.get('pid')} on {rec.get('host')}, started "
            f"{time.strftime('%Y-%m-%d %H:%M:%S', time.localtime(float(rec.get('started', 0))))}, "
            f"lease renewed {age:.0f}s ago)")


class RunLock:
    """The lease on one run directory or storage root (a local/NFS path or s3:// / gs:// URI).
    ``acquire`` raises LockHeld when a live driver holds it; ``release`` ends it."""

    def __init__(self, where: str | os.PathLike, shown: str | None = None, ttl_s: float = TTL_S,
                 settle_s: float = SETTLE_S) -> None:
        from trex_ray.storage import RunStorage

        self.where, self.shown = str(where), shown or str(where)
        self.ttl_s, self.settle_s = ttl_s, settle_s
        self.store = RunStorage(self.where)
        self.token = secrets.token_hex(16)
        self.started = time.time()
        self.lost = False  # the lease was taken over while we held it (we were stopped for > ttl)
        self._fd: int | None = None
        self._stop = threading.Event()
        self._thread: threading.Thread | None = None

    def _record(self) -> dict[str, Any]:
        return {"token": self.token, "host": socket.gethostname(), "pid": os.getpid(), "started": self.started,
                "renewed": time.time(), "ttl_s": self.ttl_s}

    def _fresh(self, rec: dict[str, Any] | None) -> bool:
        """Whether ``rec`` is another holder's unexpired, unreleased lease."""
        return bool(rec) and rec.get("token") != self.token and not rec.get("released") \
            and time.time() - float(rec.get("renewed", 0)) < float(rec.get("ttl_s", self.ttl_s))

    # ------------------------------------------------------------------ taking and giving back
    def acquire(self) -> "RunLock":
        if self.store.remote:
            self._acquire_object()
        else:
            self._acquire_file()
        self._thread = threading.Thread(target=self._renew_loop, name=f"lease {self.shown}", daemon=True)
        self._thread.start()
        return self

    def release(self) -> None:
        self._stop.set()
        if self._thread is not None:
            self._thread.join(timeout=5)
            self._thread = None
        try:
            if self._fd is not None:
                # the file stays (unlinking a locked file lets a waiter lock a dead inode);
                # its record says the lease is free
                self._write_file({**self._record(), "released": True})
                os.close(self._fd)  # drops the flock
                self._fd = None
            elif self.store.remote:
                self.store.fs.delete_file(self.store.path(self._claim))
        except OSError as e:  # the next taker finds an expired or released lease either way
            log.warning("could not release the lock on %s: %s", self.shown, e)

    def __enter__(self) -> "RunLock":
        return self.acquire()

    def __exit__(self, *exc: Any) -> None:
        self.release()

    # ------------------------------------------------------------------ local disks and NFS
    def _acquire_file(self) -> None:
        import fcntl

        path = Path(self.store.path(LOCK_NAME))
        path.parent.mkdir(parents=True, exist_ok=True)
        fd = os.open(path, os.O_RDWR | os.O_CREAT, 0o600)
        try:
            # flock, not lockf: a POSIX record lock is dropped when the process closes ANY
            # descriptor of the file (a stray read of it would free the run)
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except OSError:
            rec = _read_fd(fd)
            os.close(fd)
            raise LockHeld(f"{self.shown} is in use by {_describe(rec)}; one driver per run "
                           "(wait for it to end, or stop it first)") from None
        rec = _read_fd(fd)
        if self._fresh(rec) and rec.get("host") != socket.gethostname():
            # a mount without working locks (nolock): the other host's lock succeeded too
            os.close(fd)
            raise self._held_by(rec)
        self._fd = fd
        self._write_file(self._record())

    def _write_file(self, rec: dict[str, Any]) -> None:
        assert self._fd is not None
        data = json.dumps(rec).encode()
        os.ftruncate(self._fd, 0)
        os.pwrite(self._fd, data, 0)
        os.fsync(self._fd)

    # ------------------------------------------------------------------ object stores
    @property
    def _claim(self) -> str:
        return f"{LOCK_NAME}.{self.token}"

    def _claims(self) -> dict[str, dict[str, Any]]:
        """Every claim object under the root (name -> record); an unreadable one counts as fresh
        (never taken over blindly)."""
        out = {}
        for name in self.store.list_dir(""):
            if name.startswith(LOCK_NAME + "."):
                try:
                    out[name] = json.loads(self.store.read_bytes(name))
                except FileNotFoundError:  # deleted between the listing and the read
                    continue
                except (OSError, ValueError):
                    out[name] = {"host": "?", "pid": "?", "renewed": time.time(), "ttl_s": self.ttl_s, "token": "?"}
        return out

    def _others(self) -> dict[str, dict[str, Any]]:
        return {n: r for n, r in self._claims().items() if self._fresh(r)}

    def _withdraw(self) -> None:
        try:
            self.store.fs.delete_file(self.store.path(self._claim))
        except OSError:
            pass

    def _held_by(self, rec: dict[str, Any]) -> LockHeld:
        expires = float(rec.get("renewed", 0)) + float(rec.get("ttl_s", self.ttl_s)) - time.time()
        return LockHeld(f"{self.shown} is in use by {_describe(rec)}; if that driver is gone, its lease "
                        f"expires {max(expires, 0):.0f}s from now")

    def _acquire_object(self, tries: int = 3) -> None:
        for attempt in range(tries):
            t0 = time.monotonic()
            others = self._others()
            if others:
                raise self._held_by(next(iter(others.values())))
            self.store.write_bytes(self._claim, json.dumps(self._record()).encode())
            if time.monotonic() - t0 <= self.settle_s / 2:
                break
            # too slow: our claim may have landed after a rival's check; withdraw, wait, again
            self._withdraw()
            time.sleep(self.settle_s * (1 + secrets.randbelow(100) / 100))
        else:
            raise LockHeld(f"could not take the lock on {self.shown}: the store answered too slowly (more "
                           f"than {self.settle_s / 2:.1f}s from listing to writing, {tries} times); try again")
        time.sleep(self.settle_s)
        others = self._others()
        if others:  # a rival claimed at the same moment: both withdraw
            self._withdraw()
            raise LockHeld(f"{self.shown} is being taken by {_describe(next(iter(others.values())))} at the same "
                           "moment; one driver per run")
        for name, rec in self._claims().items():  # a crashed holder's expired claim: gone for good
            if name != self._claim:
                try:
                    self.store.fs.delete_file(self.store.path(name))
                except OSError:
                    pass

    # ------------------------------------------------------------------ renewal
    def _renew_loop(self) -> None:
        while not self._stop.wait(self.ttl_s / 4):
            try:
                self.renew()
            except OSError as e:  # a passing storage fault: the next renewal may succeed
                log.warning("could not renew the lock on %s: %s", self.shown, e)

    def renew(self) -> None:
        """Extend the lease; if another driver took it over meanwhile (this one was stopped for
        longer than the lease), say so loudly and stop."""
        if self._fd is not None:
            rec = _read_fd(self._fd)
            other = rec if rec and not rec.get("released") and rec.get("token") != self.token else None
        else:
            others = self._others()
            other = next(iter(others.values())) if others else None
        if other is not None:
            self.lost = True
            self._stop.set()
            log.error("the lock on %s was taken over by %s: this driver must stop", self.shown, _describe(other))
            return
        if self._fd is not None:
            self._write_file(self._record())
        else:
            self.store.write_bytes(self._claim, json.dumps(self._record()).encode())


def _read_fd(fd: int) -> dict[str, Any] | None:
    """The lease record, read through the lock's own descriptor."""
    try:
        rec = json.loads(os.pread(fd, 1 << 16, 0) or b"null")
        return rec if isinstance(rec, dict) else None
    except (OSError, ValueError):  # empty, or being rewritten this instant
        return None
