"""The search on a real local Ray cluster: Tune, the TreeState and Researcher actors, real trials
(training a tiny random-init model), durable ledger, and resume after a real process kill."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest

from trex_ray.config import load_config
from trex_ray.search.ledger import read_events
from trex_ray.search.tree import SearchParams, Tree

REPO = Path(__file__).resolve().parents[1]

# Full fine-tuning at a high learning rate makes the tiny model learn the answer words within a
# few seconds, so different plans reach different, non-zero scores.
def tiny_args(model_dir: Path, out: Path, run_id: str, trials: int, rungs: tuple[str, ...] = ("--search.rungs=[1.0]",)) -> list[str]:
    return [
        f"--model.name_or_path={model_dir}", f"--run.output_dir={out}", f"--run.run_id={run_id}",
        f"--search.max_trials={trials}", "--search.max_concurrent_trials=2", "--search.children_per_expansion=3",
        "--task.dev_limit=32", "--train.method=full", "--train.learning_rate=0.005", "--train.num_epochs=2",
        "--train.train_samples=64", "--train.eval_batch_size=32", *rungs,
    ]


def test_search_through_tune_grows_from_the_best_branch(tiny_model_dir, tmp_path):
    from trex_ray.run import run_search

    cfg = load_config(None, tiny_args(tiny_model_dir, tmp_path, "it", trials=5))
    summary = run_search(cfg)
    run = tmp_path / "it"
    events = list(read_events(run / "events.jsonl"))
    tree = Tree.replay(events, SearchParams())
    saved = json.loads((run / "tree.json").read_text())

    # every trial ran through Tune and reported a score
    trained = [n for n in tree.nodes.values() if n.parent_id]
    assert summary["trials"] == 5 and len([n for n in trained if n.status == "succeeded"]) == 5
    assert all(n.score is not None and n.cost.wall_seconds > 0 and n.trial_id for n in trained)
    assert tree.root.score == summary["base_score"]
    # the best is chosen among the top three on dev, re-scored on the whole dev split (500 rows)
    top3 = sorted(trained, key=tree.rank_key)[:3]
    assert summary["best_node"] == tree.selected and tree.selected in {n.id for n in top3}
    assert summary["best_rescored"]["n"] == 500 and summary["selection"]["finalists"] == [n.id for n in top3]
    assert len(list((run / "tune").glob("search-0/n*"))) == 6  # Tune's own trial folders

    # the ledger replays to the tree the live run wrote
    assert {n["id"]: (n["status"], n["score"], n["visits"]) for n in saved["nodes"]} == {
        n.id: (n.status, n.score, n.visits) for n in tree.nodes.values()}

    # the second expansion went to the best-scoring child known at that moment (rewards > 0:
    # the untrained tiny model scores 0), i.e. the tree grew from the best branch
    expansions = [i for i, e in enumerate(events) if e["type"] == "expansion"]
    assert len(expansions) >= 2
    before = Tree.replay(events[: expansions[1]], SearchParams())
    done_kids = [n for n in before.children(before.root) if n.status == "succeeded"]
    best_kid = max(done_kids, key=lambda n: n.score)
    assert best_kid.reward > 0
    assert events[expansions[1]]["node_id"] == best_kid.id
    assert any(n.parent_id == best_kid.id for n in tree.nodes.values())

    # outputs
    assert (run / "best" / "config.json").is_file() or (run / "best" / "adapter_config.json").is_file()
    for name in ("config.yaml", "summary.json", "tree.json", "events.jsonl"):
        assert (run / name).is_file()
    preds = [json.loads(l) for l in open(run / "nodes" / "n1" / "dev_predictions.jsonl")]
    assert len(preds) == 32 and {"id", "prediction", "parsed", "reference"} <= set(preds[0])


def _launch(args: list[str], log: Path) -> subprocess.Popen:
    env = {**os.environ, "PYTHONUNBUFFERED": "1"}
    return subprocess.Popen([sys.executable, str(REPO / "launch.py"), *args], cwd=REPO, env=env,
                            stdout=open(log, "w"), stderr=subprocess.STDOUT, start_new_session=True)


def test_resume_after_a_real_kill_mid_rung_runs_nothing_twice(tiny_model_dir, tmp_path):
    """Successive halving (rungs 0.5 and 1.0, eta 2), one trial at a time: the driver is killed
    right after a promotion is recorded; the resumed run trains the promoted node at its new
    rung (continuing its proxy's checkpoint), never promotes it again, and runs no (node, rung)
    that had finished again."""
    run = tmp_path / "rk"
    args = tiny_args(tiny_model_dir, tmp_path, "rk", trials=4, rungs=("--search.rungs=[0.5,1.0]", "--search.eta=2"))
    args += ["--search.max_concurrent_trials=1", "--search.finalists=2", "--search.proxy_dev_limit=16"]
    proc = _launch(args, tmp_path / "first.log")
    ledger = run / "events.jsonl"
    deadline = time.time() + 600
    try:
        while time.time() < deadline:
            if ledger.exists() and any(e["type"] == "node_promoted" for e in read_events(ledger)):
                break
            assert proc.poll() is None, (tmp_path / "first.log").read_text()[-3000:]
            time.sleep(0.2)
        else:
            pytest.fail("no promotion in time")
    finally:
        os.killpg(proc.pid, signal.SIGKILL)  # the driver and the embedded Ray with it
        proc.wait()
    before = list(read_events(ledger))
    done_before = {(e["node_id"], e.get("rung")) for e in before if e["type"] == "node_finished"}
    promoted = [(e["node_id"], e["rung"]) for e in before if e["type"] == "node_promoted"]
    assert ("n0", 1) in done_before and len(done_before) >= 3 and promoted

    proc = _launch(["--resume", str(run)], tmp_path / "second.log")
    assert proc.wait(timeout=900) == 0, (tmp_path / "second.log").read_text()[-3000:]
    after = list(read_events(ledger))
    assert after[: len(before)] == before  # nothing recorded was lost or rewritten
    resumed = after[len(before):]
    assert resumed[0]["type"] == "run_resumed"
    started_again = [(e["node_id"], e["rung"]) for e in resumed if e["type"] == "node_started"]
    assert not set(started_again) & done_before  # no finished run is run again
    node, rung = promoted[-1]
    assert (node, rung) in started_again  # the promotion the kill interrupted runs at its rung ...
    again = next(e for e in resumed if e["type"] == "node_started" and e["node_id"] == node)
    proxy = next(e for e in before if e["type"] == "node_finished" and e["node_id"] == node and e["rung"] == 0)
    assert again["resume_from"] == proxy["artifacts"]["checkpoint"]  # ... continuing its proxy's run
    all_promotions = [(e["node_id"], e["rung"]) for e in after if e["type"] == "node_promoted"]
    assert len(all_promotions) == len(set(all_promotions))  # ... and is never promoted twice
    finished = [(e["node_id"], e.get("rung")) for e in after if e["type"] == "node_finished"]
    assert len(finished) == len(set(finished))
    tree = Tree.replay(after, SearchParams())
    assert tree.nodes[node].rung_scores.keys() == {0, 1}
    summary = json.loads((run / "summary.json").read_text())
    assert summary["resumed"] is True and summary["trials"] == 4
    # the test split never chose anything: every decision is in the ledger, made on dev rows,
    # and the test predictions were written after the run's last event
    assert not any("test" in json.dumps(e) for e in after if e["type"] in ("node_promoted", "node_rescored", "best_selected"))
    test_files = list(run.glob("nodes/*/test_predictions.jsonl"))
    assert test_files and min(f.stat().st_mtime for f in test_files) >= after[-1]["ts"]
