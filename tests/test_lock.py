"""One driver per run: the run lock on a local disk (fcntl, with a lease record for mounts
without locks) and on a real S3 server (moto on 127.0.0.1: the timed lease protocol), takeover
after a crash, and run ids that cannot collide. A second ``--resume`` while a driver holds the
run is one ``error:`` line, exit 2, and writes nothing."""

from __future__ import annotations

import json
import os
import signal
import socket
import subprocess
import sys
import threading
import time
from pathlib import Path

import pytest

from trex_ray.guard.lock import LOCK_NAME, LockHeld, RunLock, new_run_id

REPO = Path(__file__).resolve().parents[1]

HOLD = """
import sys, time
from trex_ray.guard.lock import RunLock
lock = RunLock(sys.argv[1]).acquire()
print("held", flush=True)
time.sleep(600)
"""


def _holder(where: Path) -> subprocess.Popen:
    """Another process (fcntl locks are per process) that takes the lock and keeps it."""
    proc = subprocess.Popen([sys.executable, "-c", HOLD, str(where)], stdout=subprocess.PIPE, text=True,
                            env={**os.environ, "PYTHONPATH": str(REPO)})
    assert proc.stdout.readline().strip() == "held"
    return proc


def test_a_live_holder_refuses_others_and_a_killed_one_is_taken_over_at_once(tmp_path):
    proc = _holder(tmp_path)
    try:
        with pytest.raises(LockHeld, match=rf"in use by another driver \(pid {proc.pid} on {socket.gethostname()}"):
            RunLock(tmp_path).acquire()
        proc.send_signal(signal.SIGKILL)  # a crash: no release, no clean-up
        proc.wait()
        t0 = time.time()
        lock = RunLock(tmp_path).acquire()  # the kernel dropped the dead process's lock
        assert time.time() - t0 < 1
        rec = json.loads((tmp_path / LOCK_NAME).read_text())
        assert rec["pid"] == os.getpid() and rec["token"] == lock.token and not rec.get("released")
        lock.release()
        assert json.loads((tmp_path / LOCK_NAME).read_text())["released"] is True
        RunLock(tmp_path).acquire().release()  # free again
    finally:
        if proc.poll() is None:
            proc.kill()


def test_a_fresh_lease_of_another_host_refuses_even_where_fcntl_cannot(tmp_path):
    """A mount with locking off (nolock NFS): every host's fcntl succeeds, the lease record still
    names the live driver on the other host; an expired one is taken over."""
    rec = {"token": "other", "host": "another-host", "pid": 4242, "started": time.time() - 100,
           "renewed": time.time() - 5, "ttl_s": 60}
    (tmp_path / LOCK_NAME).write_text(json.dumps(rec))
    with pytest.raises(LockHeld, match=r"pid 4242 on another-host.*lease renewed 5s ago.*expires 55s from now"):
        RunLock(tmp_path).acquire()
    (tmp_path / LOCK_NAME).write_text(json.dumps({**rec, "renewed": time.time() - 61}))
    lock = RunLock(tmp_path).acquire()
    assert json.loads((tmp_path / LOCK_NAME).read_text())["host"] == socket.gethostname()
    lock.release()


def test_the_holder_renews_its_lease_and_notices_a_takeover(tmp_path):
    lock = RunLock(tmp_path, ttl_s=0.4).acquire()
    first = json.loads((tmp_path / LOCK_NAME).read_text())["renewed"]
    time.sleep(0.35)
    assert json.loads((tmp_path / LOCK_NAME).read_text())["renewed"] > first  # renewed every ttl/4
    (tmp_path / LOCK_NAME).write_text(json.dumps({"token": "usurper", "host": "h", "pid": 1, "renewed": time.time()}))
    time.sleep(0.3)
    assert lock.lost
    lock.release()


# ---------------------------------------------------------------- object storage
def test_object_store_lease_one_holder_then_takeover_after_expiry(s3):
    base, fs = s3
    root = base.replace("/runs?", "/locks/r1?")
    a = RunLock(root, "s3://trex/locks/r1", ttl_s=3.0, settle_s=1.0).acquire()
    with pytest.raises(LockHeld, match=r"s3://trex/locks/r1 is in use by another driver \(pid"):
        RunLock(root, "s3://trex/locks/r1", ttl_s=3.0, settle_s=1.0).acquire()
    a._stop.set()  # the holder "crashes": no more renewals, no release
    a._thread.join()
    time.sleep(3.1)
    b = RunLock(root, "s3://trex/locks/r1", ttl_s=3.0, settle_s=1.0).acquire()  # the lease expired
    a.renew()
    assert a.lost  # the old holder, back from a long pause, learns it lost the run
    claims = [n for n in _names(fs, "trex/locks/r1") if n.startswith(LOCK_NAME)]
    assert claims == [f"{LOCK_NAME}.{b.token}"]  # the crashed holder's claim was cleared by its successor
    b.release()
    assert not [n for n in _names(fs, "trex/locks/r1") if n.startswith(LOCK_NAME)]  # released: no claim left
    RunLock(root, ttl_s=3.0, settle_s=1.0).acquire().release()


def _names(fs, path: str) -> list[str]:
    import pyarrow.fs as pafs

    return sorted(i.base_name for i in fs.get_file_info(pafs.FileSelector(path, allow_not_found=True)))


def test_object_store_lease_racing_takers_never_both_win(s3):
    """Three takers at the same instant, several rounds: at most one holds the run, and a round
    where all withdrew leaves no claim behind."""
    base, fs = s3
    for round_ in range(6):
        root = base.replace("/runs?", f"/race/r{round_}?")
        won, refused = [], []
        start = threading.Barrier(3)

        def take() -> None:
            lock = RunLock(root, ttl_s=30, settle_s=0.5)
            start.wait()
            try:
                won.append(lock.acquire())
            except LockHeld:
                refused.append(lock)

        threads = [threading.Thread(target=take) for _ in range(3)]
        for t in threads:
            t.start()
        for t in threads:
            t.join()
        assert len(won) <= 1 and len(won) + len(refused) == 3, (won, refused)
        claims = [n for n in _names(fs, f"trex/race/r{round_}") if n.startswith(LOCK_NAME)]
        assert claims == [f"{LOCK_NAME}.{lock.token}" for lock in won]
        for lock in won:
            lock.release()


# ---------------------------------------------------------------- run ids and the command line
def test_run_ids_started_in_the_same_second_differ():
    ids = {new_run_id() for _ in range(200)}
    assert len(ids) == 200 and all(i[:8].isdigit() and i[8] == "-" and len(i.split("-")[2]) == 8 for i in ids)


def test_a_run_id_drawn_twice_is_drawn_again(tmp_path, monkeypatch):
    import trex_ray.rundir as rundir
    from trex_ray.config import Config

    drawn = iter(["20260101-000000-aaaaaaaa", "20260101-000000-aaaaaaaa", "20260101-000000-bbbbbbbb"])
    monkeypatch.setattr(rundir, "new_run_id", lambda: next(drawn))
    cfg = Config.model_validate({"run": {"output_dir": str(tmp_path)}})
    (_, d1, l1), (_, d2, l2) = rundir.open_run(cfg, None), rundir.open_run(cfg, None)
    assert (d1.name, d2.name) == ("20260101-000000-aaaaaaaa", "20260101-000000-bbbbbbbb")
    for lock in l1 + l2:
        lock.release()


def test_two_new_runs_in_the_same_second_get_two_directories(tmp_path):
    from trex_ray.config import Config
    from trex_ray.rundir import open_run

    cfg = Config.model_validate({"run": {"output_dir": str(tmp_path)}})
    (c1, d1, l1), (c2, d2, l2) = open_run(cfg, None), open_run(cfg, None)
    try:
        assert d1 != d2 and d1.parent == d2.parent == tmp_path
        assert (d1 / "config.yaml").is_file() and (d2 / "config.yaml").is_file()
    finally:
        for lock in l1 + l2:
            lock.release()


def test_a_second_resume_while_the_driver_lives_is_refused_and_writes_nothing(tmp_path):
    from test_ledger import small_run

    run = tmp_path / "run"
    small_run(run)
    proc = _holder(run)  # the first driver's lock (any live process holding it)
    try:
        before = {p: p.read_bytes() for p in tmp_path.rglob("*") if p.is_file()}
        r = subprocess.run([sys.executable, str(REPO / "launch.py"), "--resume", str(run)], cwd=tmp_path,
                           capture_output=True, text=True, timeout=120, env={**os.environ, "PYTHONPATH": str(REPO)})
        lines = r.stderr.strip().splitlines()
        assert r.returncode == 2 and len(lines) == 1 and "Traceback" not in r.stderr, r.stdout + r.stderr
        assert lines[0].startswith(f"error: {run} is in use by another driver (pid {proc.pid}")
        assert {p: p.read_bytes() for p in tmp_path.rglob("*") if p.is_file()} == before
    finally:
        proc.kill()
