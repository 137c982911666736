"""What every trial of a run shares and leaves behind: its context, its node folder (on local
or remote storage) and its scored outcome on dev. Used by single- and multi-worker trials alike.
"""

from __future__ import annotations

import json
import logging
import os
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
    resamples: int = 1000  # bootstrap resamples of the dev score's intervals
    confidence: float = 0.95  # their level
    llm_account: "SharedAccount | None" = None  # the run's LLM spend account, for synthesize steps

    @classmethod
    def of(cls, cfg: Config, run_dir: str | Path, storage: str | None,
           llm_account: "SharedAccount | None" = None) -> "TrialContext":
        r = cfg.resources
        return cls(task=cfg.task.resolved(), model=cfg.model, llm=cfg.llm, resources=TrialResources.of(r),
                   run_dir=str(run_dir), dev_limit=cfg.task.dev_limit, eval_batch_size=cfg.train.eval_batch_size,
                   threads=max(1, int(r.cpus_per_trial)), max_failures=r.max_failures,
                   max_preemptions=r.max_preemptions, storage=storage, llm_account=llm_account,
                   resamples=cfg.search.bootstrap_resamples, confidence=cfg.search.confidence)

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


def checkpoint_dir(ctx: TrialContext, node_id: str, checkpoint: str | None, stats: dict[str, Any]) -> str | None:
    """A local folder holding the node's checkpoint from its previous rung (downloaded from
    remote storage), or None, recorded in ``stats``, when there is none to continue: the run
    then starts fresh, which costs steps but gives the same plan's full run."""
    if not checkpoint:
        return None
    try:
        local = checkpoint if not is_remote(checkpoint) else str(
            fetch(checkpoint, scratch_dir(Path(ctx.run_dir).name, "resume", node_id)))
        if not (Path(local) / "trainer_state.json").is_file():
            raise FileNotFoundError(f"{checkpoint} holds no trainer state")
    except Exception as e:  # noqa: BLE001 - lost scratch space, a cleaned checkpoint: train from the start
        log.warning("node %s: cannot continue from %s (%s); training from the start", node_id, checkpoint, e)
        stats["resumed"] = f"no: {type(e).__name__}: {e}"[:300]
        return None
    stats["resumed"] = checkpoint
    return local


def read_predictions(uri_or_path: str) -> dict[str, str]:
    """id -> raw prediction of a node's predictions file (a local path or a storage URI)."""
    if is_remote(uri_or_path):
        import pyarrow.fs as pafs

        fs, path = pafs.FileSystem.from_uri(uri_or_path)
        with fs.open_input_stream(path) as f:
            text = f.read().decode("utf-8")
    else:
        text = Path(uri_or_path).read_text(encoding="utf-8")
    recs = [json.loads(line) for line in text.splitlines() if line.strip()]
    return {str(r["id"]): r["prediction"] if isinstance(r["prediction"], str) else "" for r in recs}


class AcceleratorClock:
    """A trial's accelerator-seconds (``search/spend.py``): GPU-seconds where it holds GPUs
    (wall x GPUs reserved), else the CPU time of this process and the processes it waited for
    (data workers); a multi-worker CPU trial, whose workers are other processes, is charged wall
    x the CPUs its workers reserve."""

    def __init__(self, res: TrialResources) -> None:
        self.res, self.t0, self.cpu0 = res, time.time(), self._cpu()

    @staticmethod
    def _cpu() -> float:
        t = os.times()
        return t.user + t.system + t.children_user + t.children_system

    def read(self) -> Cost:
        wall = time.time() - self.t0
        r = self.res
        if r.gpus_per_worker > 0:
            return Cost(wall_seconds=round(wall, 2), accelerator_seconds=round(wall * r.num_workers * r.gpus_per_worker, 2),
                        accelerator="gpu")
        used = wall * r.num_workers * r.cpus_per_worker if r.distributed else self._cpu() - self.cpu0
        return Cost(wall_seconds=round(wall, 2), accelerator_seconds=round(used, 2), accelerator="cpu")


def score_on_dev(task: Task, model: Any, tok: Any, plan: Plan, node_id: str, ctx: TrialContext, out: Path,
                 cost: Cost, artifacts: dict[str, str], stats: dict[str, Any], t0: float,
                 on_batch: Callable[[int, int], None] | None = None, dev_limit: int | None = None,
                 compare: dict[str, tuple[str, str]] | None = None) -> TrialOutcome:
    """The trial's outcome: the trained ``model`` scored on the run's first ``dev_limit`` dev rows
    (its predictions saved, a sample of its wrong answers for the diagnosis, the bootstrap
    interval of its score and, for each node in ``compare`` (role -> node id, predictions), the
    paired difference on the rows both were scored on), its folder published to storage. The one
    place a trial's outcome is built, for single- and multi-worker trials alike."""
    from ftbench.intervals import align, bootstrap, paired

    dev = load_split(task, "dev", ctx.paths, limit=dev_limit or ctx.dev_limit)
    preds = out / "dev_predictions.jsonl"
    metrics = evaluate(task, model, tok, dev, plan.recipe.format.prompt, ctx.eval_batch_size, preds, on_batch=on_batch)
    mine = read_predictions(str(preds))
    gens = [mine[str(r["id"])] for r in dev]
    interval = bootstrap(task, gens, dev, resamples=ctx.resamples, level=ctx.confidence)
    diffs: dict[str, dict[str, Any]] = {}
    for role, (other_id, where) in (compare or {}).items():
        try:  # what another node scored is context: a missing file costs the comparison only
            rows, (theirs, ours) = align(dev, read_predictions(where), mine)
            if rows:
                d = paired(task, theirs, ours, rows, resamples=ctx.resamples, level=ctx.confidence)
                diffs[role] = {"node": other_id, **d.to_dict()}
        except Exception as e:  # noqa: BLE001
            log.warning("node %s: no paired comparison with %s %s: %s", node_id, role, other_id, e)
    # a few wrong dev answers (dev only, never test) for the Researcher's diagnosis of this node
    bad_cases = collect_bad_cases(task, dev, preds, plan.recipe.format.prompt, tok)
    artifacts = publish_node(ctx, node_id, out, {**artifacts, "dev_predictions": str(preds)})
    cost.wall_seconds = round(time.time() - t0, 2)
    return TrialOutcome(score=float(metrics[task.metric]), metrics={k: float(v) for k, v in metrics.items()},
                        cost=cost, artifacts=artifacts, recipe_stats=stats, bad_cases=bad_cases,
                        interval=interval.to_dict(), paired=diffs)
