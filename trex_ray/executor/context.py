"""What every trial of a run shares and leaves behind: its context, its node folder (on local
or remote storage) and its scored outcome on dev. Used by single- and multi-worker trials alike.
"""

from __future__ import annotations

import logging
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Callable

from ftbench.evaluate import evaluate
from ftbench.task import Task, load_split
from trex_ray.config import Config, LLMConfig, ModelConfig, TaskConfig
from trex_ray.llm_client import LLMError, Usage
from trex_ray.search.bad_cases import collect_bad_cases
from trex_ray.search.outcome import Cost, TrialOutcome
from trex_ray.search.plan import Plan, TrialResources
from trex_ray.storage import RunStorage, fetch, is_remote, scratch_dir

log = logging.getLogger(__name__)


@dataclass(frozen=True)
class TrialContext:
    """What every trial of a run shares. It reaches the trainable through
    ``tune.with_parameters`` (Ray's object store), never through the trial's config, which Tune
    writes to params.json and the trackers."""

    task: TaskConfig  # paths already absolute (``TaskConfig.resolved``): a worker's cwd is not the driver's
    model: ModelConfig  # resolved on the worker (the builtin model converts there)
    llm: LLMConfig  # for recipes' synthesize steps (the key stays in the environment)
    resources: TrialResources  # of plans that set none
    run_dir: str
    dev_limit: int
    eval_batch_size: int = 32
    threads: int = 1  # torch threads of a single-worker trial
    max_failures: int = 1  # worker-group restarts of a multi-worker trial
    max_preemptions: int = -1  # restarts after node preemptions, not counted in max_failures
    # Where trials write (see storage.py): a local/NFS path or an s3:// / gs:// URI; None: run_dir
    storage: str | None = None
    llm_account: "SharedAccount | None" = None  # the run's LLM spend account, for synthesize steps

    @classmethod
    def of(cls, cfg: Config, run_dir: str | Path, storage: str | None,
           llm_account: "SharedAccount | None" = None) -> "TrialContext":
        r = cfg.resources
        return cls(task=cfg.task.resolved(), model=cfg.model, llm=cfg.llm, resources=TrialResources.of(r),
                   run_dir=str(run_dir), dev_limit=cfg.task.dev_limit, eval_batch_size=cfg.train.eval_batch_size,
                   threads=max(1, int(r.cpus_per_trial)), max_failures=r.max_failures,
                   max_preemptions=r.max_preemptions, storage=storage, llm_account=llm_account)

    @property
    def paths(self) -> dict[str, str | None]:
        return self.task.paths()

    @property
    def storage_root(self) -> str:
        return self.storage or self.run_dir

    @property
    def recipe_cache(self) -> str:
        """The recipe cache every node of the cluster shares."""
        return RunStorage(self.storage_root).uri_for("recipe_cache")


class SharedAccount:
    """The run's one ``LLMAccount``, held by a Ray actor (``actors.LLMAccountActor``), as any
    process sees it: the Researcher's client and every trial's synthesize steps charge the same
    account, so the run's LLM limits hold across workers. Picklable (an actor handle): it
    travels in the TrialContext and to the Researcher actor."""

    def __init__(self, handle: Any) -> None:
        self.handle = handle

    def why_spent(self) -> str | None:
        import ray

        return ray.get(self.handle.why_spent.remote())

    def check(self) -> None:
        why = self.why_spent()
        if why:
            raise LLMError(why)

    def charge(self, usage: Usage, who: str) -> None:
        import ray

        ray.get(self.handle.charge.remote(usage, who))


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


def score_on_dev(task: Task, model: Any, tok: Any, plan: Plan, node_id: str, ctx: TrialContext, out: Path,
                 cost: Cost, artifacts: dict[str, str], stats: dict[str, Any], t0: float,
                 on_batch: Callable[[int, int], None] | None = None) -> TrialOutcome:
    """The trial's outcome: the trained ``model`` scored on the run's dev rows (its predictions
    saved, a sample of its wrong answers for the diagnosis), its folder published to storage.
    The one place a trial's outcome is built, for single- and multi-worker trials alike."""
    dev = load_split(task, "dev", ctx.paths, limit=ctx.dev_limit)
    preds = out / "dev_predictions.jsonl"
    metrics = evaluate(task, model, tok, dev, plan.recipe.format.prompt, ctx.eval_batch_size, preds, on_batch=on_batch)
    # a few wrong dev answers (dev only, never test) for the Researcher's diagnosis of this node
    bad_cases = collect_bad_cases(task, dev, preds, plan.recipe.format.prompt, tok)
    artifacts = publish_node(ctx, node_id, out, {**artifacts, "dev_predictions": str(preds)})
    cost.wall_seconds = round(time.time() - t0, 2)
    return TrialOutcome(score=float(metrics[task.metric]), metrics={k: float(v) for k, v in metrics.items()},
                        cost=cost, artifacts=artifacts, recipe_stats=stats, bad_cases=bad_cases)
