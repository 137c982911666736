"""Every task loads with its schema and gets a real scored evaluation of the tiny model.

The 7 tasks with shared data load from it (skipped when it is absent); the 3 hub-only tasks load
from fixture files written in their sources' real release schema."""

from __future__ import annotations

import json
from dataclasses import replace
from pathlib import Path

import pytest

from ftbench.evaluate import evaluate, load_model
from ftbench.metrics_lawbench import SCORERS
from ftbench.task import TaskDataError, load_split
from ftbench.tasks import LOCAL_TASKS, get_task
from ftbench.tasks.hoc import LABELS
from ftbench.tasks.tomg_bench import SUBTASKS as TOMG_SUBTASKS

FIXTURES = Path(__file__).resolve().parents[1] / "fixtures" / "ftbench"


@pytest.fixture(scope="module")
def tiny(tiny_model_dir):
    return load_model(tiny_model_dir)


def shortest(task, rows, n=4):
    """The n rows with the shortest prompts: the tiny model's byte-level tokenizer makes long
    inputs (clinical dialogues, Chinese text) thousands of tokens long."""
    return sorted(rows, key=lambda r: len(task.format_prompt(r)))[:n]


def run_tiny(task, rows, tiny, tmp_path):
    model, tok = tiny
    short = replace(task, max_new_tokens=8)
    out = tmp_path / "pred.jsonl"
    scores = evaluate(short, model, tok, rows, batch_size=4, predictions_path=out)
    lo, hi = task.metric_range
    assert lo <= scores[task.metric] <= hi
    assert scores["n"] == len(rows)
    recs = [json.loads(line) for line in out.read_text().splitlines()]
    assert [r["id"] for r in recs] == [r["id"] for r in rows]
    assert all(isinstance(r["prediction"], str) for r in recs)
    # re-scoring the saved raw predictions gives the same number
    assert task.score([r["prediction"] for r in recs], rows)[task.metric] == pytest.approx(scores[task.metric])
    return scores


EXPECTED_SIZES = {  # from SOURCES.md of the shared data
    "aci_bench": {"train": 67, "dev": 20, "test": 120},
    "hoc": {"train": 1108, "dev": 157, "test": 315},
    "cs_bench": {"dev": 236, "test": 2183},
    "omebench": {"test": 196},
    "tomg_bench": {"test": 4500},
    "lawbench": {"dev": 200, "test": 8800},  # 9,000 rows: 10 per sub-task carved from test as dev
    "sst2": {"test": 872},
}


def check_schema(task_id: str, split: str, rows: list[dict]) -> None:
    r = rows[0]
    if task_id == "tomg_bench" and split == "test":
        assert all(isinstance(x["reference"], dict) for x in rows)
        assert {x["subtask"] for x in rows} == set(TOMG_SUBTASKS)
    if task_id == "omebench":
        assert all(isinstance(x["reference"], list) and x["completion"].startswith("[") for x in rows)
        if split == "test":
            assert all("step_weight" in s for x in rows for s in x["reference"])
    if task_id == "hoc":
        assert all(x["labels"] and set(x["labels"]) <= set(LABELS) for x in rows)
    if task_id == "cs_bench":
        assert {x["format"] for x in rows} <= {"Multiple-choice", "Assertion", "Fill-in-the-blank", "Open-ended"}
    if task_id == "lawbench":
        assert {x["task_id"] for x in rows} == set(SCORERS)
    assert isinstance(r["id"], str) and len({x["id"] for x in rows}) == len(rows)


@pytest.mark.parametrize("task_id", LOCAL_TASKS)
def test_local_task_loads_and_evaluates(task_id, shared_data, tiny, tmp_path):
    task = get_task(task_id)
    paths = {"data_dir": str(shared_data / task_id)}
    loaded = {}
    for split in ("train", "dev", "test"):
        try:
            loaded[split] = load_split(task, split, paths)
        except TaskDataError as e:
            assert "no " + split in str(e)  # a split the source does not have
            continue
        check_schema(task_id, split, loaded[split])
    for split, n in EXPECTED_SIZES[task_id].items():
        assert len(loaded[split]) == n
    if "dev" in loaded and "train" in loaded:
        assert not {r["id"] for r in loaded["dev"]} & {r["id"] for r in loaded["train"]}
    if task.dev_from_train:
        assert len(loaded["dev"]) == task.dev_from_train  # carved from train, never from test
    if "dev" in loaded:
        assert not {r["id"] for r in loaded["dev"]} & {r["id"] for r in loaded["test"]}
    run_tiny(task, shortest(task, loaded.get("dev") or loaded["test"]), tiny, tmp_path)


@pytest.mark.parametrize("task_id", ["aci_bench", "omebench", "hoc", "sst2", "cs_bench"])
def test_gold_answers_score_full_marks(task_id, shared_data):
    task = get_task(task_id)
    rows = load_split(task, "test", {"data_dir": str(shared_data / task_id)}, limit=40)
    if task_id == "cs_bench":
        rows = [r for r in rows if r["format"] in ("Multiple-choice", "Assertion")]
    gens = [task.format_completion(r) for r in rows]
    assert task.score(gens, rows)[task.metric] == pytest.approx(1.0)


def test_openfindata_fixture_release_folder(tiny, tmp_path):
    task = get_task("openfindata")
    rows = load_split(task, "test", {"data_dir": str(FIXTURES / "openfindata")})
    assert len(rows) == 5 and {r["subset"] for r in rows} == {
        "emotion_identification", "data_inspection", "intent_understanding", "entity_recognition"}
    r = next(x for x in rows if x["subset"] == "intent_understanding")
    assert r["prompt"].endswith("\nE. 投诉\n答案: ") and r["reference"] == "A"
    gens = {
        "emotion_identification/0": "A",  # gold A
        "emotion_identification/1": "我认为是C",  # gold B: the last capital is C -> wrong
        "data_inspection/0": "答案是B",  # gold B
        "intent_understanding/0": "A. 查询基金收益",  # gold A
        "entity_recognition/0": "贵州茅台、五粮液",  # both entities present
    }
    s = task.score([gens[x["id"]] for x in rows], rows)
    assert s["accuracy_emotion_identification"] == 0.5
    assert s["accuracy"] == pytest.approx((1 + 0.5 + 1 + 1) / 4)
    with pytest.raises(TaskDataError):
        load_split(task, "train", {"data_dir": str(FIXTURES / "openfindata")})
    run_tiny(task, rows, tiny, tmp_path)


def test_econlogicqa_fixture_hub_csv(tiny, tmp_path):
    task = get_task("econlogicqa")
    paths = {"data_dir": str(FIXTURES / "econlogicqa")}
    train, dev, test = (load_split(task, s, paths) for s in ("train", "dev", "test"))
    assert (len(train), len(dev), len(test)) == (2, 1, 2)
    assert test[0]["prompt"].startswith("Question: Arrange") and "\nD. " in test[0]["prompt"]
    assert task.format_completion(test[0]) == "B, D, A, C"
    s = task.score(["Answer: B, D, A, C", "The order is C, B, D, A"], test)
    assert s["accuracy"] == 0.5  # second gold is B, C, D, A
    # gold B,C,D,A vs C,B,D,A: only the pair (B, C) is reversed -> 5/6
    assert s["pairwise_accuracy"] == pytest.approx((1 + 5 / 6) / 2)
    run_tiny(task, test, tiny, tmp_path)


def test_gta_fixture_dataset_json(tiny, tmp_path):
    task = get_task("gta")
    rows = load_split(task, "test", {"data_dir": str(FIXTURES / "gta")})
    assert [r["answer_type"] for r in rows] == ["objective", "objective", "subjective", "image_generation"]
    p = rows[0]["prompt"]
    assert "Query: How much do the two items" in p and "Tool output 2 (Calculator): 5.75" in p
    assert "The total is 5.75" not in p and rows[0]["reference"] == "The total is 5.75."
    s = task.score(["It costs 5.75 dollars.", "four apples, no more than pears", "happy", ""], rows)
    assert s["answer_acc"] == 0.5 and s["n_objective"] == 2 and s["n_subjective"] == 1
    run_tiny(task, rows, tiny, tmp_path)


@pytest.mark.parametrize("task_id", ["econlogicqa", "gta", "openfindata"])
def test_hub_only_tasks_fail_cleanly_without_data(task_id):
    with pytest.raises(TaskDataError) as e:
        load_split(get_task(task_id), "test")
    assert task_id in str(e.value)


def test_tomg_dev_carved_from_train_is_judged_like_test(shared_data):
    task = get_task("tomg_bench")
    dev = load_split(task, "dev", {"data_dir": str(shared_data / "tomg_bench")})
    gold = task.score([task.format_completion(r) for r in dev], dev)
    assert gold["success_rate"] == 1.0  # every scorable row's own target satisfies its constraints
    assert gold["n_unscorable"] < 0.25 * len(dev)
    assert task.score(["CCO"] * len(dev), dev)["success_rate"] < 0.5
