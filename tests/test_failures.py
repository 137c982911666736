"""Trials that fail become failed nodes with their cause, and the search goes on: a plan's own
error (caught in the trial, not retried) and a trial process killed outright (an infrastructure
failure: Tune retries it, then gives up), both through the real Tune loop and actors."""

from __future__ import annotations

import json
import time
from pathlib import Path

import psutil
import pytest

from trex_ray.config import load_config
from trex_ray.search.ledger import read_events


def _search_with_injected_plans(tiny_model_dir, tmp_path, extra_plans, max_failures=0, on_running=None, concurrency=2):
    """Run the real searcher/actors/Tune loop on the tiny model with the given plans as the
    root's first children (the Researcher is bypassed for them)."""
    import ray
    from ray import tune

    from core_helpers import outcome
    from test_search import tiny_args
    from trex_ray.actors import Researcher, TreeState
    from trex_ray.executor.context import TrialContext
    from trex_ray.executor.trial import trainable
    from trex_ray.run import preflight
    from trex_ray.search.plan import parse_plan
    from trex_ray.search.request import Proposal
    from trex_ray.searcher import TreeSearcher, TrialErrorCallback

    cfg = load_config(None, tiny_args(tiny_model_dir, tmp_path, "f", trials=len(extra_plans)) + ["--task.dev_limit=8"])
    _, spec = preflight(cfg)
    run_dir = tmp_path / "f"
    ray.init(num_cpus=2, include_dashboard=False, log_to_driver=False)
    try:
        state = TreeState.remote(str(run_dir), cfg, spec)
        ctx = TrialContext.of(cfg, run_dir, None)
        # the root runs first; its children are the injected plans
        ray.get(state.next_node.remote("root"))
        ray.get(state.finish.remote("n0", outcome(0.0)))
        ray.get(state.begin_expansion.remote())
        ray.get(state.add_children.remote("n0", Proposal([parse_plan(p) for p in extra_plans], "test")))
        searcher = TreeSearcher(state, Researcher.remote(cfg))
        if on_running:
            on_running(run_dir)
        tune.Tuner(trainable(ctx),
                   tune_config=tune.TuneConfig(search_alg=searcher, num_samples=-1, max_concurrent_trials=concurrency),
                   run_config=tune.RunConfig(storage_path=str(run_dir / "tune"), verbose=0,
                                             failure_config=tune.FailureConfig(max_failures=max_failures),
                                             callbacks=[TrialErrorCallback(state)])).fit()
        return ray.get(state.close.remote("test over"))
    finally:
        ray.shutdown()


def _plan(**training) -> dict:
    return {"direction": "method", "rationale": "test",
            "recipe": {"steps": [{"op": "load"}, {"op": "subsample", "n": 64},
                                 {"op": "format", "prompt": "Review: {input}", "completion": "{reference}"}]},
            "training": {"method": "full", "learning_rate": 0.005, **training}}


def test_a_plans_own_error_is_a_failed_node_with_its_cause(tiny_model_dir, tmp_path):
    bad = _plan(method="lora", lora_target_modules=["no_such_proj"])
    tree = _search_with_injected_plans(tiny_model_dir, tmp_path, [bad, _plan()])
    nodes = tree.nodes
    assert nodes["n1"].status == "failed" and "no_such_proj" in nodes["n1"].failure
    assert nodes["n2"].status == "succeeded" and nodes["n2"].score is not None  # the search went on
    events = list(read_events(tmp_path / "f" / "events.jsonl"))
    assert sum(e["type"] == "node_started" and e["node_id"] == "n1" for e in events) == 1  # not retried


def test_a_killed_trial_process_is_retried_then_recorded(tiny_model_dir, tmp_path):
    import threading

    killed: list[int] = []

    def killer(run_dir: Path) -> None:
        def loop() -> None:
            deadline = time.time() + 240
            while time.time() < deadline and len(killed) < 2:
                # one trial at a time and n1 first: the trial processes seen once n1's folder
                # exists are n1's first attempt and its retry
                if (run_dir / "nodes" / "n1").exists():
                    for p in psutil.process_iter(["cmdline"]):
                        cmd = " ".join(p.info["cmdline"] or [])
                        if "ImplicitFunc" in cmd and p.pid not in killed:
                            p.kill()  # SIGKILL: what the kernel's OOM killer does
                            killed.append(p.pid)
                            break
                time.sleep(0.2)

        threading.Thread(target=loop, daemon=True).start()

    slow = _plan(num_epochs=20)
    slow["recipe"]["steps"][1]["n"] = 400  # long enough to be caught mid-training, twice
    tree = _search_with_injected_plans(tiny_model_dir, tmp_path, [slow, _plan()], max_failures=1,
                                       on_running=killer, concurrency=1)
    nodes = tree.nodes
    assert len(killed) == 2  # the first attempt and its one retry
    assert nodes["n1"].status == "failed" and nodes["n1"].failure.startswith("infrastructure: trial failed after 2 attempt")
    assert nodes["n2"].status == "succeeded"

