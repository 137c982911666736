"""Multi-worker trials: one plan trained by a Ray Train ``TorchTrainer`` with DeepSpeed ZeRO.

The Tune trial function becomes a small driver that launches the trainer (Train V2: Train runs
inside the Tune trial, it is not itself a Tune trainable). Ray Train reserves the workers in a
placement group (PACK: one node when they fit, spread over nodes when they must), wires up
torch.distributed (NCCL on GPUs, gloo on CPU), and on a worker or node loss restarts the worker
group from the latest checkpoint reported through ``RayTrainReportCallback``.
Rank 0 evaluates the saved model after training, so the trial process needs no GPU.
"""

from __future__ import annotations

import json
import logging
import time
from importlib import resources as package_files
from pathlib import Path
from typing import Any

from trex_ray.executor.context import (TrialContext, checkpoint_dir, node_dir, score_on_dev,
                                       warm_start_dir)
from trex_ray.search.halving import Rung
from trex_ray.search.outcome import Cost, TrialOutcome
from trex_ray.search.plan import Plan, TrialResources
from trex_ray.storage import RunStorage

log = logging.getLogger(__name__)


def deepspeed_config(stage: int, offload: bool) -> dict[str, Any] | None:
    """The ZeRO config for ``stage`` (``executor/deepspeed/zero{2,3}.json``, shipped inside the
    package, so an installed wheel has it), with CPU offload added on request; None for stage 0
    (plain data parallel)."""
    if stage == 0:
        return None
    cfg = json.loads((package_files.files("trex_ray.executor") / "deepspeed" / f"zero{stage}.json").read_text())
    if offload:
        cfg["zero_optimization"]["offload_optimizer"] = {"device": "cpu", "pin_memory": True}
        if stage == 3:
            cfg["zero_optimization"]["offload_param"] = {"device": "cpu", "pin_memory": True}
    return cfg


def torch_config(res: TrialResources):
    """torch.distributed for a plan's workers: NCCL when each holds a GPU, gloo on CPUs. Said
    here rather than left to Ray Train's default, which picks the same from the reservation."""
    from ray.train.torch import TorchConfig

    return TorchConfig(backend="nccl" if res.gpus_per_worker > 0 else "gloo")


def gpu_shape_problem(res: TrialResources) -> str | None:
    """Why a multi-worker trial cannot train on its GPUs as reserved, else None. Each rank drives
    one GPU: NCCL cannot put two ranks on one device (a fraction of a GPU per worker), and a
    second GPU per worker would sit idle (more workers use it)."""
    g = res.gpus_per_worker
    if res.num_workers > 1 and 0 < g < 1:
        return (f"{res.num_workers} workers with {g:g} GPU each would share GPUs, which NCCL cannot do: "
                f"give each worker 1 GPU")
    if g > 1:
        return (f"each worker trains on one GPU, so {g:g} GPUs per worker would leave some idle: "
                f"reserve 1 GPU per worker and raise num_workers instead")
    return None


def use_worker_device():
    """Make this Ray Train worker's own GPU the current CUDA device (co-located workers see each
    other's GPUs so that NCCL can use NVLink; Ray Train knows which one is this worker's), so
    that the Trainer, DeepSpeed and NCCL all use it; the CPU device when the worker has none."""
    import ray.train.torch
    import torch

    device = ray.train.torch.get_device()
    if device.type == "cuda":
        torch.cuda.set_device(device)
    return device


def train_loop(config: dict[str, Any]) -> None:
    """Runs on every Ray Train worker."""
    import ray.train
    import torch
    from ray.train.huggingface.transformers import RayTrainReportCallback

    from ftbench.evaluate import load_model
    from trex_ray.executor.models import resolve_model
    from trex_ray.executor.train import Hardware, fine_tune
    from trex_ray.recipes.build import build_recipe
    from trex_ray.tasks import resolve_task

    t0 = time.time()
    ctx: TrialContext = config["context"]
    plan: Plan = config["plan"]
    res: TrialResources = config["resources"]
    node_id = config["node_id"]
    torch.set_num_threads(max(1, int(res.cpus_per_worker)))
    device = use_worker_device()
    hw = Hardware.detect(res.gpus_per_worker)
    rank = ray.train.get_context().get_world_rank()
    task = resolve_task(ctx.task)
    model_path = resolve_model(ctx.model)
    # every rank builds the same (seeded) recipe; the shared cache makes all but the first a read
    dataset, stats = build_recipe(plan.recipe, task, ctx.paths, cache_dir=ctx.recipe_cache, llm=ctx.llm,
                                  account=ctx.llm_account, who=f"synthesis:{node_id}")
    out = node_dir(ctx, node_id)

    def on_log(entry: dict[str, Any]) -> None:
        # every rank reports at the same steps: ray.train.report is collective
        ray.train.report({"node_id": node_id, "phase": "train",
                          **{k: v for k, v in entry.items() if isinstance(v, (int, float))}})

    checkpoint = ray.train.get_checkpoint()
    rung: Rung | None = config.get("rung")
    if checkpoint is not None:  # a restarted worker group: Train's own latest checkpoint
        resume = str(Path(checkpoint.to_directory()) / "checkpoint")
        log.info("node %s rank %d resumes from %s", node_id, rank, resume)
    else:  # a promotion: the checkpoint the node's previous rung stopped at (every rank its own copy)
        resume = checkpoint_dir(ctx, f"{node_id}-rank{rank}", config.get("resume_from"), stats)
    assert plan.training is not None
    # a warm start: every rank loads the parent's model (each its own download from remote storage)
    init = warm_start_dir(ctx, node_id, config.get("init_from"), f"-rank{rank}") if plan.training.warm_start else None
    steps = max(1, len(dataset) // (plan.training.batch_size * plan.training.grad_accum * res.num_workers))
    stop = plan.training.stop_at(len(dataset), rung.fraction) if rung is not None and rung.fraction < 1 else None
    _, _, tr = fine_tune(
        plan.training, model_path, dataset, out, on_log, ctx.model.trust_remote_code,
        deepspeed=deepspeed_config(res.zero_stage, res.offload),
        callbacks=[RayTrainReportCallback()], save_steps=max(1, steps // 2), resume_from=resume, init_from=init,
        stop_at=stop,
        hardware=hw,
    )
    if rank != 0:
        ray.train.report({"node_id": node_id, "phase": "eval"})
        return
    base, adapter = (model_path, tr.model_dir) if plan.training.method == "lora" else (tr.model_dir, None)
    model, tok = load_model(base, adapter, trust_remote_code=ctx.model.trust_remote_code, dtype=hw.eval_dtype)
    model.to(device)
    stats.update(tr.stats(), resumed_from_checkpoint=checkpoint is not None, workers=res.num_workers,
                 zero_stage=res.zero_stage)
    arts = {"model": tr.model_dir, **({"checkpoint": tr.checkpoint} if tr.checkpoint else {})}
    llm = stats.get("llm_spent") or {}
    outcome = score_on_dev(task, model, tok, plan, node_id, ctx, out,
                           Cost(train_samples=tr.train_samples, train_tokens=tr.train_tokens, examples=tr.examples,
                                llm_tokens=int(llm.get("tokens", 0)), llm_cost=float(llm.get("cost", 0.0))),
                           arts, stats, t0, dev_limit=rung.dev_limit if rung is not None else None,
                           compare=config.get("compare"))
    outcome.rung, outcome.fidelity = (rung.index, rung.fraction) if rung is not None else (0, 1.0)
    # The outcome travels through the run's storage (written last, atomically): Train keeps
    # only checkpoint-bound metrics, and rank 0 may run on another node than the trial.
    RunStorage(ctx.storage_root).write_bytes(f"nodes/{node_id}/outcome.json", outcome.to_json().encode())
    n = int(outcome.metrics.get("n", ctx.dev_limit))
    ray.train.report({"node_id": node_id, "phase": "eval", "evaluated": n, "total": n})


def scaling_config(res: TrialResources):
    """Ray Train's worker reservation for a plan: ``num_workers`` bundles of the worker's CPUs and
    GPUs, PACKed (one node when they fit, spread over nodes when they must)."""
    from ray import train

    per_worker = {"CPU": res.cpus_per_worker}
    if res.gpus_per_worker:
        per_worker["GPU"] = res.gpus_per_worker
    return train.ScalingConfig(num_workers=res.num_workers, use_gpu=res.gpus_per_worker > 0,
                               resources_per_worker=per_worker, placement_strategy="PACK")


def run_distributed(plan: Plan, node_id: str, ctx: TrialContext, res: TrialResources,
                    init_from: str | None = None, rung: Rung | None = None, resume_from: str | None = None,
                    compare: dict[str, tuple[str, str]] | None = None) -> TrialOutcome:
    """Train and evaluate ``plan`` on ``res.num_workers`` workers; returns the trial's outcome.
    Progress and the final outcome reach Tune through ``TuneReportCallback``. ``init_from``,
    ``rung``, ``resume_from``, ``compare``: as in ``execute.execute``."""
    from ray import train
    from ray.train.torch import TorchTrainer
    from ray.tune.integration.ray_train import TuneReportCallback

    problem = gpu_shape_problem(res)
    if problem:  # the plan's own failure, before any worker starts
        raise ValueError(problem)
    store = RunStorage(ctx.storage_root)
    outcome_rel = f"nodes/{node_id}/outcome.json"
    if store.exists(outcome_rel):
        store.fs.delete_file(store.path(outcome_rel))
    trainer = TorchTrainer(
        train_loop,
        train_loop_config={"context": ctx, "plan": plan, "resources": res, "node_id": node_id, "init_from": init_from,
                           "rung": rung, "resume_from": resume_from, "compare": compare},
        scaling_config=scaling_config(res),
        torch_config=torch_config(res),
        run_config=train.RunConfig(
            # one Train run per rung: a run name Train finds again is a run it resumes
            name=f"train-{node_id}-r{rung.index if rung else 0}", storage_path=store.path("train"),
            storage_filesystem=store.fs if store.remote else None,
            # A preempted node (drained with reason PREEMPTION, e.g. a spot instance) costs a
            # restart from the checkpoint but is counted apart: spot clusters must not exhaust
            # max_failures on the cloud's doing.
            failure_config=train.FailureConfig(max_failures=ctx.max_failures,
                                               max_preemption_failures=ctx.max_preemptions),
            checkpoint_config=train.CheckpointConfig(num_to_keep=1),
            callbacks=[TuneReportCallback()],
        ),
    )
    result = trainer.fit()
    if result.error is not None:
        raise result.error
    return TrialOutcome.from_json(store.read_bytes(outcome_rel))
