"""``python -m trex_ray.recipes check PLAN.yaml --task TASK``: validate a plan's recipe and build
it on a small slice; one ``ok:`` or ``error:`` line (exit 2 on bad input)."""

from __future__ import annotations

import argparse
import logging
import sys

from trex_ray.recipes.check import CheckError, check


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(prog="python -m trex_ray.recipes", description="Recipe tools.")
    sub = ap.add_subparsers(dest="cmd", required=True)
    c = sub.add_parser("check", help="validate a plan's recipe and build it on a small slice")
    c.add_argument("plan", help="plan or recipe file (YAML or JSON)")
    c.add_argument("--task", required=True, help="FT-Bench task id (for task:train and decontamination)")
    c.add_argument("--data-dir", default=None, help="folder with the task's {train,dev,test}.jsonl")
    c.add_argument("--rows", type=int, default=200, help="rows read from each source (default 200)")
    args = ap.parse_args(argv)
    logging.basicConfig(level=logging.WARNING, format="%(levelname)s %(name)s: %(message)s")
    import datasets

    datasets.disable_progress_bars()  # one line of output, not a bar per step
    from trex_ray.recipes.ops import RecipeError

    try:
        stats = check(args.plan, args.task, {"data_dir": args.data_dir}, max(1, args.rows))
    except (CheckError, RecipeError, ValueError) as e:
        print(f"error: {e}", file=sys.stderr)
        return 2
    flow = ", ".join(f"{s['op']} {s['rows_in']}->{s['rows_out']}" for s in stats["steps"])
    print(f"ok: {stats['rows']} rows from the first {args.rows} of each source ({flow}); "
          f"decontamination: {stats.get('decontamination')}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
