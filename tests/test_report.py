"""The end of a run on a real tiny search: report.html/.md, test-split scores, the exported best
model and its card, TensorBoard, MLflow and W&B (offline) files, the push of best/ to a (fake,
local) Hub; then the page in a real headless Chromium."""

from __future__ import annotations

import importlib.util
import json
import re
import shutil
import struct
from pathlib import Path

import pytest

from test_push import TOKEN, FakeHub, assert_uploaded
from test_search import tiny_args
from trex_ray.config import load_config

CHROMIUM = Path("/usr/bin/chromium")
CHROMIUM_ARGS = ["--headless", "--no-sandbox", "--disable-gpu", "--disable-background-networking",
                 "--disable-component-update", "--disable-sync", "--no-first-run"]
HAVE_MLFLOW = importlib.util.find_spec("mlflow") is not None
HAVE_WANDB = importlib.util.find_spec("wandb") is not None
HUB_REPO = "someone/tiny-report"
EVIL = "</script><script>window.__pwned=1</script><img src=x onerror=window.__pwned=2>"


@pytest.fixture(scope="module")
def hub():
    h = FakeHub()
    yield h
    h.close()


@pytest.fixture(scope="module")
def run(tiny_model_dir, tmp_path_factory, hub) -> tuple[Path, dict]:
    import huggingface_hub.constants as hf_constants

    from trex_ray.run import run_search

    out = tmp_path_factory.mktemp("report")
    trackers = [name for name, have in (("mlflow", HAVE_MLFLOW), ("wandb", HAVE_WANDB)) if have]
    extra = ["--task.test_limit=48", f"--run.push_to_hub={HUB_REPO}", f"--run.tracker=[{','.join(trackers)}]"]
    cfg = load_config(None, tiny_args(tiny_model_dir, out, "rep", trials=3) + extra)
    with pytest.MonkeyPatch.context() as mp:
        # The driver (which pushes) talks to the local fake Hub; trials stay offline.
        mp.setattr(hf_constants, "HF_HUB_OFFLINE", False)
        mp.setattr(hf_constants, "ENDPOINT", hub.url)
        mp.setenv("HF_TOKEN", TOKEN)
        for var in ("WANDB_API_KEY", "WANDB_MODE"):  # no key: W&B must log offline by itself
            mp.delenv(var, raising=False)
        mp.setenv("WANDB_CONFIG_DIR", str(out / "wandb-home"))  # keep wandb's own files out of $HOME
        mp.setenv("WANDB_CACHE_DIR", str(out / "wandb-home"))
        summary = run_search(cfg)
    return out / "rep", summary


def _tree(run_dir: Path) -> dict:
    return json.loads((run_dir / "tree.json").read_text())


def test_report_files_are_written_and_self_contained(run):
    run_dir, _ = run
    page = (run_dir / "report.html").read_text(encoding="utf-8")
    assert not re.search(r"<(script|link|img|iframe)\b[^>]*\b(src|href)\s*=\s*[\"']?(https?:)?//", page, re.I)
    assert "Plotly.newPlot" in page and len(page) > 1_000_000  # plotly.js is inlined, not fetched
    tree = _tree(run_dir)
    assert len(tree["nodes"]) >= 4
    data = json.loads(re.search(r'<script type="application/json" id="run-data">(.*?)</script>', page, re.S).group(1))
    assert {n["id"] for n in data["nodes"]} == {n["id"] for n in tree["nodes"]}
    for n in tree["nodes"]:
        assert f'data-node="{n["id"]}"' in page  # a leaderboard row per node
    md = (run_dir / "report.md").read_text(encoding="utf-8")
    assert "### Leaderboard" in md and "### Best node lineage" in md
    rows = [l for l in md.splitlines() if re.match(r"\| \d+ \| n\d+ \|", l)]
    assert len(rows) == len(tree["nodes"])
    # ranked by dev score (full-fidelity runs first); the best is the final selection's choice,
    # which may be a cheaper plan within the interval of the top one
    first, full = rows[0].split("|")[2].strip(), [n for n in tree["nodes"] if n["score"] is not None]
    top = max(n.get("fidelity", 1.0) for n in full)
    assert {n["id"]: n["score"] for n in full}[first] == max(n["score"] for n in full if n.get("fidelity", 1.0) == top)
    assert tree["best"] == (tree["selection"] or {}).get("node_id", tree["best"])
    assert f"`{tree['best']}`" in md  # named as the best in the summary line
    assert "sst2" in md and "train.method" in md


def test_test_split_scores_are_reported_separately(run):
    from ftbench.task import load_split
    from ftbench.tasks import get_task

    run_dir, summary = run
    task = get_task("sst2")
    test_rows = load_split(task, "test", {}, limit=48)
    saved = json.loads((run_dir / "summary.json").read_text())
    assert saved == summary
    tree = _tree(run_dir)
    assert summary["best_node"] == tree["best"] and "test_error" not in summary
    for key, node in (("base_test_score", tree["root"]), ("best_test_score", tree["best"])):
        preds = [json.loads(l) for l in open(run_dir / "nodes" / node / "test_predictions.jsonl")]
        assert [p["id"] for p in preds] == [r["id"] for r in test_rows]  # the test split, not dev
        # the reported score is the task's metric over exactly these test predictions
        acc = task.score([p["prediction"] for p in preds], test_rows)["accuracy"]
        assert summary[key] == pytest.approx(acc)
    assert summary["best_test_metrics"]["n"] == 48
    # dev still drives selection: the best node is the final selection's choice among the
    # finalists re-scored on dev (test plays no part), or the best on dev without one
    trained = [n for n in tree["nodes"] if n["parent_id"] and n["score"] is not None]
    if summary.get("selection"):
        assert summary["selection"]["node_id"] == summary["best_node"] in summary["selection"]["finalists"]
        return
    assert summary["best_score"] == max(n["score"] for n in trained)


def test_model_card_lists_what_the_model_is(run):
    from ftbench.tasks import get_task

    run_dir, summary = run
    card = (run_dir / "best" / "README.md").read_text(encoding="utf-8")
    cfg = load_config(run_dir / "config.yaml")
    assert f"base_model: \"{cfg.model.name_or_path}\"" in card
    assert f"of run `{run_dir.name}`" in card
    assert "`sst2`" in card and "accuracy" in card
    assert f"{summary['best_score']:.4f}" in card and f"{summary['best_test_score']:.4f}" in card
    assert f"{summary['base_test_score']:.4f}" in card
    for section in ("## Data recipe", "## Training configuration", "## Lineage from the base model", "## Data licences"):
        assert section in card
    assert get_task("sst2").licence in card
    assert re.search(r"\| n0 \| baseline \|", card) and re.search(rf"\| {summary['best_node']} \| ", card)
    assert '"learning_rate"' in card


def test_best_model_reloads_and_reproduces_its_dev_score(run):
    from transformers import AutoModelForCausalLM, AutoTokenizer

    from ftbench.evaluate import evaluate
    from ftbench.task import load_split
    from ftbench.tasks import get_task
    from trex_ray.search.plan import Plan

    run_dir, summary = run
    best = next(n for n in _tree(run_dir)["nodes"] if n["id"] == summary["best_node"])
    model = AutoModelForCausalLM.from_pretrained(run_dir / "best").eval()
    tok = AutoTokenizer.from_pretrained(run_dir / "best")
    task = get_task("sst2")
    dev = load_split(task, "dev", {}, limit=32)  # the rows the node was scored on (task.dev_limit=32)
    metrics = evaluate(task, model, tok, dev, Plan.model_validate(best["plan"]).recipe.format.prompt, 32)
    assert metrics["accuracy"] == pytest.approx(best["score"])


def _events(path: Path):
    from tensorboardX.proto import event_pb2

    data, i = path.read_bytes(), 0
    while i < len(data):
        (n,) = struct.unpack("<Q", data[i:i + 8])
        yield event_pb2.Event.FromString(data[i + 12:i + 12 + n])
        i += 12 + n + 4


def test_tensorboard_files_hold_each_trials_score(run):
    run_dir, _ = run
    scores = {}
    for f in (run_dir / "tune").glob("search-0/n*/events.out.tfevents.*"):
        for e in _events(f):
            for v in e.summary.value:
                if v.tag == "ray/tune/score":
                    scores[f.parent.name.split("-")[0]] = v.simple_value
    done = {n["id"]: n["score"] for n in _tree(run_dir)["nodes"] if n["score"] is not None}
    assert scores.keys() == done.keys()
    assert all(scores[k] == pytest.approx(done[k]) for k in done)


@pytest.mark.skipif(not HAVE_MLFLOW, reason="mlflow not installed (pip install mlflow-skinny)")
def test_mlflow_tracker_logs_every_trial(run):
    from mlflow.tracking import MlflowClient

    run_dir, _ = run
    client = MlflowClient((run_dir / "mlruns").as_uri())
    (exp,) = [e for e in client.search_experiments() if e.name == "trex-ray-rep"]
    runs = client.search_runs([exp.experiment_id])
    done = {n["id"]: n["score"] for n in _tree(run_dir)["nodes"] if n["score"] is not None}
    logged = {r.data.params["node_id"]: r.data.metrics.get("score") for r in runs}
    assert logged.keys() == done.keys()
    assert all(logged[k] == pytest.approx(done[k]) for k in done)
    assert all(r.data.tags.get("task") == "sst2" for r in runs)


def test_run_end_pushes_best_and_its_card_to_the_hub(run, hub):
    run_dir, summary = run
    assert summary["push"]["status"] == "pushed" and summary["push"]["repo"] == HUB_REPO, summary.get("push")
    assert json.loads((run_dir / "summary.json").read_text())["push"] == summary["push"]
    assert_uploaded(hub, HUB_REPO, run_dir / "best")  # weights, tokenizer and the card, as on disk
    assert hub.files[HUB_REPO]["README.md"] == (run_dir / "best" / "README.md").read_bytes()
    assert hub.repos[HUB_REPO]["visibility"] == "private"
    assert TOKEN not in (run_dir / "summary.json").read_text() + (run_dir / "config.yaml").read_text()


def _wandb_records(path: Path):
    """The records of a W&B ``run-*.wandb`` file (a LevelDB-style log of protobuf ``Record``s in
    32 KiB blocks after a 7-byte header; wandb ships the message types, not a reader)."""
    from wandb.proto import wandb_internal_pb2 as pb

    data, i, buf = path.read_bytes(), 7, b""
    assert data[:4] == b":W&B"
    while i + 7 <= len(data):
        if 32768 - i % 32768 < 7:  # a block's tail too short for a record header is padding
            i += 32768 - i % 32768
            continue
        _, n, kind = struct.unpack("<IHB", data[i:i + 7])
        if kind == 0 and n == 0:
            break
        buf += data[i + 7:i + 7 + n]
        i += 7 + n
        if kind in (1, 4):  # a full record, or the last piece of one
            yield pb.Record.FromString(buf)
            buf = b""


@pytest.mark.skipif(not HAVE_WANDB, reason="wandb not installed (pip install wandb)")
def test_wandb_tracker_logs_every_trial_offline(run):
    run_dir, _ = run
    logged = {}
    for f in (run_dir / "wandb").glob("offline-run-*/run-*.wandb"):
        node, scores = None, []
        for r in _wandb_records(f):
            kind = r.WhichOneof("record_type")
            if kind == "run":
                config = {u.key: json.loads(u.value_json) for u in r.run.config.update}
                node = config["node_id"]
                assert r.run.project == "trex-ray" and r.run.run_group == "search-0"
            elif kind == "history":
                items = {it.key or "/".join(it.nested_key): json.loads(it.value_json) for it in r.history.item}
                scores += [items["score"]] if items.get("score") is not None else []
        logged[node] = scores[-1]
    done = {n["id"]: n["score"] for n in _tree(run_dir)["nodes"] if n["score"] is not None}
    assert logged.keys() == done.keys()
    assert all(logged[k] == pytest.approx(done[k]) for k in done)


def _hostile_copy(run_dir: Path, dest: Path) -> Path:
    """The run's files with a node whose plan text tries to break out of the page."""
    from trex_ray.report.page import write_report

    dest.mkdir()
    for name in ("tree.json", "events.jsonl", "summary.json", "config.yaml"):
        shutil.copy(run_dir / name, dest / name)
    best = _tree(dest)["best"]
    # the report is rebuilt from the ledger: the hostile text goes where a run would record it
    events = [json.loads(line) for line in (dest / "events.jsonl").read_text().splitlines()]
    for e in events:
        if e["type"] == "node_planned" and e["node_id"] == best:
            e["plan"]["rationale"] = EVIL
    extra = [{"type": "node_diagnosed", "node_id": best, "diagnosis": "%DATA% %PLOTLYJS% | pipe"},
             {"type": "insights_distilled", "after_trials": 3,
              "insights": [{"kind": "helped", "text": "lower lr " + EVIL, "nodes": [best]}]}]
    events = events[:-1] + extra + events[-1:]  # before run_finished: the run still reads as finished
    for i, e in enumerate(events, 1):  # numbered as a ledger is (replay checks the order)
        e["seq"], e["ts"] = i, e.get("ts", events[i - 2]["ts"])
    (dest / "events.jsonl").write_text("".join(json.dumps(e) + "\n" for e in events))
    write_report(dest)
    return dest


def test_untrusted_plan_text_is_escaped(run, tmp_path):
    dest = _hostile_copy(run[0], tmp_path / "hostile")
    page = (dest / "report.html").read_text(encoding="utf-8")
    assert EVIL not in page and "window.__pwned" in page  # present, but only in escaped form
    assert page.count("<script") == 3  # plotly.js, the data block, the page's own script
    # distilled insights (LLM text) are listed, escaped
    assert '<ul id="insights"><li><b>helped</b> lower lr &lt;/script&gt;' in page


@pytest.mark.skipif(not CHROMIUM.exists(), reason="Chromium not installed (apt-get install -y chromium)")
def test_report_page_in_headless_chromium(run, tmp_path):
    sync_api = pytest.importorskip("playwright.sync_api", reason="playwright not installed (pip install playwright)")
    dest = _hostile_copy(run[0], tmp_path / "page")
    tree = _tree(dest)
    with sync_api.sync_playwright() as p:
        browser = p.chromium.launch(executable_path=str(CHROMIUM), args=CHROMIUM_ARGS)
        try:
            page = browser.new_page(viewport={"width": 1400, "height": 1000})
            errors: list[str] = []
            page.on("console", lambda m: errors.append(m.text) if m.type == "error" else None)
            page.on("pageerror", lambda e: errors.append(str(e)))
            page.on("dialog", lambda d: errors.append(f"dialog {d.message}"))
            page.goto((dest / "report.html").as_uri())
            page.wait_for_selector("#tree .scatterlayer .point")
            points = page.locator("#tree .scatterlayer .point")
            assert points.count() == len(tree["nodes"])
            assert page.locator("#leaderboard tbody tr").count() == len(tree["nodes"])
            assert page.locator("#by_trial .scatterlayer .trace").count() >= 2
            # click the best node's marker: its details (with the hostile text, as text) appear
            ids = page.evaluate("() => document.getElementById('tree').data.filter(t => t.customdata)"
                                ".flatMap(t => t.customdata)")
            box = points.nth(ids.index(tree["best"])).bounding_box()
            page.mouse.click(box["x"] + box["width"] / 2, box["y"] + box["height"] / 2)
            page.wait_for_selector(f'#details[data-node="{tree["best"]}"]')
            details = page.locator("#details").inner_text()
            assert EVIL in details and "%DATA% %PLOTLYJS% | pipe" in details
            assert page.locator("#details #loss .scatterlayer .trace").count() == 1  # the loss curve
            assert page.evaluate("() => window.__pwned === undefined")
            # a leaderboard row click shows that node
            page.locator('#leaderboard tr[data-node="n0"]').click()
            page.wait_for_selector('#details[data-node="n0"]')
            page.locator(f'#leaderboard tr[data-node="{tree["best"]}"]').click()
            page.wait_for_timeout(300)
            shot = tmp_path / "report.png"
            page.screenshot(path=str(shot), full_page=True)
            assert not errors, errors
        finally:
            browser.close()
    assert shot.stat().st_size > 20_000  # the screenshot stays with the test's tmp_path as its artifact
