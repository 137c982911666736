"""Does the search earn its keep? TREX-Ray against what a user would pick instead, at equal compute.

Methods, each with the same trial function (``executor.execute``), the same model, the same dev
rows to choose on and the same budget of accelerator-seconds (CPU-seconds of the trial
processes here, evaluation included):

  trex-mf      TREX-Ray, multi-fidelity (the configured rungs; successive halving; final selection)
  trex-1rung   TREX-Ray, every plan at full fidelity (search.rungs=[1.0])
  optuna       Ray Tune + OptunaSearch (TPE) over learning rate, LoRA rank, epochs and rows
  random       Ray Tune with random search over the same knobs
  default      the single default recipe (TREX-Ray's first plan), trained once

Run ``default`` first (the default order): its measured accelerator-seconds per example-epoch
is the sweeps' cost estimate before their own first result, so no sweep starts trials it cannot
pay for (without it a sweep runs one trial alone until a cost is known).

Each method's chosen model is scored once on the task's test split; the table gives the test
score (mean over seeds, with a 95 % bootstrap interval over the test rows), the dev score it was
chosen on, the compute spent and the wall time, and each method's paired test difference from
trex-mf (on the same rows, all seeds), so a gain is claimed only when it is larger than its
interval.

    python bench/compare_search.py --task sst2 --budget 1500 --seeds 0 1 --save sst2.json
    python bench/compare_search.py --task hoc --budget 1200 --seeds 0 --save hoc.json
    python bench/compare_search.py --from-json sst2.json
"""

from __future__ import annotations

import argparse
import json
import logging
import os
import sys
import time
from pathlib import Path
from typing import Any

import numpy as np

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))
sys.path.insert(0, str(REPO / "bench"))
METHODS = ("trex-mf", "trex-1rung", "optuna", "random", "default")
log = logging.getLogger("compare_search")


def config_for(args: argparse.Namespace, method: str, seed: int, out: Path):
    from trex_ray.config import load_config

    overrides = [f"--task.name={args.task}", f"--task.data_dir={args.data_dir}", f"--task.dev_limit={args.dev_limit}",
                 f"--task.test_limit={args.test_limit}", f"--run.output_dir={out}", f"--run.run_id={method}-{seed}",
                 f"--search.seed={seed}", f"--search.max_concurrent_trials={args.concurrency}",
                 f"--search.budget={args.budget}", "--search.budget_unit=accelerator_seconds",
                 f"--search.max_trials={args.max_trials}", *args.override]
    if method == "trex-1rung":
        overrides.append("--search.rungs=[1.0]")
    return load_config(None, overrides)


def run_method(args: argparse.Namespace, method: str, seed: int, out: Path) -> dict[str, Any]:
    """One method, one seed: what it chose, on what dev score, at what cost, and its chosen
    model's test predictions."""
    import ray

    from baselines import run_default, run_sweep
    from trex_ray.executor.context import TrialContext
    from trex_ray.executor.final import score_split
    from trex_ray.run import preflight, run_search

    cfg = config_for(args, method, seed, out)
    if method.startswith("trex"):
        t0 = time.time()
        s = run_search(cfg)
        compute = s["compute"]
        if s["best_node"] is None:
            raise RuntimeError(f"{method} seed {seed}: no plan trained in full ({s['stop_reason']})")
        rec = {"node": s["best_node"], "dev_score": s["best_score"], "trials": s["trials"],
               "accelerator_seconds": compute["accelerator_seconds"], "example_epochs": compute["example_epochs"],
               "wall_seconds": round(time.time() - t0, 1),
               "test_predictions": str(out / f"{method}-{seed}" / "nodes" / s["best_node"] / "test_predictions.jsonl")}
        return rec
    _, spec = preflight(cfg)
    run_dir = out / f"{method}-{seed}"
    ctx = TrialContext.of(cfg.model_copy(update={"task": cfg.task.resolved()}), run_dir, None)
    ray.init(num_cpus=args.concurrency, include_dashboard=False, log_to_driver=False)
    try:
        rec = run_default(cfg, spec, ctx) if method == "default" else run_sweep(
            method, cfg, spec, ctx, args.budget, seed, args.concurrency, run_dir, args.per_example)
    finally:
        ray.shutdown()
    from trex_ray.researcher.builtin import first_plan

    pred = run_dir / "test_predictions.jsonl"
    # every sweep trial used the default recipe's prompt: the chosen model is tested with it
    score_split(ctx, first_plan(spec, cfg.train), rec["model"], "test", args.test_limit, pred)
    rec["test_predictions"] = str(pred)
    return rec


def _rows_and_gens(args: argparse.Namespace, paths: list[str]) -> tuple[list[dict], list[list[str]]]:
    from ftbench.intervals import align
    from ftbench.task import load_split
    from ftbench.tasks import get_task
    from trex_ray.executor.context import read_predictions

    rows = load_split(get_task(args.task), "test", {"data_dir": args.data_dir}, limit=args.test_limit)
    return align(rows, *[read_predictions(p) for p in paths])


def mean_interval(args: argparse.Namespace, paths: list[str], other: list[str] | None = None,
                  resamples: int = 1000) -> dict[str, float]:
    """The mean over seeds of the test metric (or of the difference from ``other``'s mean), with
    a percentile bootstrap over test rows: each resample scores every seed on the same rows."""
    from ftbench.tasks import get_task

    task = get_task(args.task)
    rows, gens = _rows_and_gens(args, paths + (other or []))
    mine, theirs = gens[: len(paths)], gens[len(paths):]

    def stat(ix: np.ndarray) -> float:
        sample = [rows[i] for i in ix]
        value = np.mean([task.score([g[i] for i in ix], sample)[task.metric] for g in mine])
        if theirs:
            value -= np.mean([task.score([g[i] for i in ix], sample)[task.metric] for g in theirs])
        return float(value)

    idx = np.random.default_rng(0).integers(0, len(rows), size=(resamples, len(rows)))
    vals = np.array([stat(ix) for ix in idx])
    return {"value": stat(np.arange(len(rows))), "low": float(np.percentile(vals, 2.5)),
            "high": float(np.percentile(vals, 97.5)), "n": len(rows)}


def table(args: argparse.Namespace, results: dict[str, list[dict[str, Any]]]) -> str:
    ref = results.get("trex-mf")
    head = (f"{'method':<11} {'seeds':>5} {'test (mean) [95% interval]':<28} {'vs trex-mf [95%]':<27} {'dev chosen':>10} "
            f"{'accel-s':>8} {'ex-epochs':>9} {'trials':>6} {'wall s':>7}")
    lines = [f"task {args.task}, budget {args.budget:g} accelerator-seconds per run, dev {args.dev_limit} rows, "
             f"test {args.test_limit or 'all'} rows", head, "-" * len(head)]
    for method, recs in results.items():
        paths = [r["test_predictions"] for r in recs]
        iv = mean_interval(args, paths)
        vs = "-" if ref is None or method == "trex-mf" else (
            lambda d: f"{d['value']:+.4f} [{d['low']:+.4f}, {d['high']:+.4f}]")(
            mean_interval(args, paths, [r["test_predictions"] for r in ref]))
        mean = lambda k: sum(r[k] for r in recs) / len(recs)  # noqa: E731
        lines.append(f"{method:<11} {len(recs):>5} {iv['value']:.4f} [{iv['low']:.4f}, {iv['high']:.4f}]{'':<5} "
                     f"{vs:<27} {mean('dev_score'):>10.4f} {mean('accelerator_seconds'):>8.0f} "
                     f"{mean('example_epochs'):>9.0f} {mean('trials'):>6.1f} {mean('wall_seconds'):>7.0f}")
    lines.append("vs trex-mf: the method's mean test score minus trex-mf's, on the same rows (negative: trex-mf better)")
    return "\n".join(lines)


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--task", default="sst2")
    ap.add_argument("--data-dir", help="the task's data folder (default ../shared/ftbench-data/TASK)")
    ap.add_argument("--budget", type=float, default=1500.0, help="accelerator-seconds per method and seed")
    ap.add_argument("--seeds", type=int, nargs="+", default=[0, 1])
    ap.add_argument("--methods", nargs="+", default=list(METHODS), choices=METHODS)
    ap.add_argument("--dev-limit", type=int, default=200)
    ap.add_argument("--test-limit", type=int, default=0, help="test rows scored (0: all)")
    ap.add_argument("--max-trials", type=int, default=40, help="TREX-Ray's cap on plans (the budget binds first)")
    ap.add_argument("--concurrency", type=int, default=2)
    ap.add_argument("--out", default=str(REPO / "runs" / "compare"))
    ap.add_argument("--save", help="write the results (JSON) here")
    ap.add_argument("--from-json", help="print the table of results saved with --save, without running")
    ap.add_argument("override", nargs="*", help="extra --section.key=value options for every TREX-Ray run")
    args = ap.parse_args()
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(message)s", datefmt="%H:%M:%S")
    for noisy in ("ray", "transformers", "datasets", "trex_ray", "filelock"):
        logging.getLogger(noisy).setLevel(logging.WARNING)
    if args.from_json:
        saved = json.loads(Path(args.from_json).read_text())
        vars(args).update({k: v for k, v in saved["args"].items() if k not in ("from_json", "save")})
        print(table(args, saved["results"]))
        return 0
    args.data_dir = args.data_dir or str(REPO.parent / "shared" / "ftbench-data" / args.task)
    if args.test_limit <= 0:
        args.test_limit = 100_000
    os.environ.setdefault("RAY_AUTH_MODE", "disabled")
    out = Path(args.out) / time.strftime("%Y%m%d-%H%M%S")
    results: dict[str, list[dict[str, Any]]] = {}
    args.per_example = None
    for method in args.methods:
        for seed in args.seeds:
            log.info("%s seed %d ...", method, seed)
            rec = run_method(args, method, seed, out)
            results.setdefault(method, []).append(rec)
            if method == "default" and rec["example_epochs"]:  # the sweeps' cost estimate before their first result
                args.per_example = rec["accelerator_seconds"] / rec["example_epochs"]
            log.info("%s seed %d: %s", method, seed, {k: v for k, v in rec.items() if k != "test_predictions"})
            if args.save:
                Path(args.save).write_text(json.dumps({"args": vars(args), "results": results}, indent=1))
    print(table(args, results))
    return 0


if __name__ == "__main__":
    sys.exit(main())
