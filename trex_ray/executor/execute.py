"""One trial's work, start to finish, in plain Python: data, fine-tune, evaluate on dev.

``run_trial`` in ``trial.py`` wraps this for Ray Tune; benchmarks and tests call it directly,
which is also how the orchestration overhead is measured (same function, with and without Ray).
"""

from __future__ import annotations

import logging
import time
from typing import Any, Callable

from ftbench.evaluate import load_model
from trex_ray.executor.context import (AcceleratorClock, TrialContext, checkpoint_dir, node_dir, score_on_dev,
                                       warm_start_dir)
from trex_ray.search.halving import Rung
from trex_ray.search.outcome import Cost, TrialOutcome
from trex_ray.search.plan import Plan
from trex_ray.tasks import resolve_task

log = logging.getLogger(__name__)

Progress = Callable[[dict[str, Any]], None]


def execute(plan: Plan, node_id: str, ctx: TrialContext, on_progress: Progress | None = None,
            init_from: str | None = None, rung: Rung | None = None, resume_from: str | None = None,
            compare: dict[str, tuple[str, str]] | None = None) -> TrialOutcome:
    """Run ``plan``: build its data, fine-tune, evaluate on dev. ``init_from`` is the parent's
    model (path or storage URI) a warm-start plan trains further. ``rung`` (successive halving):
    train to that fraction of the full run and score its dev slice; ``resume_from`` is the
    node's checkpoint from its previous rung, continued (a missing or unreadable one means a
    fresh run, said in the statistics). ``compare``: nodes to take paired differences with.

    Exceptions propagate: they are the plan's own failures (bad data, out of memory, ...) and
    the caller records them on the node.
    """
    import torch

    from trex_ray.executor.models import resolve_model
    from trex_ray.executor.train import Hardware

    t0, clock = time.time(), AcceleratorClock(plan.resources or ctx.resources)
    torch.set_num_threads(max(1, ctx.threads))
    report = on_progress or (lambda _: None)
    out = node_dir(ctx, node_id)
    out.mkdir(parents=True, exist_ok=True)
    task = resolve_task(ctx.task)
    model_path, trust = resolve_model(ctx.model), ctx.model.trust_remote_code
    cost = Cost()
    artifacts: dict[str, str] = {}
    stats: dict[str, Any] = {}
    hw = Hardware.detect((plan.resources or ctx.resources).gpus_per_worker)
    if plan.training is None:
        model, tok = load_model(model_path, trust_remote_code=trust, dtype=hw.eval_dtype)
        model.to(hw.device)
    else:
        report({"phase": "data"})
        from trex_ray.recipes.build import build_recipe  # datasets is heavy: import on the worker only

        dataset, stats = build_recipe(plan.recipe, task, ctx.paths, ctx.recipe_cache, num_proc=ctx.threads,
                                      llm=ctx.llm, account=ctx.llm_account, who=f"synthesis:{node_id}")
        report({"phase": "train", "step": 0, "rows": len(dataset)})

        def on_log(entry: dict[str, Any]) -> None:
            report({"phase": "train", **{k: v for k, v in entry.items() if isinstance(v, (int, float))}})

        from trex_ray.executor.train import fine_tune

        init = warm_start_dir(ctx, node_id, init_from) if plan.training.warm_start else None
        stop = plan.training.stop_at(len(dataset), rung.fraction) if rung is not None and rung.fraction < 1 else None
        resume = checkpoint_dir(ctx, node_id, resume_from, stats)
        model, tok, tr = fine_tune(plan.training, model_path, dataset, out, on_log, trust, init_from=init,
                                   resume_from=resume, stop_at=stop, hardware=hw)
        llm = stats.get("llm_spent") or {}
        cost = Cost(train_samples=tr.train_samples, train_tokens=tr.train_tokens, examples=tr.examples,
                    llm_tokens=int(llm.get("tokens", 0)), llm_cost=float(llm.get("cost", 0.0)))
        artifacts["model"] = tr.model_dir
        if tr.checkpoint:
            artifacts["checkpoint"] = tr.checkpoint
        stats.update(tr.stats())
    outcome = score_on_dev(task, model, tok, plan, node_id, ctx, out, cost, artifacts, stats, t0,
                           on_batch=lambda done, total: report({"phase": "eval", "evaluated": done, "total": total}),
                           dev_limit=rung.dev_limit if rung is not None else None, compare=compare)
    spent = clock.read()  # the trainable's own clock replaces this for Tune trials (failures included)
    outcome.cost.accelerator_seconds, outcome.cost.accelerator = spent.accelerator_seconds, spent.accelerator
    outcome.rung, outcome.fidelity = (rung.index, rung.fraction) if rung is not None else (0, 1.0)
    return outcome
