"""Successive halving in the TreeState, by hand: which node is promoted when (ASHA's rule), that a
promotion continues the proxy's run, that only top-rung nodes can be the best, the compute
budget, and the final selection on re-scored finalists."""

from __future__ import annotations

import pytest

from core_helpers import make_state, outcome, proposal
from test_core import plan_dict
from trex_ray.search.halving import examples, full_steps, stop_step
from trex_ray.search.ledger import read_events
from trex_ray.search.plan import parse_plan
from trex_ray.search.selection import Rescore
from trex_ray.search.tree import SearchParams, Tree


def mf_state(tmp_path, max_trials=6, **kw):
    s = make_state(tmp_path, max_trials=max_trials, children_per_expansion=6, rungs=[0.25, 1.0], eta=3, **kw)
    root = s.next_node("t0")
    assert root.rung.index == 1 and root.rung.dev_limit == 200  # the baseline is scored on the whole dev slice
    s.finish("n0", outcome(0.5, rung=1, artifacts={"dev_predictions": "/runs/r/nodes/n0/dev.jsonl"}))
    s.begin_expansion()
    # six plans, each 64 rows x 1 epoch at batch 8: 8 steps in a full run, 2 as a proxy
    plans = [plan_dict(learning_rate=(i + 1) * 1e-4) for i in range(6)]
    for p in plans:
        p["recipe"]["steps"][1]["n"] = 64
    s.add_children("n0", proposal(plans))
    return s


def run(s, trial: str, score: float, checkpoint: bool = True):
    h = s.next_node(trial)
    assert h.node_id is not None, h
    arts = {"model": f"/runs/r/nodes/{h.node_id}/model", "dev_predictions": f"/runs/r/nodes/{h.node_id}/dev.jsonl"}
    if checkpoint:
        arts["checkpoint"] = f"/runs/r/nodes/{h.node_id}/checkpoints/checkpoint-{h.rung.index}"
    s.finish(h.node_id, outcome(score, rung=h.rung.index, fidelity=h.rung.fraction, artifacts=arts,
                                cost={"examples": 16 if h.rung.index == 0 else 48}))
    return h


def test_steps_and_costs_of_a_rung():
    plan = parse_plan(plan_dict())  # subsample 10 rows, batch 8, 1 epoch
    assert full_steps(plan, 1000) == 2 and stop_step(plan, 1000, 0.25) == 1
    p64 = parse_plan({**plan_dict(num_epochs=2), "recipe": {"steps": [
        {"op": "load"}, {"op": "subsample", "n": 64}, {"op": "format", "prompt": "{input}", "completion": "{reference}"}]}})
    assert full_steps(p64, 1000) == 16 and stop_step(p64, 1000, 0.25) == 4
    assert examples(p64, 1000, 0.25) == 32 and examples(p64, 1000, 1.0, from_fraction=0.25) == 96


def test_asha_promotes_the_top_third_as_soon_as_it_can(tmp_path):
    s = mf_state(tmp_path)
    hs = [run(s, f"t{i}", score) for i, score in zip((1, 2), (0.6, 0.8))]
    assert [h.node_id for h in hs] == ["n1", "n2"] and all(h.rung.index == 0 and h.rung.dev_limit == 100 for h in hs)
    assert hs[0].resume_from is None
    h3 = run(s, "t3", 0.7)  # three finished rung 0: the top third (one node) is promotable now
    assert h3.node_id == "n3"
    promo = s.next_node("t4")
    assert (promo.node_id, promo.rung.index, promo.rung.dev_limit) == ("n2", 1, 200)
    assert promo.resume_from == "/runs/r/nodes/n2/checkpoints/checkpoint-0"  # continues the proxy's run
    assert promo.compare["parent"][0] == "n0"
    assert s.tree.best() is None  # no plan has reached the top rung yet: a proxy's score is no best
    assert s.tree.leader().id == "n2"
    s.finish("n2", outcome(0.82, rung=1, artifacts={"dev_predictions": "/x/n2.jsonl"}, cost={"examples": 48}))
    n2 = s.tree.nodes["n2"]
    assert n2.rung == 1 and n2.rung_scores == {0: 0.8, 1: 0.82} and n2.cost.examples == 64
    assert s.tree.best().id == "n2" and n2.visits == 1  # the revised reward is not a second visit
    # n4..n6 at rung 0; after six finished, the top third is two nodes: n2 (done) and the next best
    for i, score in zip((5, 6, 7), (0.75, 0.5, 0.79)):
        run(s, f"t{i}", score)
    promo = s.next_node("t8")
    assert promo.node_id == "n6" and promo.rung.index == 1  # 0.79: second of six at rung 0
    events = [e["type"] for e in read_events(tmp_path / "events.jsonl")]
    assert events.count("node_promoted") == 2
    # the ledger replays to the same tree
    assert Tree.replay(read_events(tmp_path / "events.jsonl"), s.tree.params).to_dict() == s.tree.to_dict()


def test_a_trial_reporting_another_rung_is_recorded_at_the_one_it_was_handed_out_at(tmp_path):
    s = mf_state(tmp_path)
    for i, score in zip((1, 2, 3), (0.6, 0.8, 0.7)):
        run(s, f"t{i}", score)
    promo = s.next_node("t4")
    assert (promo.node_id, promo.rung.index) == ("n2", 1)
    s.finish("n2", outcome(0.81, rung=0, artifacts={"dev_predictions": "/x/n2.jsonl"}))  # says rung 0
    n2 = s.tree.nodes["n2"]
    assert n2.rung == 1 and n2.rung_scores == {0: 0.8, 1: 0.81} and n2.fidelity == 1.0
    # n2 is done: it is never promoted (nor handed out) again
    later = [s.next_node(f"t{i}") for i in range(5, 8)]
    assert "n2" not in {h.node_id for h in later}
    assert [e["type"] for e in read_events(tmp_path / "events.jsonl")].count("node_promoted") == 1


def test_once_no_plan_may_start_the_leaders_are_carried_to_the_top(tmp_path):
    """Three plans only (max_trials): ASHA promotes the best of three; when the plans are spent
    the next-best proxies are carried up too, until the final selection has its two finalists,
    and not further."""
    s = mf_state(tmp_path, max_trials=3, finalists=2)
    for i, score in ((1, 0.6), (2, 0.7), (3, 0.65)):
        run(s, f"t{i}", score)
    promo = s.next_node("t4")
    assert (promo.node_id, promo.rung.index) == ("n2", 1)  # ASHA: the top third of three
    second = s.next_node("t5")
    assert (second.node_id, second.rung.index) == ("n3", 1)  # forced: 0.65, the next best
    wait = s.next_node("t6")
    assert wait.node_id is None and wait.done is None and wait.running == 2  # n1 stays a proxy
    s.finish("n2", outcome(0.71, rung=1, cost={"examples": 48}))
    s.finish("n3", outcome(0.66, rung=1, cost={"examples": 48}))
    assert s.next_node("t7").done == "trial budget spent" and s.tree.nodes["n1"].rung == 0


def test_the_compute_budget_keeps_room_to_carry_the_leader_up(tmp_path):
    """Budget 100 example-epochs; a proxy costs 16, a promotion 48: new plans start only while
    the leader can still be promoted afterwards."""
    s = mf_state(tmp_path, budget=100)
    run(s, "t1", 0.6)
    run(s, "t2", 0.7)  # spent 32: a third proxy (16) + carrying n2 up (48) = 64 fits in the 68 left
    h = s.next_node("t3")
    assert h.node_id == "n3"
    s.finish("n3", outcome(0.65, rung=0, fidelity=0.25, artifacts={"checkpoint": "c3"}, cost={"examples": 16}))
    # spent 48: a new proxy (16) + the leader's promotion (48) = 64 > 52 left: no new plan
    assert s.may_start_new() == "compute budget spent"
    promo = s.next_node("t4")
    assert (promo.node_id, promo.rung.index) == ("n2", 1)
    s.finish("n2", outcome(0.72, rung=1, cost={"examples": 48}))
    assert s.budget().spent() == 96 and s.next_node("t5").done == "compute budget spent"


def test_a_promotion_the_run_ends_before_keeps_the_last_rung(tmp_path):
    s = mf_state(tmp_path, max_trials=3)
    for i, score in ((1, 0.6), (2, 0.8), (3, 0.7)):
        run(s, f"t{i}", score)
    assert s.next_node("t4").node_id == "n2"
    tree = s.close("driver stopped")
    n2 = tree.nodes["n2"]
    assert (n2.status, n2.rung, n2.score) == ("succeeded", 0, 0.8) and n2.pending == 0 and tree.root.pending == 0


def test_final_selection_prefers_the_cheaper_plan_within_noise(tmp_path):
    """A constructed tree where the highest point estimate is not chosen: re-scored on the final
    slice, n2 leads n1 by 0.004 within the paired interval, and n1 trained half the examples."""
    s = make_state(tmp_path, max_trials=3, children_per_expansion=3, rungs=[1.0], finalists=3)
    s.next_node("t0")
    s.finish("n0", outcome(0.5))
    s.begin_expansion()
    s.add_children("n0", proposal([plan_dict(learning_rate=(i + 1) * 1e-4) for i in range(3)]))
    for nid, score, ex in (("n1", 0.80, 64), ("n2", 0.84, 128), ("n3", 0.70, 64)):
        s.next_node(nid)
        s.finish(nid, outcome(score, cost={"examples": ex}))
    assert s.tree.best().id == "n2" and [n.id for n in s.finalists()] == ["n2", "n1", "n3"]
    iv = lambda v: {"value": v, "low": v - 0.02, "high": v + 0.02, "n": 500}
    winner = s.record_selection([
        Rescore("n2", iv(0.836), None),
        Rescore("n1", iv(0.832), {"value": 0.004, "low": -0.006, "high": 0.014, "n": 500}),
        Rescore("n3", iv(0.70), {"value": 0.136, "low": 0.11, "high": 0.16, "n": 500}),
    ])
    assert winner == "n1" and s.tree.best().id == "n1"
    assert "cheaper plan" in s.tree.selection["reason"] and s.tree.nodes["n1"].rescored["n"] == 500
    replayed = Tree.replay(read_events(tmp_path / "events.jsonl"), s.tree.params)
    assert replayed.best().id == "n1"


def test_a_promotion_continues_the_proxy_to_exactly_the_full_run(tiny_model_dir, shared_data, tmp_path, monkeypatch):
    """Real training: a proxy trained for the first quarter of its run and then continued from
    its checkpoint ends with the same weights, and the same dev predictions, as the plan trained
    in one go; the continuation trains only the remaining steps."""
    import torch

    from core_helpers import trial_context
    from test_warm_start import sst2_plan, weights
    from trex_ray.executor.execute import execute
    from trex_ray.search.halving import Rung

    monkeypatch.setenv("TREX_RAY_SCRATCH", str(tmp_path / "scratch"))
    ctx = trial_context(tiny_model_dir, tmp_path / "run", shared_data / "sst2", dev_limit=8, eval_batch_size=8)
    plan = sst2_plan(max_steps=-1, num_epochs=2, batch_size=4, scheduler="cosine", warmup_ratio=0.25)  # 16 rows: 8 steps
    whole = execute(plan, "n1", ctx, rung=Rung(1, 1.0, 8))
    proxy = execute(plan, "n2", ctx, rung=Rung(0, 0.25, 4))
    assert proxy.fidelity == 0.25 and proxy.cost.examples == 2 * 4 and proxy.recipe_stats["train_steps"] == 2
    assert proxy.artifacts["checkpoint"].endswith("checkpoint-2") and proxy.metrics["n"] == 4
    proxy_w = weights(proxy.artifacts["model"])  # before the promotion writes the node's model again
    full = execute(plan, "n2", ctx, rung=Rung(1, 1.0, 8), resume_from=proxy.artifacts["checkpoint"])
    assert full.recipe_stats["resumed"] == proxy.artifacts["checkpoint"]
    assert full.cost.examples == 6 * 4 and full.recipe_stats["train_steps"] == 8  # only the remaining six steps
    a, b = weights(whole.artifacts["model"]), weights(full.artifacts["model"])
    assert a.keys() == b.keys() and all(torch.allclose(a[k], b[k], atol=1e-5) for k in a)
    assert any(not torch.allclose(a[k], proxy_w[k]) for k in a)  # the proxy itself is not the full run
    assert full.score == whole.score
    # a lost checkpoint: the promotion trains from the start (said so) and still gets the full run
    again = execute(plan, "n3", ctx, rung=Rung(1, 1.0, 8), resume_from=str(tmp_path / "gone" / "checkpoint-2"))
    assert again.recipe_stats["resumed"].startswith("no: ") and again.cost.examples == 8 * 4


def test_a_run_always_ends_with_a_plan_trained_in_full(tmp_path):
    """A budget too small to carry any proxy up (40 example-epochs: a proxy costs 16, its
    promotion 48): after the first proxy no new plan may start, and its promotion is still made,
    once, so the run has a best model; then the search ends."""
    s = mf_state(tmp_path, max_trials=6, budget=40)
    run(s, "t1", 0.6)
    promo = s.next_node("t2")
    assert (promo.node_id, promo.rung.index) == ("n1", 1) and s.budget().left() < 48
    s.finish("n1", outcome(0.62, rung=1, cost={"examples": 48}))
    assert s.next_node("t3").done == "compute budget spent" and s.tree.best().id == "n1"
    assert s.budget().spent() == 64  # overspent by that one promotion, no more
