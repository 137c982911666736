"""A task without a train split (CS-Bench, LawBench, OpenFinData, GTA): its rows come from the
extra sources that fit it and from rows an LLM writes in the style of its dev examples. Dev rows
only ever seed synthesis (never trained on, copies dropped), test rows never reach the LLM, the
builtin policy's first plans are about data, and the LLM is told where the data comes from."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from ftbench.tasks import get_task
from ftbench.tasks.cs_bench import MC, TF, build_prompt
from llm_helpers import fake_server  # noqa: F401 (fixture)
from llm_helpers import llm_cfg
from trex_ray.config import TrainConfig
from trex_ray.recipes.ops import Recipe
from trex_ray.researcher.builtin import BuiltinPolicy, data_plans, first_plan
from trex_ray.researcher.context import analyze_requirements, source_rule
from trex_ray.researcher.datafit import check_sources, infer_rename, no_data_error, rate_relevance
from trex_ray.search.halving import Budget, full_steps
from trex_ray.search.request import DataSource, ExpansionRequest, TaskSpec, baseline_plan
from trex_ray.search.tree import SearchParams, Tree

FIXTURES = Path(__file__).parent / "fixtures" / "notrain"
CS = get_task("cs_bench")
WORDS = ["stack", "queue", "heap", "trie", "graph", "mutex", "cache", "socket", "kernel", "thread", "pointer", "router"]


def cs_row(i: int, kind: str) -> dict:
    """A CS-Bench row of our own (uniform schema): a distinct question per ``kind`` and ``i``."""
    w = WORDS[i % len(WORDS)]
    if i % 3 == 2:
        return {"id": f"{kind}/{i}", "format": TF, "reference": "true",
                "prompt": build_prompt(TF, f"In {kind} set {i}, a {w} is discussed in chapter {i + 7}.", None)}
    opts = {k: f"{kind} option {k} about {w} number {i}" for k in "ABCD"}
    return {"id": f"{kind}/{i}", "format": MC, "reference": "ABCD"[i % 4],
            "prompt": build_prompt(MC, f"For {kind} item {i}, which statement about the {w} holds?", opts)}


def write_jsonl(path: Path, rows: list[dict]) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text("".join(json.dumps(r, ensure_ascii=False) + "\n" for r in rows), encoding="utf-8")
    return path


@pytest.fixture
def cs_data(tmp_path) -> dict[str, str]:
    """A CS-Bench data folder as the source publishes it: dev and test, no train."""
    folder = tmp_path / "cs_bench"
    write_jsonl(folder / "dev.jsonl", [cs_row(i, "dev") for i in range(8)])
    write_jsonl(folder / "test.jsonl", [cs_row(i, "test") for i in range(8)])
    return {"data_dir": str(folder)}


def spec(sources: tuple[DataSource, ...] = (), synthesis: bool = False) -> TaskSpec:
    return TaskSpec(id="cs_bench", description=CS.description, metric="accuracy", higher_is_better=True,
                    prompt_template="{prompt}", completion_template="{reference}", train_rows=0,
                    columns=["format", "id", "prompt", "reference"], sources=sources, synthesis=synthesis, dev_rows=8)


RELATED = DataSource(source="/data/cs.jsonl", name="cs", rows=40, rename={"answer": "reference"}, relevance=0.9)
NEAR = DataSource(source="/data/cs2.jsonl", name="cs2", rows=30, relevance=0.8)
FAR = DataSource(source="/data/bio.jsonl", name="bio", rows=5000, rename={"input": "prompt"}, relevance=0.5)
FOREIGN = DataSource(source="/data/law.jsonl", name="law", rows=36, relevance=0.01)


# ---------------------------------------------------------------- the recipe's rules
@pytest.mark.parametrize("steps, error", [
    ([{"op": "load", "source": "task:dev"}, {"op": "synthesize", "mode": "generate", "columns": ["prompt"], "n": 4,
                                             "keep": "replace"}], None),
    ([{"op": "load", "source": "task:dev"}, {"op": "subsample", "n": 50},
      {"op": "synthesize", "mode": "generate", "columns": ["prompt"], "n": 4, "keep": "replace"},
      {"op": "concat", "sources": [{"source": "/x.jsonl"}]}], None),
    ([{"op": "load", "source": "task:dev"}], "synthesis examples only"),  # dev rows straight to training
    ([{"op": "load", "source": "task:dev"}, {"op": "synthesize", "mode": "generate", "columns": ["prompt"], "n": 4}],
     "synthesis examples only"),  # keep=append would keep the dev rows
    ([{"op": "load", "source": "task:dev"}, {"op": "synthesize", "mode": "paraphrase", "source_column": "prompt",
                                             "n": 4, "keep": "replace"}], "synthesis examples only"),  # reworded dev rows
    ([{"op": "load", "source": "task:dev"}, {"op": "concat", "sources": [{"source": "/x.jsonl"}]},
      {"op": "synthesize", "mode": "generate", "columns": ["prompt"], "n": 4, "keep": "replace"}], "synthesis examples only"),
    ([{"op": "load", "source": "/x.jsonl"}, {"op": "concat", "sources": [{"source": "task:dev"}]}], "only be the source of the first"),
    ([{"op": "mix", "sources": [{"source": "/x.jsonl", "ratio": 0.5}, {"source": "task:dev", "ratio": 0.5}]}],
     "only be the source of the first"),
    ([{"op": "load", "source": "task:test"}], "test is never trained on"),
])
def test_dev_rows_only_seed_synthesis(steps, error):
    data = {"steps": [*steps, {"op": "format", "prompt": "{prompt}", "completion": "{reference}"}]}
    if error is None:
        assert Recipe.model_validate(data).seeded_from_dev
        return
    with pytest.raises(ValueError, match=error):
        Recipe.model_validate(data)


def test_a_dev_seeded_recipe_keeps_decontamination_on():
    steps = [{"op": "load", "source": "task:dev"},
             {"op": "synthesize", "mode": "generate", "columns": ["prompt"], "n": 4, "keep": "replace"},
             {"op": "format", "prompt": "{prompt}", "completion": "{reference}"}]
    with pytest.raises(ValueError, match="keeps decontaminate on"):
        Recipe.model_validate({"steps": steps, "decontaminate": False})


# ---------------------------------------------------------------- which sources fit
@pytest.mark.parametrize("columns, rename, why", [
    (["prompt", "reference"], {}, ""),
    (["id", "question", "answer"], {"question": "prompt", "answer": "reference"}, ""),
    (["Prompt", "output", "label"], {"Prompt": "prompt", "output": "reference"}, ""),
    (["instruction", "question", "answer"], None, "lacks prompt (instruction and question"),  # ambiguous
    (["text", "input", "reference"], None, "lacks prompt (text and input"),
    (["prompt", "label"], None, "lacks reference (no column is it)"),
])
def test_only_unambiguous_renames_are_inferred(columns, rename, why):
    got, reason = infer_rename(columns, ["prompt", "reference"])
    assert got == rename
    assert (why in reason) and (reason == "") == (rename is not None), reason


def test_extra_sources_are_checked_and_rated_against_dev(tmp_path, cs_data):
    from ftbench.task import load_split

    extra = tmp_path / "extra"
    write_jsonl(extra / "bio" / "train.jsonl", [{"input": f"Cells of tumour {i} grow when the growth factor binds "
                                                          f"receptor {i}.", "reference": "proliferation"} for i in range(30)])
    write_jsonl(extra / "bio" / "test.jsonl", [{"input": "held out", "reference": "x"}])  # someone's test set
    write_jsonl(extra / "qa" / "train.jsonl", [{"instruction": "a", "question": "b", "answer": "c"}])  # ambiguous
    write_jsonl(extra / "cs_bench" / "dev.jsonl", [cs_row(0, "dev")])  # the task's own data by another path
    sources = [str(extra), str(FIXTURES / "cs_questions.jsonl"), str(FIXTURES / "law_cases.jsonl")]
    checks = {c.name: c for c in check_sources(CS, cs_data, sources)}
    assert set(checks) == {"bio/train", "bio/test", "qa/train", "cs_questions", "law_cases"}  # own folder left out
    assert checks["bio/test"].problem.startswith("an evaluation split found in a folder")
    assert "lacks prompt" in checks["qa/train"].problem
    assert checks["cs_questions"].rename == {"answer": "reference"} and checks["cs_questions"].rows == 40
    assert checks["bio/train"].rename == {"input": "prompt"} and checks["bio/train"].fits
    listed = list(checks.values())
    rate_relevance(CS, listed, load_split(CS, "dev", cs_data), cs_data)
    rel = {c.name: c.relevance for c in listed}
    # questions of the same kind read far more like dev than tumour biology; Chinese law, not at all
    assert rel["cs_questions"] > 0.6 > rel["bio/train"] > 0.1 > rel["law_cases"]
    assert rel["bio/test"] is None and rel["qa/train"] is None  # not fitting: not read
    assert no_data_error(CS, listed, can_synthesize=False) is None
    # alone, the Chinese cases fit the columns but not the task: the run must say so
    law = [c for c in listed if c.name == "law_cases"]
    msg = no_data_error(CS, law, can_synthesize=False)
    assert msg.startswith("task cs_bench has no train split and no extra source fits it (law_cases: its rows are "
                          "unrelated") and "llm.base_url" in msg
    assert no_data_error(CS, law, can_synthesize=True) is None
    assert no_data_error(CS, [], can_synthesize=False).startswith("task cs_bench has no train split: give task.extra_sources")


# ---------------------------------------------------------------- the builtin policy's first plans
def tree_with(task: TaskSpec, *plans) -> Tree:
    """The root (baseline) and ``plans`` as its planned children n1, n2, ..."""
    ev = [{"type": "node_planned", "node_id": "n0", "parent_id": None, "plan": baseline_plan(task).model_dump(mode="json")}]
    ev += [{"type": "node_planned", "node_id": f"n{i}", "parent_id": "n0", "plan": p.model_dump(mode="json")}
           for i, p in enumerate(plans, 1)]
    return Tree.replay([{"seq": i + 1, "ts": float(i), **e} for i, e in enumerate(ev)], SearchParams())


def root_request(task: TaskSpec, n: int) -> ExpansionRequest:
    tree = tree_with(task)
    return ExpansionRequest(node_id=tree.root_id, task=task, memory=tree.memory(tree.root_id), n=n,
                            defaults=TrainConfig(train_samples=64))


def sources_of(plan) -> list[str]:
    out = []
    for s in plan.recipe.steps:
        out += [s.source] if s.op == "load" else [x.source for x in getattr(s, "sources", None) or []]
    return out


def test_the_first_expansion_of_a_task_without_train_data_is_about_data():
    task = spec((RELATED, NEAR, FAR, FOREIGN), synthesis=True)
    plans = BuiltinPolicy().propose(root_request(task, 4))
    assert len(plans) == 4 and [p.direction for p in plans[:3]] == ["data_quality"] * 3
    mixed, both, synth = plans[:3]
    # the closest sources (within 80 % of the best), renamed to the task's columns; bio and law left out
    assert sources_of(mixed) == [RELATED.source, NEAR.source] and mixed.recipe.steps[0].rename == {"answer": "reference"}
    assert mixed.recipe.sample_cap == 64 and "relevance 0.90" in mixed.rationale
    assert sources_of(both) == ["task:dev", RELATED.source, NEAR.source] and sources_of(synth) == ["task:dev"]
    gen = next(s for s in synth.recipe.steps if s.op == "synthesize")
    assert (gen.mode, gen.keep, gen.columns, gen.n) == ("generate", "replace", ["prompt", "reference"], 64)
    assert all("task:train" not in sources_of(p) for p in plans)
    assert plans[3].training.learning_rate != plans[0].training.learning_rate  # then the knobs, from the first
    assert first_plan(task, TrainConfig(train_samples=64)) == mixed
    # more data for a synthesis plan writes more rows too
    child = BuiltinPolicy()._variants("more_data", synth, task, TrainConfig(train_samples=64), None)
    assert child and child[0].recipe.sample_cap == 128 and child[0].recipe.synthetic_rows == 128


def test_without_an_llm_the_sources_alone_and_without_sources_synthesis_alone():
    (only,) = data_plans(spec((RELATED,)), TrainConfig(train_samples=500))
    assert sources_of(only) == [RELATED.source] and only.recipe.sample_cap == 40  # never more than exist
    (syn,) = data_plans(spec((), synthesis=True), TrainConfig(train_samples=500))
    assert sources_of(syn) == ["task:dev"] and syn.recipe.synthetic_rows == 500


def test_budget_and_steps_are_estimated_without_train_rows():
    task = spec((RELATED,), synthesis=True)
    mixed, both, synth = data_plans(task, TrainConfig(train_samples=64, batch_size=8))
    assert [full_steps(p, task.data_rows) for p in (mixed, both, synth)] == [5, 8, 8]  # 40, 64, 64 rows
    from trex_ray.config import SearchConfig

    tree = tree_with(task, synth)
    assert Budget(tree, SearchConfig(rungs=[1.0]), task.data_rows).cost(tree.nodes["n1"], 0) == 8 * 8


# ---------------------------------------------------------------- what the LLM is told
def test_the_llm_is_told_there_is_no_train_split_and_where_data_comes_from():
    task = spec((RELATED,), synthesis=True)
    req = analyze_requirements(task, TrainConfig())
    data = req["data"]["available"]
    assert data["train"].startswith("none") and data["sources"][0]["source"] == RELATED.source
    assert data["sources"][0]["rename"] == {"answer": "reference"} and data["synthesis"].startswith("available")
    assert any(r.startswith("no train split") for r in req["risks"])
    rule = source_rule(task)
    assert "NO train split" in rule and "task:dev" in rule and "keep replace" in rule
    assert "task:dev" not in source_rule(spec((RELATED,)))  # no endpoint: no synthesis offered
    assert "task:train" in source_rule(TaskSpec(**{**task.__dict__, "train_rows": 100}))


# ---------------------------------------------------------------- building the rows
def test_dev_seeded_synthesis_sees_dev_only_and_drops_copies(fake_server, cs_data, tmp_path):
    from trex_ray.recipes.build import build_recipe

    dev = [cs_row(i, "dev") for i in range(8)]
    extra = write_jsonl(tmp_path / "extra.jsonl", [{"question": f"Extra question {i} about {WORDS[i]}", "answer": "B",
                                                     "choice_a": "x", "choice_b": "y"} for i in range(6)])
    calls = []

    def reply(body: dict) -> str:
        calls.append(body)
        if len(calls) == 2:  # a weak model hands back a dev row: decontamination must drop it
            return json.dumps({"prompt": dev[3]["prompt"], "reference": dev[3]["reference"]})
        return json.dumps({"prompt": build_prompt(MC, f"Generated question {len(calls)} on {WORDS[len(calls)]}s?",
                                                  {"A": "one", "B": "two", "C": "three", "D": "four"}), "reference": "C"})

    url, _ = fake_server(reply)
    # the extra source converted with derive templates (what an LLM's plan writes), after the generated rows
    recipe = Recipe.model_validate({"steps": [
        {"op": "load", "source": "task:dev"},
        {"op": "synthesize", "mode": "generate", "columns": ["prompt", "reference"], "n": 4, "keep": "replace"},
        {"op": "concat", "sources": [{"source": str(extra), "derive": {
            "prompt": "Question: {question}\n(A){choice_a}\n(B){choice_b}", "reference": "{answer}"}}]},
        {"op": "format", "prompt": "{prompt}", "completion": "{reference}"}]})
    ds, stats = build_recipe(recipe, CS, cs_data, llm=llm_cfg(url, synthesis_rpm=60_000))
    syn = next(s for s in stats["steps"] if s["op"] == "synthesize")["synthetic"]
    assert syn["requested"] == syn["accepted"] == 4
    shown = "\n".join(m["content"] for b in calls for m in b["messages"])
    assert any(r["prompt"].split("Question:")[1][:40] in shown for r in dev)  # dev rows are the examples
    assert "test item" not in shown and "test option" not in shown  # test rows never reach the LLM
    prompts = [r["prompt"][0]["content"] for r in ds]
    assert dev[3]["prompt"] not in prompts and stats["decontamination"]["dropped"] == 1
    assert sum(p.startswith("Question: Extra question") for p in prompts) == 6  # derived from the extra source
    assert sum("Generated question" in p for p in prompts) == 3 and len(ds) == 9  # boilerplate wording matched nothing
