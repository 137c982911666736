"""Orchestration at cluster scale on one machine: a simulated cluster of NODES x GPUS declared
GPUs, the real TreeState and Researcher actors, the real TreeSearcher and Tune, and trials that
only sleep (so the figures are the orchestration's, not training's).

Prints: fraction of accelerator-slot time busy (whole run; fill, middle, drain), where each
trial's start-up goes, trials per minute, driver RSS and per-trial RSS.
Each trial reserves 1 declared GPU (and 0.05 CPU), through the same ``trial_resources`` as a
real run. The sleep is ``--trial-seconds`` (+-10%, from the node id so it is reproducible).
"""

from __future__ import annotations

import argparse
import hashlib
import json
import os
import tempfile
import time


def sleep_trial(config: dict) -> None:
    import psutil
    from ray import tune

    entered, cpu_at_entry = time.time(), sum(psutil.Process().cpu_times()[:2])
    jitter = int(hashlib.sha256(config["node_id"].encode()).hexdigest(), 16) % 21 - 10
    seconds = config["seconds"] * (1 + jitter / 100)
    t0 = time.time()
    time.sleep(seconds)
    from trex_ray.search.outcome import Cost, TrialOutcome

    score = 0.5 + jitter / 100
    outcome = TrialOutcome(score=score, metrics={"accuracy": score}, cost=Cost(wall_seconds=time.time() - t0),
                           # a trained node has a model: without one, the policy's warm-start children
                           # are rejected at handout (no weights to start from) and never run
                           artifacts={"model": f"sleep://{config['node_id']}"})
    tune.report({"node_id": config["node_id"], "phase": "done", "score": outcome.score,
                 "outcome": outcome.to_json(), "rss_mb": psutil.Process().memory_info().rss / 2**20,
                 "busy_from": t0, "busy_to": time.time(), "entered": entered, "pid": os.getpid(),
                 "cpu_at_entry": cpu_at_entry, "process_started": psutil.Process().create_time()})


def print_slot_figures(trials: list[dict], slots: int) -> None:
    """Busy slot time over the whole run (from the first fine-tuning trial's start to
    the last one's end; the baseline runs alone before it), the fill (until every slot has started
    a trial), the middle (fill to the last trial's start: what the orchestration sustains) and
    the drain (no trial left to start, slots empty as the last ones end)."""
    first = min(r["busy_from"] for r in trials)
    end = max(r["busy_to"] for r in trials)
    starts = sorted(r["busy_from"] for r in trials)
    filled, last_start = starts[min(slots, len(starts)) - 1], starts[-1]

    def busy(lo: float, hi: float) -> float:
        inside = sum(max(0.0, min(r["busy_to"], hi) - max(r["busy_from"], lo)) for r in trials)
        return inside / (slots * (hi - lo)) if hi > lo else float("nan")

    print(f"slot time busy     {busy(first, end):.1%} over {end - first:.0f} s, first trial's start to last one's end")
    print(f"  fill             {busy(first, filled):.1%} over {filled - first:.0f} s, until all {slots} slots had started a trial")
    print(f"  middle           {busy(filled, last_start):.1%} over {last_start - filled:.0f} s, until the last trial's start")
    print(f"  drain            {busy(last_start, end):.1%} over {end - last_start:.0f} s, the last trials ending")
    print(f"trials per minute  {len(trials) / ((end - first) / 60):.1f}")


def _read_ledger(run_dir: str) -> list[dict]:
    from trex_ray.search.ledger import read_events

    return list(read_events(os.path.join(run_dir, "events.jsonl")))


def _startup_breakdown(events: list[dict], trials: list[dict]) -> None:
    """Where a slot's idle time goes, per trial: the searcher hands the node out (ledger
    ``node_started``) -> the trial's process exists -> Tune calls the trainable -> it works.
    A process that ran an earlier trial (``run.reuse_actors``) has no start-up of its own: its
    idle time is from the previous trial's end to this one's call."""
    from statistics import median

    handed = {e["node_id"]: e["ts"] for e in events if e["type"] == "node_started"}
    fresh, reused, by_pid = [], [], {}
    for r in sorted(trials, key=lambda r: r["entered"]):
        prev = by_pid.get(r["pid"])
        if prev is None:
            fresh.append((r["process_started"] - handed[r["node_id"]], r["entered"] - r["process_started"], r["cpu_at_entry"]))
        else:
            reused.append((r["entered"] - prev["busy_to"], r["entered"] - handed[r["node_id"]]))
        by_pid[r["pid"]] = r
    if fresh:
        print(f"new processes      {len(fresh)}: median {median(f[0] for f in fresh):.1f} s handout -> process, "
              f"{median(f[1] for f in fresh):.1f} s process -> trainable called "
              f"({median(f[2] for f in fresh):.1f} CPU-s of its own by then)")
    if reused:
        print(f"reused processes   {len(reused)} trials: median {median(a for a, _ in reused):.1f} s previous trial's end "
              f"-> next called ({median(b for _, b in reused):.1f} s after its handout)")


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__)
    ap.add_argument("--nodes", type=int, default=8)
    ap.add_argument("--gpus", type=int, default=8)
    ap.add_argument("--trials", type=int, default=192)
    ap.add_argument("--trial-seconds", type=float, default=30.0)
    ap.add_argument("--reuse-actors", action="store_true", help="keep trial processes between trials")
    ap.add_argument("--prefetch", type=int, default=0, help="search.prefetch_trials: trials queued beyond the slots")
    ap.add_argument("--save", help="write the trials' timings (JSON) here, for a closer look")
    ap.add_argument("--node-cpus", type=int, default=1, help="CPUs each simulated node declares")
    ap.add_argument("--children", type=int, default=8, help="plans per expansion")
    ap.add_argument("--max-expansions", type=int, default=8,
                    help="expansions per node: with children, what the tree can offer before results come back")
    ap.add_argument("--from-json", help="print the figures of a run saved with --save, without running one")
    args = ap.parse_args()
    if args.from_json:
        with open(args.from_json) as f:
            saved = json.load(f)
        print_slot_figures(saved["trials"], saved["slots"])
        _startup_breakdown(saved["events"], saved["trials"])
        return

    import psutil
    import ray
    from ray import tune
    from ray.cluster_utils import Cluster

    from functools import partial

    from trex_ray.actors import Researcher, TreeState
    from trex_ray.config import Config, SearchConfig, TrainConfig
    from trex_ray.executor.trial import trial_resources
    from trex_ray.search.plan import TrialResources
    from trex_ray.search.request import TaskSpec
    from trex_ray.searcher import TreeSearcher

    os.environ.setdefault("RAY_TMPDIR", tempfile.mkdtemp(prefix="trexscale", dir="/tmp"))
    slots = args.nodes * args.gpus
    cluster = Cluster(initialize_head=True, connect=False, head_node_args=dict(
        num_cpus=1, num_gpus=0, node_ip_address="127.0.0.40", include_dashboard=False, object_store_memory=100 * 2**20))
    for i in range(args.nodes):
        # One declared CPU per simulated node, not one per GPU: Ray prestarts an idle Python
        # worker per declared CPU and recycles idle ones, so 64 fake CPUs on a 2-core machine
        # keep it busy starting processes (measured: 48 % slot-busy instead of the figure below).
        cluster.add_node(num_cpus=args.node_cpus, num_gpus=args.gpus, node_ip_address=f"127.0.0.{41 + i}",
                         object_store_memory=80 * 2**20)
    cluster.wait_for_nodes()
    ray.init(address=cluster.address, log_to_driver=False)
    run_dir = tempfile.mkdtemp(prefix="trex-scale-")
    task = TaskSpec(id="sst2", description="", metric="accuracy", higher_is_better=True, prompt_template="{input}",
                    completion_template="{reference}", train_rows=100_000, columns=["id", "input", "label", "reference"])
    cfg = Config(search=SearchConfig(max_trials=args.trials, children_per_expansion=args.children,
                                     max_expansions=args.max_expansions, max_depth=50), train=TrainConfig())
    state = TreeState.remote(run_dir, cfg, task)
    researcher = Researcher.remote(cfg)
    searcher = TreeSearcher(state, researcher)
    searcher.capacity = lambda: slots + args.prefetch  # as run.py: the cluster's slots + prefetch_trials

    def trainable(config: dict) -> None:
        sleep_trial({**config, "seconds": args.trial_seconds})

    t0 = time.time()
    grid = tune.Tuner(
        tune.with_resources(trainable, partial(trial_resources, TrialResources(gpus_per_worker=1, cpus_per_worker=0.05))),
        tune_config=tune.TuneConfig(search_alg=searcher, num_samples=-1, max_concurrent_trials=slots + args.prefetch,
                                    reuse_actors=args.reuse_actors),
        run_config=tune.RunConfig(storage_path=os.path.join(run_dir, "tune"), verbose=0),
    ).fit()
    wall = time.time() - t0
    results = [r.metrics for r in grid if r.metrics and r.metrics.get("phase") == "done"]
    trials = [r for r in results if r["node_id"] != "n0"]
    print(f"cluster            {args.nodes} nodes x {args.gpus} GPUs = {slots} slots; trials of ~{args.trial_seconds:.0f} s")
    print(f"trials             {len(trials)} (+ baseline) in {wall:.0f} s (Tune wall)")
    print_slot_figures(trials, slots)
    events = _read_ledger(run_dir)
    _startup_breakdown(events, trials)
    if args.save:
        with open(args.save, "w") as f:
            json.dump({"slots": slots, "trials": trials, "events": events}, f)
    print(f"driver RSS         {psutil.Process().memory_info().rss / 2**20:.0f} MiB")
    print(f"per-trial RSS      {sum(r['rss_mb'] for r in trials) / len(trials):.0f} MiB (mean)")
    ray.shutdown()
    cluster.shutdown()


if __name__ == "__main__":
    main()
