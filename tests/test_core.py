"""Unit tests of the Ray-free core: plans, the tree (UCT, backprop, virtual loss), ledger replay,
search state and resume semantics, and the built-in policy."""

from __future__ import annotations

import json
import math

import pytest

from core_helpers import DEFAULTS, TASK, make_state, outcome, params, request
from trex_ray.researcher.builtin import BuiltinPolicy, first_plan
from trex_ray.search.ledger import Ledger, read_events
from trex_ray.search.plan import Plan, parse_plan
from trex_ray.search.request import Proposal, baseline_plan
from trex_ray.search.tree import SearchParams, Tree


def plan_dict(**training) -> dict:
    return {
        "direction": "hyperparameters",
        "rationale": "test",
        "recipe": {"steps": [{"op": "load"}, {"op": "subsample", "n": 10}, {"op": "format", "prompt": "{input}", "completion": "{reference}"}]},
        "training": {"learning_rate": 1e-4, **training},
    }


# ---------------------------------------------------------------- plans
def test_plan_validates_and_round_trips():
    p = parse_plan(plan_dict())
    assert Plan.model_validate(json.loads(p.model_dump_json())) == p
    assert p.recipe.sample_cap == 10 and "lr=0.0001" in p.knobs()


@pytest.mark.parametrize("mutate, field", [
    (lambda d: d["training"].update(learning_rate=5.0), "plan.training.learning_rate"),
    (lambda d: d["training"].update(lora_r=0), "plan.training.lora_r"),
    (lambda d: d["training"].update(optimizer="sgd"), "plan.training.optimizer"),
    (lambda d: d.update(direction="magic"), "plan.direction"),
    (lambda d: d.update(code="import os"), "plan.code"),
    (lambda d: d["recipe"]["steps"].insert(1, {"op": "shell", "cmd": "rm -rf /"}), "plan.recipe.steps.1"),
    (lambda d: d["recipe"]["steps"][1].update(n=-3), "plan.recipe.steps.1.subsample.n"),
])
def test_plan_rejects_bad_fields_naming_them(mutate, field):
    d = plan_dict()
    mutate(d)
    with pytest.raises(ValueError) as e:
        parse_plan(d)
    assert field in str(e.value)


@pytest.mark.parametrize("template", ["{input.__class__}", "{input[0]}", "{input!r}", "{input:>10}", "{0}"])
def test_templates_allow_only_plain_column_names(template):
    d = plan_dict()
    d["recipe"]["steps"][2]["prompt"] = template
    with pytest.raises(ValueError, match="not a plain column name"):
        parse_plan(d)


def test_recipe_shape_rules():
    d = plan_dict()
    d["recipe"]["steps"] = [{"op": "subsample", "n": 3}, {"op": "format", "prompt": "{input}", "completion": "{reference}"}]
    with pytest.raises(ValueError, match="first step must be a load"):
        parse_plan(d)
    d["recipe"]["steps"] = [{"op": "load"}, {"op": "subsample", "n": 3}]
    with pytest.raises(ValueError, match="exactly one format"):
        parse_plan(d)
    base = baseline_plan(TASK).model_dump()
    base["training"] = plan_dict()["training"]
    with pytest.raises(ValueError, match="baseline"):
        parse_plan(base)


# ---------------------------------------------------------------- tree
def build(events: list[dict], params: SearchParams | None = None) -> Tree:
    return Tree.replay([{"seq": i + 1, "ts": float(i), **e} for i, e in enumerate(events)], params)


def planned(node_id, parent, plan=None):
    return {"type": "node_planned", "node_id": node_id, "parent_id": parent,
            "plan": plan or (baseline_plan(TASK).model_dump() if parent is None else plan_dict())}


def finished(node_id, score):
    return {"type": "node_finished", "node_id": node_id, "score": score, "metrics": {"accuracy": score}}


def test_backprop_normalised_reward_along_the_path():
    t = build([planned("n0", None), finished("n0", 0.5), planned("n1", "n0"), finished("n1", 0.7),
               planned("n2", "n1"), finished("n2", 0.6)], params(metric_range=2.0))
    n0, n1, n2 = (t.nodes[i] for i in ("n0", "n1", "n2"))
    assert n1.reward == pytest.approx(0.1) and n2.reward == pytest.approx(0.05)
    assert (n0.visits, n1.visits, n2.visits) == (3, 2, 1)
    assert n0.value_sum == pytest.approx(0.15) and n1.value_sum == pytest.approx(0.15)
    # lower-is-better metrics flip the sign
    t2 = build([planned("n0", None), finished("n0", 0.5), planned("n1", "n0"), finished("n1", 0.3)],
               params(higher_is_better=False))
    assert t2.nodes["n1"].reward == pytest.approx(0.2)


def test_failure_backprops_the_failure_reward():
    t = build([planned("n0", None), finished("n0", 0.5), planned("n1", "n0"),
               {"type": "node_failed", "node_id": "n1", "cause": "OOM"}], params(failure_reward=-0.5))
    assert t.nodes["n1"].status == "failed" and t.nodes["n1"].failure == "OOM"
    assert t.nodes["n0"].value_sum == pytest.approx(-0.5) and t.nodes["n0"].pending == 0


def test_uct_selection_hand_computed():
    # root (base 0.5) expanded once; children rewards 0.3 (n1) and 0.1 (n2), 1 visit each.
    evs = [planned("n0", None), finished("n0", 0.5), {"type": "expansion", "node_id": "n0"},
           planned("n1", "n0"), planned("n2", "n0"), finished("n1", 0.8), finished("n2", 0.6)]
    t = build(evs, params(exploration=1.0, max_expansions=2))
    # parent visits = 3; options: re-expand root: 0 + sqrt(ln3/1); n1: 0.3 + sqrt(ln3/1); n2: 0.1 + ...
    assert t.uct(0.3, 1, 3) == pytest.approx(0.3 + math.sqrt(math.log(3)))
    assert t.select().id == "n1"  # n1 has never been expanded: an unvisited option, taken at once
    # with n1 expanded twice already (max_expansions reached) and no children, the walk cannot
    # descend into it; the best remaining option is re-expanding the root (0 > 0.1? no: n2)
    t.nodes["n1"].expansions = 2
    assert t.select().id == "n2"
    t.nodes["n2"].expansions = 2
    assert t.select().id == "n0"
    t.nodes["n0"].expansions = 2
    assert t.select() is None


def test_select_prefers_root_reexpansion_when_children_are_worse_than_base():
    evs = [planned("n0", None), finished("n0", 0.9), {"type": "expansion", "node_id": "n0"},
           planned("n1", "n0"), finished("n1", 0.2), {"type": "expansion", "node_id": "n1"}]
    t = build(evs, params(exploration=0.1, max_expansions=2))
    # n1 is now expanded once (reward -0.7); re-expanding root scores 0 + c*sqrt(ln2/1) > n1
    assert t.select().id == "n0"


def test_virtual_loss_spreads_parallel_selection():
    evs = [planned("n0", None), finished("n0", 0.5), {"type": "expansion", "node_id": "n0"},
           planned("n1", "n0"), planned("n2", "n0"), finished("n1", 0.62), finished("n2", 0.6),
           {"type": "expansion", "node_id": "n1"}, {"type": "expansion", "node_id": "n2"}]
    p = params(exploration=0.5, virtual_loss=1.0, max_expansions=2)
    t = build(evs, p)
    t.nodes["n0"].expansions = 2  # only descending is possible
    assert t.select().id == "n1"
    # two trials now pending under n1: its virtual mean drops below n2's
    t2 = build(evs + [planned("n3", "n1"), planned("n4", "n1")], p)
    t2.nodes["n0"].expansions = 2
    assert t2.nodes["n1"].pending == 2 and t2.nodes["n0"].pending == 2
    assert t2._virtual_q(t2.nodes["n1"]) == pytest.approx((0.12 - 2.0) / 3)
    assert t2.select().id == "n2"
    # once they finish, the pending count is released
    t3 = build(evs + [planned("n3", "n1"), finished("n3", 0.7)], p)
    assert t3.nodes["n1"].pending == 0 and t3.nodes["n0"].pending == 0


def test_memory_has_path_siblings_children_and_key_nodes():
    evs = [planned("n0", None), finished("n0", 0.5), planned("n1", "n0"), planned("n2", "n0"),
           finished("n1", 0.8), {"type": "node_failed", "node_id": "n2", "cause": "OOM"},
           planned("n3", "n1"), finished("n3", 0.9)]
    m = build(evs).memory("n1")
    assert [p["id"] for p in m["path"]] == ["n0", "n1"]
    assert [s["id"] for s in m["siblings"]] == ["n2"] and m["siblings"][0]["failure"] == "OOM"
    assert [c["id"] for c in m["children"]] == ["n3"]
    assert m["key_nodes"][0]["id"] == "n3" and any(k["id"] == "n2" for k in m["key_nodes"])
    assert m["base_score"] == 0.5 and m["best_score"] == 0.9


# ---------------------------------------------------------------- ledger and state
def test_ledger_is_durable_and_replays_equal_live(tmp_path):
    state = make_state(tmp_path, max_trials=3, children_per_expansion=2)
    root = state.next_node("t0")
    assert root.node_id == "n0"
    state.finish("n0", outcome(0.5))
    begun = state.begin_expansion()
    assert begun.node_id == "n0" and begun.n == 2
    plans = BuiltinPolicy().propose(begun)
    ids = state.add_children("n0", Proposal(plans, "builtin"))
    assert ids == ["n1", "n2"]
    state.next_node("t1")
    state.finish("n1", outcome(0.7, cost={"wall_seconds": 3.0}))
    state.next_node("t2")
    state.fail("n2", "ValueError: boom")
    replayed = Tree.replay(read_events(tmp_path / "events.jsonl"), params())
    assert replayed.to_dict() == state.tree.to_dict()
    assert (tmp_path / "tree.json").is_file()  # views are refreshed as nodes end (rate-limited)
    state.close("test over")  # ... and always written at the end
    saved = json.loads((tmp_path / "tree.json").read_text())
    live = json.loads(json.dumps(state.tree.to_dict(), default=str))
    assert {k: saved[k] for k in live} == live
    # ... with the spend per node and branch (search/spend.py): n1's 3 s trial is in n0's branch
    assert saved["spend"]["nodes"]["n1"]["own"]["train_samples"] == 0
    assert set(saved["spend"]["nodes"]) == set(state.tree.nodes) and "run" in saved["spend"]


def test_torn_last_line_is_dropped(tmp_path):
    led = Ledger(tmp_path)
    led.append({"type": "run_started", "task": "sst2"})
    led.close()
    with open(tmp_path / "events.jsonl", "a") as f:
        f.write('{"seq": 2, "type": "node_pl')
    assert [e["type"] for e in read_events(tmp_path / "events.jsonl")] == ["run_started"]
    led = Ledger(tmp_path)
    led.append({"type": "run_resumed"})
    assert [e["seq"] for e in read_events(tmp_path / "events.jsonl")] == [1, 2]


def test_resume_keeps_finished_requeues_running_and_duplicates_nothing(tmp_path):
    s1 = make_state(tmp_path, max_trials=3, children_per_expansion=3)
    s1.next_node("t0")
    s1.finish("n0", outcome(0.5))
    begun = s1.begin_expansion()
    s1.add_children("n0", Proposal(BuiltinPolicy().propose(begun), "builtin"))
    s1.next_node("t1")
    s1.next_node("t2")
    s1.finish("n1", outcome(0.6))
    # the driver dies here: n2 running, n3 planned
    s1.ledger.close()
    s2 = make_state(tmp_path, max_trials=3, children_per_expansion=3)
    t = s2.tree
    assert t.nodes["n1"].status == "succeeded" and t.nodes["n2"].status == "planned"
    assert s2.trials_started() == 2 and s2.trials_left() == 0  # n2 was started: its re-run is not a new plan
    handed = [s2.next_node(f"r{i}").node_id for i in range(3)]
    assert handed == ["n2", "n3", None]  # re-queued work first, nothing finished is handed out again
    assert sorted(t.nodes) == ["n0", "n1", "n2", "n3"]
    assert t.nodes["n2"].attempts == 2


def test_budget_stops_handing_out_and_close_prunes(tmp_path):
    s = make_state(tmp_path, max_trials=1, children_per_expansion=3)
    s.next_node("t0")
    s.finish("n0", outcome(0.5))
    begun = s.begin_expansion()
    assert begun.n == 1
    s.add_children("n0", Proposal(BuiltinPolicy().propose(begun), "builtin"))
    assert s.next_node("t1").node_id == "n1"
    done = s.next_node("t2")
    assert (done.node_id, done.done, done.running) == (None, "trial budget spent", 1)
    tree = s.close("trial budget spent")
    assert [n.status for n in tree.nodes.values()] == ["succeeded", "failed"]  # n1 never reported


def test_add_children_revalidates_plans(tmp_path):
    s = make_state(tmp_path, max_trials=5, children_per_expansion=3)
    s.next_node("t0")
    s.finish("n0", outcome(0.5))
    s.begin_expansion()
    # a plan object that skipped validation (built without it, or damaged on the way) is dropped
    good = parse_plan(plan_dict())
    bad = Plan.model_construct(**{**dict(good), "training": good.training.model_construct(
        **{**dict(good.training), "learning_rate": 99.0})})
    ids = s.add_children("n0", Proposal([bad, good], "llm"))
    assert ids == ["n1"] and s.tree.nodes["n1"].source == "llm"


# ---------------------------------------------------------------- policy
def test_builtin_policy_root_expansion_spans_directions():
    tree = build([planned("n0", None), finished("n0", 0.5)])
    plans = BuiltinPolicy().propose(request(tree, "n0", 4))
    assert len(plans) == 4
    assert plans[0] == first_plan(TASK, DEFAULTS)
    assert len({p.direction for p in plans}) == 4
    assert len({p.model_dump_json(exclude={"rationale", "direction"}) for p in plans}) == 4


def test_builtin_policy_widens_to_a_grid_when_asked_for_many():
    """A wide cluster asks for many plans at once: past the rules' own variants the policy offers
    a grid around the node (learning rate x LoRA rank, then epochs and data), all distinct and
    within the plan bounds, enough to fill a 64-slot cluster from the root; the first batch is
    what a small request gets."""
    tree = build([planned("n0", None), finished("n0", 0.5)])
    small = BuiltinPolicy().propose(request(tree, "n0", 4))
    wide = BuiltinPolicy().propose(request(tree, "n0", 64))
    assert wide[:4] == small and len(wide) == 64
    assert len({p.fingerprint() for p in wide}) == len(wide)
    grid = [p for p in wide if p.rationale.startswith("Grid around the node")]
    assert len(grid) >= 10
    lrs = {p.training.learning_rate for p in grid}
    ranks = {p.training.lora_r for p in grid}
    assert min(lrs) < DEFAULTS.learning_rate < max(lrs) and max(lrs) <= 1e-2
    assert {8, 16, 32, 64} <= ranks and all(p.training.lora_alpha == 2 * p.training.lora_r for p in grid)
    assert {p.training.num_epochs for p in grid} == {1.0, 2.0}
    assert {p.recipe.sample_cap for p in grid} == {DEFAULTS.train_samples, 2 * DEFAULTS.train_samples}


def test_builtin_policy_follows_what_helped():
    lr_up = plan_dict(learning_rate=2.5e-4)
    evs = [planned("n0", None), finished("n0", 0.5), planned("n1", "n0", plan_dict(learning_rate=1e-4)),
           finished("n1", 0.6), planned("n2", "n1", lr_up), finished("n2", 0.7)]
    tree = build(evs)
    plans = BuiltinPolicy().propose(request(tree, "n2", 3))
    # hyperparameters helped on the path (+0.1): it comes first, and pushes the learning rate further up
    assert plans[0].direction == "hyperparameters"
    assert plans[0].training.learning_rate == pytest.approx(2.5e-4 * 2.5)
    assert len(plans) == 3 and all(p.training is not None for p in plans)


def test_no_experiment_is_proposed_twice_anywhere_in_the_tree():
    # the root's children include the default plan and its learning-rate-up variant; expanding
    # the default plan's node must not propose that same learning-rate-up plan again
    root_kids = BuiltinPolicy().propose(request(build([planned("n0", None), finished("n0", 0.5)]), "n0", 3))
    evs = [planned("n0", None), finished("n0", 0.5)]
    evs += [planned(f"n{i + 1}", "n0", p.model_dump()) for i, p in enumerate(root_kids)]
    evs += [finished("n1", 0.8), finished("n2", 0.7), finished("n3", 0.6)]
    tree = build(evs)
    tried = {p.fingerprint() for p in root_kids}
    assert set(tree.memory("n1")["tried"]) >= tried
    plans = BuiltinPolicy().propose(request(tree, "n1", 4))
    assert plans and not {p.fingerprint() for p in plans} & tried


def test_cached_views_follow_every_status_and_score_change():
    """by_status and best are recomputed only after a change; every change must show at once."""
    t = build([planned("n0", None), finished("n0", 0.5), planned("n1", "n0"), planned("n2", "n0")])
    assert [n.id for n in t.by_status("planned")] == ["n1", "n2"] and t.best() is None
    t.apply({"type": "expansion", "node_id": "n0"})  # no status change: the view may be reused
    assert [n.id for n in t.by_status("planned")] == ["n1", "n2"]
    t.apply({"type": "node_started", "node_id": "n1", "trial_id": "a"})
    assert [n.id for n in t.by_status("planned")] == ["n2"] and [n.id for n in t.by_status("running")] == ["n1"]
    t.apply(finished("n1", 0.6))
    assert t.best().id == "n1" and [n.id for n in t.by_status("running")] == []
    t.apply({"type": "node_started", "node_id": "n2", "trial_id": "b"})
    t.apply(finished("n2", 0.9))
    assert t.best().id == "n2"
    views = t.by_status("succeeded")
    views.clear()  # callers get a copy: the cached view is not theirs to change
    assert len(t.by_status("succeeded")) == 3


def test_one_ranking_for_every_view_numbers_not_strings():
    """Leaderboards, reports and the best node share one rule: better score first, then the
    shallower node, then the earlier one by number (n2 before n10), unscored last."""
    from trex_ray.report.live import leaderboard

    evs = [planned("n0", None), finished("n0", 0.5)]
    for i in range(1, 11):
        evs += [planned(f"n{i}", "n0", plan_dict(learning_rate=i * 1e-5)), finished(f"n{i}", 0.7 if i in (2, 10) else 0.6)]
    evs += [planned("n11", "n2"), finished("n11", 0.7), planned("n12", "n0")]
    t = build(evs)
    assert [n.id for n in t.ranked()][:3] == ["n2", "n10", "n11"]  # n11 ties too, but is deeper
    assert t.best().id == "n2" and t.ranked()[-1].id == "n12"
    assert [n.id for n in t.lineage("n11")] == ["n0", "n2", "n11"]
    rows = [line.split()[0] for line in leaderboard(t, "accuracy").splitlines()[2:]]
    assert rows[:3] == ["n2", "n10", "n11"] and rows[-1] == "n12"
    low = build(evs, params(higher_is_better=False))
    assert low.best().id == "n1"  # lower is better: the first 0.6 node beats the 0.7s (the root is no trial)
    assert low.ranked()[0].id == "n0"


def test_the_builtin_policy_orders_exactly_the_plan_directions():
    from trex_ray.researcher.builtin import PREFERENCE
    from trex_ray.search.plan import SEARCH_DIRECTIONS

    assert sorted(PREFERENCE) == sorted(SEARCH_DIRECTIONS)
