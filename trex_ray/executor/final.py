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
from trex_ray.search.tree import Node
from trex_ray.storage import RunStorage, fetch, scratch_dir

log = logging.getLogger(__name__)


def _load(model_path: str, node_model_dir: str | None, trust: bool):
    """(model, tokenizer) of the base model (no node dir) or of a trained node: a LoRA adapter
    folder is applied on top of the base model, a full-weights folder is loaded as is."""
    from ftbench.evaluate import load_model

    if node_model_dir is None:
        return load_model(model_path, trust_remote_code=trust)
    if (Path(node_model_dir) / "adapter_config.json").is_file():
        return load_model(model_path, adapter=node_model_dir, trust_remote_code=trust)
    return load_model(node_model_dir, trust_remote_code=trust)


def score_on_test(ctx: TrialContext, plan: Plan, node_model_dir: str | None, limit: int,
                  predictions: Path) -> dict[str, float]:
    """Metrics of one model (base when ``node_model_dir`` is None) on the first ``limit`` test
    rows, prompted with ``plan``'s own prompt template, exactly as dev scored it."""
    import torch

    from ftbench.evaluate import evaluate
    from ftbench.task import load_split
    from trex_ray.executor.models import resolve_model
    from trex_ray.tasks import resolve_task

    task = resolve_task(ctx.task)
    rows = load_split(task, "test", ctx.paths, limit=limit)
    model, tok = _load(resolve_model(ctx.model), node_model_dir, ctx.model.trust_remote_code)
    if torch.cuda.is_available():
        model = model.to("cuda")
    metrics = evaluate(task, model, tok, rows, plan.recipe.format.prompt, ctx.eval_batch_size, predictions)
    return {k: float(v) for k, v in metrics.items()}


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
        t0 = time.time()
        try:
            m = score_on_test(ctx, root.plan, None, test_limit, predictions(root.id))
            publish(predictions(root.id))
            out.update(base_test_score=m[metric], base_test_metrics=m)
            if best is not None and best_model is not None:
                m = score_on_test(ctx, best.plan, best_model, test_limit, predictions(best.id))
                publish(predictions(best.id))
                out.update(best_test_score=m[metric], best_test_metrics=m, test_node=best.id)
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
