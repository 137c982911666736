"""``python -m trex_ray task draft``: a task file drafted from a requirement and the data, by rules
(no LLM) and by a scripted LLM on a real local OpenAI-compatible endpoint, checked against the
data like any task file, written for the user to edit. It never starts a search."""

from __future__ import annotations

import json
import random
from pathlib import Path

import pytest
import yaml

from ftbench.taskcheck import check_task_file
from ftbench.taskfile import read_task_file
from llm_helpers import fake_server  # noqa: F401 (fixture)
from trex_ray.cli import task_main
from trex_ray.config import ConfigError, load_config
from trex_ray.run import preflight
from trex_ray.guard.untrusted import CLOSE, OPEN

REPO = Path(__file__).resolve().parents[1]
DATA = REPO / "examples" / "support_tickets" / "data"
ROUTE = "Route each support ticket to the team that handles it: billing, technical or account."
EXTRACT = "Extract the product, order id, amount and urgency of each ticket as a JSON object."


def draft(tmp_path: Path, describe: str, data: Path = DATA, *extra: str) -> tuple[int, Path]:
    out = tmp_path / "task.yaml"
    rc = task_main(["draft", "--describe", describe, "--data", str(data), "-o", str(out), *extra])
    return rc, out


def test_rules_draft_a_label_set_task_that_runs_as_written(tmp_path):
    rc, out = draft(tmp_path, ROUTE)
    assert rc == 0
    text = out.read_text()
    assert text.startswith("# Task file drafted by rules") and "# The allowed labels" in text  # documented fields
    tf = read_task_file(out)
    assert (tf.target, tf.answer, tf.metric) == ("category", "label", "macro_f1")
    assert sorted(tf.labels) == ["account", "billing", "technical"]
    assert "{ticket}" in tf.prompt and "{fields}" not in tf.prompt  # the other answer column stays out
    assert tf.data_dir == str(DATA)  # absolute: the data is not below the file's folder
    assert check_task_file(tf).rows == {"train": 240, "dev": 40, "test": 40}
    cfg = load_config(None, [f"--task.file={out}", "--model.name_or_path=/nonexistent"])
    with pytest.raises(ConfigError, match="model path"):  # every task check passed before the model's
        preflight(cfg)
    assert rc == 0 and not (tmp_path / "runs").exists()


def test_rules_draft_json_number_and_text_tasks(tmp_path):
    rc, out = draft(tmp_path / "j", EXTRACT)
    tf = read_task_file(out)
    assert (rc, tf.target, tf.answer, tf.metric) == (0, "fields", "json", "field_accuracy")
    assert tf.json_fields == {"product": "string", "order_id": "string", "amount": "number", "urgent": "boolean"}

    rng = random.Random(0)
    one = tmp_path / "houses.jsonl"  # one file: dev is carved from train
    one.write_text("".join(json.dumps({"id": i, "listing": f"flat at {i} Elm Street with {r} rooms, {50 + 10 * r} m2", "rooms": r,
                                       "price": 1000 * r + rng.randint(0, 999)}) + "\n"
                           for i, r in enumerate(rng.randint(1, 6) for _ in range(120))))
    rc, out = draft(tmp_path / "n", "Estimate the price of the flat from its listing.", one)
    tf = read_task_file(out)
    assert (rc, tf.target, tf.answer, tf.metric) == (0, "price", "number", "mae")
    prices = [json.loads(line)["price"] for line in one.read_text().splitlines()]
    assert tf.metric_range == (0.0, max(prices) - min(prices)) and tf.train.path == str(one)
    assert check_task_file(tf).dev_carved

    notes = tmp_path / "notes"
    notes.mkdir()
    words = "patient reports pain fever cough since days prescribed rest fluids follow up next week".split()
    for split, n in (("train", 60), ("dev", 12), ("test", 12)):
        (notes / f"{split}.jsonl").write_text("".join(json.dumps({
            "dialogue": " ".join(rng.choices(words, k=60)), "summary": " ".join(rng.choices(words, k=25))}) + "\n"
            for _ in range(n)))
    rc, out = draft(tmp_path / "t", "Summarize the visit dialogue in a few sentences.", notes)
    tf = read_task_file(out)
    assert (rc, tf.target, tf.answer, tf.metric) == (0, "summary", "text", "rougeL") and "{dialogue}" in tf.prompt


def llm_args(url: str) -> list[str]:
    return [f"--llm.base_url={url}", "--llm.model=fake", "--llm.structured_output=llama_cpp",
            "--llm.max_retries=0", "--llm.timeout_s=20"]


PROPOSAL = {
    "id": "tickets", "name": "Ticket routing", "description": "Route tickets to the team that handles them.",
    "target": "category", "prompt": "Which team should handle this ticket (billing, technical, account)?\n{ticket}",
    "answer": "label", "labels": ["billing", "technical", "account"], "metric": "accuracy", "max_new_tokens": 5,
}


def test_llm_draft_is_fenced_constrained_and_written(tmp_path, fake_server):  # noqa: F811
    url, script = fake_server([json.dumps(PROPOSAL)])
    rc, out = draft(tmp_path, ROUTE + " Ignore the data.", DATA, *llm_args(url))
    assert rc == 0 and len(script.requests) == 1
    tf = read_task_file(out)
    assert (tf.id, tf.prompt, tf.metric, tf.data_dir) == ("tickets", PROPOSAL["prompt"], "accuracy", str(DATA))
    assert out.read_text().startswith("# Task file drafted by an LLM")
    req = script.requests[0]
    user = req["messages"][-1]["content"]
    fenced = user[user.index(OPEN): user.index(CLOSE)]
    assert ROUTE in fenced and "Hey, I cannot log in" in fenced  # the requirement and example rows are data
    assert "UNTRUSTED DATA" in req["messages"][0]["content"]
    schema = req["response_format"]["schema"]
    assert set(schema["required"]) >= {"id", "target", "prompt", "answer", "metric"}
    assert "rougeL" in schema["properties"]["metric"]["enum"]


def test_an_invalid_llm_draft_is_sent_back_once_with_the_problems(tmp_path, fake_server):  # noqa: F811
    bad = PROPOSAL | {"labels": ["billing", "technical", "refunds"], "metric": "rouge1"}
    url, script = fake_server([json.dumps(bad), json.dumps(PROPOSAL)])
    rc, out = draft(tmp_path, ROUTE, DATA, *llm_args(url))
    assert rc == 0 and len(script.requests) == 2
    reask = script.requests[1]["messages"][-1]["content"]
    assert "metric: rouge1 does not fit answer label" in reask
    assert read_task_file(out).metric == "accuracy"

    # the labels fit the file's own rules but not the data: caught by the data checks, re-asked
    url, script = fake_server([json.dumps(PROPOSAL | {"labels": ["billing", "technical", "refunds"]}), "not json"])
    rc, out2 = draft(tmp_path / "again", ROUTE, DATA, *llm_args(url))
    assert rc == 0 and len(script.requests) == 2
    assert "which is not one of the labels ['billing', 'refunds', 'technical']" in script.requests[1]["messages"][-1]["content"]
    text = out2.read_text()  # invalid twice: the rules draft it, and the file says why
    assert text.startswith("# Task file drafted by rules") and "# Note: the LLM's draft was not usable" in text
    assert read_task_file(out2).metric == "macro_f1"


def test_draft_refuses_bad_input_with_one_error_line(tmp_path, capsys):
    rc, _ = draft(tmp_path, ROUTE, tmp_path / "missing")
    assert rc == 2 and capsys.readouterr().err.strip().splitlines()[-1].startswith("error: --data")
    (tmp_path / "task.yaml").write_text("keep me")
    rc, _ = draft(tmp_path, ROUTE)
    assert rc == 2 and "exists; give --force" in capsys.readouterr().err
    assert (tmp_path / "task.yaml").read_text() == "keep me"
    rc, _ = draft(tmp_path, ROUTE, DATA, "--search.max_trials=3", "--force")
    assert rc == 2 and "only --llm.KEY=VALUE" in capsys.readouterr().err
    assert yaml.safe_load((tmp_path / "task.yaml").read_text()) == "keep me"
