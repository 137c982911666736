"""End to end, as a user runs it: launch.py with the real SmolLM2-135M-Instruct, and the same
search submitted as a Ray job to a separately started Ray head. Slow (minutes); CI runs them."""

from __future__ import annotations

import json
import os
import re
import socket
import subprocess
import sys
import time
from pathlib import Path

import pytest

from trex_ray.search.ledger import read_events
from trex_ray.search.tree import SearchParams, Tree

REPO = Path(__file__).resolve().parents[1]
pytestmark = pytest.mark.slow


def test_launch_smollm2_two_trials_writes_every_output(tmp_path):
    r = subprocess.run(
        [sys.executable, "launch.py", "--config", "cluster/configs/sst2-smoke.yaml",
         f"--run.output_dir={tmp_path}", "--run.run_id=e2e"],
        cwd=REPO, capture_output=True, text=True, timeout=1500,
    )
    assert r.returncode == 0, r.stdout[-4000:] + r.stderr[-4000:]
    run = tmp_path / "e2e"
    summary = json.loads((run / "summary.json").read_text())
    for key in ("task", "base_model", "base_score", "best_score", "best_node", "trials", "failed_trials", "wall_seconds"):
        assert key in summary
    assert summary["task"] == "sst2" and summary["trials"] == 2 and summary["failed_trials"] == 0
    assert 0.0 <= summary["base_score"] <= 1.0 and summary["best_score"] is not None
    tree = Tree.replay(read_events(run / "events.jsonl"), SearchParams())
    assert json.loads((run / "tree.json").read_text())["best"] == summary["best_node"] == tree.best().id
    # best/ is the best node's LoRA adapter in HF format, loadable onto the base model
    from peft import PeftConfig

    assert PeftConfig.from_pretrained(run / "best").peft_type == "LORA"
    assert (run / "best" / "tokenizer_config.json").is_file()
    assert list((run / "tune").glob("search-0/n1-*/result.json"))  # Tune's own result files
    # the live view and the final leaderboard reached the console
    assert "start   n1" in r.stdout and "leaderboard (dev accuracy)" in r.stdout
    for node in ("n0", "n1", "n2"):
        assert f"\n{node} " in r.stdout.split("leaderboard")[-1]


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def test_ray_job_submit_runs_the_search(tiny_model_dir, tmp_path):
    ray_bin = str(Path(sys.executable).parent / "ray")
    # the job's `python` must be this environment's, as for a user with the venv activated
    env = {**os.environ, "RAY_AUTH_MODE": "disabled", "RAY_USAGE_STATS_ENABLED": "0",
           "PATH": f"{Path(sys.executable).parent}:{os.environ.get('PATH', '')}"}
    env.pop("RAY_ADDRESS", None)
    gcs, dash = _free_port(), _free_port()
    cfg = tmp_path / "job.yaml"
    cfg.write_text(
        f"model:\n  name_or_path: {tiny_model_dir}\n"
        "search:\n  max_trials: 2\n  children_per_expansion: 2\n"
        "train:\n  method: full\n  learning_rate: 0.005\n  train_samples: 64\n"
        "task:\n  dev_limit: 16\n"
        f"run:\n  output_dir: {tmp_path / 'runs'}\n  run_id: job\n"
    )
    temp = Path("/tmp") / f"trex-job-{os.getpid()}"  # short: Ray's socket paths have a length limit
    subprocess.run([ray_bin, "start", "--head", f"--port={gcs}", "--dashboard-host=127.0.0.1", f"--temp-dir={temp}",
                    f"--dashboard-port={dash}", "--num-cpus=2", "--include-dashboard=true",
                    "--disable-usage-stats"], env=env, check=True, capture_output=True, timeout=120)
    try:
        address = f"http://127.0.0.1:{dash}"
        job = [ray_bin, "job", "submit", "--address", address, "--working-dir", "."]
        deadline = time.time() + 300
        while True:  # the job agent registers a few seconds after the head is up (minutes on a loaded machine)
            ready = subprocess.run([*job, "--", "echo", "ready"], cwd=REPO, env=env, capture_output=True, text=True, timeout=120)
            if ready.returncode == 0 or time.time() > deadline:
                break
            time.sleep(3)
        submit = subprocess.run([*job, "--", "python", "launch.py", "--config", str(cfg)],
                                cwd=REPO, env=env, capture_output=True, text=True, timeout=900)
        assert submit.returncode == 0, submit.stdout[-4000:] + submit.stderr[-3000:]
        job_id = re.search(r"Job '(raysubmit_\w+)' succeeded", submit.stdout + submit.stderr).group(1)
        logs = subprocess.run([ray_bin, "job", "logs", "--address", address, job_id],
                              env=env, capture_output=True, text=True, timeout=60).stdout
        assert "leaderboard (dev accuracy)" in logs and "succeeded" in logs
        summary = json.loads((tmp_path / "runs" / "job" / "summary.json").read_text())
        assert summary["trials"] == 2 and summary["base_score"] is not None
    finally:
        _stop_cluster(temp)


def _stop_cluster(temp: Path) -> None:
    """Stop only this test's Ray head (``ray stop`` would stop every Ray on the machine): its
    processes are the ones whose command line names its temp dir."""
    import psutil

    heads = [p for p in psutil.process_iter(["cmdline"]) if str(temp) in " ".join(p.info["cmdline"] or [])]
    # agents and workers rename themselves (ray::DashboardAgent): find them as descendants
    procs = {p.pid: p for h in heads for p in [h, *h.children(recursive=True)]}.values()
    for p in procs:
        p.kill()
    psutil.wait_procs(procs, timeout=30)
