"""A short search per FT-Bench task with the builtin SmolLM2 model, and its figures: the base
model's and the chosen model's dev and test scores, the budget the search spent, and where the
chosen model's training rows came from (which sources, how many rows each, how many synthesised).

    python bench/ftbench_figures.py --out runs/figures sst2 hoc -- --search.max_trials=4

Everything after ``--`` goes to every run's launch.py (budget, slices); a task's own settings
(its data folder, extra sources, LLM endpoint) are given as ``TASK:--key=value`` arguments, e.g.
``cs_bench:--task.extra_sources=[/data/cs]``. An existing run directory is read, not re-run
(``--report-only`` never runs anything), so a long batch can be resumed or re-printed.
"""

from __future__ import annotations

import argparse
import json
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

REPO = Path(__file__).resolve().parents[1]


def run(task: str, out: Path, common: list[str], own: list[str]) -> Path:
    run_dir = out / task
    if (run_dir / "summary.json").is_file():
        return run_dir
    args = [sys.executable, str(REPO / "launch.py"), f"--task.name={task}", f"--run.output_dir={out}",
            f"--run.run_id={task}", *common, *own]
    t0 = time.time()
    with open(out / f"{task}.log", "w") as log:
        rc = subprocess.run(args, cwd=REPO, stdout=log, stderr=subprocess.STDOUT).returncode
    print(f"{task}: launch.py exited {rc} after {time.time() - t0:.0f}s (log {out / f'{task}.log'})", flush=True)
    return run_dir


def provenance(run_dir: Path, node_id: str | None) -> str:
    """Where the node's training rows came from, from its recipe statistics in the tree."""
    tree = json.loads((run_dir / "tree.json").read_text())
    node = next((n for n in tree["nodes"] if n["id"] == node_id), None)
    if node is None or not node.get("plan", {}).get("training"):
        return "-"
    stats = node.get("recipe_stats") or {}
    steps = node["plan"]["recipe"]["steps"]
    parts = []
    for step, st in zip(steps, stats.get("steps", [])):
        if step["op"] == "load":
            parts.append(f"load {step['source']}: {st['rows_out']} rows")
        elif step["op"] == "mix":
            counts = stats.get("mix_rows") or [None] * len(step["sources"])
            parts.append("mix " + ", ".join(f"{s['source']}: {c}" for s, c in zip(step["sources"], counts)))
        elif step["op"] == "concat":
            parts.append(f"concat {', '.join(s['source'] for s in step['sources'])}: +{st['rows_out'] - st['rows_in']} rows")
        elif step["op"] == "synthesize":
            syn = st.get("synthetic") or {}
            parts.append(f"synthesised {syn.get('accepted')} of {syn.get('requested')} ({syn.get('mode')})")
        elif step["op"] == "format":
            parts.append(f"{st.get('decontaminated', 0)} dropped by decontamination")
    return "; ".join(parts) + f"; trained on {stats.get('rows')} rows"


def report(task: str, run_dir: Path) -> dict[str, Any]:
    s = json.loads((run_dir / "summary.json").read_text())
    tree = json.loads((run_dir / "tree.json").read_text())
    fig = {"task": task, "metric": s["metric"], "trials": s["trials"], "failed": s["failed_trials"],
           "base_dev": s["base_score"], "best_dev": s["best_score"], "best_node": s["best_node"],
           "base_test": s.get("base_test_score"), "best_test": s.get("best_test_score"),
           "test_rows": s.get("test_rows") or s.get("test_n"), "example_epochs": s["compute"]["example_epochs"],
           "wall_s": s["wall_seconds"], "data": provenance(run_dir, s["best_node"]),
           "first_plans": [provenance(run_dir, n["id"]) for n in tree["nodes"] if n.get("parent_id") == tree["nodes"][0]["id"]]}
    return fig


def fmt(x: Any) -> str:
    return "-" if x is None else f"{x:.4f}" if isinstance(x, float) else str(x)


def main() -> None:
    argv = sys.argv[1:]
    common = argv[argv.index("--") + 1:] if "--" in argv else []
    argv = argv[: argv.index("--")] if "--" in argv else argv
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--out", required=True, type=Path)
    ap.add_argument("--report-only", action="store_true")
    ap.add_argument("tasks", nargs="+", help="task ids, and TASK:--key=value settings of one task")
    a = ap.parse_args(argv)
    a.out.mkdir(parents=True, exist_ok=True)
    tasks = [t for t in a.tasks if ":" not in t]
    own = {t: [x.split(":", 1)[1] for x in a.tasks if x.startswith(f"{t}:")] for t in tasks}
    for t in tasks:
        run_dir = a.out / t if a.report_only else run(t, a.out, common, own[t])
        if not (run_dir / "summary.json").is_file():
            print(f"{t}: no summary (see {a.out / f'{t}.log'})")
            continue
        f = report(t, run_dir)
        print(f"{t} ({f['metric']}): base dev {fmt(f['base_dev'])} -> best dev {fmt(f['best_dev'])} ({f['best_node']}); "
              f"test base {fmt(f['base_test'])} -> best {fmt(f['best_test'])}; {f['trials']} trials "
              f"({f['failed']} failed), {f['example_epochs']} example-epochs, {f['wall_s']:.0f}s")
        print(f"  best's data: {f['data']}")
        for i, p in enumerate(f["first_plans"], 1):
            print(f"  root child {i}: {p}")
        print(json.dumps(f), flush=True)


if __name__ == "__main__":
    main()
