"""The driver: check inputs, start (or join) Ray, run the search through Tune, write the outputs.

Order matters: every check that can fail on bad input runs before Ray starts, so a typo costs
a second, not a cluster start; everything durable lives in the run directory, so a lost driver
is recovered with ``launch.py --resume RUN_DIR`` (its ledger checked first, line by line). One
driver per run: ``rundir.open_run`` locks the run directory and storage root.
"""

from __future__ import annotations

import json
import logging
import math
import os
import shutil
import time
from dataclasses import replace
from functools import partial
from pathlib import Path
from typing import Any

from ftbench.task import Task, TaskDataError, load_split, own_data_paths
from trex_ray.config import Config, ConfigError
from trex_ray.executor.context import TrialContext
from trex_ray.executor.models import builtin_model_dir, check_model
from trex_ray.guard.endpoints import loopback_only
from trex_ray.guard.redact import scrub, secrets_problem
from trex_ray.llm_client import LLMAccount, check_llm_config
from trex_ray.report.hub import check_push, hub_token, push_best, record_push
from trex_ray.search.fit import FitCheck, ModelDims
from trex_ray.search.inbox import Inbox
from trex_ray.search.ledger import LEDGER_NAME, read_events
from trex_ray.search.limits import DataRules, PlanGate, check_config
from trex_ray.search.plan import TrialResources
from trex_ray.search.request import TaskSpec
from trex_ray.search.tree import Tree
from trex_ray.researcher.datafit import can_synthesize, no_train_spec
from trex_ray.rundir import open_run
from trex_ray.storage import RunStorage, check_storage, fetch, is_remote, run_storage_uri
from trex_ray.tasks import answer_format, check_task, resolve_task, task_spec, train_split
from trex_ray.trackers import check_trackers

log = logging.getLogger(__name__)

def preflight(cfg: Config) -> tuple[Task, TaskSpec]:
    """Validate the task, its data and the model; ConfigError names the first problem."""
    problem = secrets_problem(  # cheapest checks first; nothing is echoed that could be a key
        {"run.storage": cfg.run.storage, "llm.base_url": cfg.llm.base_url, "run.mlflow_tracking_uri": cfg.run.mlflow_tracking_uri},
        {"llm.api_key_env": cfg.llm.api_key_env, "run.hub_token_env": cfg.run.hub_token_env})
    if problem:
        raise ConfigError(problem)
    check_llm_config(cfg.search.policy, cfg.llm)
    check_config(cfg)  # the config against the plan schema's bounds and its own limits
    check_storage(cfg.run.storage)
    task = resolve_task(cfg.task)
    paths = cfg.task.paths()
    for key, value in paths.items():
        if value and not Path(value).expanduser().exists():
            what = "data folder" if key == "data_dir" else f"{key} dataset file"
            raise ConfigError(f"{what} not found: {value}")
    check_task(cfg.task)  # a task file against its data: one error line per problem
    missing = [x for x in cfg.task.extra_sources if not x.startswith("hub:") and not Path(x).expanduser().exists()]
    if missing:
        raise ConfigError(f"task.extra_sources: {missing[0]} not found")
    try:
        train = train_split(task, paths)
        dev = load_split(task, "dev", paths)
    except TaskDataError as e:
        raise ConfigError(str(e)) from None
    if train is None:  # no training data published: it is built from other data and synthesis
        spec = no_train_spec(task, cfg, dev)
    check_model(cfg.model)
    check_trackers(cfg)
    if cfg.run.push_to_hub:  # the Hub's inputs too: a typo must not surface after hours of trials
        check_push(cfg.run.push_to_hub, cfg.run.hub_token_env)
    if train is None:
        return task, spec
    return task, task_spec(task, len(train), list(train[0]), answer_format(cfg.task), dev_rows=len(dev),
                           synthesis=can_synthesize(cfg))


def _start_ray(cfg: Config) -> bool:
    """Join the configured cluster (or the job's), else start an embedded one. True if embedded."""
    import ray

    os.environ.setdefault("RAY_USAGE_STATS_ENABLED", "0")
    os.environ.setdefault("RAY_AIR_NEW_OUTPUT", "0")  # Tune's own tables would drown the live view
    address = cfg.run.ray_address or os.environ.get("RAY_ADDRESS")
    # Trial output (transformers and datasets chatter) stays in Ray's worker logs; the console
    # gets the live view, which carries what matters.
    if address:
        ray.init(address=address, namespace="trex_ray", log_to_driver=False)
        return False
    loopback_only(True)
    ray.init(num_cpus=cfg.run.num_cpus, include_dashboard=False, namespace="trex_ray", log_to_driver=False,
             _node_ip_address="127.0.0.1")
    return True


def _concurrency(cfg: Config) -> int:
    """Trials at once: the configured maximum, or fewer when the cluster cannot hold them."""
    import ray

    res = ray.cluster_resources()
    workers = cfg.resources.num_workers
    fits = math.floor(res.get("CPU", 0) / (workers * cfg.resources.cpus_per_trial) + 1e-9)
    if cfg.resources.gpus_per_trial:
        fits = min(fits, math.floor(res.get("GPU", 0) / (workers * cfg.resources.gpus_per_trial) + 1e-9))
    if fits < 1:
        raise ConfigError(f"the cluster ({res.get('CPU', 0)} CPU, {res.get('GPU', 0)} GPU) cannot hold one trial "
                          f"({workers} x {cfg.resources.cpus_per_trial} CPU, {workers} x {cfg.resources.gpus_per_trial} GPU)")
    return min(cfg.search.max_concurrent_trials, fits)


def _fit_check(cfg: Config) -> FitCheck | None:
    """What the TreeState needs to reject plans that cannot fit the declared GPU memory: the
    model's dimensions, read from its config.json when it is a local folder (or the builtin
    model already converted); on CPU-only runs there is nothing to check."""
    if cfg.resources.gpus_per_trial <= 0 or cfg.resources.gpu_memory_gb <= 0:
        return None
    dims = ModelDims.from_model_dir(builtin_model_dir(cfg.model) or cfg.model.name_or_path)
    if dims is None:
        log.info("model dimensions unknown (not a local folder): no memory check before trials")
        return None
    return FitCheck(dims, TrialResources.of(cfg.resources), cfg.resources.gpu_memory_gb)


def _plan_gate(cfg: Config, task: Task) -> PlanGate:
    """The run's limits on plans, with the data a plan may read: task:train, hub ids and the
    user's extra sources, never the task's own files by path (search/limits.py)."""
    rules = DataRules(task.id, allowed=tuple(Path(p).expanduser().resolve() for p in cfg.task.extra_sources),
                      own=tuple(sorted(own_data_paths(task, cfg.task.paths()))))
    return PlanGate(cfg.limits, TrialResources.of(cfg.resources), rules)


def run_search(cfg: Config | None = None, resume: str | None = None) -> dict[str, Any]:
    """Run (or resume) a search to its end; returns the summary written to summary.json."""
    if cfg is not None:  # a task file's content goes into the run's config.yaml (load_config does it too)
        cfg = cfg.model_copy(update={"task": cfg.task.with_definition()})
    if resume:
        cfg, run_dir, locks = open_run(None, resume)
        try:
            task, spec = preflight(cfg)
        except BaseException:
            for lock in reversed(locks):
                lock.release()
            raise
    else:
        assert cfg is not None
        task, spec = preflight(cfg)  # before the run directory exists: bad input leaves nothing behind
        cfg, run_dir, locks = open_run(cfg, None)
    t0 = time.time()
    embedded = False
    try:
        embedded = _start_ray(cfg)
        summary = _search(cfg, run_dir, task, spec, resumed=bool(resume))
    finally:
        if embedded:
            import ray

            ray.shutdown()
            loopback_only(False)
        for lock in reversed(locks):
            lock.release()
    log.info("run %s finished in %.0fs: %s", run_dir, time.time() - t0, summary["stop_reason"])
    return summary


def _search(cfg: Config, run_dir: Path, task: Task, spec: TaskSpec, resumed: bool) -> dict[str, Any]:
    import ray
    from ray import tune
    from ray.util.scheduling_strategies import NodeAffinitySchedulingStrategy

    from trex_ray.actors import LLMAccountActor, Researcher, TreeState
    from trex_ray.executor.context import SharedAccount
    from trex_ray.executor.trial import trainable
    from trex_ray.report.live import LiveView, leaderboard
    from trex_ray.report.page import refresh_live
    from trex_ray.searcher import SteeringScheduler, TreeSearcher, TrialErrorCallback
    from trex_ray.trackers import tracker_callbacks

    s = cfg.search
    storage = run_storage_uri(cfg.run.storage, run_dir)
    # Actors and trial workers do not share the driver's working directory: paths go absolute.
    cfg = cfg.model_copy(update={"task": cfg.task.resolved()})
    # The coordinating actors live on the driver's node (the head, in a job): with num_cpus=0
    # Ray could put them anywhere, and a lost worker node must cost a trial, not the search.
    here = NodeAffinitySchedulingStrategy(ray.get_runtime_context().get_node_id(), soft=False)
    state = TreeState.options(scheduling_strategy=here).remote(
        str(run_dir), cfg, spec, _fit_check(cfg), partial(refresh_live, storage if is_remote(storage) else None),
        _plan_gate(cfg, task))
    # one LLM spend account for the Researcher and every trial's synthesize steps (no endpoint: no calls)
    account = (LLMAccountActor.options(scheduling_strategy=here).remote(
        *LLMAccount.caps(cfg.limits, cfg.llm), str(run_dir / "llm_spend.json")) if cfg.llm.base_url else None)
    shared = SharedAccount(account) if account is not None else None
    researcher = Researcher.options(scheduling_strategy=here).remote(cfg, str(run_dir), shared)
    ctx = TrialContext.of(cfg, run_dir, storage, shared)
    store = RunStorage(storage)
    inbox = Inbox(store)
    inbox.heartbeat("running")
    view = LiveView(task.metric, s.max_trials, task.higher_is_better, s.budget, s.budget_unit)
    searcher = TreeSearcher(state, researcher, on_event=view.event)
    steering = SteeringScheduler(state, searcher, inbox, cfg.run.steer_poll_s, account, view.event)
    concurrency = _concurrency(cfg)
    # prefetched trials wait in Tune for a slot (so a finished trial's slot is refilled at once)
    searcher.capacity = lambda: _concurrency(cfg) + s.prefetch_trials
    log.info("run %s: task %s, model %s, %d trials, %d at a time", run_dir.name, spec.id,
             cfg.model.name_or_path, s.max_trials, concurrency)
    ray.get(state.snapshot.remote())  # the actor has replayed the ledger (or failed loudly)
    # each (re)start is its own Tune experiment
    attempt = sum(1 for name in store.list_dir("tune") if name.startswith("search-"))
    tuner = tune.Tuner(
        trainable(ctx),
        tune_config=tune.TuneConfig(
            # Tune's cap is the configured maximum; the searcher holds back below it while the
            # cluster is smaller (its capacity is re-read as nodes join or leave).
            search_alg=searcher, scheduler=steering, num_samples=-1,
            max_concurrent_trials=s.max_concurrent_trials + s.prefetch_trials,
            reuse_actors=cfg.run.reuse_actors,
            trial_dirname_creator=lambda trial: f"{trial.config['node_id']}-{trial.trial_id}",
        ),
        run_config=tune.RunConfig(
            name=f"search-{attempt}", storage_path=store.path("tune"), verbose=0,
            storage_filesystem=store.fs if store.remote else None,
            failure_config=tune.FailureConfig(max_failures=cfg.resources.max_failures),
            callbacks=[TrialErrorCallback(state, view.event), *tracker_callbacks(cfg, run_dir)],
        ),
    )
    tuner.fit()
    reason = searcher.finished_reason or "search ended"
    _select(cfg, ctx, state)
    tree: Tree = ray.get(state.close.remote(reason))
    _close_inbox(inbox, state, reason)
    _copy_best(run_dir, tree)
    final = _final_evaluation(cfg, ctx, tree, task.metric)
    if final.get("merged_model_dir"):  # written where the final task ran: bring it to best/merged
        merged = run_dir / "best" / "merged"
        src = fetch(final["merged_model_dir"], merged)
        if src.resolve() != merged.resolve():
            shutil.copytree(src, merged, dirs_exist_ok=True)
        (merged / ".trex_fetched").unlink(missing_ok=True)
        final["merged_model_dir"] = str(merged)
    _drop_checkpoints(store, tree)
    summary = _write_outputs(cfg, task, run_dir, tree, reason, resumed, final)
    _write_reports(cfg, task, run_dir, tree, summary)
    if cfg.run.push_to_hub:  # after the card; a failure is recorded in summary.json, never raised
        summary = record_push(run_dir, summary, push_best(run_dir, cfg.run.push_to_hub,
                                                          hub_token(cfg.run.hub_token_env), cfg.run.hub_private))
    if store.remote:  # the results, where the cluster (and a later --resume) can find them
        store.mirror_run_files(run_dir)
        if (run_dir / "best").is_dir():
            store.upload_dir(run_dir / "best", "best")
        log.info("results mirrored to %s", store.display())
    log.info("leaderboard (dev %s):\n%s", task.metric, leaderboard(tree, task.metric))
    log.info("summary: %s", json.dumps({k: summary[k] for k in ("base_score", "best_score", "best_node", "trials", "failed_trials", "wall_seconds")}))
    return summary


def _drop_checkpoints(store: RunStorage, tree: Tree) -> None:
    """The proxies' checkpoints (weights, optimizer state) exist only for a promotion to continue
    them: once the run is over they go, the nodes' models stay."""
    for node in tree.nodes.values():
        ckpt = node.artifacts.get("checkpoint")
        if not ckpt:
            continue
        try:
            # the whole checkpoints/ folder: every rung's checkpoint, not only the latest
            if is_remote(ckpt):
                import pyarrow.fs as pafs

                fs, path = pafs.FileSystem.from_uri(ckpt)
                fs.delete_dir(path.rsplit("/", 1)[0])
            else:
                shutil.rmtree(Path(ckpt).parent, ignore_errors=True)
        except Exception as e:  # noqa: BLE001 - disk space, not results: never fatal
            log.warning("could not remove %s: %s", ckpt, e)


def _close_inbox(inbox: Inbox, state: Any, reason: str) -> None:
    """Say the run has finished, and answer what is still waiting (refused; status: the final
    view). Never fatal: the run's results are what matters now."""
    import ray

    try:
        inbox.heartbeat("finished", reason)
        for cmd in inbox.pending():
            inbox.answer(ray.get(state.steer.remote(cmd)))
    except Exception as e:  # noqa: BLE001
        log.warning("could not close the steering inbox: %s", e)


def _copy_best(run_dir: Path, tree: Tree) -> None:
    """``best/``: a copy of the best node's saved model (adapter or full weights + tokenizer)."""
    best = tree.best()
    best_dir = run_dir / "best"
    if best is not None and best.artifacts.get("model"):
        shutil.rmtree(best_dir, ignore_errors=True)
        src = fetch(best.artifacts["model"], best_dir)  # downloads straight into best/ when remote
        if src.resolve() != best_dir.resolve():
            shutil.copytree(src, best_dir)
        (best_dir / ".trex_fetched").unlink(missing_ok=True)


def _end_of_run_resources(cfg: Config, ctx: TrialContext) -> tuple[TrialContext, dict[str, float]]:
    """What the end-of-run work (re-scoring, test scores, export) runs with: nothing else runs by
    then, so a whole node's CPUs (as torch threads), not one trial's, and one GPU."""
    import ray

    node_cpus = max((n["Resources"].get("CPU", 0) for n in ray.nodes() if n["Alive"]), default=0)
    cpus = max(cfg.resources.cpus_per_trial, node_cpus)
    return replace(ctx, threads=max(1, int(cpus))), {"CPU": cpus, "GPU": min(cfg.resources.gpus_per_trial, 1.0)}


def _select(cfg: Config, ctx: TrialContext, state: Any) -> None:
    """Before the run ends: the finalists are re-scored on a larger dev slice and the winner is
    chosen on that (``search/selection.py``). A failure here is logged, never fatal: the tree's
    own ranking then stands."""
    import ray

    from trex_ray.executor.final import rescore_remote
    from trex_ray.tasks import resolve_task

    finalists = ray.get(state.finalists.remote())
    if len(finalists) < 2:
        return
    dev_rows = len(load_split(resolve_task(cfg.task), "dev", cfg.task.paths()))
    limit = min(cfg.search.final_dev_limit or dev_rows, dev_rows, 2000)
    log.info("final selection: %s re-scored on %d dev rows", ", ".join(n.id for n in finalists), limit)
    try:
        ctx, resources = _end_of_run_resources(cfg, ctx)
        winner = ray.get(state.record_selection.remote(rescore_remote(ctx, finalists, limit, resources)))
        log.info("final selection: %s", winner)
    except Exception as e:  # noqa: BLE001
        log.warning("final selection failed (the dev ranking stands): %s", e)


def _final_evaluation(cfg: Config, ctx: TrialContext, tree: Tree, metric: str) -> dict[str, Any]:
    """Test scores of base and best (and the merged export), as a Ray task holding one training
    worker's resources (evaluation is one process); a failure there is logged and recorded,
    never fatal: the search's results are already durable."""
    from trex_ray.executor.final import final_remote

    if cfg.task.test_limit <= 0 and not cfg.run.export_merged:
        return {}
    ctx, resources = _end_of_run_resources(cfg, ctx)
    log.info("final evaluation on up to %d test examples%s", cfg.task.test_limit,
             " and merged export" if cfg.run.export_merged else "")
    try:
        return final_remote(ctx, tree.root, tree.best(), metric, cfg.task.test_limit, cfg.run.export_merged,
                            resources)
    except Exception as e:  # noqa: BLE001
        log.warning("final evaluation failed: %s", e)
        return {"test_error": scrub(f"{type(e).__name__}: {e}")[:2000]}


def _write_reports(cfg: Config, task: Task, run_dir: Path, tree: Tree, summary: dict[str, Any]) -> None:
    """best/README.md (model card), report.html and report.md; failures are logged, not raised."""
    from trex_ray.report.hub import write_model_card
    from trex_ray.report.page import write_report

    try:
        write_model_card(run_dir, cfg, task, tree, summary)
        log.info("report: %s", write_report(run_dir, tree))
    except Exception:  # noqa: BLE001 - a report bug must not fail a finished run
        log.exception("writing the report failed")


def _why_no_success(tree: Tree, trials: list, reason: str) -> str | None:
    """Why the run has no successful fine-tuning trial (None when it has one): the exit status
    and the last line of the console say it."""
    if tree.base_score is None:
        root = tree.root
        return f"the baseline evaluation did not succeed ({(root.failure if root else None) or reason})"
    if any(n.status == "succeeded" for n in trials):
        return None
    failed = [n for n in trials if n.status == "failed"]
    if not failed:
        return f"no fine-tuning trial ran ({reason})"
    first = min(failed, key=lambda n: n.finished_at or 0.0)
    return f"all {len(failed)} fine-tuning trial(s) failed; the first, {first.id}: {(first.failure or '?')[:300]}"


def _write_outputs(cfg: Config, task: Task, run_dir: Path, tree: Tree, reason: str, resumed: bool,
                   final: dict[str, Any] | None = None) -> dict[str, Any]:
    trials = [n for n in tree.by_status("succeeded", "failed") if n.parent_id is not None]
    best = tree.best()
    best_dir = run_dir / "best"
    final = final or {}
    events = list(read_events(run_dir / LEDGER_NAME))
    summary = {
        "task": task.id,
        "task_name": task.name,
        "base_model": cfg.model.name_or_path,
        "metric": task.metric,
        "higher_is_better": task.higher_is_better,
        "base_score": tree.base_score,
        "best_score": best.score if best else None,
        "best_node": best.id if best else None,
        "best_beats_base": bool(best and tree.base_score is not None and best.score is not None
                                and tree.params.sign * (best.score - tree.base_score) > 0),
        "best_model_dir": str(best_dir) if best_dir.exists() else None,
        # how sure the dev scores are: bootstrap intervals, the best's paired difference with its
        # parent, and how the final selection chose it (re-scored finalists, when there were some)
        "base_interval": tree.root.interval if tree.root else None,
        "best_interval": best.interval if best else None,
        "best_vs_parent": best.paired.get("parent") if best else None,
        "best_rescored": best.rescored if best else None,
        "selection": tree.selection,
        "compute": _compute(tree),
        # scored once at the end, never used for selection (None: skipped or failed, see test_error)
        "base_test_score": final.get("base_test_score"),
        "best_test_score": final.get("best_test_score"),
        **{k: v for k, v in final.items() if k not in ("base_test_score", "best_test_score")},
        "trials": len(trials),
        "failed_trials": sum(1 for n in trials if n.status == "failed"),
        "succeeded_trials": sum(1 for n in trials if n.status == "succeeded"),
        "no_success": _why_no_success(tree, trials, reason),
        "wall_seconds": round(events[-1]["ts"] - events[0]["ts"], 1),
        "stop_reason": reason,
        "resumed": resumed,
        "run_dir": str(run_dir),
    }
    (run_dir / "summary.json").write_text(json.dumps(summary, indent=1))
    return summary


def _compute(tree: Tree) -> dict[str, Any]:
    """What the trials spent, in total and per rung of the run that trained to it (the baseline
    evaluation aside): trained examples (example-epochs) and accelerator-seconds."""
    trials = [n for n in tree.nodes.values() if n.parent_id is not None]
    per_rung: dict[str, dict[str, float]] = {}
    for n in trials:
        for r, c in n.rung_costs.items():
            d = per_rung.setdefault(str(r), {"runs": 0, "example_epochs": 0, "accelerator_seconds": 0.0})
            d["runs"] += 1
            d["example_epochs"] += c.examples
            d["accelerator_seconds"] = round(d["accelerator_seconds"] + c.accelerator_seconds, 1)
    return {"example_epochs": sum(n.cost.examples for n in trials),
            "accelerator_seconds": round(sum(n.cost.accelerator_seconds for n in trials), 1),
            "per_rung": per_rung, "budget": tree.params.search.budget, "budget_unit": tree.params.search.budget_unit}
