"""The default run (`python launch.py`), timed, and whether its chosen model beats the default
recipe: prints base and best dev and test scores with their intervals, the test gain over the
base model, then trains the run's own first plan (the default recipe, in full, as a user
without TREX-Ray would) and prints the chosen model's paired test difference from it, on the
same test rows. Extra arguments go to launch.py (e.g. --search.max_trials=2);
``--skip-first-plan`` leaves out the comparison."""

from __future__ import annotations

import json
import subprocess
import sys
import time
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))


def iv(x: float | None, i: dict | None) -> str:
    return "-" if x is None else f"{x:.4f}" + (f" [{i['low']:.4f}, {i['high']:.4f}]" if i else "")


def first_plan_on_test(run_dir: Path, summary: dict) -> None:
    """Train the run's first plan in full, score it on the run's test rows, and compare."""
    from ftbench.intervals import align, paired
    from trex_ray.config import load_config
    from trex_ray.executor.context import TrialContext, read_predictions
    from trex_ray.executor.execute import execute
    from trex_ray.executor.final import score_split
    from trex_ray.researcher.builtin import first_plan
    from trex_ray.run import preflight
    from trex_ray.tasks import resolve_task

    cfg = load_config(run_dir / "config.yaml")
    task, spec = preflight(cfg)
    ctx = TrialContext.of(cfg.model_copy(update={"task": cfg.task.resolved()}), run_dir / "first-plan", None)
    t0 = time.time()
    plan = first_plan(spec, cfg.train, cfg.search.seed)
    out = execute(plan, "first", ctx)
    pred = run_dir / "first-plan" / "test_predictions.jsonl"
    score_split(ctx, plan, out.artifacts["model"], "test", cfg.task.test_limit, pred)
    best = run_dir / "nodes" / summary["best_node"] / "test_predictions.jsonl"
    from ftbench.task import load_split

    rows = load_split(resolve_task(cfg.task), "test", cfg.task.paths(), limit=cfg.task.test_limit)
    rows, (mine, theirs) = align(rows, read_predictions(str(pred)), read_predictions(str(best)))
    gain = paired(task, mine, theirs, rows)
    print(f"first plan test    {task.score(mine, rows)[task.metric]:.4f} ({plan.knobs()}; {time.time() - t0:.0f} s, "
          f"{out.cost.examples} example-epochs)")
    print(f"chosen - first     {gain.value:+.4f} [{gain.low:+.4f}, {gain.high:+.4f}] on {gain.n} test rows: "
          + ("larger than the interval" if gain.low > 0 else "NOT larger than the interval"))


def main() -> int:
    args = [a for a in sys.argv[1:] if a != "--skip-first-plan"]
    run_id = time.strftime("bench-default-%Y%m%d-%H%M%S")
    out = REPO / "runs"
    t0 = time.time()
    r = subprocess.run([sys.executable, "launch.py", f"--run.output_dir={out}", f"--run.run_id={run_id}", *args],
                       cwd=REPO)
    wall = time.time() - t0
    if r.returncode != 0:
        print(f"launch.py failed with exit status {r.returncode}")
        return r.returncode
    run_dir = out / run_id
    s = json.loads((run_dir / "summary.json").read_text())
    c = s.get("compute") or {}
    print(f"\nrun dir            {run_dir}")
    print(f"base dev {s['metric']:<9} {iv(s['base_score'], s.get('base_interval'))}")
    print(f"best dev {s['metric']:<9} {iv(s['best_score'], s.get('best_interval'))} ({s['best_node']}); "
          f"re-scored {iv((s.get('best_rescored') or {}).get('value'), s.get('best_rescored'))}")
    print(f"base test          {iv(s.get('base_test_score'), s.get('base_test_interval'))}")
    print(f"best test          {iv(s.get('best_test_score'), s.get('best_test_interval'))}")
    if s.get("test_gain"):
        g = s["test_gain"]
        print(f"test gain vs base  {g['value']:+.4f} [{g['low']:+.4f}, {g['high']:+.4f}]")
    print(f"trials             {s['trials']} plans ({s['failed_trials']} failed); compute {c.get('example_epochs')} "
          f"example-epochs, {c.get('accelerator_seconds')} accelerator-s; per rung {c.get('per_rung')}")
    print(f"selection          {(s.get('selection') or {}).get('reason', '-')}")
    print(f"wall time          {wall:.0f} s (process), {s['wall_seconds']:.0f} s (ledger)")
    if "--skip-first-plan" not in sys.argv:
        first_plan_on_test(run_dir, s)
    return 0


if __name__ == "__main__":
    sys.exit(main())
