"""The default run (`python launch.py`), timed: prints base and best dev accuracy, wall time and
trials from the run's summary. Extra arguments go to launch.py (e.g. --search.max_trials=2)."""

from __future__ import annotations

import json
import subprocess
import sys
import time
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]


def main() -> int:
    run_id = time.strftime("bench-default-%Y%m%d-%H%M%S")
    out = REPO / "runs"
    t0 = time.time()
    r = subprocess.run([sys.executable, "launch.py", f"--run.output_dir={out}", f"--run.run_id={run_id}", *sys.argv[1:]],
                       cwd=REPO)
    wall = time.time() - t0
    if r.returncode != 0:
        print(f"launch.py failed with exit status {r.returncode}")
        return r.returncode
    s = json.loads((out / run_id / "summary.json").read_text())
    print(f"\nrun dir            {out / run_id}")
    print(f"base dev {s['metric']:<9} {s['base_score']:.4f}")
    print(f"best dev {s['metric']:<9} {s['best_score']:.4f} ({s['best_node']})")
    print(f"trials             {s['trials']} ({s['failed_trials']} failed)")
    print(f"wall time          {wall:.0f} s (process), {s['wall_seconds']:.0f} s (ledger)")
    return 0


if __name__ == "__main__":
    sys.exit(main())
