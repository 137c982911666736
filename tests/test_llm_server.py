"""The LLM Researcher against a REAL OpenAI-compatible server: llama-cpp-python serving
SmolLM2-135M on 127.0.0.1. A 135M model plans poorly, so these test the plumbing: the
llama_cpp structured-output dialect yields JSON that validates into a Plan, the memory budget
holds for a real tokenizer, tokens are counted from the server's usage, and bad (truncated)
output ends in the builtin fallback."""

from __future__ import annotations

import importlib.util
import json
import urllib.request

import pytest

from llm_helpers import TASK, llm_cfg, plan_dict, request_for, small_tree
from trex_ray.llm_client import LLMClient, estimate_tokens
from trex_ray.researcher.context import analyze_requirements, render_context
from trex_ray.researcher.answers import llm_schema, validate_answer
from trex_ray.researcher.llm import EXPANSIONS_FILE, PlanBatch, LLMResearcher
from trex_ray.search.plan import Plan

pytestmark = pytest.mark.skipif(importlib.util.find_spec("llama_cpp") is None,
                                reason="llama-cpp-python is not installed")


def test_constrained_output_validates_into_a_plan(llama_url):
    client = LLMClient(llm_cfg(llama_url, max_tokens=260))
    example = {"differences": "one plan", "plans": [plan_dict(lr=0.001, rationale="more lr")]}
    text, usage = client.chat(
        [{"role": "user", "content": "Reply with exactly this JSON object:\n" + json.dumps(example)}],
        llm_schema(PlanBatch, max_items=1), "plans")
    data = json.loads(text)  # grammar-constrained: plain JSON, no chatter
    batch = validate_answer(text, PlanBatch, "plans")
    assert isinstance(batch, PlanBatch) and isinstance(batch.plans[0], Plan)
    assert batch.plans[0].training is not None and data["plans"][0]["recipe"]["steps"][0]["op"] == "load"
    assert usage.calls == 1 and usage.prompt_tokens > 50 and usage.completion_tokens > 20 and not usage.estimated


def test_memory_budget_holds_for_the_real_tokenizer(llama_url):
    """The estimate is pessimistic: the model's own tokenizer (llama-cpp's tokenize endpoint)
    counts no more tokens than the budget, at every size."""
    req, spec = request_for(small_tree(extra_nodes=10), "n2"), analyze_requirements(TASK)
    root = llama_url.removesuffix("/v1")
    dropped = 0
    for budget in (250, 500, 800, 1200, 5000):
        text = render_context(req, spec, budget)
        body = json.dumps({"input": text}).encode()
        http = urllib.request.Request(f"{root}/extras/tokenize/count", body, {"Content-Type": "application/json"})
        real = json.loads(urllib.request.urlopen(http, timeout=30).read())["count"]
        assert estimate_tokens(text) <= budget and 0 < real <= budget
        dropped += "OMITTED FOR LENGTH" in text or "…[cut]" in text
    assert dropped >= 3  # the small budgets really were binding


def test_expansion_counts_tokens_and_falls_back_on_truncated_output(llama_url, tmp_path):
    r = LLMResearcher(llm_cfg(llama_url, max_tokens=16, max_prompt_tokens=200, price_per_1k_input=0.5), str(tmp_path))
    out = r.propose_detailed(request_for(small_tree(), "n2", n=1))
    # 16 tokens (the least llm.max_tokens allows) may hold the direction JSON, never a plan: the
    # step that does not fit is asked, re-asked once with the error, then the builtin plan is used
    assert out.source == "builtin-fallback" and "still invalid after one re-ask" in out.note
    assert out.first_try_valid[-1] is False and len(out.plans) == 1
    calls = len(out.first_try_valid) + 1  # every step once, the failing one twice
    assert out.usage["calls"] == calls and calls <= out.usage["completion_tokens"] <= calls * 16
    assert out.usage["prompt_tokens"] > 300 and out.usage["cost"] == pytest.approx(out.usage["prompt_tokens"] / 1000 * 0.5)
    log = [json.loads(line) for line in (tmp_path / EXPANSIONS_FILE).read_text().splitlines()]
    assert log[-1]["source"] == "builtin-fallback" and log[-1]["run_total"]["calls"] == calls
