"""The Ray Tune trainable: one trial = one node's plan, run by ``execute.execute``.

A plan's own failure (bad data, out of memory, a crash in training) is caught and reported as a
``failed`` result, so Tune does not retry it blindly and the cause reaches the node. Only an
infrastructure failure (the worker process or its node dies) surfaces as a Tune trial error,
which ``FailureConfig`` retries.
"""

from __future__ import annotations

import json
import logging
import os
import time
import traceback
from dataclasses import asdict
from functools import partial
from typing import Any

from ray import tune
from ray.tune import PlacementGroupFactory

from trex_ray.executor.context import AcceleratorClock, TrialContext
from trex_ray.executor.execute import execute
from trex_ray.guard.redact import scrub
from trex_ray.search.halving import Rung
from trex_ray.search.outcome import Cost
from trex_ray.search.plan import TrialResources, parse_plan

log = logging.getLogger(__name__)

# Progress lines are throttled: Tune stores every report, and a step's loss every 0.1 s is noise.
REPORT_EVERY_S = 2.0


def trial_resources(default: TrialResources, config: dict[str, Any]) -> PlacementGroupFactory:
    """What Tune reserves for a trial (``default``: the run's trial shape, for plans that set
    none). A single-worker trial trains in the trial process, which holds the worker's CPUs/GPUs.
    A multi-worker trial's process only drives a TorchTrainer whose workers reserve their own
    resources, so it holds a sliver of a CPU (0 is not allowed)."""
    plan = parse_plan(config["plan"])
    res = plan.resources or default
    if res.distributed and plan.training is not None:
        return PlacementGroupFactory([{"CPU": 0.01}])
    bundle = {"CPU": res.cpus_per_worker}
    if res.gpus_per_worker:
        bundle["GPU"] = res.gpus_per_worker
    return PlacementGroupFactory([bundle])


def trainable(ctx: TrialContext) -> Any:
    """The Tune trainable of a run: ``run_trial`` with the run's context in Ray's object store
    (``tune.with_parameters``), reserving what each trial's plan needs."""
    return tune.with_resources(tune.with_parameters(run_trial, ctx=ctx), partial(trial_resources, ctx.resources))




def run_trial(config: dict[str, Any], ctx: TrialContext) -> None:
    import datasets
    import transformers

    datasets.disable_progress_bar()
    transformers.logging.set_verbosity_error()
    os.environ.setdefault("OMP_NUM_THREADS", str(ctx.threads))
    node_id = config["node_id"]
    last: list[Any] = [0.0, None]  # when the last report went, and its phase

    def progress(update: dict[str, Any]) -> None:
        now = time.time()
        final_step = update.get("phase") == "train" and update.get("step") == update.get("max_steps")
        # a new phase is always reported: the live view and the trial's results show where it is
        if now - last[0] >= REPORT_EVERY_S or final_step or update.get("phase") != last[1]:
            last[0], last[1] = now, update.get("phase")
            tune.report({"node_id": node_id, **update})

    clock = AcceleratorClock(ctx.resources)
    try:
        plan = parse_plan(config["plan"])
        res = plan.resources or ctx.resources
        clock.res = res
        run = {"init_from": config.get("init_from"), "rung": Rung(**config["rung"]) if config.get("rung") else None,
               "resume_from": config.get("resume_from"),
               "compare": {k: (v[0], v[1]) for k, v in (config.get("compare") or {}).items()}}
        if res.distributed and plan.training is not None:
            from trex_ray.executor.distributed import run_distributed

            outcome = run_distributed(plan, node_id, ctx, res, **run)
        else:
            outcome = execute(plan, node_id, ctx, progress, **run)
    except Exception as e:  # the plan's own failure: record it, do not retry
        # scrubbed before cut: the error may quote a request (an endpoint's key) and lands in
        # Tune's result files, the ledger and the console
        error = scrub(f"{type(e).__name__}: {e}")
        log.warning("node %s failed: %s", node_id, error[:300])
        tune.report({"node_id": node_id, "phase": "failed", "error": error[:4000],
                     "traceback": scrub(traceback.format_exc())[-4000:], "cost": json.dumps(asdict(clock.read()))})
        return
    spent = clock.read()
    outcome.cost.accelerator_seconds, outcome.cost.accelerator = spent.accelerator_seconds, spent.accelerator
    # Tune flattens nested result dicts for searchers; the outcome travels as one JSON string.
    tune.report({"node_id": node_id, "phase": "done", "score": outcome.score, "outcome": outcome.to_json()})
