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

from trex_ray.search.ledger import read_events

REPO = Path(__file__).resolve().parents[1]
pytestmark = pytest.mark.slow


@pytest.mark.parametrize("preempted", [False, True], ids=["killed", "preempted"])
def test_worker_node_loss_resumes_from_checkpoint(tiny_model_dir, tmp_path, monkeypatch, preempted):
    """killed: a node dies unannounced, one of max_failures=2 is spent. preempted: the node is
    first drained with reason PREEMPTION (what the autoscaler does for a spot instance) and then
    killed; with max_failures=0 the trial still resumes, because preemptions are counted apart."""
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
         f"--run.output_dir={tmp_path / 'runs'}", "--run.run_id=loss", "--search.max_trials=1", "--search.rungs=[1.0]",
         "--search.children_per_expansion=1", "--task.dev_limit=16", "--task.test_limit=0", "--train.method=full",
         "--train.learning_rate=0.005", "--train.train_samples=2000", "--train.num_epochs=2",
         "--resources.num_workers=2", "--resources.cpus_per_trial=1",
         f"--resources.max_failures={0 if preempted else 2}"],
        cwd=REPO, stdout=log, stderr=subprocess.STDOUT, env={**os.environ, "PYTHONUNBUFFERED": "1"})
    try:
        deadline = time.time() + 300
        while not _registered_checkpoint(run / "train" / "train-n1-r0"):  # one Train run per node and rung
            assert proc.poll() is None and time.time() < deadline, (tmp_path / "launch.log").read_text()[-3000:]
            time.sleep(0.5)
        victim = next(n for n in workers if _hosts_train_worker(n))
        if preempted:
            _drain_for_preemption(cluster.address, victim.node_id)
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
    # Ray Train's own failure policy saw the loss for what it was, and charged the right budget
    decisions = _train_failure_decisions(Path(os.environ["RAY_TMPDIR"]))
    assert decisions, "no Ray Train failure decision logged"
    if preempted:
        assert all("Source: preemption" in d and "max allowed: inf" in d for d in decisions), decisions
    else:
        assert all("Source: worker group" in d and "max allowed: 2" in d for d in decisions), decisions


def _train_failure_decisions(ray_tmp: Path) -> list[str]:
    """The RETRY/RAISE decisions in the Train controllers' logs of this test's Ray session."""
    found = set()
    for log in ray_tmp.glob("ray/session_*/logs/train/ray-train-app-controller-*.log"):
        for line in log.read_text(errors="replace").splitlines():
            if "[FailurePolicy]" in line:
                found.add(json.loads(line)["message"] if line.startswith("{") else line)
    return sorted(found)


def _drain_for_preemption(address: str, node_id: str) -> None:
    """Announce the node's preemption to the GCS exactly as the autoscaler does (the API behind
    ``ray drain-node --reason DRAIN_NODE_REASON_PREEMPTION``): its death is then a preemption."""
    import ray
    from ray.core.generated import autoscaler_pb2

    gcs = ray._raylet.GcsClient(address=address)
    accepted, why = gcs.drain_node(node_id, autoscaler_pb2.DrainNodeReason.Value("DRAIN_NODE_REASON_PREEMPTION"),
                                   "spot instance reclaimed (test)", int(time.time() * 1000) + 2000)
    assert accepted, why


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
