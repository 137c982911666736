"""The end-of-run pieces in plain Python (no Ray): merged LoRA export, test evaluation when a task
has no usable test split, how failed and pruned nodes are drawn, and the live view's lines."""

from __future__ import annotations

import copy
import logging
import re
from pathlib import Path

from core_helpers import make_state, outcome, proposal, trial_context
from test_core import build
from trex_ray.search.plan import Plan
from trex_ray.search.tree import Tree

PLAN = {"direction": "baseline", "recipe": {"steps": [{"op": "load"}, {"op": "format", "prompt": "{input}", "completion": "{reference}"}]}}


def _ctx(model_dir: Path, run_dir: Path, **kw):
    return trial_context(model_dir, run_dir, eval_batch_size=16, **kw)


def _tree(nodes: list[tuple[str, str | None, str, float | None, dict]], artifacts: dict[str, dict] | None = None) -> Tree:
    """A tree from (id, parent, status, score, plan) rows, in order."""
    events: list[dict] = []
    for i, (nid, parent, status, score, plan) in enumerate(nodes):
        events.append({"type": "node_planned", "node_id": nid, "parent_id": parent, "plan": plan})
        if status == "succeeded":
            events.append({"type": "node_finished", "node_id": nid, "score": score, "metrics": {},
                           "cost": {"wall_seconds": 1.0}, "artifacts": (artifacts or {}).get(nid)})
        elif status == "failed":
            events.append({"type": "node_failed", "node_id": nid, "cause": "boom", "cost": {"wall_seconds": 1.0}})
        elif status == "pruned":
            events.append({"type": "node_pruned", "node_id": nid, "reason": "run ended"})
    return build(events)


def test_merged_export_matches_the_adapter(tiny_model_dir, tmp_path):
    import torch
    from peft import LoraConfig, get_peft_model
    from transformers import AutoModelForCausalLM

    from trex_ray.executor.final import export_merged, final_evaluation

    torch.manual_seed(0)
    base = AutoModelForCausalLM.from_pretrained(tiny_model_dir)
    peft_model = get_peft_model(base, LoraConfig(r=4, lora_alpha=8, target_modules=["q_proj", "v_proj"], task_type="CAUSAL_LM"))
    with torch.no_grad():  # a fresh adapter is a no-op (B = 0); make it change the model
        for name, p in peft_model.named_parameters():
            if "lora_B" in name:
                p.normal_(0, 0.5)
    adapter = tmp_path / "adapter"
    peft_model.save_pretrained(adapter)
    ids = torch.tensor([[1, 5, 9, 20, 33, 7]])
    with torch.no_grad():
        expected = peft_model(input_ids=ids).logits
        plain = AutoModelForCausalLM.from_pretrained(tiny_model_dir)(input_ids=ids).logits
    assert not torch.allclose(expected, plain, atol=1e-3)  # the adapter matters

    # the end of a run with a LoRA best node: test scores (adapter applied on the base) and the export
    tree = _tree([("n0", None, "succeeded", 0.5, PLAN),
                  ("n1", "n0", "succeeded", 0.6, PLAN | {"direction": "method", "training": {"method": "lora"}})],
                 {"n1": {"model": str(adapter)}})
    out = final_evaluation(_ctx(tiny_model_dir, tmp_path), tree.root, tree.best(), "accuracy", test_limit=8, export=True)
    assert "test_error" not in out and "export_error" not in out
    assert out["base_test_metrics"]["n"] == 8 and out["best_test_metrics"]["n"] == 8 and out["test_node"] == "n1"
    assert len((tmp_path / "nodes" / "n1" / "test_predictions.jsonl").read_text().splitlines()) == 8
    merged_dir = tmp_path / "best" / "merged"
    assert out["merged_model_dir"] == str(merged_dir)
    assert list(merged_dir.glob("*.safetensors")) and (merged_dir / "tokenizer.json").is_file()
    assert not (merged_dir / "adapter_config.json").exists()
    merged = AutoModelForCausalLM.from_pretrained(merged_dir).eval()
    with torch.no_grad():
        assert torch.allclose(merged(input_ids=ids).logits, expected, atol=1e-4)
    # a full-weights node has nothing to merge
    assert export_merged(_ctx(tiny_model_dir, tmp_path), str(tiny_model_dir), tmp_path / "none") is None


def test_final_evaluation_records_a_missing_test_split_instead_of_raising(tiny_model_dir, tmp_path):
    from trex_ray.executor.final import final_evaluation

    data = tmp_path / "data"
    data.mkdir()
    (data / "test.jsonl").write_text("")  # present but empty: the task's loader rejects it
    from dataclasses import replace

    ctx = _ctx(tiny_model_dir, tmp_path)
    ctx = replace(ctx, task=ctx.task.model_copy(update={"test_path": str(data / "test.jsonl")}))
    tree = _tree([("n0", None, "succeeded", 0.5, PLAN)])
    out = final_evaluation(ctx, tree.root, tree.best(), "accuracy", test_limit=8)
    assert out["base_test_score"] is None and out["best_test_score"] is None
    assert "test" in out["test_error"]
    assert final_evaluation(ctx, tree.root, None, "accuracy", test_limit=0) == {
        "base_test_score": None, "best_test_score": None, "test_limit": 0}


def _synthetic_tree() -> Tree:
    kid = copy.deepcopy(PLAN) | {"direction": "more_data", "training": {"method": "lora"}}
    return _tree([("n0", None, "succeeded", 0.2, PLAN), ("n1", "n0", "succeeded", 0.6, kid),
                  ("n2", "n0", "failed", None, kid), ("n3", "n0", "pruned", None, kid)])


def test_failed_and_pruned_nodes_are_drawn_apart_and_best_so_far_is_monotone(tmp_path):
    from trex_ray.report.data import RunData, best_so_far
    from trex_ray.report.page import tree_figure

    run = RunData(run_dir=tmp_path, tree=_synthetic_tree(), task="sst2", metric="accuracy")
    fig = tree_figure(run)
    traces = {t.get("name"): t for t in fig["data"] if t.get("customdata")}
    assert traces["scored"]["customdata"] == ["n0", "n1"] and traces["scored"]["marker"]["color"] == [0.2, 0.6]
    assert traces["failed"]["customdata"] == ["n2"] and traces["failed"]["marker"]["symbol"] == "x"
    assert traces["pruned"]["customdata"] == ["n3"] and traces["pruned"]["marker"]["symbol"] == "circle-open"
    assert {a["text"] for a in fig["layout"]["annotations"]} == {"more_data"}  # edges labelled with directions
    dashed = [t for t in fig["data"] if t.get("mode") == "lines" and t["line"]["dash"] == "dot"]
    assert len([x for x in dashed[0]["x"] if x is None]) == 1  # one dashed edge: the pruned node's
    pts = best_so_far(run)
    assert [p["trial"] for p in pts] == [0, 1, 2] and [p["best"] for p in pts] == [0.2, 0.6, 0.6]
    assert [p["compute_s"] for p in pts] == [1.0, 2.0, 3.0]


LINE = re.compile(
    r"^(start   n\d+\s+parent=\S+\s+\S+\s+.*"
    r"|train   n\d+\s+step \d+/\S+ loss \d+\.\d{4}"
    r"|eval    n\d+\s+\d+/\d+ dev examples"
    r"|data    n\d+\s+building the recipe"
    r"|expand  n\d+\s+\(the Researcher is proposing children\)"
    r"|planned (n\d+(, n\d+)*|nothing) under n\d+ \(\w+\)"
    r"|done    n\d+\s+(base model )?\w+=\d+\.\d{4}.*"
    r"|FAILED  n\d+\s+.*"
    r"|status  runs \d+ done, \d+ failed, \d+ running \| best (\d+\.\d{4}( \[\d\.\d{4}, \d\.\d{4}\])? \(n\d+\)|-)"
    r" \| spent \d+(/\d+)? (example-epochs|accelerator-s) \(((r\d+ \d+)(, r\d+ \d+)*|-)\) \| \d+s elapsed)$"
)


def test_live_view_prints_one_parseable_line_per_event(caplog):
    from trex_ray.report.live import LiveView

    plan = Plan.model_validate({"direction": "method", "recipe": {"steps": [
        {"op": "load"}, {"op": "format", "prompt": "{input}", "completion": "{reference}"}]}, "training": {"method": "lora"}})
    view = LiveView("accuracy", 2)
    events = [
        ("started", {"node_id": "n0", "plan": plan.model_dump(mode="json") | {"direction": "baseline", "training": None}}),
        ("finished", {"node_id": "n0", "phase": "done", "score": 0.25, "cost": {"wall_seconds": 3}}),
        ("expanding", {"node_id": "n0"}),
        ("expanded", {"node_id": "n0", "children": ["n1", "n2"], "source": "builtin"}),
        ("started", {"node_id": "n1", "parent_id": "n0", "plan": plan.model_dump(mode="json")}),
        ("progress", {"node_id": "n1", "phase": "data"}),
        ("progress", {"node_id": "n1", "phase": "train", "step": 3, "max_steps": 8, "loss": 1.5}),
        ("progress", {"node_id": "n1", "phase": "eval", "evaluated": 16, "total": 32}),
        ("finished", {"node_id": "n1", "phase": "done", "score": 0.5, "cost": {"wall_seconds": 9.5}}),
        ("finished", {"node_id": "n2", "phase": "failed", "error": "RuntimeError: out of memory\nmore"}),
    ]
    with caplog.at_level(logging.INFO, logger="trex_ray.live"):
        for kind, info in events:
            view.event(kind, info)
    lines = [r.getMessage() for r in caplog.records if r.name == "trex_ray.live"]
    assert len(lines) >= len(events)
    bad = [l for l in lines if "\n" in l.strip() or "\x1b" in l or not LINE.match(l)]
    assert not bad, bad
    assert lines[-1].startswith("status  runs 1 done, 1 failed, 0 running | best 0.5000 (n1) | spent 0 example-epochs (r0 0)")


def test_live_report_follows_the_state_and_never_breaks_it(tmp_path, monkeypatch):
    import trex_ray.report.page as page

    def views(run_dir, tree):  # what the driver hands the TreeState: the report, from the live tree
        page.write_report(run_dir, tree)

    s = make_state(tmp_path, max_trials=2, children_per_expansion=2, on_change=views)
    s.next_node("t0")
    s.finish("n0", outcome(0.5))
    md = (tmp_path / "report.md").read_text()
    assert "in progress" in md and "| n0 |" in md and (tmp_path / "report.html").is_file()
    assert s.begin_expansion().node_id == "n0"
    kid = {"direction": "more_data", "training": {"method": "lora"},
           "recipe": {"steps": [{"op": "load"}, {"op": "format", "prompt": "{input}", "completion": "{reference}"}]}}
    assert s.add_children("n0", proposal([kid], "test")) == ["n1"]

    def broken(run_dir, tree=None):  # a report bug must not stop the run
        raise RuntimeError("boom")

    monkeypatch.setattr(page, "write_report", broken)
    s.fail("n1", "RuntimeError: out of memory")
    assert s.tree.nodes["n1"].status == "failed"
    assert "n1" not in (tmp_path / "report.md").read_text()  # the old report stays until the next good write


def test_model_card_names_the_licence_of_every_data_source():
    from ftbench.tasks import get_task
    from trex_ray.report.hub import data_licences

    plan = Plan.model_validate({"direction": "more_data", "training": {"method": "lora"}, "recipe": {"steps": [
        {"op": "load"}, {"op": "concat", "sources": [{"source": "hub:org/extra"}, {"source": "/data/mine.jsonl"}]},
        {"op": "format", "prompt": "{input}", "completion": "{reference}"}]}})
    lines = data_licences(plan, get_task("sst2"))
    assert len(lines) == 3 and get_task("sst2").licence in lines[0]
    # a local file is named, never its folder: a pushed card must not publish the machine's paths
    assert "org/extra" in lines[1] and "mine.jsonl" in lines[2] and "/data/" not in lines[2]


def test_trackers_are_checked_before_ray_starts(monkeypatch):
    import sys

    import pytest

    from trex_ray.config import ConfigError, load_config
    from trex_ray.trackers import check_trackers, tracker_names, wandb_mode

    cfg = load_config(None, ["--run.tracker=[wandb,mlflow,wandb]"])
    assert tracker_names(cfg) == ["wandb", "mlflow"]
    monkeypatch.delenv("WANDB_API_KEY", raising=False)
    assert wandb_mode(cfg) == "offline"  # no key: offline, never a failed login mid-run
    check_trackers(cfg)
    monkeypatch.setenv("WANDB_API_KEY", "k" * 40)
    assert wandb_mode(cfg) == "online"
    assert wandb_mode(load_config(None, ["--run.tracker=wandb", "--run.wandb_mode=offline"])) == "offline"
    monkeypatch.delenv("WANDB_API_KEY")
    with pytest.raises(ConfigError, match="run.wandb_mode=online needs the WANDB_API_KEY environment variable"):
        check_trackers(load_config(None, ["--run.tracker=wandb", "--run.wandb_mode=online"]))
    monkeypatch.setitem(sys.modules, "wandb", None)  # as if wandb were not installed
    with pytest.raises(ConfigError, match=r"run.tracker=wandb needs wandb: pip install wandb"):
        check_trackers(cfg)
    check_trackers(load_config(None, ["--run.tracker=tensorboard"]))  # TensorBoard needs nothing extra


def test_model_card_names_the_hub_base_model_and_the_run(tmp_path):
    """The builtin model is named by its Hub id (with how it was made), the card says which run
    it came from, and local data paths are reduced to file names."""
    from ftbench.tasks import get_task
    from trex_ray.config import Config
    from trex_ray.report.hub import model_card

    kid = PLAN | {"direction": "more_data", "training": {"method": "lora"}, "recipe": {"steps": [
        {"op": "load"}, {"op": "concat", "sources": [{"source": "/home/alice/secret/extra.jsonl"}]},
        {"op": "format", "prompt": "{input}", "completion": "{reference}"}]}}
    tree = _tree([("n0", None, "succeeded", 0.5, PLAN), ("n1", "n0", "succeeded", 0.7, kid)])
    summary = {"best_node": "n1", "trials": 1, "base_score": 0.5, "best_score": 0.7}
    card = model_card(Config(), get_task("sst2"), tree, summary, "20261130-190000")
    assert 'base_model: "HuggingFaceTB/SmolLM2-135M-Instruct"' in card and "dequantised from the Q4_1" in card
    assert "Node `n1` of run `20261130-190000`" in card and "None" not in card.split("## Scores")[0]
    assert "extra.jsonl" in card and "/home/alice" not in card
