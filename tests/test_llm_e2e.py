"""A short real search (embedded Ray, Tune, the Researcher actor, tiny-model trials) with
``search.policy=llm`` against a fake OpenAI-compatible endpoint that answers like a good LLM:
the children are recorded with source "llm", and the reasons go to the run directory."""

from __future__ import annotations

import json

import pytest

from llm_helpers import after_trial_answer, fake_server  # noqa: F401 (fixture)
from trex_ray.config import load_config
from trex_ray.search.ledger import read_events

pytestmark = pytest.mark.slow


def answer(body: dict) -> str:
    """The direction step, then ``maxItems`` plans (read from the request's schema); a bad-case
    diagnosis or insights when asked for one."""
    from ftbench.tasks import get_task

    props = body["response_format"]["schema"]["properties"]
    side = after_trial_answer(props, summary="answers are not sentiment words")
    if side is not None:
        return side
    if "direction" in props:
        return json.dumps({"direction": "data_quality", "reasoning": "try other rows of the same size"})
    task = get_task("sst2")
    plans = [{
        "direction": "data_quality", "rationale": f"rows drawn with seed {seed}",
        "recipe": {"steps": [{"op": "load"}, {"op": "subsample", "n": 32, "seed": seed},
                             {"op": "format", "prompt": task.prompt_template, "completion": task.completion_template}]},
        "training": {"method": "full", "learning_rate": 0.005, "num_epochs": 2, "batch_size": 8},
    } for seed in range(1, props["plans"]["maxItems"] + 1)]
    return json.dumps({"differences": "the subsample seed", "plans": plans})


def test_search_with_the_llm_policy_records_sources_and_reasons(tiny_model_dir, tmp_path, fake_server):  # noqa: F811
    from trex_ray.run import run_search

    url, script = fake_server(answer)
    cfg = load_config(None, [
        f"--model.name_or_path={tiny_model_dir}", f"--run.output_dir={tmp_path}", "--run.run_id=llm",
        "--search.max_trials=2", "--search.max_concurrent_trials=2", "--search.children_per_expansion=2",
        "--search.policy=llm", f"--llm.base_url={url}", "--llm.model=fake", "--llm.structured_output=llama_cpp", "--llm.tool_calling=off",
        "--task.dev_limit=16", "--train.method=full", "--train.learning_rate=0.005", "--train.num_epochs=2",
        "--train.train_samples=32", "--train.eval_batch_size=16",
    ])
    summary = run_search(cfg)
    run = tmp_path / "llm"
    planned = [e for e in read_events(run / "events.jsonl") if e["type"] == "node_planned" and e["parent_id"]]
    assert summary["trials"] == 2 and len(planned) == 2
    assert {e["source"] for e in planned} == {"llm"}
    assert [e["plan"]["recipe"]["steps"][1]["seed"] for e in planned] == [1, 2]
    log = [json.loads(line) for line in (run / "llm_expansions.jsonl").read_text().splitlines()]
    assert log[0]["node_id"] == "n0" and log[0]["source"] == "llm" and "other rows" in log[0]["note"]
    expansions = [r for r in script.requests if "plans" in r["response_format"]["schema"]["properties"]]
    assert log[0]["usage"]["calls"] == 2 and len(expansions) == 1
    # every finished node has a diagnosis; the baseline's LLM one is in before its expansion
    # (the Researcher actor runs one call at a time), the last trials' may still be rule-based
    tree = json.loads((run / "tree.json").read_text())
    done = [n for n in tree["nodes"] if n["status"] == "succeeded"]
    assert len(done) == 3 and all(n["diagnosis"] and n["diagnosis_detail"]["wrong"] >= 0 for n in done)
    assert done[0]["id"] == "n0" and done[0]["diagnosis_detail"]["source"] == "llm"
    assert "try prompt_format" in done[0]["diagnosis"]
    assert json.loads((run / "requirement.json").read_text())["target"]["metric"] == summary["metric"]
