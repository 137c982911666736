"""Bad input through ``python -m ftbench``'s own entry point: exit 2 and one ``error:`` line, never
a traceback or a meaningless score; and ``--partial`` / withheld-dev reporting on good input."""

from __future__ import annotations

import json
import logging
from pathlib import Path

import pytest

from ftbench.__main__ import main
from ftbench.task import PACKAGE_DATA

SST2_TEST = [json.loads(line) for line in (PACKAGE_DATA / "sst2" / "test.jsonl").read_text().splitlines()]


def run(capsys, *argv: str) -> tuple[int, str, str]:
    rc = main(list(argv))
    out, err = capsys.readouterr()
    return rc, out, err


def one_error(rc: int, err: str) -> str:
    """The single stderr line of a refused command."""
    assert rc == 2
    assert "Traceback" not in err
    lines = err.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith("error: "), err
    return lines[0]


def write_preds(path: Path, recs: list[dict]) -> str:
    path.write_text("".join(json.dumps(r) + "\n" for r in recs), encoding="utf-8")
    return str(path)


def gold(row: dict) -> dict:
    return {"id": row["id"], "prediction": row["reference"]}


def test_full_gold_predictions_score_1(capsys, tmp_path):
    rc, out, _ = run(capsys, "score", "--task", "sst2", "--predictions", write_preds(tmp_path / "p.jsonl", [gold(r) for r in SST2_TEST]))
    scores = json.loads(out.strip().splitlines()[-1])
    assert rc == 0 and scores["accuracy"] == 1.0 and scores["n"] == scores["split_rows"] == 872
    assert "withheld_as_dev" not in scores  # SST-2's dev comes from train


def test_score_refuses_one_line_repeated(capsys, tmp_path):
    p = write_preds(tmp_path / "p.jsonl", [gold(SST2_TEST[0])] * 872)
    line = one_error(*run(capsys, "score", "--task", "sst2", "--predictions", p)[::2])
    assert "appear more than once" in line and "872 times" in line


def test_score_refuses_partial_coverage_unless_asked(capsys, tmp_path, caplog):
    p = write_preds(tmp_path / "p.jsonl", [gold(SST2_TEST[0])])
    line = one_error(*run(capsys, "score", "--task", "sst2", "--predictions", p)[::2])
    assert "covers 1 of the 872 rows" in line and "--partial" in line
    with caplog.at_level(logging.INFO, logger="ftbench"):
        rc, out, _ = run(capsys, "score", "--task", "sst2", "--predictions", p, "--partial")
    scores = json.loads(out.strip().splitlines()[-1])
    assert rc == 0 and scores["n"] == 1 and scores["split_rows"] == 872
    assert "scored 1 of the 872 rows" in caplog.text


def test_score_refuses_a_latin1_file(capsys, tmp_path):
    p = tmp_path / "p.jsonl"
    p.write_bytes(json.dumps(gold(SST2_TEST[0])).encode() + b"\n" + '{"id": "x", "prediction": "café"}'.encode("latin-1"))
    line = one_error(*run(capsys, "score", "--task", "sst2", "--predictions", str(p))[::2])
    assert f"{p}:2: not UTF-8 text (byte 0xe9)" in line


@pytest.mark.parametrize("limit", ["-5", "0"])
def test_eval_refuses_a_limit_below_1_before_loading_anything(capsys, limit):
    # the model path does not exist: refusing the limit must come first
    line = one_error(*run(capsys, "eval", "--task", "sst2", "--model", "/no/such/model", "--limit", limit)[::2])
    assert line == f"error: --limit must be a positive number, not {limit}"


@pytest.mark.parametrize(
    "row, kind", [("[1, 2]", "a list"), ('"just text"', "a string")],
)
def test_a_jsonl_row_that_is_not_a_record(capsys, tmp_path, row, kind):
    data = tmp_path / "data"
    data.mkdir()
    (data / "test.jsonl").write_text(json.dumps(SST2_TEST[0]) + "\n" + row + "\n")
    p = write_preds(tmp_path / "p.jsonl", [gold(SST2_TEST[0])])
    line = one_error(*run(capsys, "score", "--task", "sst2", "--predictions", p, "--data-dir", str(data))[::2])
    assert f"{data / 'test.jsonl'}:2: each line must be a JSON object" in line and kind in line


def test_a_latin1_data_file(capsys, tmp_path):
    data = tmp_path / "data"
    data.mkdir()
    (data / "test.jsonl").write_bytes(json.dumps(SST2_TEST[0]).encode() + b"\n" + '{"input": "caf\u00e9"}'.encode("latin-1"))
    p = write_preds(tmp_path / "p.jsonl", [gold(SST2_TEST[0])])
    line = one_error(*run(capsys, "score", "--task", "sst2", "--predictions", p, "--data-dir", str(data))[::2])
    assert f"{data / 'test.jsonl'}:2: not UTF-8 text (byte 0xe9)" in line


def test_a_corrupt_parquet_file(capsys, tmp_path):
    data = tmp_path / "data"
    data.mkdir()
    (data / "test.parquet").write_bytes(b"PAR1 this is not a parquet file")
    p = write_preds(tmp_path / "p.jsonl", [gold(SST2_TEST[0])])
    line = one_error(*run(capsys, "score", "--task", "sst2", "--predictions", p, "--data-dir", str(data))[::2])
    assert f"{data / 'test.parquet'}: not a readable Parquet file" in line


def test_an_empty_data_folder(capsys, tmp_path):
    (tmp_path / "empty").mkdir()
    p = write_preds(tmp_path / "p.jsonl", [gold(SST2_TEST[0])])
    line = one_error(*run(capsys, "score", "--task", "sst2", "--predictions", p, "--data-dir", str(tmp_path / "empty"))[::2])
    assert f"{tmp_path / 'empty'} holds no test split (looked for test.jsonl" in line


def test_a_split_path_naming_an_empty_folder(tmp_path):
    from ftbench.task import TaskDataError, load_split
    from ftbench.tasks import get_task

    (tmp_path / "empty").mkdir()
    with pytest.raises(TaskDataError, match="empty holds no train split"):
        load_split(get_task("sst2"), "train", {"train": str(tmp_path / "empty")})


def test_lawbench_test_scores_say_how_many_rows_are_dev(capsys, tmp_path, caplog, shared_data):
    data = str(shared_data / "lawbench")
    from ftbench.task import load_split, withheld_test_ids
    from ftbench.tasks import get_task

    task = get_task("lawbench")
    rows = [r for r in load_split(task, "test", {"data_dir": data}) if r["task_id"] == "1-2"][:3]
    p = write_preds(tmp_path / "p.jsonl", [{"id": r["id"], "prediction": r["reference"]} for r in rows])
    with caplog.at_level(logging.INFO, logger="ftbench"):
        rc, out, _ = run(capsys, "score", "--task", "lawbench", "--predictions", p, "--data-dir", data, "--partial")
    scores = json.loads(out.strip().splitlines()[-1])
    assert rc == 0 and scores["withheld_as_dev"] == 200 and scores["split_rows"] == 8800
    assert "200 rows of the lawbench test split are its dev split" in caplog.text
    # a dev row cannot be scored as test
    dev_id = sorted(withheld_test_ids(task, {"data_dir": data}))[0]
    p = write_preds(tmp_path / "d.jsonl", [{"id": dev_id, "prediction": "A"}])
    line = one_error(*run(capsys, "score", "--task", "lawbench", "--predictions", p, "--data-dir", data, "--partial")[::2])
    assert "withheld from every test score" in line and "--split dev" in line
