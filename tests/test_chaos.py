"""The chaos soak, short: ``bench/chaos.py --quick`` (6 trials on a simulated 2-node cluster,
sleeping trials, one fault of each kind: a driver SIGKILL and ``--resume``, a trial process
SIGKILL, a worker node killed and replaced, a second driver tried on the live run) must end with
nothing lost, nothing duplicated and every invariant holding."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[1]
pytestmark = pytest.mark.slow


def test_short_chaos_soak_loses_and_duplicates_nothing(tmp_path):
    out = tmp_path / "chaos.json"
    r = subprocess.run([sys.executable, str(REPO / "bench" / "chaos.py"), "--quick", "--seed", "1",
                        "--work", str(tmp_path / "work"), "--json", str(out), "--timeout", "1200"],
                       cwd=REPO, capture_output=True, text=True, timeout=1300,
                       env={**os.environ, "PYTHONPATH": str(REPO)})
    assert out.is_file(), r.stdout[-3000:] + r.stderr[-3000:]
    res = json.loads(out.read_text())
    table = r.stdout
    assert res["lost"] == [] and res["duplicated"] == 0, table
    assert all(res["invariants"].values()), table
    # every kind of fault was really injected, and the second driver was refused
    faults = res["faults"]
    assert faults["driver_kill"] == 1 and faults["node_kill"] == 1 and faults["second_driver_refused"] == 1, table
    assert faults["trial_kill"] == 1 or "trial_kill" in res["skipped"], table
    # the search still spent exactly its budget, and came back after the driver kill
    assert res["succeeded"] + len(res["failed"]) == res["trials"] == 6, table
    assert res["stop_reason"] == "trial budget spent"
    assert res["recoveries"][0]["resumed"] is not None and res["recoveries"][0]["resumed"] > 0, table
    if faults["trial_kill"]:  # the killed trial was run again: 6 trials + the baseline, plus restarts
        assert res["trial_starts"] > 7, table
    assert r.returncode == 0 and "lost                 0" in table
