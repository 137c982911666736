"""One LLM spend account per run, across processes: the Researcher's calls and a synthesize step
running in a Ray worker process charge the same account (a real Ray actor on a local Ray), against
a scripted OpenAI-compatible endpoint; past the account's limit the Researcher falls back to the
builtin rules and the synthesize step fails with that cause; a new account resumes the total."""

from __future__ import annotations

import json

import pytest

from llm_helpers import fake_server, llm_cfg, request_for, small_tree  # noqa: F401 (fixture)
from llm_helpers import plan_dict

TOKENS_PER_CALL = 120  # the fake endpoint reports 100 prompt + 20 completion tokens per answer


def answer(body: dict) -> str:
    props = body["response_format"]["schema"]["properties"]
    if "direction" in props:
        return json.dumps({"direction": "hyperparameters", "reasoning": "tune the learning rate"})
    if "plans" in props:
        return json.dumps({"differences": "learning rate", "plans": [plan_dict(lr=7e-4, rationale="lower lr")]})
    return json.dumps({"input": "a freshly worded review of the film"})  # a synthesize step's row


def synthesize_on_a_worker(url: str, account, n: int) -> dict:
    """A synthesize step built the way a trial builds it, in a Ray worker process."""
    import ray

    @ray.remote(num_cpus=1)
    def step(llm, account, n: int) -> dict:
        import datasets

        from trex_ray.recipes.ops import RecipeError, SynthesizeOp
        from trex_ray.recipes.synth import synthesize

        rows = [{"id": str(i), "input": f"review number {i} of a film", "label": i % 2,
                 "reference": ["negative", "positive"][i % 2]} for i in range(6)]
        op = SynthesizeOp(mode="paraphrase", source_column="input", n=n, max_chars=400)
        try:
            ds, stats = synthesize(datasets.Dataset.from_list(rows), op, "step 1 (synthesize)", llm,
                                   account=account, who="synthesis:n5")
        except RecipeError as e:
            return {"error": str(e)}
        return {"rows": len(ds), "llm": stats["llm"]}

    return ray.get(step.remote(llm_cfg(url, synthesis_rpm=60_000, concurrency=1), account, n))


def test_one_account_spans_the_researcher_and_a_workers_synthesize_step(tmp_path, fake_server):  # noqa: F811
    import ray

    from trex_ray.actors import LLMAccountActor
    from trex_ray.executor.context import SharedAccount
    from trex_ray.llm_client import LLMAccount
    from trex_ray.researcher.llm import LLMResearcher

    url, script = fake_server(answer)
    path = tmp_path / "llm_spend.json"
    ray.init(num_cpus=2, include_dashboard=False, log_to_driver=False)
    try:
        account = SharedAccount(LLMAccountActor.remote(9 * TOKENS_PER_CALL - 1, None, str(path)))
        researcher = LLMResearcher(llm_cfg(url), tmp_path, account=account)
        first = researcher.propose_detailed(request_for(small_tree(), "n2"))
        assert first.source == "llm" and first.usage["calls"] == 2

        out = synthesize_on_a_worker(url, account, n=4)
        assert out["rows"] == 10 and out["llm"]["calls"] == 4
        spent = ray.get(account.handle.snapshot.remote())
        assert spent["total"]["calls"] == 6 == len(script.requests)
        assert spent["by"]["researcher"]["calls"] == 2 and spent["by"]["synthesis"]["calls"] == 4
        assert spent["spent"] is None

        # 6 calls made, 9 allowed (less one token): the worker's step gets 3 more of the 8 it wants
        out = synthesize_on_a_worker(url, account, n=8)
        assert "the run's LLM budget is spent" in out["error"] and "limits.llm_tokens" in out["error"]
        assert "only 3 written" in out["error"] and len(script.requests) == 9
        again = researcher.propose_detailed(request_for(small_tree(), "n2"))
        assert again.source == "builtin-fallback" and "LLM budget is spent" in again.note
        assert len(script.requests) == 9  # no call was made past the limit
    finally:
        ray.shutdown()
    # the account is kept in the run directory: a resumed run goes on from what was spent
    resumed = LLMAccount(9 * TOKENS_PER_CALL - 1, None, path)
    assert resumed.total.calls == 9 and resumed.why_spent() is not None
    assert json.loads(path.read_text())["by"]["synthesis"]["calls"] == 7


def test_an_account_holds_its_own_limits():
    from trex_ray.config import LimitsConfig, LLMConfig
    from trex_ray.llm_client import LLMAccount, LLMError, Usage

    caps = LLMAccount.caps(LimitsConfig(llm_cost=2.0), LLMConfig(max_cost=0.5))
    assert caps == (None, 0.5)  # the lower cost limit holds
    acc = LLMAccount(*caps)
    acc.charge(Usage(calls=1, prompt_tokens=10, cost=0.3), "synthesis:n3")
    acc.check()
    acc.charge(Usage(calls=1, prompt_tokens=10, cost=0.3), "researcher")
    with pytest.raises(LLMError, match="cost 0.6000 of 0.5"):
        acc.check()
    assert acc.snapshot()["by"]["synthesis"]["calls"] == 1
