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
from pathlib import Path
from typing import Any

from trex_ray.executor import TrialContext, node_dir, publish_node, warm_start_dir
from trex_ray.plan import Plan, TrialResources
from trex_ray.storage import RunStorage

log = logging.getLogger(__name__)

DEEPSPEED_DIR = Path(__file__).resolve().parents[1] / "cluster" / "deepspeed"


def deepspeed_config(stage: int, offload: bool) -> dict[str, Any] | None:
    """The ZeRO config for ``stage`` from cluster/deepspeed/, with CPU offload added on request;
    None for stage 0 (plain data parallel)."""
    if stage == 0:
        return None
    path = DEEPSPEED_DIR / f"zero{stage}.json"
    cfg = json.loads(path.read_text())
    if offload:
        cfg["zero_optimization"]["offload_optimizer"] = {"device": "cpu", "pin_memory": True}
        if stage == 3:
            cfg["zero_optimization"]["offload_param"] = {"device": "cpu", "pin_memory": True}
    return cfg


def train_loop(config: dict[str, Any]) -> None:
    """Runs on every Ray Train worker."""
    import ray.train
    import torch
    from ray.train.huggingface.transformers import RayTrainReportCallback

    from ftbench.evaluate import evaluate, load_model
    from ftbench.task import load_split
    from ftbench.tasks import get_task
    from trex_ray.config import ModelConfig
    from trex_ray.models import resolve_model
    from trex_ray.recipe import build_recipe
    from trex_ray.train import fine_tune

    t0 = time.time()
    ctx = TrialContext(**config["context"])
    plan = Plan.model_validate(config["plan"])
    res = TrialResources.model_validate(config["resources"])
    node_id = config["node_id"]
    torch.set_num_threads(max(1, int(res.cpus_per_worker)))
    rank = ray.train.get_context().get_world_rank()
    task = get_task(ctx.task)
    model_cfg = ModelConfig(**ctx.model)
    model_path = resolve_model(model_cfg)
    # every rank builds the same (seeded) recipe; the shared cache makes all but the first a read
    dataset, stats = build_recipe(plan.recipe, task, ctx.paths, cache_dir=ctx.recipe_cache)
    out = node_dir(ctx, node_id)

    def on_log(entry: dict[str, Any]) -> None:
        # every rank reports at the same steps: ray.train.report is collective
        ray.train.report({"node_id": node_id, "phase": "train",
                          **{k: v for k, v in entry.items() if isinstance(v, (int, float))}})

    checkpoint = ray.train.get_checkpoint()
    resume = None
    if checkpoint is not None:
        resume = str(Path(checkpoint.to_directory()) / "checkpoint")
        log.info("node %s rank %d resumes from %s", node_id, rank, resume)
    assert plan.training is not None
    # a warm start: every rank loads the parent's model (each its own download from remote storage)
    init = warm_start_dir(ctx, node_id, config.get("init_from"), f"-rank{rank}") if plan.training.warm_start else None
    steps = max(1, len(dataset) // (plan.training.batch_size * plan.training.grad_accum * res.num_workers))
    _, _, tr = fine_tune(
        plan.training, model_path, dataset, out, on_log, model_cfg.trust_remote_code,
        deepspeed=deepspeed_config(res.zero_stage, res.offload),
        callbacks=[RayTrainReportCallback()], save_steps=max(1, steps // 2), resume_from=resume, init_from=init,
    )
    outcome: dict[str, Any] = {}
    if rank == 0:
        base, adapter = (model_path, tr.model_dir) if plan.training.method == "lora" else (tr.model_dir, None)
        model, tok = load_model(base, adapter, trust_remote_code=model_cfg.trust_remote_code)
        dev = load_split(task, "dev", ctx.paths, limit=ctx.dev_limit)
        metrics = evaluate(task, model, tok, dev, plan.recipe.format.prompt, ctx.eval_batch_size,
                           out / "dev_predictions.jsonl")
        stats.update(train_loss=tr.train_loss, train_steps=tr.steps, resumed_from_checkpoint=resume is not None,
                     loss_curve=[{"step": h["step"], "loss": h["loss"]} for h in tr.history if "loss" in h])
        from trex_ray.diagnosis import collect_bad_cases

        bad_cases = collect_bad_cases(task, dev, out / "dev_predictions.jsonl", plan.recipe.format.prompt, tok)
        artifacts = publish_node(ctx, node_id, out, {"model": tr.model_dir,
                                                     "dev_predictions": str(out / "dev_predictions.jsonl")})
        outcome = {
            "score": float(metrics[task.metric]), "metrics": {k: float(v) for k, v in metrics.items()},
            "cost": {"wall_seconds": round(time.time() - t0, 2), "train_samples": tr.train_samples,
                     "train_tokens": tr.train_tokens},
            "artifacts": artifacts,
            "recipe_stats": stats | {"workers": res.num_workers, "zero_stage": res.zero_stage},
            "bad_cases": bad_cases,
        }
        # The outcome travels through the run's storage (written last, atomically): Train keeps
        # only checkpoint-bound metrics, and rank 0 may run on another node than the trial.
        RunStorage(ctx.storage_root).write_bytes(f"nodes/{node_id}/outcome.json", json.dumps(outcome).encode())
        ray.train.report({"node_id": node_id, "phase": "eval", "evaluated": len(dev), "total": len(dev)})
    else:
        ray.train.report({"node_id": node_id, "phase": "eval"})


def scaling_config(res: TrialResources):
    """Ray Train's worker reservation for a plan: ``num_workers`` bundles of the worker's CPUs and
    GPUs, PACKed (one node when they fit, spread over nodes when they must)."""
    from ray import train

    per_worker = {"CPU": res.cpus_per_worker}
    if res.gpus_per_worker:
        per_worker["GPU"] = res.gpus_per_worker
    return train.ScalingConfig(num_workers=res.num_workers, use_gpu=res.gpus_per_worker > 0,
                               resources_per_worker=per_worker, placement_strategy="PACK")


def run_distributed(plan: Plan, node_id: str, ctx: TrialContext, res: TrialResources, max_failures: int,
                    init_from: str | None = None) -> dict[str, Any]:
    """Train and evaluate ``plan`` on ``res.num_workers`` workers; returns the trial's outcome.
    Progress and the final outcome reach Tune through ``TuneReportCallback``. ``init_from``: the
    parent's model a warm-start plan trains further (as in ``executor.execute``)."""
    from ray import train
    from ray.train.torch import TorchTrainer
    from ray.tune.integration.ray_train import TuneReportCallback

    store = RunStorage(ctx.storage_root)
    outcome_rel = f"nodes/{node_id}/outcome.json"
    if store.exists(outcome_rel):
        store.fs.delete_file(store.path(outcome_rel))
    trainer = TorchTrainer(
        train_loop,
        train_loop_config={"context": ctx.to_dict(), "plan": plan.model_dump(mode="json"),
                           "resources": res.model_dump(), "node_id": node_id, "init_from": init_from},
        scaling_config=scaling_config(res),
        run_config=train.RunConfig(
            name=f"train-{node_id}", storage_path=store.path("train"),
            storage_filesystem=store.fs if store.remote else None,
            # A preempted node (drained with reason PREEMPTION, e.g. a spot instance) costs a
            # restart from the checkpoint but is counted apart: spot clusters must not exhaust
            # max_failures on the cloud's doing.
            failure_config=train.FailureConfig(max_failures=max_failures,
                                               max_preemption_failures=ctx.max_preemptions),
            checkpoint_config=train.CheckpointConfig(num_to_keep=1),
            callbacks=[TuneReportCallback()],
        ),
    )
    result = trainer.fit()
    if result.error is not None:
        raise result.error
    return json.loads(store.read_bytes(outcome_rel))
