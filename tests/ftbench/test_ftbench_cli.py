"""``python -m ftbench`` and ``bench/ftbench_floor.py`` end to end in subprocesses, on the tiny model."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[2]
FIXTURES = REPO / "tests" / "fixtures" / "ftbench"


def ftbench(*args: str) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, "-m", "ftbench", *args], cwd=REPO, capture_output=True, text=True, timeout=300)


def last_json(stdout: str) -> dict:
    return json.loads(stdout.strip().splitlines()[-1])


def test_eval_then_score_round_trip(tiny_model_dir, tmp_path):
    out = tmp_path / "preds.jsonl"
    data = str(FIXTURES / "econlogicqa")
    ev = ftbench("eval", "--task", "econlogicqa", "--model", str(tiny_model_dir), "--data-dir", data,
                 "--limit", "2", "--out", str(out), "--batch-size", "2", "--max-new-tokens", "6")
    assert ev.returncode == 0, ev.stderr
    scores = last_json(ev.stdout)
    assert scores["n"] == 2 and 0.0 <= scores["accuracy"] <= 1.0
    recs = [json.loads(line) for line in out.read_text().splitlines()]
    assert [r["id"] for r in recs] == ["test/0", "test/1"] and all("prediction" in r for r in recs)

    sc = ftbench("score", "--task", "econlogicqa", "--predictions", str(out), "--data-dir", data)
    assert sc.returncode == 0, sc.stderr
    rescored = last_json(sc.stdout)
    assert {k: rescored[k] for k in ("accuracy", "pairwise_accuracy", "parse_rate")} == {
        k: scores[k] for k in ("accuracy", "pairwise_accuracy", "parse_rate")}

    # the score command really reads the predictions: gold answers give full marks
    gold = {"test/0": "B, D, A, C", "test/1": "Answer: B, C, D, A"}
    out.write_text("".join(json.dumps({"id": r["id"], "prediction": gold[r["id"]]}) + "\n" for r in recs))
    assert last_json(ftbench("score", "--task", "econlogicqa", "--predictions", str(out), "--data-dir", data).stdout)["accuracy"] == 1.0


@pytest.mark.parametrize(
    "args, message",
    [
        (["score", "--task", "nope", "--predictions", "x.jsonl"], "unknown FT-Bench task"),
        (["score", "--task", "econlogicqa", "--predictions", "/no/such/file.jsonl"], "predictions file not found"),
        (["eval", "--task", "gta", "--model", "/no/model", "--data-dir", "/no/such/dir"], "data folder not found"),
        (["eval", "--task", "gta", "--model", "/no/such/model", "--data-dir", str(FIXTURES / "gta")], "cannot load model"),
    ],
)
def test_bad_input_is_one_line_and_exit_2(args, message):
    r = ftbench(*args)
    assert r.returncode == 2
    assert message in r.stderr and "Traceback" not in r.stderr
    assert r.stderr.strip().splitlines()[-1].startswith("error:")


def test_score_rejects_ids_outside_the_split(tmp_path):
    p = tmp_path / "p.jsonl"
    p.write_text(json.dumps({"id": "nope/1", "prediction": "x"}) + "\n")
    r = ftbench("score", "--task", "gta", "--predictions", str(p), "--data-dir", str(FIXTURES / "gta"))
    assert r.returncode == 2 and "not in the gta test split" in r.stderr


def test_list_shows_tasks_and_local_sizes():
    r = ftbench("list", "--data-root", str(FIXTURES))
    assert r.returncode == 0, r.stderr
    lines = r.stdout.splitlines()
    rows = {line.split()[0]: line for line in lines[2 : lines.index("")]}
    assert set(("aci_bench", "tomg_bench", "omebench", "hoc", "sst2", "cs_bench", "openfindata", "econlogicqa",
                "gta", "lawbench")) <= set(rows)
    econ = rows["econlogicqa"].split()
    assert econ[2:7] == ["2", "1", "2", "published", "ready"]  # train/dev/test sizes of the fixture
    gta = rows["gta"].split()  # 4 test rows: too few to carve 20 dev rows, and no train data
    assert gta[2:6] == ["-", "error", "4", "test"] and "needs train data (extra_sources) + a dev split" in rows["gta"]
    assert any(line.startswith("gta dev: task gta: its test split has only 4 rows") for line in lines)
    assert "no folder sst2/" in rows["sst2"]


def test_list_without_data_says_where_dev_comes_from():
    r = ftbench("list")
    assert r.returncode == 0, r.stderr
    lines = r.stdout.splitlines()
    rows = {line.split()[0]: line for line in lines[2 : lines.index("")]}
    assert "train (500)" in rows["sst2"] and rows["sst2"].split()[7] == "ready"
    assert "published" in rows["cs_bench"] and "needs train data" in rows["cs_bench"]
    assert "test (10 per task_id)" in rows["lawbench"] and "needs train data" in rows["lawbench"]


def test_floor_bench_runs_on_the_tiny_model(tiny_model_dir, shared_data):
    r = subprocess.run(
        [sys.executable, str(REPO / "bench" / "ftbench_floor.py"), "--model", str(tiny_model_dir),
         "--data-root", str(shared_data), "--tasks", "sst2", "lawbench", "--limit", "2", "--max-new-tokens", "4"],
        cwd=REPO, capture_output=True, text=True, timeout=300,
    )
    assert r.returncode == 0, r.stderr
    rows = {line.split()[0]: line.split() for line in r.stdout.splitlines()[2:]}
    assert rows["sst2"][1:4] == ["dev", "2", "accuracy"]
    assert rows["lawbench"][1:4] == ["dev", "2", "average"]  # LawBench's dev is carved from test
    assert 0.0 <= float(rows["lawbench"][4]) <= 1.0
