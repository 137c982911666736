"""Cluster scale on one CPU machine: a simulated multi-node Ray cluster with declared GPUs,
trial placement from plan resources, a 2-worker DeepSpeed ZeRO-2 trial over gloo, the memory
estimate, and the cluster manifests."""

from __future__ import annotations

import json
import os
import re
from pathlib import Path

import pytest
import yaml

from trex_ray.search.fit import ModelDims, check_fits, estimate
from trex_ray.search.plan import TrainingConfig, TrialResources

REPO = Path(__file__).resolve().parents[1]

LLAMA2_7B = {"hidden_size": 4096, "num_hidden_layers": 32, "num_attention_heads": 32, "num_key_value_heads": 32,
             "intermediate_size": 11008, "vocab_size": 32000, "tie_word_embeddings": False}
LLAMA2_70B = {"hidden_size": 8192, "num_hidden_layers": 80, "num_attention_heads": 64, "num_key_value_heads": 8,
              "intermediate_size": 28672, "vocab_size": 32000, "tie_word_embeddings": False}


# ---------------------------------------------------------------- memory estimate
def test_parameter_counts_match_the_published_sizes():
    assert ModelDims.from_config(LLAMA2_7B).params == pytest.approx(6.74e9, rel=0.01)
    assert ModelDims.from_config(LLAMA2_70B).params == pytest.approx(68.98e9, rel=0.01)


@pytest.mark.parametrize("cfg, method, workers, stage, offload, gpu_gib, fits", [
    (LLAMA2_7B, "full", 1, 0, False, 80, False),   # 16 bytes/param = 108 GB before activations
    (LLAMA2_7B, "lora", 1, 0, False, 80, True),    # weights 13.5 GB + a small adapter
    (LLAMA2_7B, "full", 8, 3, False, 80, True),    # ZeRO-3 over 8: 13.5 GB of states per GPU
    (LLAMA2_7B, "full", 8, 2, False, 24, False),   # ZeRO-2 keeps full bf16 weights (13.5 GB) + activations on 24 GB
    (LLAMA2_70B, "lora", 1, 0, False, 80, False),  # 138 GB of bf16 weights alone
    (LLAMA2_70B, "lora", 8, 3, False, 80, True),
    (LLAMA2_70B, "full", 8, 3, False, 80, False),  # 1.1 TB of states over 8 x 80 GB
    (LLAMA2_70B, "full", 16, 3, True, 80, True),   # offloaded optimizer and weights
])
def test_memory_estimate_accepts_and_rejects_known_cases(cfg, method, workers, stage, offload, gpu_gib, fits):
    dims = ModelDims.from_config(cfg)
    t = TrainingConfig(method=method, batch_size=1, max_seq_length=512)
    res = TrialResources(num_workers=workers, gpus_per_worker=1, zero_stage=stage, offload=offload)
    reason = check_fits(dims, t, res, gpu_gib)
    assert (reason is None) == fits, reason
    if not fits:
        assert reason.startswith("does not fit: estimated") and f"> {gpu_gib} GiB" in reason


def test_memory_estimate_parts_and_no_check_without_gpus():
    dims = ModelDims.from_config(LLAMA2_7B)
    # one worker, the Trainer's mixed precision: fp32 weights + autocast's bf16 copies, fp32 grads, Adam's moments
    amp = estimate(dims, "full", 16, 1, 512)
    assert amp.weights_gib == pytest.approx(6 * dims.params / 2**30)
    assert amp.gradients_gib == pytest.approx(4 * dims.params / 2**30)
    assert amp.optimizer_gib == pytest.approx(8 * dims.params / 2**30)
    # DeepSpeed: bf16 weights and grads, fp32 master + moments, partitioned by the ZeRO stage
    full = estimate(dims, "full", 16, 1, 512, zero_stage=2)
    assert full.weights_gib == pytest.approx(2 * dims.params / 2**30)
    assert full.optimizer_gib == pytest.approx(12 * dims.params / 2**30)
    z3 = estimate(dims, "full", 16, 1, 512, workers=8, zero_stage=3)
    assert z3.weights_gib == pytest.approx(full.weights_gib / 8) and z3.optimizer_gib == pytest.approx(full.optimizer_gib / 8)
    assert check_fits(dims, TrainingConfig(method="full"), TrialResources(gpus_per_worker=0), 80) is None


def test_oversized_plan_fails_before_any_trial(tmp_path):
    from core_helpers import make_state, outcome
    from test_core import plan_dict
    from trex_ray.search.fit import FitCheck
    from trex_ray.search.plan import parse_plan
    from trex_ray.search.request import Proposal

    fit = FitCheck(ModelDims.from_config(LLAMA2_7B), TrialResources(gpus_per_worker=1), 80)
    s = make_state(tmp_path, max_trials=3, children_per_expansion=2, fit=fit)
    assert s.next_node("t0").node_id == "n0"  # the baseline trains nothing: no check
    s.finish("n0", outcome(0.5))
    s.begin_expansion()
    s.add_children("n0", Proposal([parse_plan(plan_dict(method="full")), parse_plan(plan_dict(method="lora"))], "builtin"))
    handed = s.next_node("t1")
    assert handed.node_id == "n2"  # the full fine-tune of 7B on one 80 GB GPU never starts
    n1 = s.tree.nodes["n1"]
    assert n1.status == "failed" and n1.failure.startswith("does not fit") and n1.trial_id is None


# ---------------------------------------------------------------- manifests
def test_cluster_manifests_parse_and_name_only_existing_files():
    docs = {p: list(yaml.safe_load_all(p.read_text())) for p in (REPO / "cluster").rglob("*.yaml")}
    assert len(docs) >= 6
    from trex_ray.config import load_config

    for path, parsed in docs.items():
        assert parsed and all(d is not None for d in parsed), path
        text = path.read_text()
        for ref in re.findall(r"cluster/[\w./-]+\.(?:yaml|json)", text):
            assert (REPO / ref).is_file(), f"{path} names missing {ref}"
        if path.parent.name == "configs":
            load_config(path)  # every run config validates
    rayjob = docs[REPO / "cluster/kuberay/rayjob.yaml"][0]
    assert rayjob["kind"] == "RayJob" and rayjob["spec"]["entrypoint"].startswith("python launch.py --config ")
    launcher = docs[REPO / "cluster/ray-cluster.yaml"][0]
    assert any("torch==2.13.0" in c for c in launcher["setup_commands"])
    for f in ("zero2.json", "zero3.json"):
        json.loads((REPO / "trex_ray/executor/deepspeed" / f).read_text())


# ---------------------------------------------------------------- a simulated multi-node cluster
@pytest.fixture(scope="module")
def gpu_cluster(tmp_path_factory):
    """Head (no GPUs) + 3 worker nodes with 2 declared GPUs each, every node on its own loopback
    address (Ray treats only 127.0.0.1 as localhost, so 127.0.0.x nodes stay distinct)."""
    import ray
    from ray.cluster_utils import Cluster

    saved = os.environ.get("RAY_TMPDIR")
    os.environ["RAY_TMPDIR"] = str(tmp_path_factory.mktemp("rt"))
    cluster = Cluster(initialize_head=True, connect=False, head_node_args=dict(
        num_cpus=1, num_gpus=0, node_ip_address="127.0.0.2", include_dashboard=False,
        object_store_memory=80 * 2**20))
    for i in range(3):
        cluster.add_node(num_cpus=2, num_gpus=2, node_ip_address=f"127.0.0.{3 + i}", object_store_memory=80 * 2**20)
    cluster.wait_for_nodes()
    ray.init(address=cluster.address)
    # ship this module's probe functions by value: workers cannot import the tests folder
    import sys

    ray.cloudpickle.register_pickle_by_value(sys.modules[__name__])
    yield cluster
    ray.shutdown()
    cluster.shutdown()
    if saved is None:
        os.environ.pop("RAY_TMPDIR", None)
    else:
        os.environ["RAY_TMPDIR"] = saved


def _probe(config: dict) -> None:
    import ray
    from ray import tune

    tune.report({"node_ip": ray.util.get_node_ip_address(), "cvd": os.environ.get("CUDA_VISIBLE_DEVICES", ""),
                 "gpu_ids": ",".join(str(g) for g in ray.get_gpu_ids())})


def test_single_worker_trials_pack_onto_gpu_nodes(gpu_cluster):
    from ray import tune

    from functools import partial

    from trex_ray.executor.trial import trial_resources

    default = TrialResources(gpus_per_worker=1, cpus_per_worker=0.5)
    plan = {"direction": "method", "recipe": {"steps": [{"op": "load"}, {"op": "format", "prompt": "{input}", "completion": "{reference}"}]},
            "training": {}}
    tuner = tune.Tuner(tune.with_resources(_probe, partial(trial_resources, default)),
                       param_space={"plan": plan, "i": tune.grid_search(list(range(6)))},
                       run_config=tune.RunConfig(storage_path=str(Path(os.environ["RAY_TMPDIR"]) / "tune1"), verbose=0))
    results = [r.metrics for r in tuner.fit()]
    assert len(results) == 6
    for r in results:
        assert r["node_ip"] in {"127.0.0.3", "127.0.0.4", "127.0.0.5"}  # never the GPU-less head
        assert r["cvd"] == r["gpu_ids"] and r["cvd"] in {"0", "1"}  # one GPU each, as Ray assigned


def _worker_probe(config: dict) -> None:
    import ray
    import ray.train

    ctx = ray.train.get_context()
    path = Path(config["out"]) / f"rank{ctx.get_world_rank()}.json"
    path.write_text(json.dumps({"node_ip": ray.util.get_node_ip_address(),
                                "cvd": os.environ.get("CUDA_VISIBLE_DEVICES", "")}))


@pytest.mark.parametrize("workers, gpus, nodes", [(2, 1, 1), (2, 2, 2), (3, 2, 3)])
def test_multi_worker_trials_pack_when_they_fit_and_spread_when_they_must(gpu_cluster, tmp_path, workers, gpus, nodes):
    from ray.train.torch import TorchConfig, TorchTrainer

    from trex_ray.executor.distributed import scaling_config

    res = TrialResources(num_workers=workers, gpus_per_worker=gpus, cpus_per_worker=0.5)
    # gloo: the GPUs are declared, not real
    TorchTrainer(_worker_probe, train_loop_config={"out": str(tmp_path)}, scaling_config=scaling_config(res),
                 torch_config=TorchConfig(backend="gloo"),
                 run_config=__import__("ray").train.RunConfig(storage_path=str(tmp_path / "st"))).fit()
    placed = [json.loads((tmp_path / f"rank{r}.json").read_text()) for r in range(workers)]
    assert len({p["node_ip"] for p in placed}) == nodes
    for p in placed:
        assert len(p["cvd"].split(",")) == gpus * sum(q["node_ip"] == p["node_ip"] for q in placed)


def test_searcher_follows_the_cluster_capacity_as_nodes_come_and_go(monkeypatch):
    from trex_ray import searcher as searcher_mod
    from trex_ray.searcher import TreeSearcher

    s = TreeSearcher(None, None)
    assert s._room()  # no capacity function: Tune's own cap only
    nodes = {"count": 1}
    s.capacity = lambda: 2 * nodes["count"]
    clock = {"t": 1000.0}
    monkeypatch.setattr(searcher_mod.time, "time", lambda: clock["t"])
    s.live = {"a": "n1", "b": "n2"}
    assert not s._room()  # 2 trials on a 1-node cluster holding 2
    nodes["count"] = 2  # the autoscaler adds a node ...
    assert not s._room()  # ... seen at the next re-read, not on every suggest
    clock["t"] += 6
    assert s._room()
    s.capacity = lambda: (_ for _ in ()).throw(ValueError("cannot hold one trial"))
    clock["t"] += 6
    assert not s._room()  # the cluster shrank below one trial: wait, do not crash
