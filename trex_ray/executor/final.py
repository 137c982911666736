"""The end of a run: score the best node and the base model once on the task's TEST split, and
optionally export the best LoRA node merged into its base model.

Test scores are reported beside the dev scores and never used to choose a node (the search only
ever sees dev), so they are an honest estimate of the chosen model. The work loads models, so it
runs as a Ray task with a trial's resources (``final_remote``) and the driver stays light; the
function underneath (``final_evaluation``) is plain Python, which is how tests call it.
"""

from __future__ import annotations

import logging
import time
from pathlib import Path
from typing import Any

from trex_ray.executor.context import TrialContext
from trex_ray.guard.redact import scrub
from trex_ray.search.plan import Plan
from trex_ray.search.selection import Rescore
from trex_ray.search.tree import Node
from trex_ray.storage import RunStorage, fetch, scratch_dir

log = logging.getLogger(__name__)


def _load(model_path: str, node_model_dir: str | None, trust: bool, dtype=None):
    """(model, tokenizer) of the base model (no node dir) or of a trained node: a LoRA adapter
    folder is applied on top of the base model, a full-weights folder is loaded as is."""
    from ftbench.evaluate import load_model

    if node_model_dir is None:
        return load_model(model_path, trust_remote_code=trust, dtype=dtype)
    if (Path(node_model_dir) / "adapter_config.json").is_file():
        return load_model(model_path, adapter=node_model_dir, trust_remote_code=trust, dtype=dtype)
    return load_model(node_model_dir, trust_remote_code=trust, dtype=dtype)


def score_split(ctx: TrialContext, plan: Plan, node_model_dir: str | None, split: str, limit: int | None,
                predictions: Path) -> tuple[dict[str, float], list[dict], list[str]]:
    """(metrics, rows, generations) of one model (base when ``node_model_dir`` is None) on the
    first ``limit`` rows of ``split``, prompted with ``plan``'s own template, as dev scored it."""
    from ftbench.evaluate import evaluate
    from ftbench.task import load_split
    from trex_ray.executor.context import read_predictions
    from trex_ray.executor.train import Hardware
    from trex_ray.executor.models import resolve_model
    from trex_ray.tasks import resolve_task

    task = resolve_task(ctx.task)
    rows = load_split(task, split, ctx.paths, limit=limit)
    # the device and precision the trials scored dev with, so test scores compare with them
    hw = Hardware.detect(ctx.resources.gpus_per_worker)
    model, tok = _load(resolve_model(ctx.model), node_model_dir, ctx.model.trust_remote_code, hw.eval_dtype)
    model = model.to(hw.device)
    metrics = evaluate(task, model, tok, rows, plan.recipe.format.prompt, ctx.eval_batch_size, predictions)
    gens = read_predictions(str(predictions))
    return {k: float(v) for k, v in metrics.items()}, rows, [gens[str(r["id"])] for r in rows]


def export_merged(ctx: TrialContext, adapter_dir: str, out_dir: Path) -> str | None:
    """Merge a LoRA adapter into its base model and save full weights (safetensors) and the
    tokenizer to ``out_dir``; None (nothing to do) when the node already holds full weights."""
    from trex_ray.executor.models import resolve_model

    if not (Path(adapter_dir) / "adapter_config.json").is_file():
        log.info("best node holds full weights already; nothing to merge")
        return None
    model, tok = _load(resolve_model(ctx.model), adapter_dir, ctx.model.trust_remote_code)
    merged = model.merge_and_unload()
    out_dir.mkdir(parents=True, exist_ok=True)
    merged.save_pretrained(out_dir, safe_serialization=True)
    tok.save_pretrained(out_dir)
    return str(out_dir)


def final_evaluation(ctx: TrialContext, root: Node | None, best: Node | None, metric: str, test_limit: int,
                     export: bool = False) -> dict[str, Any]:
    """Test scores (``metric``) of the base model (``root``) and the best node, and the merged
    export when asked.

    Never raises: a task without a test split, or any failure here, is recorded under
    ``test_error``/``export_error`` so the run's outputs are still written.
    """
    import torch

    torch.set_num_threads(max(1, ctx.threads))
    out: dict[str, Any] = {"base_test_score": None, "best_test_score": None, "test_limit": test_limit}
    # Runs on any node: it reads the best model from the run's storage and writes there.
    store = RunStorage(ctx.storage_root)
    local = scratch_dir(Path(ctx.run_dir).name, "final") if store.remote else Path(store.path())

    def predictions(node_id: str) -> Path:
        return local / "nodes" / node_id / "test_predictions.jsonl"

    def publish(path: Path) -> None:
        if store.remote and path.is_file():
            store.write_bytes(path.relative_to(local).as_posix(), path.read_bytes())

    best_model = None
    if best is not None and best.artifacts.get("model"):
        best_model = str(fetch(best.artifacts["model"], local / "fetched" / best.id))
    if test_limit > 0 and root is not None:
        from ftbench.intervals import bootstrap, paired
        from trex_ray.tasks import resolve_task

        task = resolve_task(ctx.task)
        t0 = time.time()
        try:
            m, rows, base_gens = score_split(ctx, root.plan, None, "test", test_limit, predictions(root.id))
            publish(predictions(root.id))
            out.update(base_test_score=m[metric], base_test_metrics=m,
                       base_test_interval=bootstrap(task, base_gens, rows, metric, ctx.resamples, level=ctx.confidence).to_dict())
            if best is not None and best_model is not None:
                m, rows, gens = score_split(ctx, best.plan, best_model, "test", test_limit, predictions(best.id))
                publish(predictions(best.id))
                out.update(best_test_score=m[metric], best_test_metrics=m, test_node=best.id,
                           best_test_interval=bootstrap(task, gens, rows, metric, ctx.resamples, level=ctx.confidence).to_dict(),
                           # best - base on the same test rows: the gain, and whether it is real
                           test_gain=paired(task, base_gens, gens, rows, metric, ctx.resamples, level=ctx.confidence).to_dict())
        except Exception as e:  # noqa: BLE001 - the run's other outputs must still be written
            log.warning("test evaluation failed: %s", e)
            out["test_error"] = scrub(f"{type(e).__name__}: {e}")[:2000]
        out["test_seconds"] = round(time.time() - t0, 2)
    if export and best_model is not None:
        try:
            merged = export_merged(ctx, best_model, local / "best" / "merged")
            if merged is not None and store.remote:
                store.upload_dir(merged, "best/merged")
                merged = store.uri_for("best/merged")
            out["merged_model_dir"] = merged
        except Exception as e:  # noqa: BLE001
            log.warning("merged export failed: %s", e)
            out["export_error"] = scrub(f"{type(e).__name__}: {e}")[:2000]
    return out


def final_remote(ctx: TrialContext, root: Node | None, best: Node | None, metric: str, test_limit: int,
                 export: bool, resources: dict[str, float]) -> dict[str, Any]:
    """Run ``final_evaluation`` as a Ray task holding one trial's resources; blocks for its result."""
    import ray

    task = ray.remote(final_evaluation).options(num_cpus=resources.get("CPU", 1), num_gpus=resources.get("GPU", 0),
                                                max_retries=1)
    return ray.get(task.remote(ctx, root, best, metric, test_limit, export))


def rescore(ctx: TrialContext, finalists: list[Node], dev_limit: int) -> list[Rescore]:
    """The finalists scored again on the first ``dev_limit`` dev rows (their predictions in
    ``nodes/<id>/final_dev_predictions.jsonl``), each with its interval, and the paired
    difference of the one scoring best from each other (``search/selection.py`` chooses)."""
    import torch

    from ftbench.intervals import bootstrap, paired
    from trex_ray.tasks import resolve_task

    torch.set_num_threads(max(1, ctx.threads))
    task = resolve_task(ctx.task)
    store = RunStorage(ctx.storage_root)
    local = scratch_dir(Path(ctx.run_dir).name, "final") if store.remote else Path(store.path())
    scored: dict[str, tuple[float, list[str]]] = {}
    rows: list[dict] = []
    for node in finalists:
        model_dir = str(fetch(node.artifacts["model"], local / "fetched" / node.id))
        path = local / "nodes" / node.id / "final_dev_predictions.jsonl"
        m, rows, gens = score_split(ctx, node.plan, model_dir, "dev", dev_limit, path)
        if store.remote:
            store.write_bytes(path.relative_to(local).as_posix(), path.read_bytes())
        scored[node.id] = (m[task.metric], gens)
    sign = 1.0 if task.higher_is_better else -1.0
    leader = max(scored, key=lambda i: sign * scored[i][0])  # finalists come ranked: ties keep the first
    out = []
    for node_id, (_, gens) in scored.items():
        iv = bootstrap(task, gens, rows, resamples=ctx.resamples, level=ctx.confidence).to_dict()
        diff = None if node_id == leader else paired(task, gens, scored[leader][1], rows, resamples=ctx.resamples,
                                                     level=ctx.confidence)
        if diff is not None and not task.higher_is_better:  # "leader - node" in the better direction
            diff = type(diff)(-diff.value, -diff.high, -diff.low, diff.n, diff.resamples, diff.level)
        out.append(Rescore(node_id, iv, diff.to_dict() if diff else None))
    return out


def rescore_remote(ctx: TrialContext, finalists: list[Node], dev_limit: int,
                   resources: dict[str, float]) -> list[Rescore]:
    """``rescore`` as a Ray task holding one trial's resources; blocks for its result."""
    import ray

    task = ray.remote(rescore).options(num_cpus=resources.get("CPU", 1), num_gpus=resources.get("GPU", 0),
                                       max_retries=1)
    return ray.get(task.remote(ctx, finalists, dev_limit))
