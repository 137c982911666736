"""Your own task from a task file: checked against its data before anything runs (one error line
per problem, through run.preflight and launch.py), carried inside the config to any worker, and
usable from ``python -m ftbench``. The example in examples/support_tickets/ is the data."""

from __future__ import annotations

import json
import pickle
import shutil
import subprocess
import sys
from pathlib import Path

import pytest
import yaml

from ftbench.task import load_split
from trex_ray.config import ConfigError, TaskConfig, dump_config, load_config
from trex_ray.run import preflight
from trex_ray.tasks import resolve_task

REPO = Path(__file__).resolve().parents[1]
EXAMPLE = REPO / "examples" / "support_tickets"


def read_rows(split: str) -> list[dict]:
    return [json.loads(line) for line in open(EXAMPLE / "data" / f"{split}.jsonl", encoding="utf-8")]


def task_dir(tmp_path: Path, edit_rows=None, **fields) -> Path:
    """A copy of the routing example in tmp_path (rows edited by ``edit_rows(split, rows)``, task
    fields overridden by ``fields``; None removes one); returns the task file."""
    data = tmp_path / "data"
    data.mkdir(parents=True, exist_ok=True)
    for split in ("train", "dev", "test"):
        rows = read_rows(split)
        if edit_rows:
            rows = edit_rows(split, rows)
        (data / f"{split}.jsonl").write_text("".join(json.dumps(r) + "\n" for r in rows))
    spec = yaml.safe_load((EXAMPLE / "route.yaml").read_text()) | fields
    path = tmp_path / "task.yaml"
    path.write_text(yaml.safe_dump({k: v for k, v in spec.items() if v is not None}, sort_keys=False))
    return path


def problems(tmp_path: Path, edit_rows=None, **fields) -> list[str]:
    """The error lines preflight (or loading the config) gives for such a task file."""
    path = task_dir(tmp_path, edit_rows, **fields)
    try:
        cfg = load_config(None, [f"--task.file={path}", f"--run.output_dir={tmp_path / 'runs'}"])
        preflight(cfg)
    except ConfigError as e:
        return [f"error: {e}"][0].splitlines()
    return []


def set_row(split: str, index: int, **values):
    def edit(s: str, rows: list[dict]) -> list[dict]:
        if s == split:
            rows[index] = rows[index] | values
        return rows
    return edit


def test_the_example_passes_every_check_and_resolves(tmp_path):
    cfg = load_config(None, [f"--task.file={EXAMPLE / 'route.yaml'}", "--model.name_or_path=/nonexistent"])
    assert cfg.task.name == "support_routing" and cfg.task.definition.labels == ["billing", "technical", "account"]
    with pytest.raises(ConfigError, match="model path /nonexistent"):  # every task check passed first
        preflight(cfg)
    task = resolve_task(cfg.task)
    assert [len(load_split(task, s, cfg.task.paths())) for s in ("train", "dev", "test")] == [240, 40, 40]


@pytest.mark.parametrize("fields, edit, expected", [
    ({"prompt": "Route it.\nTicket: {text}"}, None,
     "error: prompt: column 'text' is not in the train and dev and test splits; columns: category, fields, id, ticket"),
    ({"completion": "{team}"}, None, "error: completion: column 'team' is not in the train and dev and test splits"),
    ({"target": "team"}, None, "error: target: column 'team' is not in the train and dev and test splits"),
    ({}, lambda split, rows: [{k: v for k, v in r.items() if not (split == "dev" and i == 2 and k == "ticket")}
                              for i, r in enumerate(rows)],
     "error: prompt: column 'ticket' is missing in 1 of 40 dev rows, e.g. row 'dev-002'"),
    ({}, set_row("train", 17, category="refunds"),
     "error: labels: train row 'train-017' has 'refunds', which is not one of the labels ['account', 'billing', 'technical']"),
    ({"labels": ["billing", "technical", "account", "sales"]}, None,
     "error: labels: 'sales' never occurs in the data's 'category' column (labels seen: account, billing, technical)"),
    ({}, set_row("dev", 3, category=""), "error: target: 'category' is empty in dev row 'dev-003'"),
    ({}, set_row("test", 5, id="test-004"), "error: id_column: row ids must be unique; 'test-004' appears 2 times in test"),
    ({"metric": "rougeL"}, None,
     "error: task file task.yaml: metric: rougeL does not fit answer label; use one of accuracy, macro_f1, micro_f1, weighted_f1, exact_match"),
    ({"metric": "mae", "answer": "number", "labels": None}, None,
     "error: task file task.yaml: metric_range: required for mae (in the target's units, e.g. [0, 100])"),
    ({"answer": "number", "metric": "mae", "metric_range": [0, 10], "labels": None}, None,
     "error: target: train row 'train-000' has 'account', which is not a number (and 319 more like it)"),
    ({"data_dir": "missing"}, None, "error: data_dir: folder not found: "),
    ({"dev": "data/nothing.jsonl"}, None, "error: dev: dataset file not found:"),
    ({"data_dir": None, "train": {"path": "hub:nobody/tickets", "config": "en", "revision": "v1"}}, None,
     "error: train: cannot load nobody/tickets (train) from the Hugging Face Hub ("),
    ({"answer": "labels", "label_separator": " "}, None, "error: task file task.yaml: label_separator: must contain a visible character"),
    ({"prompt": "{ticket.__class__}"}, None, "error: task file task.yaml: prompt: Value error, template field {ticket.__class__} is not a plain column name"),
    ({"colour": "red"}, None, "error: task file task.yaml: unknown key colour"),
])
def test_each_problem_is_one_error_line_naming_the_field(tmp_path, fields, edit, expected):
    lines = problems(tmp_path, edit, **fields)
    assert len(lines) == 1, lines
    assert lines[0].startswith(expected), lines[0]


def test_json_targets_are_checked_field_by_field(tmp_path):
    def edit(split, rows):
        if split == "train":
            rows[4]["fields"] = rows[4]["fields"] | {"amount": "a lot"}
            rows[6]["fields"] = "not json"
            rows[8]["fields"] = rows[8]["fields"] | {"colour": "red"}
        return rows
    spec = yaml.safe_load((EXAMPLE / "extract.yaml").read_text())
    lines = problems(tmp_path, edit, **{k: spec[k] for k in ("target", "prompt", "answer", "json_fields", "metric")},
                     labels=None)
    assert lines == ["error: json_fields.amount: train row 'train-004' has 'a lot', which is not number",
                     "error: target: train row 'train-006' is not a JSON object: 'not json'",
                     "error: json_fields: train row 'train-008' has the field 'colour', which json_fields does not list "
                     "(fields: product, order_id, amount, urgent)"]


def test_rows_of_dev_or_test_in_train_are_reported_and_removed(tmp_path, caplog):
    dev, test = read_rows("dev"), read_rows("test")

    def edit(split, rows):
        if split == "train":  # two leaks: a dev ticket (respaced, recased) and a test ticket
            rows[10]["ticket"] = "  " + dev[2]["ticket"].upper()
            rows[20]["ticket"] = test[7]["ticket"]
        return rows
    path = task_dir(tmp_path, edit)
    cfg = load_config(None, [f"--task.file={path}", "--model.name_or_path=/nonexistent"])
    with caplog.at_level("WARNING"), pytest.raises(ConfigError, match="model path"):
        preflight(cfg)  # not an error: the check goes on to the model
    assert "2 row(s) with the same prompt as a dev or test row were removed from train, e.g. row 'train-010'" in caplog.text
    train = load_split(resolve_task(cfg.task), "train", cfg.task.paths())
    ids = {r["id"] for r in train}
    assert len(train) == 238 and not {"train-010", "train-020"} & ids


def test_no_dev_split_carves_dev_from_train_without_overlap(tmp_path):
    path = task_dir(tmp_path, dev=None, data_dir=None, train="data/train.jsonl", test="data/test.jsonl",
                    dev_from_train=30)
    task = resolve_task(load_config(None, [f"--task.file={path}"]).task)
    train, dev = load_split(task, "train", {}), load_split(task, "dev", {})
    assert len(dev) == 30 and len(train) == 210 and not {r["id"] for r in dev} & {r["id"] for r in train}
    assert dev == load_split(resolve_task(load_config(None, [f"--task.file={path}"]).task), "dev", {})  # stable


def test_the_task_travels_inside_the_config_to_any_worker(tmp_path):
    """A worker may not see the driver's files: the run's config.yaml carries the task file's
    content, so the task rebuilds identically after the file itself is gone."""
    from trex_ray.executor.context import TrialContext

    path = task_dir(tmp_path / "t")
    cfg = load_config(None, [f"--task.file={path}", "--task.dev_limit=8"])
    saved = tmp_path / "config.yaml"
    saved.write_text(dump_config(cfg))
    before = resolve_task(cfg.task)
    rows_before = load_split(before, "dev", {})
    (tmp_path / "t" / "task.yaml").unlink()  # the file is gone; the data stays where the workers read it
    again = load_config(saved)
    ctx = pickle.loads(pickle.dumps(TrialContext.of(again, tmp_path, None)))  # as Ray ships it
    after = resolve_task(ctx.task)
    assert (after.id, after.metric, after.prompt_template, after.max_new_tokens) == (
        before.id, before.metric, before.prompt_template, before.max_new_tokens)
    assert load_split(after, "dev", ctx.paths) == rows_before
    assert after.score(["billing"] * 8, rows_before[:8]) == before.score(["billing"] * 8, rows_before[:8])
    with pytest.raises(ConfigError, match="task file not found"):
        load_config(None, [f"--task.file={path}"])


def test_task_config_options_override_the_file_and_name_cannot_compete(tmp_path):
    path = task_dir(tmp_path / "t")
    other = tmp_path / "other"
    shutil.copytree(tmp_path / "t" / "data", other)
    (other / "test.jsonl").write_text("".join(json.dumps(r) + "\n" for r in read_rows("test")[:5]))
    cfg = load_config(None, [f"--task.file={path}", f"--task.test_path={other / 'test.jsonl'}"])
    assert len(load_split(resolve_task(cfg.task), "test", cfg.task.paths())) == 5
    with pytest.raises(ConfigError, match="task.name .sst2. names an FT-Bench task"):
        load_config(None, [f"--task.file={path}", "--task.name=sst2"])
    inline = TaskConfig(definition=yaml.safe_load(path.read_text()) | {"data_dir": str(tmp_path / "t" / "data")})
    assert resolve_task(inline).id == "support_routing"


def test_launch_prints_one_error_line_per_problem_and_starts_nothing(tmp_path):
    path = task_dir(tmp_path, set_row("train", 3, category="sales"), prompt="Ticket: {body}")
    proc = subprocess.run([sys.executable, str(REPO / "launch.py"), f"--task.file={path}",
                           f"--run.output_dir={tmp_path / 'runs'}"], capture_output=True, text=True, timeout=300)
    lines = proc.stderr.strip().splitlines()
    assert proc.returncode == 2, proc.stderr[-2000:]
    assert lines == ["error: prompt: column 'body' is not in the train and dev and test splits; "
                     "columns: category, fields, id, ticket",
                     "error: labels: train row 'train-003' has 'sales', which is not one of the labels "
                     "['account', 'billing', 'technical']"], proc.stderr
    assert not (tmp_path / "runs").exists()  # checked before the run directory, before Ray


def test_ftbench_cli_scores_and_checks_a_task_file(tmp_path, capsys):
    from ftbench.__main__ import main

    test = read_rows("test")
    preds = tmp_path / "preds.jsonl"
    preds.write_text("".join(json.dumps({"id": r["id"], "prediction": r["category"] if i % 4 else "technical"}) + "\n"
                             for i, r in enumerate(test)))
    assert main(["score", "--task-file", str(EXAMPLE / "route.yaml"), "--predictions", str(preds)]) == 0
    scores = json.loads(capsys.readouterr().out.strip().splitlines()[-1])
    from sklearn.metrics import f1_score

    gold = [r["category"] for r in test]
    pred = [r["category"] if i % 4 else "technical" for i, r in enumerate(test)]
    assert scores["macro_f1"] == pytest.approx(f1_score(gold, pred, average="macro")) and scores["n"] == 40
    bad = task_dir(tmp_path / "bad", prompt="{nope}")
    assert main(["score", "--task-file", str(bad), "--predictions", str(preds)]) == 2
    assert capsys.readouterr().err.strip().splitlines() == [
        "error: prompt: column 'nope' is not in the train and dev and test splits; columns: category, fields, id, ticket"]
