"""Orchestration overhead: one trial through TREX-Ray (embedded Ray, Tune, TreeState and
Researcher actors) against the same plan run as a plain script (a fresh Python process calling
``executor.execute``). Both get one CPU thread, the same model, data and dev slice.

The trial's TREX-Ray time is measured from the ledger (node_started -> node_finished: scheduling,
worker start, imports, data, training, evaluation, reporting), and the whole launch.py process
time is printed too (Ray start-up and the baseline evaluation included).
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import time
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]

PLAIN = r"""
import json, sys, time
t0 = time.time()
from ftbench.task import load_split
from trex_ray.config import load_config
from trex_ray.executor.context import TrialContext
from trex_ray.executor.execute import execute
from trex_ray.researcher.builtin import first_plan
from trex_ray.tasks import resolve_task, task_spec
cfg = load_config(None, json.loads(sys.argv[1]))
task = resolve_task(cfg.task)
train = load_split(task, "train", cfg.task.paths())
plan = first_plan(task_spec(task, len(train), list(train[0])), cfg.train, cfg.search.seed)
out = execute(plan, "plain", TrialContext.of(cfg, sys.argv[2], None))
print(json.dumps({"seconds": time.time() - t0, "score": out.score}))
"""


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__)
    ap.add_argument("--train-samples", type=int, default=256)
    ap.add_argument("--dev-limit", type=int, default=200)
    args = ap.parse_args()
    common = [f"--train.train_samples={args.train_samples}", f"--task.dev_limit={args.dev_limit}"]
    env = {**os.environ, "OMP_NUM_THREADS": "1", "RAY_AUTH_MODE": os.environ.get("RAY_AUTH_MODE", "disabled")}
    stamp = time.strftime("%Y%m%d-%H%M%S")
    out = REPO / "runs"

    t0 = time.time()
    plain = subprocess.run([sys.executable, "-c", PLAIN, json.dumps(common), str(out / f"bench-plain-{stamp}")],
                           cwd=REPO, env=env, capture_output=True, text=True)
    if plain.returncode != 0:
        print(plain.stderr[-3000:])
        return 1
    plain_res = json.loads(plain.stdout.strip().splitlines()[-1])

    run_id = f"bench-overhead-{stamp}"
    t1 = time.time()
    trex = subprocess.run([sys.executable, "launch.py", *common, "--search.max_trials=1", "--search.max_concurrent_trials=1",
                           "--search.children_per_expansion=1", f"--run.output_dir={out}", f"--run.run_id={run_id}"],
                          cwd=REPO, env=env, capture_output=True, text=True)
    process_s = time.time() - t1
    if trex.returncode != 0:
        print(trex.stdout[-3000:], trex.stderr[-3000:])
        return 1
    events = [json.loads(line) for line in open(out / run_id / "events.jsonl")]
    start = next(e["ts"] for e in events if e["type"] == "node_started" and e["node_id"] == "n1")
    end = next(e for e in events if e["type"] == "node_finished" and e["node_id"] == "n1")
    trial_s = end["ts"] - start
    print(f"plain script (process)       {plain_res['seconds']:.1f} s   dev score {plain_res['score']:.4f}")
    print(f"TREX-Ray trial (ledger)      {trial_s:.1f} s   dev score {end['score']:.4f}")
    print(f"ratio trial / plain          {trial_s / plain_res['seconds']:.3f}")
    print(f"launch.py process, whole run {process_s:.1f} s (Ray start, baseline evaluation, trial, outputs)")
    return 0


if __name__ == "__main__":
    sys.exit(main())
