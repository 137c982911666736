"""The user's limits hold whatever a plan asks for: plans are clipped (how, on the node) or
rejected before any accelerator time (why, on the node); the config itself is checked against
the plan schema before Ray starts; data a plan may read is task:train, hub ids and the user's
extra sources, never the task's own files by path."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from core_helpers import make_state, outcome, proposal
from trex_ray.config import Config, ConfigError, LimitsConfig, load_config
from trex_ray.search.limits import DataRules, PlanGate, check_config
from trex_ray.search.plan import Plan, TrialResources


def greedy_plan(**over) -> dict:
    """What a runaway LLM might write: every knob at the schema's maximum."""
    d = {
        "direction": "more_data", "rationale": "more of everything",
        "recipe": {"steps": [{"op": "load"}, {"op": "subsample", "n": 50_000_000},
                             {"op": "format", "prompt": "Review: {input}", "completion": "{reference}"}],
                   "max_rows": 50_000_000, "decontaminate": False},
        "training": {"num_epochs": 50, "max_steps": 1_000_000, "max_seq_length": 131_072},
        "resources": {"num_workers": 1024, "gpus_per_worker": 16, "cpus_per_worker": 512},
    }
    d.update(over)
    return d


def gate(tmp_path: Path, **limits) -> PlanGate:
    extra = tmp_path / "extra"
    extra.mkdir(exist_ok=True)
    own = tmp_path / "sst2"
    own.mkdir(exist_ok=True)
    rules = DataRules("sst2", allowed=(extra.resolve(), (tmp_path / "ftbench").resolve()), own=(own.resolve(),))
    return PlanGate(LimitsConfig(**limits), TrialResources(num_workers=1, gpus_per_worker=0, cpus_per_worker=1), rules)


def test_a_greedy_plan_is_clipped_to_every_limit_with_the_reasons_on_its_node(tmp_path):
    state = make_state(tmp_path / "run", max_trials=3,
                       gate=gate(tmp_path, max_rows=500, max_epochs=3, max_steps=200, max_seq_length=512))
    state.next_node("t0")
    state.finish("n0", outcome(0.5))
    state.begin_expansion()
    (nid,) = state.add_children("n0", proposal([greedy_plan()]))
    node = state.tree.nodes[nid]
    p = node.plan
    assert p.recipe.max_rows == 500 and p.recipe.steps[1].n == 500
    assert (p.training.num_epochs, p.training.max_steps, p.training.max_seq_length) == (3, 200, 512)
    # a plan may not reserve more than the run's own trial shape (resources.*), nor turn off decontamination
    assert (p.resources.num_workers, p.resources.gpus_per_worker, p.resources.cpus_per_worker) == (1, 0, 1)
    assert p.recipe.decontaminate is True
    assert len(node.clipped) == 9
    assert "training.num_epochs 50 -> 3 (limits.max_epochs)" in node.clipped
    assert any("decontaminate -> true" in c for c in node.clipped)
    # the clipped plan is what runs, and the notes survive a replay (they are in the ledger)
    handout = state.next_node("t1")
    assert handout.node_id == nid and handout.plan == p
    from trex_ray.search.ledger import read_events
    from trex_ray.search.tree import Tree
    replayed = Tree.replay(read_events(tmp_path / "run" / "events.jsonl"), state.tree.params)
    assert replayed.nodes[nid].clipped == node.clipped


def test_a_plan_within_the_limits_is_untouched(tmp_path):
    p = Plan.model_validate(greedy_plan(resources=None) | {"recipe": {
        "steps": [{"op": "load"}, {"op": "subsample", "n": 100},
                  {"op": "format", "prompt": "{input}", "completion": "{reference}"}], "max_rows": 100},
        "training": {"num_epochs": 1}})
    out = gate(tmp_path).check(p)
    assert out.plan == p and out.clipped == [] and out.rejected is None


def test_decontamination_follows_the_users_config_only(tmp_path):
    p = Plan.model_validate(greedy_plan(resources=None))
    assert gate(tmp_path, decontaminate=False).check(p).plan.recipe.decontaminate is False
    on = Plan.model_validate(greedy_plan(resources=None) | {"recipe": {**greedy_plan()["recipe"], "decontaminate": True}})
    assert gate(tmp_path).check(on).plan.recipe.decontaminate is True


@pytest.mark.parametrize("source, why", [
    ("hub:/etc", "not a Hub dataset id"),
    ("hub:../secrets", "not a Hub dataset id"),
    ("hub:json", "datasets file loader"),
    ("{own}/test.jsonl", "the task's own data may not be read by path"),
    ("{own}", "the task's own data may not be read by path"),
    ("{ftbench}/sst2/test.jsonl", "the task's own data may not be read by path"),  # another copy of the task
    ("/etc/passwd", "not under task.extra_sources"),
    ("relative/file.jsonl", "absolute path"),
])
def test_data_a_plan_may_not_read_is_rejected_before_any_accelerator_time(tmp_path, source, why):
    g = gate(tmp_path)
    source = source.format(own=tmp_path / "sst2", ftbench=tmp_path / "ftbench")
    state = make_state(tmp_path / "run", max_trials=3, gate=g)
    state.next_node("t0")
    state.finish("n0", outcome(0.5))
    state.begin_expansion()
    d = greedy_plan(resources=None)
    d["recipe"]["steps"][0] = {"op": "load", "source": source}
    (nid,) = state.add_children("n0", proposal([d]))
    node = state.tree.nodes[nid]
    assert node.status == "failed" and why in node.failure and node.failure.startswith("rejected by the run's data rules")
    assert node.trial_id is None
    # the search goes on without it: nothing to hand out, the rejected node never runs
    assert state.next_node("t1").node_id is None


def test_dev_rows_pass_the_gate_only_as_synthesis_seeds_and_test_never(tmp_path):
    g = gate(tmp_path)
    assert "only task:train may be read" in g.rules.why_not("task:dev")
    assert "only task:train may be read" in g.rules.why_not("task:test")
    d = greedy_plan(resources=None)
    for bad in ({"op": "load", "source": "task:test"}, {"op": "load", "source": "task:dev"}):
        with pytest.raises(ValueError, match="test is never trained on|synthesis examples only"):
            Plan.model_validate(d | {"recipe": {**d["recipe"], "steps": [bad, *d["recipe"]["steps"][1:]]}})
    seeded = d | {"recipe": {**d["recipe"], "decontaminate": True, "steps": [
        {"op": "load", "source": "task:dev"},
        {"op": "synthesize", "mode": "generate", "columns": ["input"], "n": 8, "keep": "replace"},
        {"op": "format", "prompt": "{input}", "completion": "{reference}"}]}}
    out = g.check(Plan.model_validate(seeded))
    assert out.rejected is None and out.plan.recipe.seeded_from_dev


def test_extra_sources_and_hub_ids_are_readable(tmp_path):
    g = gate(tmp_path)
    (tmp_path / "extra" / "more.jsonl").write_text("{}\n")
    for src in (str(tmp_path / "extra" / "more.jsonl"), "hub:stanfordnlp/imdb", "task:train"):
        assert g.rules.why_not(src) is None, src
    mixed = greedy_plan(resources=None)
    mixed["recipe"]["steps"][0] = {"op": "mix", "sources": [{"source": "task:train", "ratio": 0.5},
                                                            {"source": str(tmp_path / "sst2" / "dev.jsonl"), "ratio": 0.5}]}
    assert "own data" in g.check(Plan.model_validate(mixed)).rejected


def test_hub_never_loads_a_local_folder_on_the_worker_either(tmp_path, monkeypatch):
    """The driver's gate aside, the worker refuses too: hub:<id> naming a local folder."""
    from ftbench.tasks import get_task
    from trex_ray.recipes.ops import LoadOp, RecipeError
    from trex_ray.recipes.sources import load_source

    (tmp_path / "stash").mkdir()
    (tmp_path / "stash" / "train.txt").write_text("secret\n")
    monkeypatch.chdir(tmp_path)
    with pytest.raises(RecipeError, match="names a local path"):
        load_source(LoadOp(source="hub:stash"), get_task("sst2"), {}, "step 0")


@pytest.mark.parametrize("overrides, message", [
    (["--train.num_epochs=100"], "config train.num_epochs: Input should be less than or equal to 50"),
    (["--train.batch_size=5000"], "config train.batch_size"),
    (["--train.lora_r=2000"], "config train.lora_r"),
    (["--train.max_seq_length=200000"], "config train.max_seq_length"),
    (["--resources.num_workers=2000"], "config resources.num_workers"),
    (["--resources.gpus_per_trial=32"], "config resources.gpus_per_trial"),
    (["--train.num_epochs=20"], "train.num_epochs 20 is above limits.max_epochs 10"),
    (["--limits.max_rows=100"], "train.train_samples 256 is above limits.max_rows 100"),
    (["--limits.max_workers=1", "--resources.num_workers=2"], "resources.num_workers 2 is above limits.max_workers 1"),
])
def test_the_config_is_checked_against_the_plan_schema_and_its_own_limits(overrides, message):
    cfg = load_config(None, overrides)  # the config's own types pass ...
    with pytest.raises(ConfigError) as e:
        check_config(cfg)  # ... but no plan could hold these values
    assert message in str(e.value)


def test_bad_run_settings_are_config_errors():
    with pytest.raises(ConfigError, match="run.num_cpus"):
        load_config(None, ["--run.num_cpus=-4"])
    check_config(Config())  # the defaults are consistent


def test_every_limits_field_is_documented():
    for name, f in LimitsConfig.model_fields.items():
        assert f.description and len(f.description) > 30, name
    assert json.loads(LimitsConfig().model_dump_json())["max_rows"] == 50_000
