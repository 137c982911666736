"""Warm starts: a child node trains further from its parent's trained weights.

The schema and the SearchState checks (plain Python), the builtin policy's warm-start variant,
real training on the tiny model with real FT-Bench rows (LoRA and full; local and object
storage), and one short real search through Ray Tune whose scripted LLM asks for a warm start.
"""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from llm_helpers import after_trial_answer, fake_server  # noqa: F401 (fixture)
from core_helpers import make_state, outcome, proposal, request
from test_core import build, finished, plan_dict, planned
from trex_ray.researcher.builtin import BuiltinPolicy
from trex_ray.search.ledger import read_events
from trex_ray.search.plan import Plan, parse_plan
from trex_ray.search.state import SearchState
from trex_ray.search.tree import SearchParams


def warm(**training) -> dict:
    return plan_dict(warm_start=True, **training)


def state_with_trained_child(tmp_path: Path, max_trials: int = 10) -> SearchState:
    """Root finished, n1 (LoRA r=16) finished with a model artifact; ready for n1's children."""
    s = make_state(tmp_path, max_trials=max_trials, children_per_expansion=3)
    s.next_node("t0")
    s.finish("n0", outcome(0.5))
    s.begin_expansion()
    s.add_children("n0", proposal([plan_dict()], "builtin"))
    assert s.next_node("t1").init_from is None
    s.finish("n1", outcome(0.6, artifacts={"model": "s3://b/runs/r/nodes/n1/model"}))
    return s


# ---------------------------------------------------------------- schema
def test_warm_start_is_part_of_the_fingerprint_and_the_knobs():
    scratch, warmed = parse_plan(plan_dict()), parse_plan(warm())
    assert scratch.training.warm_start is False and warmed.training.warm_start is True
    assert scratch.fingerprint() != warmed.fingerprint()
    assert "warm" in warmed.knobs() and "warm" not in scratch.knobs()
    with pytest.raises(ValueError, match="plan.training.warm_start"):
        parse_plan(plan_dict(warm_start="from the node"))


# ---------------------------------------------------------------- SearchState
def test_handout_carries_the_parents_model_and_a_requeued_node_gets_it_again(tmp_path):
    s = state_with_trained_child(tmp_path)
    s.begin_expansion()
    assert s.add_children("n1", proposal([warm()], "builtin")) == ["n2"]
    reply = s.next_node("t2")
    assert reply.node_id == "n2" and reply.parent_id == "n1"
    assert reply.init_from == "s3://b/runs/r/nodes/n1/model"
    started = [e for e in read_events(tmp_path / "events.jsonl") if e["type"] == "node_started"]
    assert started[-1]["init_from"] == reply.init_from  # the ledger says which weights it began from
    # the driver dies with n2 running; the resumed state requeues it, derives init_from again
    s.ledger.close()
    s2 = make_state(tmp_path, max_trials=10, children_per_expansion=3)
    assert s2.tree.nodes["n2"].status == "planned"
    again = s2.next_node("r1")
    assert again.node_id == "n2" and again.init_from == "s3://b/runs/r/nodes/n1/model"
    assert s2.tree.nodes["n2"].attempts == 2


@pytest.mark.parametrize("child, cause", [
    (warm(lora_r=32, lora_alpha=64), "lora_r 16 -> 32, lora_alpha 32 -> 64"),
    (warm(method="full"), "method lora -> full"),
    (warm(lora_target_modules=["q_proj", "v_proj"]), "lora_target_modules"),
])
def test_a_warm_start_that_cannot_load_the_parents_weights_is_rejected(tmp_path, child, cause):
    s = state_with_trained_child(tmp_path)
    s.begin_expansion()
    s.add_children("n1", proposal([child, warm(learning_rate=5e-5)], "builtin"))
    reply = s.next_node("t2")
    assert reply.node_id == "n3" and reply.init_from  # the next valid node is handed out
    n2 = s.tree.nodes["n2"]
    assert n2.status == "failed" and n2.trial_id is None
    assert n2.failure.startswith("cannot warm-start from parent n1") and cause in n2.failure


def test_a_warm_start_from_the_baseline_or_a_failed_parent_is_rejected(tmp_path):
    s = make_state(tmp_path, max_trials=10, children_per_expansion=3)
    s.next_node("t0")
    s.finish("n0", outcome(0.5))
    s.begin_expansion()
    s.add_children("n0", proposal([warm(), plan_dict()], "llm"))  # n1 warm from the root, n2 from scratch
    assert s.next_node("t1").node_id == "n2"
    assert s.tree.nodes["n1"].status == "failed"
    assert "parent is the untrained base model" in s.tree.nodes["n1"].failure
    s.fail("n2", "RuntimeError: CUDA out of memory")
    # a warm child of a failed node (an LLM or a hand-edited ledger could ask for one)
    s._plan_node("n2", parse_plan(warm()), "llm")
    reply = s.next_node("t3")
    assert reply.node_id is None
    n3 = s.tree.nodes["n3"]
    assert n3.status == "failed" and "parent n2 has no trained model (it failed: RuntimeError: CUDA out" in n3.failure


# ---------------------------------------------------------------- builtin policy
def test_builtin_policy_offers_continued_training_after_its_hyperparameter_variants():
    tree = build([planned("n0", None), finished("n0", 0.5),
                  planned("n1", "n0", plan_dict(num_epochs=3, max_steps=50)), finished("n1", 0.6)])
    node_plan = tree.nodes["n1"].plan
    plans = BuiltinPolicy().propose(request(tree, "n1", 20))
    warm_plans = [p for p in plans if p.training.warm_start]
    assert len(warm_plans) == 1
    w = warm_plans[0]
    assert w.direction == "hyperparameters" and "one more epoch from its weights" in w.rationale
    assert w.training.num_epochs == 1 and w.training.max_steps == -1
    assert w.training.learning_rate == pytest.approx(node_plan.training.learning_rate / 2)
    changed = {"warm_start", "num_epochs", "max_steps", "learning_rate"}
    assert w.training.model_dump(exclude=changed) == node_plan.training.model_dump(exclude=changed)
    assert w.recipe == node_plan.recipe
    hp = [p for p in plans if p.direction == "hyperparameters" and not p.rationale.startswith("Grid")]
    assert hp[-1] == w and len(hp) == 5  # after the four other hyperparameter variants (lr up/down, epochs, schedule)
    assert plans.index(w) >= 5  # the first plans of a batch (one per direction) are unchanged
    # never for the root's children: the baseline has no trained weights
    root = BuiltinPolicy().propose(request(tree, "n0", 64))
    assert not any(p.training.warm_start for p in root)


def test_children_of_a_warm_node_continue_from_it_unless_they_change_its_shape():
    tree = build([planned("n0", None), finished("n0", 0.5), planned("n1", "n0"), finished("n1", 0.6),
                  planned("n2", "n1", warm(learning_rate=5e-5)), finished("n2", 0.7)])
    plans = BuiltinPolicy().propose(request(tree, "n2", 30))
    shaped = [p for p in plans if p.training.method != "lora" or p.training.lora_r != 16]
    same = [p for p in plans if p not in shaped]
    assert shaped and not any(p.training.warm_start for p in shaped)  # they could not load n2's adapter
    assert same and all(p.training.warm_start for p in same)


def test_the_same_warm_plan_from_another_parent_is_a_new_experiment():
    """Two nodes differing only in epochs offer the same warm-start plan (lr halved, 1 epoch):
    from n2 it starts from other weights than from n1, so it is not dropped as already tried."""
    evs = [planned("n0", None), finished("n0", 0.5), planned("n1", "n0"), finished("n1", 0.6),
           planned("n2", "n0", plan_dict(num_epochs=2)), finished("n2", 0.65),
           planned("n3", "n1", warm(learning_rate=5e-5)), finished("n3", 0.7)]
    tree = build(evs)
    again = BuiltinPolicy().propose(request(tree, "n2", 30))
    w = [p for p in again if p.training.warm_start and p.training.lora_r == 16 and p.direction == "hyperparameters"
         and "one more epoch" in p.rationale]
    assert w and w[0].fingerprint() == tree.nodes["n3"].plan.fingerprint()
    # ... but from n1 it is the experiment n3 ran: not proposed again
    from_n1 = BuiltinPolicy().propose(request(tree, "n1", 30))
    assert tree.nodes["n3"].plan.fingerprint() not in {p.fingerprint() for p in from_n1}


# ---------------------------------------------------------------- real training
@pytest.fixture
def ctx(tiny_model_dir, shared_data, tmp_path, monkeypatch):
    from core_helpers import trial_context

    monkeypatch.setenv("TREX_RAY_SCRATCH", str(tmp_path / "scratch"))
    return trial_context(tiny_model_dir, tmp_path / "run", shared_data / "sst2", dev_limit=4, eval_batch_size=4)


def sst2_plan(**training) -> Plan:
    from ftbench.tasks import get_task

    task = get_task("sst2")
    return parse_plan({
        "direction": "method", "rationale": "test",
        "recipe": {"steps": [{"op": "load"}, {"op": "subsample", "n": 16, "seed": 0},
                             {"op": "format", "prompt": task.prompt_template, "completion": task.completion_template}]},
        "training": {"learning_rate": 5e-3, "max_steps": 4, "batch_size": 4, "max_seq_length": 64,
                     "lora_r": 4, "lora_alpha": 8, **training},
    })


def weights(folder: str | Path) -> dict:
    from safetensors.torch import load_file

    name = "adapter_model.safetensors" if (Path(folder) / "adapter_model.safetensors").exists() else "model.safetensors"
    return load_file(str(Path(folder) / name))


def assert_same(a: dict, b: dict) -> None:
    import torch

    assert a.keys() == b.keys()
    for k in a:
        assert torch.allclose(a[k], b[k], atol=1e-6), k


def test_lora_child_trains_further_from_the_parents_adapter(ctx, tiny_model_dir):
    import torch
    from peft import PeftModel
    from transformers import AutoModelForCausalLM

    from trex_ray.executor.execute import execute

    parent = execute(sst2_plan(), "n1", ctx)
    parent_w = weights(parent.artifacts["model"])
    # a fresh LoRA has lora_B all zeros; the trained parent's is not
    assert any(v.abs().max() > 0 for k, v in parent_w.items() if "lora_B" in k)
    # a tiny learning rate: the child's weights stay where they started
    child_plan = sst2_plan(warm_start=True, learning_rate=1e-9, max_steps=2, lora_dropout=0.0)
    child = execute(child_plan, "n2", ctx, init_from=parent.artifacts["model"])
    child_dir = child.artifacts["model"]
    assert child.recipe_stats["train_steps"] == 2 and child_dir != parent.artifacts["model"]
    assert_same(weights(child_dir), parent_w)
    cfg = json.loads((Path(child_dir) / "adapter_config.json").read_text())
    assert cfg["r"] == 4 and cfg["lora_dropout"] == 0.0  # the child's own dropout; the parent's shape
    # a standalone adapter on the base model, as best/ and the export expect
    loaded = PeftModel.from_pretrained(AutoModelForCausalLM.from_pretrained(tiny_model_dir), child_dir)
    state = {k: v for k, v in loaded.state_dict().items() if "lora_" in k}
    assert state and all(torch.allclose(v, parent_w[k.replace(".default", "")], atol=1e-6) for k, v in state.items())
    # a warm-start plan without the parent's weights is one clear error
    with pytest.raises(ValueError, match="needs init_from"):
        execute(child_plan, "n3", ctx)


def test_full_child_starts_from_the_parents_weights(ctx, tiny_model_dir):
    import torch

    from trex_ray.executor.execute import execute

    parent = execute(sst2_plan(method="full", learning_rate=1e-3, max_steps=3), "n1", ctx)
    parent_w, base_w = weights(parent.artifacts["model"]), weights(tiny_model_dir)
    assert any(not torch.allclose(parent_w[k], base_w[k]) for k in base_w)
    child = execute(sst2_plan(method="full", warm_start=True, learning_rate=1e-9, max_steps=1), "n2", ctx,
                    init_from=parent.artifacts["model"])
    child_w = weights(child.artifacts["model"])
    assert_same({k: child_w[k] for k in parent_w}, parent_w)


def test_warm_start_fetches_the_parent_from_object_storage(s3, ctx, tmp_path):
    from dataclasses import replace

    from trex_ray.executor.execute import execute
    from trex_ray.storage import RunStorage, run_storage_uri

    base_uri, fs = s3
    ctx = replace(ctx, storage=run_storage_uri(base_uri, ctx.run_dir))
    parent = execute(sst2_plan(), "n1", ctx)
    uri = parent.artifacts["model"]
    assert uri.startswith("s3://")
    child = execute(sst2_plan(warm_start=True, learning_rate=1e-9, max_steps=1), "n2", ctx, init_from=uri)
    fetched = tmp_path / "scratch" / "run" / "warm_start" / "n2"
    assert (fetched / "adapter_model.safetensors").is_file()  # downloaded once, beside the node folder
    store = RunStorage(ctx.storage)
    # the node folder uploaded holds the child's own files, not a copy of the parent's
    assert set(store.list_dir("nodes/n2")) <= {"checkpoints", "dev_predictions.jsonl", "model"}
    assert child.artifacts["model"].startswith("s3://")
    assert_same(weights(fetched), weights(tmp_path / "scratch" / "run" / "nodes" / "n2" / "model"))


# ---------------------------------------------------------------- through Ray Tune
def scripted_llm(body: dict) -> str:
    """A fake LLM: from the root, a full fine-tune; from a trained node, a warm start from it."""
    from ftbench.tasks import get_task

    props = body["response_format"]["schema"]["properties"]
    side = after_trial_answer(props, suggested="hyperparameters")
    if side is not None:
        return side
    if "direction" in props:
        return json.dumps({"direction": "hyperparameters", "reasoning": "train the best node further"})
    from_root = "untrained base model" in body["messages"][-1]["content"]
    task = get_task("sst2")
    training = {"method": "full", "learning_rate": 0.005, "num_epochs": 2, "batch_size": 8}
    if not from_root:
        training |= {"learning_rate": 0.001, "num_epochs": 1, "warm_start": True}
    plan = {"direction": "hyperparameters", "rationale": "continue the node's training" if not from_root else "first",
            "recipe": {"steps": [{"op": "load"}, {"op": "subsample", "n": 32, "seed": 0},
                                 {"op": "format", "prompt": task.prompt_template, "completion": task.completion_template}]},
            "training": training}
    return json.dumps({"differences": "one plan", "plans": [plan]})


@pytest.mark.slow
@pytest.mark.parametrize("workers", [1])  # 2 (DeepSpeed ZeRO-2 ranks, each loading the parent) passes too: 89 s
def test_a_warm_started_node_runs_through_tune(tiny_model_dir, tmp_path, fake_server, workers, monkeypatch):  # noqa: F811
    """One worker: the trial trains in its own process; two: DeepSpeed ZeRO-2 ranks under Ray
    Train (gloo on CPU), each loading the parent's weights."""
    from trex_ray.config import load_config
    from trex_ray.run import run_search
    from trex_ray.search.tree import Tree

    if workers > 1:
        pytest.importorskip("deepspeed")
        monkeypatch.setenv("DS_ACCELERATOR", "cpu")
    url, script = fake_server(scripted_llm)
    cfg = load_config(None, [
        f"--model.name_or_path={tiny_model_dir}", f"--run.output_dir={tmp_path}", "--run.run_id=warm",
        "--search.max_trials=2", "--search.max_concurrent_trials=1", "--search.children_per_expansion=1",
        "--search.max_expansions=1",  # the root is expanded once, so n1 is expanded next
        "--search.policy=llm", f"--llm.base_url={url}", "--llm.model=fake", "--llm.structured_output=llama_cpp",
        "--llm.tool_calling=off", "--task.dev_limit=16", "--task.test_limit=0", "--train.method=full",
        "--train.eval_batch_size=16",
    ] + ([f"--resources.num_workers={workers}", "--resources.zero_stage=2", "--resources.cpus_per_trial=0.5"]
         if workers > 1 else []))
    summary = run_search(cfg)
    run = tmp_path / "warm"
    events = list(read_events(run / "events.jsonl"))
    tree = Tree.replay(events, SearchParams())
    n1, n2 = tree.nodes["n1"], tree.nodes["n2"]
    assert summary["trials"] == 2 and n1.status == "succeeded" and n2.status == "succeeded", n2.failure
    assert n2.parent_id == "n1" and n2.plan.training.warm_start and not n1.plan.training.warm_start
    started = next(e for e in events if e["type"] == "node_started" and e["node_id"] == "n2")
    assert started["init_from"] == n1.artifacts["model"] == str(run / "nodes" / "n1" / "model")
    assert Path(n2.artifacts["model"], "config.json").is_file()
    if workers > 1:
        assert n2.recipe_stats["workers"] == 2
