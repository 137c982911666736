"""One trial's work, start to finish, in plain Python: data, fine-tune, evaluate on dev.

``run_trial`` in ``trial.py`` wraps this for Ray Tune; benchmarks and tests call it directly,
which is also how the orchestration overhead is measured (same function, with and without Ray).
"""

from __future__ import annotations

import logging
import time
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any, Callable

from ftbench.evaluate import evaluate, load_model
from ftbench.task import load_split
from ftbench.tasks import get_task
from trex_ray.plan import Plan
from trex_ray.storage import RunStorage, fetch, is_remote, scratch_dir

log = logging.getLogger(__name__)

Progress = Callable[[dict[str, Any]], None]


@dataclass
class TrialContext:
    """What every trial of a run shares (sent with each trial's config)."""

    task: str
    paths: dict[str, str | None]
    model: dict[str, Any]  # ModelConfig fields; resolved on the worker (the builtin converts there)
    run_dir: str
    dev_limit: int
    eval_batch_size: int = 32
    threads: int = 1
    resources: dict[str, Any] | None = None  # TrialResources of plans that set none
    max_failures: int = 1  # worker-group restarts of a multi-worker trial
    max_preemptions: int = -1  # restarts after node preemptions, not counted in max_failures
    # Where trials write (see storage.py): a local/NFS path or an s3:// / gs:// URI; None: run_dir
    storage: str | None = None
    # LLMConfig fields (no key: only the NAME of its variable), for recipes' synthesize steps
    llm: dict[str, Any] | None = None

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)

    @property
    def storage_root(self) -> str:
        return self.storage or self.run_dir

    @property
    def recipe_cache(self) -> str:
        """The recipe cache every node of the cluster shares."""
        return RunStorage(self.storage_root).uri_for("recipe_cache")


def node_dir(ctx: TrialContext, node_id: str) -> Path:
    """Where this process writes node ``node_id``'s files: its place in the storage when that is
    a filesystem path, else a scratch folder on this machine, uploaded by ``publish_node``."""
    store = RunStorage(ctx.storage_root)
    if store.remote:
        return scratch_dir(Path(ctx.run_dir).name, "nodes", node_id)
    return Path(store.path(f"nodes/{node_id}"))


def publish_node(ctx: TrialContext, node_id: str, out: Path, artifacts: dict[str, str]) -> dict[str, str]:
    """Upload a scratch node folder to remote storage; the artifacts then name storage URIs,
    which any machine can ``storage.fetch``. A no-op for filesystem storage."""
    store = RunStorage(ctx.storage_root)
    if not store.remote:
        return artifacts
    rel = f"nodes/{node_id}"
    store.upload_dir(out, rel)
    published = {}
    for name, path in artifacts.items():
        try:
            published[name] = store.uri_for(f"{rel}/{Path(path).resolve().relative_to(out.resolve()).as_posix()}")
        except ValueError:  # not under the node folder: leave it as it is
            published[name] = path
    return published


def warm_start_dir(ctx: TrialContext, node_id: str, init_from: str | None, tag: str = "") -> str | None:
    """A local folder holding the parent model a warm start begins from: the path itself, or a
    download of a storage URI into this machine's scratch space (kept out of the node folder,
    which is uploaded). ``tag`` keeps processes on one machine apart (ranks of one trial)."""
    if not init_from or not is_remote(init_from):
        return init_from
    dest = scratch_dir(Path(ctx.run_dir).name, "warm_start", node_id + tag)
    return str(fetch(init_from, dest))


def execute(plan: Plan, node_id: str, ctx: TrialContext, on_progress: Progress | None = None,
            init_from: str | None = None) -> dict[str, Any]:
    """Run ``plan`` and return its outcome: score, metrics, cost, artifacts, recipe statistics.
    ``init_from`` is the parent's model (path or storage URI) a warm-start plan trains further.

    Exceptions propagate: they are the plan's own failures (bad data, out of memory, ...) and
    the caller records them on the node.
    """
    import torch

    from trex_ray.config import ModelConfig
    from trex_ray.models import resolve_model

    t0 = time.time()
    torch.set_num_threads(max(1, ctx.threads))
    report = on_progress or (lambda _: None)
    out = node_dir(ctx, node_id)
    out.mkdir(parents=True, exist_ok=True)
    task = get_task(ctx.task)
    model_cfg = ModelConfig(**ctx.model)
    model_path, trust = resolve_model(model_cfg), model_cfg.trust_remote_code
    dev = load_split(task, "dev", ctx.paths, limit=ctx.dev_limit)
    cost: dict[str, Any] = {"train_samples": 0, "train_tokens": 0}
    artifacts: dict[str, str] = {}
    stats: dict[str, Any] = {}
    if plan.training is None:
        model, tok = load_model(model_path, trust_remote_code=trust)
    else:
        report({"phase": "data"})
        from trex_ray.recipes.build import build_recipe  # datasets is heavy: import on the worker only

        dataset, stats = build_recipe(plan.recipe, task, ctx.paths, ctx.recipe_cache, num_proc=ctx.threads,
                                      llm=ctx.llm)
        report({"phase": "train", "step": 0, "rows": len(dataset)})

        def on_log(entry: dict[str, Any]) -> None:
            report({"phase": "train", **{k: v for k, v in entry.items() if isinstance(v, (int, float))}})

        from trex_ray.train import fine_tune

        init = warm_start_dir(ctx, node_id, init_from) if plan.training.warm_start else None
        model, tok, tr = fine_tune(plan.training, model_path, dataset, out, on_log, trust, init_from=init)
        cost.update(train_samples=tr.train_samples, train_tokens=tr.train_tokens)
        artifacts["model"] = tr.model_dir
        stats["train_loss"] = tr.train_loss
        stats["train_steps"] = tr.steps
        stats["loss_curve"] = [{"step": h["step"], "loss": h["loss"]} for h in tr.history if "loss" in h]
    preds = out / "dev_predictions.jsonl"
    metrics = evaluate(
        task, model, tok, dev, plan.recipe.format.prompt, ctx.eval_batch_size, preds,
        on_batch=lambda done, total: report({"phase": "eval", "evaluated": done, "total": total}),
    )
    artifacts["dev_predictions"] = str(preds)
    from trex_ray.diagnosis import collect_bad_cases

    # a few wrong dev answers (dev only, never test) for the Researcher's diagnosis of this node
    bad_cases = collect_bad_cases(task, dev, preds, plan.recipe.format.prompt, tok)
    artifacts = publish_node(ctx, node_id, out, artifacts)
    cost["wall_seconds"] = round(time.time() - t0, 2)
    return {
        "score": float(metrics[task.metric]),
        "metrics": {k: float(v) for k, v in metrics.items()},
        "cost": cost,
        "artifacts": artifacts,
        "recipe_stats": stats,
        "bad_cases": bad_cases,
    }
