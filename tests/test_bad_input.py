"""Every bad input found by trying the command line as a new user would: one ``error:`` line
naming the problem, exit 2, no traceback, and nothing new on disk. Plus the two places where a
good-looking input used to land somewhere unexpected: ``file://`` storage (a relative
``./file:`` folder) and the shared scratch folder (a predictable path in the system temp)."""

from __future__ import annotations

import os
import stat
import subprocess
import sys
import tempfile
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[1]


def _make(root: Path) -> dict[str, str]:
    """The bad files, under ``root``; returns their paths by name."""
    data = root / "data"
    (data / "empty_folder").mkdir(parents=True)
    (data / "rows_list.jsonl").write_text('[1, 2]\n[3, 4]\n')
    (data / "rows_str.jsonl").write_text('"just a string"\n')
    (data / "corrupt.parquet").write_bytes(b"PAR1 not really a parquet file")
    (data / "utf16.yaml").write_bytes("search:\n  max_trials: 2\n".encode("utf-16"))
    run = root / "corrupt_run"
    from test_ledger import small_run

    small_run(run)
    rows = (run / "events.jsonl").read_text().splitlines()
    rows[2] = rows[2][:30]
    (run / "events.jsonl").write_text("\n".join(rows) + "\n")
    return {"data": str(data), "run": str(run)}


CASES = [
    # (id, command after `python`, the error line must contain)
    ("jsonl-row-is-a-list", ["launch.py", "--task.train_path={data}/rows_list.jsonl"], "rows_list.jsonl"),
    ("jsonl-row-is-a-string", ["launch.py", "--task.train_path={data}/rows_str.jsonl"], "rows_str.jsonl"),
    ("corrupt-parquet", ["launch.py", "--task.train_path={data}/corrupt.parquet"], "corrupt.parquet"),
    ("train-path-empty-folder", ["launch.py", "--task.train_path={data}/empty_folder"], "empty_folder"),
    ("utf16-config", ["launch.py", "--config={data}/utf16.yaml"], "utf16.yaml is not UTF-8 text"),
    ("output-dir-under-proc", ["launch.py", "--run.output_dir=/proc/trex-runs"],
     "cannot create the run directory /proc/trex-runs/"),
    ("resume-hdfs", ["launch.py", "--resume", "hdfs://namenode:8020/runs/r1"],
     "--resume hdfs://namenode:8020/runs/r1: cannot read the run from its storage"),
    ("resume-corrupt-ledger", ["launch.py", "--resume", "{run}"], "events.jsonl:3: corrupt ledger line"),
    ("report-corrupt-ledger", ["-m", "trex_ray.report", "{run}"], "events.jsonl:3: corrupt ledger line"),
    ("file-uri-with-a-host", ["launch.py", "--run.storage=file://runs/x"],
     "file://runs/x: a file:// URI names a path on this machine (file:///path), not one on runs"),
    ("credentials-in-storage-uri", ["launch.py", "--run.storage=s3://AKIAEXAMPLEEXAMPLE12:abc/def@bucket/runs"],
     "run.storage s3://***@bucket/runs: credentials inside the URL are refused"),
    ("key-as-env-name", ["launch.py", "--search.policy=llm", "--llm.model=m", "--llm.base_url=http://127.0.0.1:9/v1",
                         "--llm.api_key_env=sk-proj-abcdefghijklmnop0123"],
     "llm.api_key_env takes the NAME of an environment variable"),
]


def _tree(root: Path) -> dict[str, bytes]:
    return {str(p.relative_to(root)): p.read_bytes() if p.is_file() else b"/"
            for p in sorted(root.rglob("*"))}


@pytest.mark.parametrize("case, argv, message", [pytest.param(*c, id=c[0]) for c in CASES])
def test_bad_input_is_one_error_line_exit_2_and_nothing_written(tmp_path, case, argv, message):
    paths = _make(tmp_path)
    cwd = tmp_path / "cwd"
    cwd.mkdir()
    before = _tree(tmp_path)
    argv = [a.format(**paths) if "{" in a and "file://" not in a else a for a in argv]
    if argv[0] == "launch.py":
        argv[0] = str(REPO / "launch.py")
    r = subprocess.run([sys.executable, *argv], cwd=cwd, capture_output=True, text=True, timeout=180,
                       env={**os.environ, "PYTHONPATH": os.environ.get("PYTHONPATH", str(REPO))})
    lines = r.stderr.strip().splitlines()
    assert r.returncode == 2, r.stdout + r.stderr
    assert len(lines) == 1 and lines[0].startswith("error: ") and message in lines[0], r.stderr
    assert "Traceback" not in r.stdout + r.stderr
    assert _tree(tmp_path) == before  # nothing new, nothing changed (no ./runs, no ./file:, no lock file)
    assert not Path("/proc/trex-runs").exists()


# ---------------------------------------------------------------- file:// storage
def test_file_uri_storage_is_the_absolute_path_it_names(tmp_path, monkeypatch):
    from trex_ray.storage import RunStorage, check_storage, run_storage_uri

    monkeypatch.chdir(tmp_path)
    shared = tmp_path / "shared"
    uri = f"file://{shared}"
    check_storage(uri)  # the probe goes to the path, not to ./file:
    root = run_storage_uri(uri, tmp_path / "runs" / "r1")
    assert root == str(shared / "r1")
    store = RunStorage(root)
    store.write_bytes("a.txt", b"x")
    assert (shared / "r1" / "a.txt").read_bytes() == b"x"
    assert RunStorage(f"file://{shared}/r1").base == str(shared / "r1")
    assert not any(p.name.startswith("file:") for p in tmp_path.rglob("*"))


# ---------------------------------------------------------------- the scratch folder
@pytest.fixture
def temp_root(tmp_path, monkeypatch):
    """A fresh system temp folder for storage.scratch_root."""
    import trex_ray.storage as storage

    monkeypatch.delenv("TREX_RAY_SCRATCH", raising=False)
    monkeypatch.setattr(tempfile, "tempdir", str(tmp_path))
    monkeypatch.setattr(storage, "_private_root", [])
    return tmp_path


def test_scratch_is_a_private_folder_of_this_user(temp_root):
    from trex_ray.storage import scratch_dir

    d = scratch_dir("r1", "nodes", "n1")
    root = temp_root / f"trex_ray-{os.getuid()}"
    assert d == root / "r1" / "nodes" / "n1" and d.is_dir()
    st = os.lstat(root)
    assert st.st_uid == os.getuid() and stat.S_IMODE(st.st_mode) == 0o700


@pytest.mark.parametrize("planted", ["open-to-all", "a-link", "another-owner"])
def test_a_scratch_path_planted_by_someone_else_is_not_used(temp_root, planted, caplog):
    from trex_ray.storage import scratch_dir

    root = temp_root / f"trex_ray-{os.getuid()}"
    elsewhere = temp_root / "attacker"
    elsewhere.mkdir()
    if planted == "open-to-all":
        root.mkdir()
        root.chmod(0o777)
    elif planted == "a-link":
        root.symlink_to(elsewhere)
    else:
        if os.getuid() != 0:
            pytest.skip("needs root to give a folder to another user")
        root.mkdir(mode=0o700)
        os.chown(root, 65534, 65534)
    d = scratch_dir("r1", "final")
    assert not str(d).startswith(str(root) + "/") and not any(elsewhere.iterdir())
    private = d.parents[1]
    assert private.name.startswith(f"trex_ray-{os.getuid()}-") and stat.S_IMODE(private.stat().st_mode) == 0o700
    assert "is not a private folder of this user" in caplog.text
    assert scratch_dir("r1", "other").parents[1] == private  # one private root per process
