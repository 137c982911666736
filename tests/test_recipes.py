"""The data recipe operators: each op on small real and made-up data, the step cache,
determinism, decontamination, bad inputs (each a clear RecipeError naming the step), the dry-run
CLI, and the built-in policy's data_quality proposals."""

from __future__ import annotations

import dataclasses
import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

datasets = pytest.importorskip("datasets")
datasets.disable_progress_bars()

from ftbench.tasks.sst2 import SST2  # noqa: E402
from trex_ray.search.plan import parse_plan  # noqa: E402
from trex_ray.recipes.build import Decontaminator, RecipeError, build_recipe  # noqa: E402
from trex_ray.recipes.ops import Recipe  # noqa: E402

REPO = Path(__file__).resolve().parents[1]
FMT = {"op": "format", "prompt": "Review: {input}", "completion": "{reference}"}


def recipe(*steps: dict, **kw) -> Recipe:
    return Recipe.model_validate({"steps": [*steps], **kw})


def write_jsonl(path: Path, rows: list[dict]) -> Path:
    path.write_text("".join(json.dumps(r) + "\n" for r in rows), encoding="utf-8")
    return path


def row(i: int, text: str, label: int = 0) -> dict:
    return {"id": f"r{i}", "input": text, "label": label, "reference": ["negative", "positive"][label]}


WORDS = "alpha bravo charlie delta echo foxtrot golf hotel india juliet kilo lima mike november oscar papa".split()


def sentence(i: int, n: int = 8) -> str:
    """A distinct sentence per i (no shared 13-gram with another i)."""
    return " ".join(f"{WORDS[(i + k) % len(WORDS)]}{i}" for k in range(n))


@pytest.fixture
def data(tmp_path) -> dict:
    """A tiny SST-2-shaped task folder (train/dev/test) the tests control row by row."""
    train = [row(i, sentence(i), i % 2) for i in range(40)]
    write_jsonl(tmp_path / "train.jsonl", train)
    write_jsonl(tmp_path / "dev.jsonl", [row(100 + i, sentence(100 + i), i % 2) for i in range(5)])
    write_jsonl(tmp_path / "test.jsonl", [row(200 + i, sentence(200 + i), i % 2) for i in range(5)])
    return {"dir": tmp_path, "paths": {"data_dir": str(tmp_path)}, "train": train}


def build(r: Recipe, data: dict, **kw):
    return build_recipe(r, SST2, data["paths"], **kw)


def texts(ds) -> list[str]:
    return [p[0]["content"] for p in ds["prompt"]]


# ---------------------------------------------------------------- schema
@pytest.mark.parametrize("steps, field", [
    ([{"op": "load"}, {"op": "shell", "cmd": "ls"}, FMT], "plan.recipe.steps.1"),
    ([{"op": "load"}, {"op": "filter_length", "column": "input", "min": 5, "max": 2}, FMT], "filter_length"),
    ([{"op": "load"}, {"op": "filter_regex", "column": "input", "pattern": "a" * 201}, FMT], "filter_regex.pattern"),
    ([{"op": "load"}, {"op": "filter_regex", "column": "input", "pattern": "(unclosed"}, FMT], "filter_regex.pattern"),
    ([{"op": "mix", "sources": [{"ratio": 0.5}, {"ratio": 0.4}]}, FMT], "mix ratios must sum to 1"),
    ([{"op": "load"}, {"op": "load"}, FMT], "load/mix only starts"),
    ([{"op": "load"}, {"op": "dedup_near", "column": "input", "num_perm": 4}, FMT], "dedup_near.num_perm"),
])
def test_bad_ops_are_rejected_naming_the_field(steps, field):
    with pytest.raises(ValueError) as e:
        parse_plan({"direction": "data_quality", "recipe": {"steps": steps}, "training": {}})
    assert field in str(e.value)


# ---------------------------------------------------------------- sources
def test_load_local_formats_agree(data, tmp_path):
    import pyarrow as pa
    import pyarrow.csv as pcsv
    import pyarrow.parquet as pq

    table = pa.Table.from_pylist(data["train"])
    pq.write_table(table, tmp_path / "t.parquet")
    pcsv.write_csv(table, tmp_path / "t.csv")
    with pa.OSFile(str(tmp_path / "t.arrow"), "wb") as f, pa.ipc.new_stream(f, table.schema) as w:
        w.write_table(table)
    out = {}
    for name in ("train.jsonl", "t.parquet", "t.csv", "t.arrow"):
        ds, st = build(recipe({"op": "load", "source": str(tmp_path / name)}, FMT), data)
        out[name] = texts(ds)
        assert st["steps"][0]["rows_out"] == 40
    assert len({tuple(v) for v in out.values()}) == 1


def test_load_task_train_on_shared_data(shared_data):
    ds, st = build_recipe(recipe({"op": "load"}, {"op": "subsample", "n": 50},
                                 {"op": "format", "prompt": "{input}", "completion": "{reference}"}),
                          dataclasses.replace(SST2, local_dir=shared_data / "sst2"), {})
    assert st["steps"][0]["rows_out"] > 60_000 and len(ds) <= 50 and set(ds.column_names) == {"prompt", "completion", "label"}


def test_hub_source_offline_names_the_local_path_option(data, monkeypatch):
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    with pytest.raises(RecipeError, match=r"step 0 \(load\).*local path"):
        build(recipe({"op": "load", "source": "hub:nobody/no-such-dataset-xyz"}, FMT), data)


def test_concat_with_rename_and_select(data, tmp_path):
    other = write_jsonl(tmp_path / "other.jsonl", [{"text": f"extra text {i}", "reference": "positive", "label": 1} for i in range(7)])
    r = recipe({"op": "load"}, {"op": "concat", "sources": [{"source": str(other), "rename": {"text": "input"}}]},
               {"op": "select", "columns": ["input", "reference", "label"]}, {"op": "rename", "columns": {"input": "review"}},
               {"op": "format", "prompt": "Review: {review}", "completion": "{reference}"}, decontaminate=False)
    ds, st = build(r, data)
    assert len(ds) == 47 and "Review: extra text 6" in texts(ds)
    assert [s["rows_out"] for s in st["steps"]] == [40, 47, 47, 47, 47]


def test_mix_by_ratio_is_seeded(data, tmp_path):
    other = write_jsonl(tmp_path / "other.jsonl", [row(500 + i, f"other {i}", 1) for i in range(30)])
    def mixed(seed: int):
        r = recipe({"op": "mix", "n": 20, "seed": seed, "sources": [{"ratio": 0.75}, {"source": str(other), "ratio": 0.25}]}, FMT)
        return texts(build(r, data)[0])
    a, b = mixed(0), mixed(0)
    assert a == b and len(a) == 20 and sum("other" in t for t in a) == 5
    assert mixed(1) != a
    with pytest.raises(RecipeError, match=r"step 0 \(mix\): source 0 \(task:train\) has 40 rows"):
        build(recipe({"op": "mix", "n": 200, "sources": [{"ratio": 0.5}, {"source": str(other), "ratio": 0.5}]}, FMT), data)


# ---------------------------------------------------------------- filtering and sizing
def test_filters(data, tmp_path):
    rows = [row(0, "short"), row(1, "a much longer review with many words in it", 1), row(2, "   "),
            row(3, "spam spam spam spam spam spam spam spam", 1), row(4, "$$$ ### 123 456 %%% @@@"),
            row(5, "Great film, truly", 1), row(6, "GREAT film,  truly!", 1)]
    src = write_jsonl(tmp_path / "f.jsonl", rows)

    def run(step: dict) -> list[str]:
        return [t.removeprefix("Review: ") for t in texts(build(recipe({"op": "load", "source": str(src)}, step, FMT,
                                                                       decontaminate=False), data)[0])]

    assert run({"op": "filter_length", "column": "input", "min": 10, "max": 30}) == [rows[i]["input"] for i in (4, 5, 6)]
    assert run({"op": "filter_length", "column": "input", "unit": "tokens", "min": 5}) == [rows[i]["input"] for i in (1, 3, 4)]
    assert run({"op": "filter_regex", "column": "input", "pattern": r"\bfilm\b", "ignore_case": True}) == [rows[5]["input"], rows[6]["input"]]
    assert len(run({"op": "filter_regex", "column": "input", "pattern": "film", "mode": "drop"})) == 5
    assert len(run({"op": "filter_labels", "keep": [1]})) == 4
    assert len(run({"op": "filter_labels", "column": "reference", "keep": ["negative"]})) == 3
    q = run({"op": "filter_quality", "column": "input"})
    assert rows[3]["input"] not in q and rows[4]["input"] not in q and rows[1]["input"] in q and len(q) == 5
    assert rows[2]["input"] not in run({"op": "drop_empty"}) and len(run({"op": "drop_empty"})) == 6
    assert run({"op": "dedup_exact", "columns": ["input"]}).count("GREAT film,  truly!") == 0


def test_dedup_near_on_shared_sst2(shared_data, tmp_path, data):
    src = shared_data / "sst2" / "train.jsonl"
    base = [json.loads(x)["input"] for x in src.read_text(encoding="utf-8").splitlines()[:300]]
    long = [t for t in base if len(t.split()) >= 12][:20]
    planted = [t.replace(" ", "  ").rstrip(" .") + " indeed" for t in long]  # near copies
    f = write_jsonl(tmp_path / "near.jsonl", [row(i, t) for i, t in enumerate(base + planted)])
    ds, st = build(recipe({"op": "load", "source": str(f)}, {"op": "dedup_near", "column": "input", "threshold": 0.7},
                          FMT, decontaminate=False), data)
    dropped = st["steps"][1]["near_duplicates"]
    assert 20 <= dropped <= 20 + 15  # the planted copies, plus at most a few real near-duplicates
    assert not any(t.endswith("indeed") for t in texts(ds))


def test_balance_subsample_and_global_cap(data):
    ds, st = build(recipe({"op": "load"}, {"op": "filter_labels", "keep": [0, 1]}, {"op": "subsample", "n": 30, "seed": 3},
                          {"op": "balance_labels", "max_per_label": 9}, FMT, max_rows=15), data)
    assert st["steps"][3]["labels_after"] == {"0": 9, "1": 9} and st["capped"] == {"from": 18, "to": 15} and len(ds) == 15
    _, st = build(recipe({"op": "load", "source": str(write_jsonl(data["dir"] / "skew.jsonl",
                  [row(i, sentence(i), int(i < 4)) for i in range(30)]))}, {"op": "balance_labels"}, FMT), data)
    assert st["labels"] == {"0": 4, "1": 4}


def test_same_seed_same_rows(data):
    r = recipe({"op": "load"}, {"op": "subsample", "n": 25, "seed": 7}, {"op": "dedup_near", "column": "input"}, FMT)
    a, b = build(r, data)[0], build(r, data)[0]
    assert a.to_list() == b.to_list()
    c = build(recipe({"op": "load"}, {"op": "subsample", "n": 25, "seed": 8}, FMT), data)[0]
    assert texts(c) != texts(a)


# ---------------------------------------------------------------- cache
def test_cache_hits_on_rerun_and_shared_prefix(data, tmp_path):
    cache = tmp_path / "cache"
    parent = recipe({"op": "load"}, {"op": "dedup_exact"}, {"op": "subsample", "n": 20}, FMT)
    ds1, st1 = build(parent, data, cache_dir=cache)
    assert st1["cache"] == {"hits": 0, "misses": 4} and len(list(cache.glob("*.parquet"))) == 4
    ds2, st2 = build(parent, data, cache_dir=cache)
    assert st2["cache"] == {"hits": 4, "misses": 0} and ds2.to_list() == ds1.to_list()
    assert st2["steps"] == st1["steps"] and st2["decontamination"] == st1["decontamination"]
    child = recipe({"op": "load"}, {"op": "dedup_exact"}, {"op": "subsample", "n": 10}, FMT)
    _, st3 = build(child, data, cache_dir=cache)
    assert st3["cache"] == {"hits": 2, "misses": 2}
    assert not [p for p in cache.iterdir() if p.suffix != ".parquet"]  # no temporary files left
    # the data changes: the old entries no longer match
    write_jsonl(data["dir"] / "train.jsonl", data["train"][:30])
    _, st4 = build(parent, data, cache_dir=cache)
    assert st4["cache"]["hits"] == 0 and st4["steps"][0]["rows_out"] == 30


def test_corrupt_cache_entry_is_rebuilt_and_failed_steps_write_nothing(data, tmp_path):
    cache = tmp_path / "cache"
    r = recipe({"op": "load"}, {"op": "subsample", "n": 20}, FMT)
    ds1, _ = build(r, data, cache_dir=cache)
    for p in cache.glob("*.parquet"):
        p.write_bytes(b"not parquet")
    ds2, st = build(r, data, cache_dir=cache)
    assert st["cache"] == {"hits": 0, "misses": 3} and ds2.to_list() == ds1.to_list()
    before = set(cache.iterdir())
    with pytest.raises(RecipeError):
        build(recipe({"op": "load"}, {"op": "filter_length", "column": "input", "min": 10_000}, FMT), data, cache_dir=cache)
    assert set(cache.iterdir()) == before  # the load's output was stored already; the empty result never is


# ---------------------------------------------------------------- decontamination
def test_decontamination_catches_planted_overlaps_only(data):
    dev_text = sentence(100)
    test_words = sentence(201, 20)
    write_jsonl(data["dir"] / "test.jsonl", [row(200, test_words)])
    planted = [row(900, dev_text.upper() + " !"), row(901, "prefix words " + " ".join(test_words.split()[2:17]) + " suffix")]
    write_jsonl(data["dir"] / "train.jsonl", data["train"] + planted)
    ds, st = build(recipe({"op": "load"}, FMT), data)
    assert st["decontamination"] == {"dropped": 2, "ngram": 13} and len(ds) == 40
    checker = Decontaminator([{"input": dev_text}], ["input"], 13)
    assert not any(checker.contaminated(r) for r in data["train"])
    _, off = build(recipe({"op": "load"}, FMT, decontaminate=False), data)
    assert off["decontamination"] == "off (turned off by the recipe)" and off["rows"] == 42


def test_instruction_wording_in_a_field_matches_nothing_but_an_items_content_does():
    """CS-Bench's prompt field carries its instruction: where it meets an item's first or last
    words, 13-grams are mostly wording and must not count as overlap; an item's own words do."""
    head = "this is a multiple choice question please read the question carefully and choose the correct answer question"
    tail = "please provide the answer to this question directly a single letter"
    items = [sentence(300 + i, 14) for i in range(40)]
    evals = [{"prompt": f"{head} {q} {tail}"} for q in items]
    checker = Decontaminator(evals, ["prompt"], 13)
    assert checker.boilerplate > 0
    # a new question in the same wording: its first and last words meet the wording as the eval rows' do
    fresh = [{"prompt": f"{head} {items[i].split()[0]} {sentence(900 + i, 12)} {items[i].split()[-1]} {tail}"}
             for i in range(40)]
    assert not any(checker.contaminated(r) for r in fresh)
    copied = {"prompt": f"{head} " + " ".join(items[3].split()[:13]) + " and more"}
    assert checker.contaminated(copied) and checker.contaminated(evals[7])


# ---------------------------------------------------------------- bad input
@pytest.mark.parametrize("steps, match", [
    ([{"op": "load"}, {"op": "filter_quality", "column": "text"}, FMT], r"step 1 \(filter_quality\): column\(s\) text not in the data"),
    ([{"op": "load"}, {"op": "format", "prompt": "{nope}", "completion": "{reference}"}], r"step 1 \(format\): template names column\(s\) nope"),
    ([{"op": "load"}, {"op": "filter_labels", "keep": ["7"]}, FMT], r"step 1 \(filter_labels\): no rows left"),
    ([{"op": "load", "source": "/no/such/file.jsonl"}, FMT], r"step 0 \(load\): file not found"),
    ([{"op": "load"}, {"op": "filter_regex", "column": "input", "pattern": "(a|aa)+$"}, FMT], r"step 1 \(filter_regex\).*took over"),
])
def test_bad_input_names_the_step(data, steps, match):
    if "filter_regex" in str(steps):
        write_jsonl(data["dir"] / "train.jsonl", [row(0, "a" * 40 + "b")])
    with pytest.raises(RecipeError, match=match):
        build(recipe(*steps), data)


def test_unreadable_and_non_utf8_files(data, tmp_path):
    (tmp_path / "bad.parquet").write_bytes(b"PAR1 garbage")
    (tmp_path / "latin.jsonl").write_bytes('{"input": "caf\u00e9"}\n'.encode("latin-1"))
    (tmp_path / "x.txt").write_text("hi")
    for name, match in [("bad.parquet", "cannot read"), ("latin.jsonl", "not UTF-8 text"), ("x.txt", "unsupported file type")]:
        with pytest.raises(RecipeError, match=rf"step 0 \(load\).*{match}"):
            build(recipe({"op": "load", "source": str(tmp_path / name)}, FMT), data)


def test_huge_row_is_skipped_and_counted(data, tmp_path):
    f = write_jsonl(tmp_path / "huge.jsonl", [row(0, "x" * 10_000_000), *data["train"][:5]])
    cache = tmp_path / "cache"
    ds, st = build(recipe({"op": "load", "source": str(f)}, FMT), data, cache_dir=cache)
    assert len(ds) == 5 and st["skipped_huge_rows"] == 1
    assert build(recipe({"op": "load", "source": str(f)}, FMT), data, cache_dir=cache)[1]["cache"]["hits"] == 2


# ---------------------------------------------------------------- dry run and policy
def test_check_cli(data, tmp_path):
    good = tmp_path / "plan.yaml"
    good.write_text(json.dumps({"direction": "data_quality", "training": {}, "recipe": {"steps": [
        {"op": "load"}, {"op": "dedup_exact", "columns": ["input"]}, {"op": "subsample", "n": 5}, FMT]}}))
    bad = tmp_path / "bad.yaml"
    bad.write_text("steps:\n  - {op: load}\n  - {op: balance_labels, column: stars}\n"
                   "  - {op: format, prompt: '{input}', completion: '{reference}'}\n")
    env = {**os.environ, "PYTHONPATH": str(REPO)}

    def cli(path: Path) -> subprocess.CompletedProcess:
        return subprocess.run([sys.executable, "-m", "trex_ray.recipes", "check", str(path), "--task", "sst2",
                               "--data-dir", str(data["dir"]), "--rows", "10"], capture_output=True, text=True, env=env, timeout=120)

    ok = cli(good)
    assert ok.returncode == 0 and ok.stdout.startswith("ok: 5 rows") and "load 0->10" in ok.stdout
    err = cli(bad)
    assert err.returncode == 2 and err.stderr.strip().splitlines() == [
        "error: step 1 (balance_labels): column(s) stars not in the data (columns: id, input, label, reference)"]


def test_policy_data_quality_variant_builds(data):
    from trex_ray.researcher.builtin import BuiltinPolicy, first_plan
    from trex_ray.search.request import TaskSpec

    task = TaskSpec(id="sst2", description="", metric="accuracy", higher_is_better=True,
                    prompt_template="Review: {input}", completion_template="{reference}", train_rows=40,
                    columns=["id", "input", "label", "reference"])
    from trex_ray.config import TrainConfig

    defaults = TrainConfig(train_samples=20)
    plans = BuiltinPolicy()._variants("data_quality", first_plan(task, defaults), task, defaults, None)
    assert [s.op for s in plans[0].recipe.steps] == ["load", "drop_empty", "dedup_exact", "balance_labels", "subsample", "format"]
    ds, st = build(plans[0].recipe, data)
    assert len(ds) == 20 and st["steps"][3]["cap_per_label"] == 20
    assert BuiltinPolicy()._variants("data_quality", plans[0], task, defaults, None) == []


# ---------------------------------------------------------------- language filter
@pytest.fixture
def bilingual(shared_data, tmp_path) -> dict:
    """30 English SST-2 rows (8+ words) and, concatenated, 20 Chinese LawBench prompts plus one
    empty and one digits-only row: real FT-Bench text in two languages."""
    sst = [json.loads(x) for x in (shared_data / "sst2" / "train.jsonl").read_text(encoding="utf-8").splitlines()[:300]]
    en = write_jsonl(tmp_path / "en.jsonl", [r for r in sst if len(r["input"].split()) >= 8][:30])
    law = [json.loads(x) for x in (shared_data / "lawbench" / "test.jsonl").read_text(encoding="utf-8").splitlines()[:20]]
    zh = write_jsonl(tmp_path / "zh.jsonl", [{"id": r["id"], "prompt": r["prompt"], "reference": r["reference"]} for r in law]
                     + [{"id": "e", "prompt": "", "reference": "x"}, {"id": "d", "prompt": "12 34 !!", "reference": "y"}])
    return {"en": en, "zh": zh}


def test_filter_language_on_english_and_chinese_ftbench_rows(bilingual, data, tmp_path):
    def run(**step):
        r = recipe({"op": "load", "source": str(bilingual["en"])},
                   {"op": "concat", "sources": [{"source": str(bilingual["zh"]), "rename": {"prompt": "input"}}]},
                   {"op": "filter_language", "column": "input", **step}, FMT, decontaminate=False)
        return build(r, data, cache_dir=tmp_path / "cache")

    ds, st = run(languages=["en"])
    s = st["steps"][2]
    assert (s["rows_in"], s["rows_out"], s["dropped"], s["undetectable"]) == (52, 30, 22, 2)
    assert s["detected"] == {"en": 30, "zh": 20, "und": 2}
    assert not any("\u4e00" <= ch <= "\u9fff" for t in texts(ds) for ch in t)
    zh, st_zh = run(languages=["zh"])
    assert st_zh["steps"][2]["rows_out"] == 20 and all(any("\u4e00" <= ch <= "\u9fff" for ch in t) for t in texts(zh))
    _, st_both = run(languages=["en", "zh"], keep_undetectable=True)
    assert st_both["steps"][2]["rows_out"] == 52
    _, st_strict = run(languages=["en"], min_confidence=0.99)
    assert st_strict["steps"][2]["rows_out"] < 30  # short English reviews are detected with less confidence
    # deterministic: a rebuild (no cache) gives the same rows and the same datasets fingerprint
    again, st_again = build(recipe({"op": "load", "source": str(bilingual["en"])},
                                   {"op": "concat", "sources": [{"source": str(bilingual["zh"]), "rename": {"prompt": "input"}}]},
                                   {"op": "filter_language", "column": "input", "languages": ["en"]}, FMT,
                                   decontaminate=False), data)
    assert again.to_list() == ds.to_list() and again._fingerprint == build(recipe(
        {"op": "load", "source": str(bilingual["en"])},
        {"op": "concat", "sources": [{"source": str(bilingual["zh"]), "rename": {"prompt": "input"}}]},
        {"op": "filter_language", "column": "input", "languages": ["en"]}, FMT, decontaminate=False), data)[0]._fingerprint
    assert run(languages=["en"])[1]["cache"] == {"hits": 4, "misses": 0}


def test_filter_language_bad_input():
    with pytest.raises(ValueError, match="unknown language code.*'xx'"):
        parse_plan({"direction": "data_quality", "training": {}, "recipe": {"steps": [
            {"op": "load"}, {"op": "filter_language", "column": "input", "languages": ["en", "xx"]}, FMT]}})
