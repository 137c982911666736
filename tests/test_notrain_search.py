"""A real search on a task without training data, to the end: CS-Bench and LawBench with the
builtin SmolLM2 model on local Ray, training rows from a local extra source (the fixtures' related
questions; the other fixture, in another language, is left out as unrelated) and from rows a
local OpenAI-compatible server writes in the style of the dev examples. Slow: minutes on 2 cores."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from llm_helpers import fake_server  # noqa: F401 (fixture)
from test_notrain import FIXTURES, write_jsonl
from trex_ray.config import load_config

pytestmark = pytest.mark.slow


def search(tmp_path: Path, task: str, data_dir: Path, llm_url: str, *extra: str) -> tuple[dict, dict]:
    from trex_ray.run import run_search

    args = [f"--task.name={task}", f"--task.data_dir={data_dir}", f"--run.output_dir={tmp_path}", f"--run.run_id={task}",
            f"--task.extra_sources=[{FIXTURES / 'cs_questions.jsonl'},{FIXTURES / 'law_cases.jsonl'}]",
            "--search.max_trials=2", "--search.children_per_expansion=2", "--search.rungs=[1.0]",
            "--task.dev_limit=6", "--task.test_limit=6", "--search.final_dev_limit=6", "--train.train_samples=4",
            "--train.eval_batch_size=6", "--train.learning_rate=0.001", f"--llm.base_url={llm_url}", "--llm.model=smollm2",
            "--llm.structured_output=llama_cpp", "--llm.concurrency=1", "--llm.max_retries=1", *extra]
    summary = run_search(load_config(None, args))
    tree = {n["id"]: n for n in json.loads((tmp_path / task / "tree.json").read_text())["nodes"]}
    return summary, tree


def sources(node: dict) -> list[str]:
    out = []
    for s in node["plan"]["recipe"]["steps"]:
        out += [s["source"]] if s["op"] == "load" else [x["source"] for x in s.get("sources") or []]
    return out


def check_run(summary: dict, tree: dict, related: str, unrelated: str) -> dict:
    """What both searches must show; returns the synthesising node."""
    assert summary["trials"] == 2 and summary["failed_trials"] == 0, summary
    n1, n2 = tree["n1"], tree["n2"]
    # the first expansion is about data: the related source (renamed to the task's columns) ...
    assert sources(n1) == [str(FIXTURES / related)] and n1["plan"]["recipe"]["steps"][0]["rename"] == {"answer": "reference"}
    # 4 rows drawn; a few of the fixture's option lists are CS-Bench's own (13 words in a row):
    # decontamination drops such rows
    st = n1["recipe_stats"]
    assert st["rows"] + st["decontamination"]["dropped"] == 4 and st["rows"] >= 2, st
    # ... and rows written from dev examples, with the same source after them; never the unrelated one
    assert sources(n2) == ["task:dev", str(FIXTURES / related)]
    assert not any(unrelated in s for n in tree.values() for s in sources(n))
    syn = next(s for s in n2["recipe_stats"]["steps"] if s["op"] == "synthesize")["synthetic"]
    assert syn["requested"] == 4 and syn["accepted"] >= 2
    assert all(n["score"] is not None for n in (tree["n0"], n1, n2))
    assert summary["base_test_score"] is not None and summary["best_test_score"] is not None
    return n2


def test_cs_bench_search_from_extra_source_and_real_llm_synthesis(tmp_path, shared_data, llama_url):
    # the published dev and test, whole: decontamination tells the instruction wording many rows
    # share from an item's content by how many rows hold it (a cut of a few dozen rows cannot)
    folder = tmp_path / "data" / "cs_bench"
    for split in ("dev", "test"):
        rows = (shared_data / "cs_bench" / f"{split}.jsonl").read_text(encoding="utf-8").splitlines()
        write_jsonl(folder / f"{split}.jsonl", [json.loads(x) for x in rows])
    summary, tree = search(tmp_path, "cs_bench", folder, llama_url, "--llm.max_tokens=400", "--llm.temperature=0.7")
    check_run(summary, tree, "cs_questions.jsonl", "law_cases")
    card = (tmp_path / "cs_bench" / "best" / "README.md").read_text()
    assert "cs_questions.jsonl" in card or "style of cs_bench dev examples" in card
