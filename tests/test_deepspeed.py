"""A multi-worker trial for real: 2 Ray Train workers, DeepSpeed ZeRO-2 over gloo on CPU, the
tiny model; it trains, checkpoints through Train, exports a consolidated HF model that loads and
reproduces its dev score. Slow-ish (DeepSpeed JIT-builds a CPU op on a fresh machine)."""

from __future__ import annotations

import json

import pytest

from trex_ray.config import load_config

pytestmark = pytest.mark.slow


def test_two_worker_zero2_trial_trains_checkpoints_and_exports(tiny_model_dir, tmp_path, monkeypatch):
    pytest.importorskip("deepspeed")
    monkeypatch.setenv("DS_ACCELERATOR", "cpu")
    from test_search import tiny_args
    from trex_ray.run import run_search

    args = tiny_args(tiny_model_dir, tmp_path, "ds", trials=1) + [
        "--search.children_per_expansion=1", "--task.dev_limit=16", "--task.test_limit=0",
        "--resources.num_workers=2", "--resources.zero_stage=2", "--resources.cpus_per_trial=0.5"]
    summary = run_search(load_config(None, args))
    run = tmp_path / "ds"
    tree = json.loads((run / "tree.json").read_text())
    n1 = next(n for n in tree["nodes"] if n["id"] == "n1")
    assert n1["status"] == "succeeded", n1["failure"]
    assert n1["recipe_stats"]["workers"] == 2 and n1["recipe_stats"]["zero_stage"] == 2
    assert summary["trials"] == 1 and summary["best_node"] == "n1"

    # it really trained as 2 DeepSpeed ranks
    import torch

    args_bin = torch.load(f"{n1['artifacts']['model']}/training_args.bin", weights_only=False)
    assert args_bin.world_size == 2 and args_bin.deepspeed_plugin is not None
    assert args_bin.hf_deepspeed_config.config["zero_optimization"]["stage"] == 2
    # Train kept a checkpoint in the run's storage
    assert list((run / "train" / "train-n1-r0").glob("checkpoint_*"))  # one Train run per node and rung

    # the exported model is a plain HF folder that reproduces the node's dev score
    from ftbench.evaluate import evaluate, load_model
    from ftbench.task import load_split
    from ftbench.tasks import get_task
    from trex_ray.search.plan import Plan

    task = get_task("sst2")
    model, tok = load_model(run / "best")
    plan = Plan.model_validate(n1["plan"])
    metrics = evaluate(task, model, tok, load_split(task, "dev", limit=16), plan.recipe.format.prompt)
    assert metrics["accuracy"] == pytest.approx(n1["score"])
