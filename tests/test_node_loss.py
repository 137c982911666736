"""Losing a node mid-trial: a 2-worker trial runs on a simulated 3-node cluster, the node of one
of its workers is killed (its raylet and every process on it) after the first checkpoint, a
replacement node joins (as an autoscaler would add one), and Ray Train restarts the worker group
from the checkpoint. The tree records one node, trained once, resumed, not two."""

from __future__ import annotations

import json
import os
import subprocess
import sys
import time
from pathlib import Path

import pytest

from trex_ray.ledger import read_events

REPO = Path(__file__).resolve().parents[1]
pytestmark = pytest.mark.slow


def test_worker_node_loss_resumes_from_checkpoint(tiny_model_dir, tmp_path, monkeypatch):
    import ray
    from ray.cluster_utils import Cluster

    import tempfile

    # short: Ray's socket paths must fit in 107 bytes
    monkeypatch.setenv("RAY_TMPDIR", tempfile.mkdtemp(prefix="trexrt", dir="/tmp"))
    cluster = Cluster(initialize_head=True, connect=False, head_node_args=dict(
        num_cpus=1, node_ip_address="127.0.0.12", include_dashboard=False, object_store_memory=80 * 2**20))
    workers = {cluster.add_node(num_cpus=1, node_ip_address=f"127.0.0.{13 + i}", object_store_memory=80 * 2**20)
               for i in range(2)}
    cluster.wait_for_nodes()
    ray.init(address=cluster.address)
    run = tmp_path / "runs" / "loss"
    log = open(tmp_path / "launch.log", "w")
    proc = subprocess.Popen(
        [sys.executable, "launch.py", f"--run.ray_address={cluster.address}", f"--model.name_or_path={tiny_model_dir}",
         f"--run.output_dir={tmp_path / 'runs'}", "--run.run_id=loss", "--search.max_trials=1",
         "--search.children_per_expansion=1", "--task.dev_limit=16", "--task.test_limit=0", "--train.method=full",
         "--train.learning_rate=0.005", "--train.train_samples=2000", "--train.num_epochs=2",
         "--resources.num_workers=2", "--resources.cpus_per_trial=1", "--resources.max_failures=2"],
        cwd=REPO, stdout=log, stderr=subprocess.STDOUT, env={**os.environ, "PYTHONUNBUFFERED": "1"})
    try:
        deadline = time.time() + 300
        while not _registered_checkpoint(run / "train" / "train-n1"):
            assert proc.poll() is None and time.time() < deadline, (tmp_path / "launch.log").read_text()[-3000:]
            time.sleep(0.5)
        victim = next(n for n in workers if _hosts_train_worker(n))
        cluster.remove_node(victim, allow_graceful=False)  # SIGKILL of the raylet and its workers
        cluster.add_node(num_cpus=1, node_ip_address="127.0.0.15", object_store_memory=80 * 2**20)
        assert proc.wait(timeout=600) == 0, (tmp_path / "launch.log").read_text()[-3000:]
    finally:
        if proc.poll() is None:
            proc.kill()
        ray.shutdown()
        cluster.shutdown()
    events = list(read_events(run / "events.jsonl"))
    assert [e["node_id"] for e in events if e["type"] == "node_planned"] == ["n0", "n1"]
    assert sum(1 for e in events if e["type"] == "node_started" and e["node_id"] == "n1") == 1
    n1 = next(n for n in json.loads((run / "tree.json").read_text())["nodes"] if n["id"] == "n1")
    assert n1["status"] == "succeeded", n1["failure"]
    assert n1["recipe_stats"]["resumed_from_checkpoint"] is True
    # the resumed run did not start over: its first logged step is past the checkpoint
    assert n1["recipe_stats"]["loss_curve"][0]["step"] > 1


def _hosts_train_worker(node) -> bool:
    """Whether a Ray Train worker runs on this simulated node: workers are children of the
    node's raylet and carry their actor class in their process title."""
    import psutil

    raylet = psutil.Process(node.all_processes["raylet"][0].process.pid)
    return any("RayTrainWorker" in " ".join(p.cmdline()) for p in raylet.children(recursive=True))


def _registered_checkpoint(train_dir: Path) -> bool:
    """A checkpoint Train has registered (its folder appears before the upload is committed)."""
    snap = train_dir / "checkpoint_manager_snapshot.json"
    try:
        return bool(json.loads(snap.read_text())["checkpoint_results"])
    except (OSError, ValueError, KeyError):
        return False
