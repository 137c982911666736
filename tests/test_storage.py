"""Run storage on an object store: a REAL S3-compatible server (moto's, on 127.0.0.1) reached
through pyarrow.fs, exactly as s3:// storage is reached on a cluster. The search's trials put
their node folders, the recipe cache and Tune's results there; the driver keeps only its ledger
and views (mirrored to the bucket) and downloads the best model."""

from __future__ import annotations

import json
import os
import subprocess
import sys
import time
from pathlib import Path

import pytest

from conftest import BUCKET


def _files(fs, path: str) -> list[str]:
    import pyarrow.fs as pafs

    infos = fs.get_file_info(pafs.FileSelector(path, recursive=True, allow_not_found=True))
    return sorted(i.path[len(path) + 1:] for i in infos if i.type == pafs.FileType.File)


def test_storage_roundtrip_and_fetch(s3, tmp_path):
    from trex_ray.storage import RunStorage, fetch, run_storage_uri

    base, fs = s3
    uri = run_storage_uri(base, tmp_path / "r1")
    assert uri.startswith(f"s3://{BUCKET}/runs/r1?") and "endpoint_override" in uri
    store = RunStorage(uri)
    assert store.remote and store.display() == f"s3://{BUCKET}/runs/r1"
    store.write_bytes("a/b.json", b'{"x": 1}')
    assert store.exists("a/b.json") and store.read_bytes("a/b.json") == b'{"x": 1}'
    assert store.list_dir("a") == ["b.json"] and store.list_dir("nothing") == []

    src = tmp_path / "model"
    (src / "sub").mkdir(parents=True)
    (src / "w.bin").write_bytes(os.urandom(1000))
    (src / "sub" / "c.txt").write_text("hello")
    store.upload_dir(src, "nodes/n1/model")
    assert _files(fs, f"{BUCKET}/runs/r1/nodes/n1/model") == ["sub/c.txt", "w.bin"]
    got = fetch(store.uri_for("nodes/n1/model"), tmp_path / "dl")
    assert (got / "w.bin").read_bytes() == (src / "w.bin").read_bytes() and (got / "sub" / "c.txt").read_text() == "hello"
    # a local path is used in place, never copied
    assert fetch(str(src), tmp_path / "unused") == src and not (tmp_path / "unused").exists()


def test_recipe_cache_on_object_storage_is_shared_and_hits(s3, shared_data, tmp_path):
    from ftbench.tasks import get_task
    from trex_ray.search.plan import Recipe
    from trex_ray.recipes.build import build_recipe
    from trex_ray.storage import RunStorage, run_storage_uri

    base, fs = s3
    store = RunStorage(run_storage_uri(base, tmp_path / "r2"))
    paths = {"data_dir": str(shared_data / "sst2"), "train": None, "dev": None, "test": None}
    recipe = Recipe.model_validate({"steps": [
        {"op": "load"}, {"op": "subsample", "n": 50, "seed": 1},
        {"op": "format", "prompt": "Review: {input}\nSentiment:", "completion": "{reference}"}]})
    ds1, st1 = build_recipe(recipe, get_task("sst2"), paths, store.uri_for("recipe_cache"))
    objects = _files(fs, f"{BUCKET}/runs/r2/recipe_cache")
    assert len(objects) >= 3 and all(o.endswith(".parquet") for o in objects)
    ds2, st2 = build_recipe(recipe, get_task("sst2"), paths, store.uri_for("recipe_cache"))
    assert st1["cache"]["hits"] == 0 and st2["cache"]["hits"] == len(recipe.steps)
    assert ds1[:] == ds2[:]


def test_unwritable_storage_is_one_clear_error_before_ray(s3, tmp_path):
    base, _ = s3
    bad = base.replace(f"s3://{BUCKET}/", "s3://no-such-bucket/")
    r = subprocess.run([sys.executable, "launch.py", f"--run.storage={bad}", f"--run.output_dir={tmp_path}"],
                       cwd=Path(__file__).resolve().parents[1], capture_output=True, text=True, timeout=120)
    assert r.returncode == 2, r.stderr
    lines = [l for l in r.stderr.splitlines() if l.strip()]
    assert len(lines) == 1 and lines[0].startswith("error: run.storage s3://no-such-bucket/runs is not writable"), r.stderr
    assert "Traceback" not in r.stderr and "testing" not in r.stderr  # no credentials echoed
    assert not any(tmp_path.iterdir())


@pytest.mark.slow
def test_search_writes_trials_to_object_storage_and_resumes_from_it(s3, tiny_model_dir, tmp_path):
    """A real search whose trials write only to the bucket: the driver's run directory holds the
    ledger and views, never node folders or the recipe cache; the best model comes back from the
    bucket; the mirrored run resumes on a "new machine" (another local folder) from its URI."""
    from test_search import tiny_args
    from trex_ray.config import load_config
    from trex_ray.search.ledger import read_events
    from trex_ray.run import run_search

    base, fs = s3
    cfg = load_config(None, tiny_args(tiny_model_dir, tmp_path / "driver", "s3run", trials=2)
                      + [f"--run.storage={base}", "--task.test_limit=8"])
    summary = run_search(cfg)
    run = tmp_path / "driver" / "s3run"
    tree = json.loads((run / "tree.json").read_text())
    trained = [n for n in tree["nodes"] if n["parent_id"]]
    assert summary["trials"] == 2 and all(n["status"] == "succeeded" for n in trained)

    # trials wrote to the bucket only
    prefix = f"{BUCKET}/runs/s3run"
    objects = _files(fs, prefix)
    for n in trained:
        assert n["artifacts"]["model"].startswith(f"s3://{prefix}/nodes/{n['id']}/model")
        assert any(o.startswith(f"nodes/{n['id']}/model/") for o in objects)
        assert f"nodes/{n['id']}/dev_predictions.jsonl" in objects
    assert any(o.startswith("recipe_cache/") and o.endswith(".parquet") for o in objects)
    assert any(o.startswith("tune/search-0/") for o in objects)
    assert f"nodes/{tree['root']}/test_predictions.jsonl" in objects  # the final evaluation's too
    assert not (run / "nodes").exists() and not (run / "recipe_cache").exists() and not (run / "tune").exists()

    # the best model came back to the driver and loads; the views are mirrored
    from ftbench.evaluate import load_model

    model, _ = load_model(str(run / "best"))
    assert model is not None and summary["best_test_score"] is not None
    for name in ("events.jsonl", "tree.json", "summary.json", "config.yaml"):
        assert name in objects
    assert fs.open_input_stream(f"{prefix}/events.jsonl").read() == (run / "events.jsonl").read_bytes()

    # resume on another machine from the URI alone: nothing is re-run, the ledger carries on
    from trex_ray.run import run_search as resume_search

    ledger_before = (run / "events.jsonl").read_bytes()
    other = tmp_path / "other-machine"
    os.chdir(tmp_path)  # fetch_run uses run.output_dir of no config: "runs" under the cwd
    try:
        again = resume_search(resume=base.replace("/runs?", "/runs/s3run?"))
    finally:
        os.chdir(Path(__file__).resolve().parents[1])
    local = tmp_path / "runs" / "s3run"
    events = list(read_events(local / "events.jsonl"))
    assert (local / "events.jsonl").read_bytes().startswith(ledger_before)
    assert sum(e["type"] == "node_started" for e in events) == sum(
        e["type"] == "node_started" for e in read_events(run / "events.jsonl"))
    assert again["trials"] == 2 and again["resumed"] and not other.exists()


def test_shared_filesystem_storage_is_used_in_place(tmp_path):
    """run.storage on a shared mount (NFS): trials write there directly, nothing is uploaded,
    and the run's own directory stays the driver's."""
    from core_helpers import trial_context
    from trex_ray.executor.context import node_dir, publish_node
    from trex_ray.storage import RunStorage, run_storage_uri

    nfs, run_dir = tmp_path / "nfs", tmp_path / "runs" / "r3"
    uri = run_storage_uri(str(nfs), run_dir)
    assert uri == str((nfs / "r3").resolve()) and not RunStorage(uri).remote
    assert run_storage_uri(None, run_dir) == str(run_dir)  # no storage: the run directory itself
    ctx = trial_context("unused", run_dir, storage=uri, dev_limit=1)
    out = node_dir(ctx, "n4")
    assert out == (nfs / "r3" / "nodes" / "n4").resolve()
    arts = {"model": str(out / "model")}
    assert publish_node(ctx, "n4", out, arts) == arts
    assert ctx.recipe_cache == str((nfs / "r3" / "recipe_cache").resolve())
