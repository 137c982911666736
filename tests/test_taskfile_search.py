"""A search on your own task, end to end: real local Ray and Tune, real trials training the tiny
model, scored by the task file's own parser and metric (a 3-way label set by macro-F1; a JSON
extraction field by field), the test split scored once at the end, and the outputs naming the
task and its metric."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
import yaml
from sklearn.metrics import f1_score

from test_search import tiny_args
from trex_ray.config import load_config

REPO = Path(__file__).resolve().parents[1]
EXAMPLE = REPO / "examples" / "support_tickets"


@pytest.fixture(scope="module")
def ticket_model(tmp_path_factory) -> Path:
    """The tiny model with a tokenizer trained on the tickets' words, so that a team name is a
    token or two and a few seconds of training teach the model to answer with one."""
    from tiny_model import build_tiny_model

    rows = [json.loads(line) for line in (EXAMPLE / "data" / "train.jsonl").read_text().splitlines()]
    prompts = [(EXAMPLE / name).read_text() for name in ("route.yaml", "extract.yaml")]
    corpus = prompts + [f"{r['ticket']} {r['category']} {json.dumps(r['fields'])}" for r in rows]
    return build_tiny_model(tmp_path_factory.mktemp("tickets") / "model", corpus=corpus)


def task_copy(tmp_path: Path, name: str, **fields) -> Path:
    """The example task file with a few fields changed (the tiny model's tokenizer spells words
    out in pieces, so answers need more tokens than a real model's)."""
    spec = yaml.safe_load((EXAMPLE / name).read_text()) | {"data_dir": str(EXAMPLE / "data")} | fields
    path = tmp_path / name
    path.write_text(yaml.safe_dump(spec, sort_keys=False))
    return path


def run(model: Path, tmp_path: Path, task_file: Path, trials: int, *extra: str) -> tuple[dict, Path]:
    from trex_ray.run import run_search

    args = tiny_args(model, tmp_path, "own", trials) + [f"--task.file={task_file}", "--task.dev_limit=16",
                                                          "--task.test_limit=12", *extra]
    summary = run_search(load_config(None, args))
    return summary, tmp_path / "own"


def nodes(run_dir: Path) -> dict[str, dict]:
    return {n["id"]: n for n in json.loads((run_dir / "tree.json").read_text())["nodes"]}


def predictions(path: Path) -> list[dict]:
    return [json.loads(line) for line in path.read_text().splitlines()]


def test_search_on_a_label_set_task_file(ticket_model, tmp_path):
    labels = ["billing", "technical", "account"]
    summary, run_dir = run(ticket_model, tmp_path, task_copy(tmp_path, "route.yaml", max_new_tokens=6), 2,
                           "--train.train_samples=240", "--train.num_epochs=3")
    assert (summary["task"], summary["task_name"], summary["metric"], summary["higher_is_better"]) == (
        "support_routing", "Support ticket routing", "macro_f1", True)
    assert summary["trials"] == 2 and summary["failed_trials"] == 0
    # the untrained model names no team; a few seconds of training teach it to answer with one
    assert summary["base_score"] == 0 and summary["best_score"] > 0.3

    # every trial was scored by the task file's metric: recomputed here with sklearn from its predictions
    tree = nodes(run_dir)
    for node_id in ("n0", "n1", "n2"):
        preds = predictions(run_dir / "nodes" / node_id / "dev_predictions.jsonl")
        assert len(preds) == 16 and all(p["parsed"] in labels + [None] for p in preds)
        gold = [p["reference"] for p in preds]
        assert set(gold) <= set(labels)
        expected = f1_score(gold, [p["parsed"] or "none" for p in preds], labels=labels, average="macro", zero_division=0)
        assert tree[node_id]["score"] == pytest.approx(expected), node_id
        assert {"macro_f1", "micro_f1", "accuracy", "parse_rate"} <= set(tree[node_id]["metrics"])

    # the test split: scored once, at the end, for the base model and the best node only
    tested = sorted(p.parent.name for p in (run_dir / "nodes").glob("*/test_predictions.jsonl"))
    assert tested == sorted({"n0", summary["best_node"]})
    best_test = predictions(run_dir / "nodes" / summary["best_node"] / "test_predictions.jsonl")
    assert len(best_test) == 12 and {p["id"] for p in best_test} <= {f"test-{i:03d}" for i in range(40)}
    assert summary["best_test_score"] == pytest.approx(f1_score(
        [p["reference"] for p in best_test], [p["parsed"] or "none" for p in best_test], labels=labels,
        average="macro", zero_division=0))

    # the outputs name the task and its metric
    card = (run_dir / "best" / "README.md").read_text()
    assert "# Support ticket routing:" in card and "## Scores (macro_f1, higher is better)" in card
    assert "support_routing train split" in card and "CC0-1.0" in card
    report = (run_dir / "report.md").read_text()
    assert "support_routing" in report and "macro_f1" in report
    saved = yaml.safe_load((run_dir / "config.yaml").read_text())["task"]
    assert saved["name"] == "support_routing" and saved["definition"]["labels"] == labels  # the task travels


def test_search_on_a_json_extraction_task_file(ticket_model, tmp_path):
    from ftbench.task import load_split
    from ftbench.taskfile import build_task, read_task_file

    path = task_copy(tmp_path, "extract.yaml", max_new_tokens=40)
    summary, run_dir = run(ticket_model, tmp_path, path, 1, "--train.train_samples=240", "--train.num_epochs=6")
    assert (summary["task"], summary["metric"], summary["trials"], summary["failed_trials"]) == (
        "support_fields", "field_accuracy", 1, 0)
    task = build_task(read_task_file(path))
    dev = {r["id"]: r for r in load_split(task, "dev", {})}
    tree = nodes(run_dir)
    for node_id in ("n0", "n1"):
        preds = predictions(run_dir / "nodes" / node_id / "dev_predictions.jsonl")
        fields = {"product", "order_id", "amount", "urgent"}
        assert all(p["parsed"] is None or set(p["parsed"]) == fields for p in preds)
        metrics = tree[node_id]["metrics"]
        # scored field by field: each field's accuracy, their mean the node's score
        per_field = [metrics[f"field_accuracy_{f}"] for f in ("product", "order_id", "amount", "urgent")]
        assert tree[node_id]["score"] == pytest.approx(sum(per_field) / 4) == pytest.approx(metrics["field_accuracy"])
        rescored = task.score([p["prediction"] for p in preds], [dev[p["id"]] for p in preds])
        assert rescored["field_accuracy"] == pytest.approx(tree[node_id]["score"])
        for f in ("product", "urgent"):  # one field recomputed by hand from the parsed answers
            hits = 0
            for p in preds:
                gold = json.loads(p["reference"])[f]
                gold = gold.casefold() if isinstance(gold, str) else gold
                hits += p["parsed"] is not None and p["parsed"][f] == gold
            assert metrics[f"field_accuracy_{f}"] == pytest.approx(hits / len(preds)), f
    # trained, the model writes JSON objects that parse and get some fields right
    assert tree["n1"]["metrics"]["parse_rate"] > 0.5 and summary["best_score"] > summary["base_score"] == 0
    assert summary["base_test_score"] is not None and "field_accuracy_amount" in summary["best_test_metrics"]
