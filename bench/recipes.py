"""Throughput of the recipe builder on a realistic recipe: rows per second, cold and cached.

The recipe: load a JSONL file -> drop short rows (tokens) -> quality filter -> near-dedup (MinHash
LSH) -> decontaminate against the task's dev/test and format -> subsample 10,000. Each num_proc
setting gets a cold build (fresh cache folder), a cached re-build, and a child recipe sharing
all steps but the last (another subsample seed). Rows/second counts input
rows (the file's rows) over wall time. Decontamination uses SST-2's dev/test, found in the
file's folder (SST-2's dev is carved from that folder's train split).

    python bench/recipes.py ../shared/ftbench-data/sst2/train.jsonl [--num-proc 1 2]
"""

from __future__ import annotations

import argparse
import logging
import sys
import tempfile
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

import datasets  # noqa: E402

from ftbench.tasks.sst2 import SST2  # noqa: E402
from trex_ray.recipes.build import build_recipe  # noqa: E402
from trex_ray.recipes.ops import Recipe  # noqa: E402

log = logging.getLogger("bench_recipes")


def bench_recipe(path: Path, seed: int = 0) -> Recipe:
    return Recipe.model_validate({"steps": [
        {"op": "load", "source": str(path)},
        {"op": "filter_length", "column": "input", "unit": "tokens", "min": 3},
        {"op": "filter_quality", "column": "input"},
        {"op": "dedup_near", "column": "input", "threshold": 0.8},
        {"op": "format", "prompt": SST2.prompt_template, "completion": SST2.completion_template},
        {"op": "subsample", "n": 10_000, "seed": seed},
    ]})


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("train", type=Path, help="an SST-2-shaped train.jsonl (input, label, reference)")
    ap.add_argument("--num-proc", type=int, nargs="+", default=[1, 2])
    args = ap.parse_args()
    logging.basicConfig(level=logging.WARNING)
    datasets.disable_progress_bars()
    recipe, paths = bench_recipe(args.train), {"data_dir": str(args.train.parent)}
    rows_in = sum(1 for line in args.train.open(encoding="utf-8") if line.strip())
    print(f"{'num_proc':>8} {'run':>7} {'seconds':>8} {'rows in':>8} {'rows out':>8} {'rows/s':>9}  slowest steps")
    for num_proc in args.num_proc:
        with tempfile.TemporaryDirectory() as cache:
            for run in ("cold", "cached", "prefix"):
                # prefix: a child recipe that changes only the last step (the subsample seed)
                r = recipe if run != "prefix" else bench_recipe(args.train, seed=1)
                t0 = time.perf_counter()
                ds, stats = build_recipe(r, SST2, paths, cache, num_proc=num_proc)
                dt = time.perf_counter() - t0
                slow = sorted(stats["steps"], key=lambda s: -s.get("seconds", 0))[:3]
                top = ", ".join(f"{s['op']} {s['seconds']:.1f}s" for s in slow) if run == "cold" else f"cache {stats['cache']}"
                print(f"{num_proc:>8} {run:>7} {dt:>8.2f} {rows_in:>8} {len(ds):>8} {rows_in / dt:>9.0f}  {top}", flush=True)


if __name__ == "__main__":
    main()
