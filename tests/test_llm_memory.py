"""Ray-free units of the LLM Researcher: the memory rendered within its token budget (dropping
the least important parts first), the requirement spec, the LLM-facing schema, the config and
preflight checks, and the Researcher actor's core wiring."""

from __future__ import annotations

import json

import pytest

from llm_helpers import DEFAULTS, TASK, plan_dict, request_for, small_tree
from trex_ray.config import ConfigError, load_config, options_help
from trex_ray.llm_client import estimate_tokens, extract_json, response_format
from trex_ray.researcher.context import analyze_requirements, render_context
from trex_ray.guard.untrusted import CLOSE, OPEN
from trex_ray.researcher.answers import InvalidAnswer, llm_schema, validate_answer
from trex_ray.researcher.llm import DirectionChoice, PlanBatch
from trex_ray.search.request import TaskSpec


def omitted(text: str) -> dict:
    if "…[cut]" in text:
        return {"cut": True}
    line = next((l for l in text.splitlines() if l.startswith("OMITTED FOR LENGTH ")), None)
    return json.loads(line.split(" ", 3)[3]) if line else {}


def test_memory_fits_a_generous_budget_whole():
    req = request_for(small_tree(), "n2")
    text = render_context(req, analyze_requirements(TASK), 5000)
    assert estimate_tokens(text) <= 5000 and omitted(text) == {}
    assert text.startswith(OPEN) and text.endswith(CLOSE)
    assert "SELECTED NODE PLAN" in text and '"id": "n1"' in text  # path entry
    assert "x" * (300 + 1) not in text  # long failure text clipped


@pytest.mark.parametrize("budget", [200, 700, 900, 1100, 1400])
def test_memory_never_exceeds_its_budget(budget):
    req = request_for(small_tree(extra_nodes=12), "n2")
    text = render_context(req, analyze_requirements(TASK), budget)
    assert estimate_tokens(text) <= budget
    assert text.startswith(OPEN) and text.endswith(CLOSE)


def test_memory_drops_key_nodes_then_siblings_then_path():
    tree = small_tree(extra_nodes=12)
    req = request_for(tree, "n2")
    spec = analyze_requirements(TASK)
    full = render_context(req, spec, 100_000)
    sizes = {}
    for budget in range(estimate_tokens(full), 150, -20):
        sizes[budget] = omitted(render_context(req, spec, budget))
    seq = list(sizes.values())
    # key nodes beyond the top 2 go before any sibling, siblings before any path entry
    first_sib = next(i for i, o in enumerate(seq) if o.get("siblings"))
    assert seq[first_sib]["key_nodes"] == len(req.memory["key_nodes"]) - 2
    first_path = next(i for i, o in enumerate(seq) if o.get("path"))
    assert seq[first_path]["siblings"] == len(req.memory["siblings"])
    assert seq[first_path]["key_nodes"] == len(req.memory["key_nodes"]) - 2
    # the last resort (cutting the text) comes after all dropping, and keeps the node's plan
    cut = [i for i, o in enumerate(seq) if o.get("cut")]
    assert cut and cut == list(range(cut[0], len(seq)))
    assert seq[cut[0] - 1]["path"] == len(req.memory["path"]) - 1
    assert all("SELECTED NODE PLAN" in render_context(req, spec, b) for b in sizes if b >= 200)


def test_requirement_spec_names_target_data_and_risks():
    task = TaskSpec(id="t", description="d", metric="exact_match", higher_is_better=False,
                    prompt_template="Q: {question}", completion_template="{answer}", train_rows=300,
                    columns=["question", "reference"])
    spec = analyze_requirements(task, DEFAULTS)
    assert spec["target"] == {"metric": "exact_match", "direction": "minimize"}
    assert spec["data"]["missing"] == ["columns ['answer']"]
    risks = " ".join(spec["risks"])
    assert "small training set" in risks and "matching" in risks and "['answer']" in risks and "decontaminate" in risks


def test_llm_schema_requires_tags_and_training_and_caps_strings():
    schema = llm_schema(PlanBatch, max_items=2)
    plan = schema["$defs"]["Plan"]
    assert "training" in plan["required"] and "baseline" not in plan["properties"]["direction"]["enum"]
    assert schema["properties"]["plans"]["maxItems"] == 2
    assert "op" in schema["$defs"]["LoadOp"]["required"]
    assert plan["properties"]["rationale"]["maxLength"] <= 400
    assert "resources" not in plan["properties"]


def test_validate_answer_parses_json_only():
    good = json.dumps({"direction": "method", "reasoning": "r"})
    assert validate_answer(good, DirectionChoice, "direction").direction == "method"
    assert validate_answer("Sure:\n```json\n" + good + "\n```", DirectionChoice, "direction").direction == "method"
    with pytest.raises(InvalidAnswer, match="direction.direction"):
        validate_answer(json.dumps({"direction": "baseline", "reasoning": "r"}), DirectionChoice, "direction")
    with pytest.raises(InvalidAnswer, match="not valid JSON"):
        validate_answer("__import__('os').system('true')", DirectionChoice, "direction")
    with pytest.raises(InvalidAnswer, match="plans.plans.0.training.learning_rate"):
        validate_answer(json.dumps({"differences": "x", "plans": [plan_dict(lr=3.0)]}), PlanBatch, "plans")


def test_extract_json_and_response_format():
    assert extract_json('noise {"a": {"b": 1}} tail {"c": 2}') == {"a": {"b": 1}}
    with pytest.raises(ValueError):
        extract_json("{ no json here")
    assert response_format("llama_cpp", "x", {"type": "object"}) == {"type": "json_object", "schema": {"type": "object"}}
    assert response_format("json_schema", "x", {})["json_schema"]["name"] == "x"
    assert response_format("none", "x", {}) is None


def test_llm_config_and_preflight_fail_fast(monkeypatch):
    from trex_ray.run import preflight

    cfg = load_config(None, ["--search.policy=llm"])
    with pytest.raises(ConfigError, match="llm.base_url and llm.model"):
        preflight(cfg)
    monkeypatch.delenv("TREX_TEST_ABSENT_KEY", raising=False)
    cfg = load_config(None, ["--search.policy=llm", "--llm.base_url=http://127.0.0.1:1/v1", "--llm.model=m",
                             "--llm.api_key_env=TREX_TEST_ABSENT_KEY"])
    with pytest.raises(ConfigError, match="TREX_TEST_ABSENT_KEY"):
        preflight(cfg)
    with pytest.raises(ConfigError, match="llm.structured_output"):
        load_config(None, ["--llm.structured_output=xml"])
    assert "--llm.max_cost=None" in options_help() and "--llm.structured_output='json_schema'" in options_help()


def test_researcher_core_builtin_and_llm_fallback():
    from trex_ray.actors import ResearcherCore
    from trex_ray.config import Config

    req = request_for(small_tree(), "n0", n=2)
    builtin = ResearcherCore(Config()).propose(req)
    assert builtin.source == "builtin" and len(builtin.plans) == 2 and builtin.note is None
    llm = ResearcherCore(Config.model_validate({"search": {"policy": "llm"}})).propose(req)
    assert llm.source == "builtin-fallback" and "no LLM configured" in llm.note
    assert llm.plans == builtin.plans and llm.usage["calls"] == 0
