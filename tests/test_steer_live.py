"""Steering a real running search: a separate ``launch.py`` process on an embedded local Ray
(tiny model, real trials, the LLM policy against the scripted endpoint), steered with the real
``python -m trex_ray steer`` command line; then a real kill and ``--resume`` replays the steering.
Also: a trial past its wall time is stopped, and a run without a successful trial exits 1."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import threading
import time
from pathlib import Path

import pytest

from llm_helpers import after_trial_answer, fake_server  # noqa: F401 (fixture)
from test_search import _launch, tiny_args
from trex_ray.search.ledger import read_events
from trex_ray.search.tree import SearchParams, Tree

pytestmark = pytest.mark.slow
REPO = Path(__file__).resolve().parents[1]
NOTE = "NOTE-7Q prefer a single epoch on few rows"


def steer(run: Path, *words: str, wait: float = 60) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, "-m", "trex_ray", "steer", "--wait", str(wait), "--by", "tester", str(run),
                           *words], cwd=REPO, capture_output=True, text=True, timeout=wait + 120)


def events(run: Path) -> list[dict]:
    ledger = run / "events.jsonl"
    return list(read_events(ledger)) if ledger.exists() else []


def wait_for(what, proc: subprocess.Popen, log: Path, timeout: float = 900, every: float = 0.2):
    deadline = time.time() + timeout
    while time.time() < deadline:
        found = what()
        if found:
            return found
        assert proc.poll() is None, log.read_text()[-4000:]
        time.sleep(every)
    pytest.fail(f"timed out waiting; log tail:\n{log.read_text()[-3000:]}")


def trial_process(node_id: str, session: int):
    """The Tune trial process running ``node_id`` under the launched driver (``session``: its
    session id; other runs on this machine have trials named alike), or None. Tune runs each
    trial in its trial folder, ``<node>-<trial id>``."""
    import psutil

    for p in psutil.process_iter(["cmdline"]):
        try:
            if ("ImplicitFunc" in " ".join(p.info["cmdline"] or []) and os.getsid(p.pid) == session
                    and f"/{node_id}-" in p.cwd()):
                return p
        except (psutil.NoSuchProcess, psutil.AccessDenied, ProcessLookupError):
            continue
    return None


def reported(run: Path, node_id: str, phase: str, loss: bool = False) -> bool:
    """Whether the trial of ``node_id`` reported ``phase`` to Tune (its result.json rows), with a
    training loss (``loss``: it finished an optimizer step)."""
    rows = [json.loads(line) for f in run.glob(f"tune/search-*/{node_id}-*/result.json")
            for line in f.read_text().splitlines() if line.strip()]
    return any(r.get("phase") == phase and (not loss or "loss" in r) for r in rows)


class Endpoint:
    """The scripted LLM: the first expansion proposes two long trials, each optimizer step an
    epoch (gradients accumulated over all its rows: no progress report until it ends), n1 on
    4000 rows for 1 step, n2 on 2000 rows for 6; every later expansion short trials. It keeps
    every planning prompt, to see what the Researcher was told."""

    def __init__(self) -> None:
        self.plan_prompts: list[str] = []
        self.lock = threading.Lock()

    def __call__(self, body: dict) -> str:
        from ftbench.tasks import get_task

        props = body["response_format"]["schema"]["properties"]
        side = after_trial_answer(props)
        if side is not None:
            return side
        if "direction" in props:
            return json.dumps({"direction": "data_quality", "reasoning": "other rows"})
        with self.lock:
            self.plan_prompts.append(json.dumps(body["messages"], ensure_ascii=False))
            k = len(self.plan_prompts)
        long = k == 1
        task = get_task("sst2")
        plans = [{
            "direction": "data_quality", "rationale": f"expansion {k}, plan {i}",
            "recipe": {"steps": [{"op": "load"}, {"op": "subsample", "n": (4000 if i == 0 else 2000) if long else 32,
                                                  "seed": 10 * k + i},
                                 {"op": "format", "prompt": task.prompt_template, "completion": task.completion_template}]},
            "training": {"method": "full", "learning_rate": 0.005, "num_epochs": 1, "batch_size": 4 if long else 8,
                         **({"grad_accum": 1024, "max_steps": 1 + 5 * i} if long else {})},
        } for i in range(props["plans"]["maxItems"])]
        return json.dumps({"differences": "the rows", "plans": plans})


def test_steering_a_running_search_then_a_kill_and_resume_replays_it(tiny_model_dir, tmp_path, fake_server):  # noqa: F811
    endpoint = Endpoint()
    url, _ = fake_server(endpoint)
    run = tmp_path / "st"
    args = tiny_args(tiny_model_dir, tmp_path, "st", trials=2) + [
        "--search.children_per_expansion=2", "--search.policy=llm", f"--llm.base_url={url}", "--llm.model=fake",
        "--llm.structured_output=llama_cpp", "--llm.tool_calling=off", "--llm.insights_every=0",
        "--run.num_cpus=2", "--run.steer_poll_s=0.5", "--task.dev_limit=8", "--task.test_limit=0"]
    first_log = tmp_path / "first.log"
    proc = _launch(args, first_log)
    try:
        # the two long trials run, one per CPU, into their first (long, silent) optimizer step
        wait_for(lambda: reported(run, "n1", "train") and reported(run, "n2", "train"), proc, first_log)
        n1_process = trial_process("n1", session=proc.pid)  # launched as a session leader
        assert n1_process is not None

        r = steer(run, "annotate", "n0", NOTE)
        assert r.returncode == 0 and r.stdout.startswith("applied: note added to n0"), r.stderr
        t0 = time.time()
        r = steer(run, "prune", "n1")
        assert r.returncode == 0 and "pruned n1: 1 running and 0 planned" in r.stdout, r.stderr
        # n1's trial is killed mid-step: its process is gone before n2, whose steps are half as
        # long, ends its first one (Tune alone would stop n1 only at its next report, after its step)
        wait_for(lambda: not n1_process.is_running() or n1_process.status() == "zombie", proc, first_log)
        print(f"prune -> n1's trial process gone after {time.time() - t0:.1f}s")
        assert not reported(run, "n2", "train", loss=True)
        # its CPU goes to n3 while n2 still trains (2 CPUs: there is no other way for n3 to run)
        wait_for(lambda: (run / "nodes" / "n3").is_dir(), proc, first_log)
        print(f"prune -> the freed slot runs n3 after {time.time() - t0:.1f}s")
        done = {e["node_id"] for e in events(run) if e["type"] in ("node_finished", "node_failed")}
        assert "n2" not in done and "n1" not in done
        # n3 was proposed with the user's note in the prompt, quoted as their words
        assert NOTE in endpoint.plan_prompts[1] and NOTE not in endpoint.plan_prompts[0]
        assert "USER GUIDANCE" in endpoint.plan_prompts[1]

        r = steer(run, "budget", "+1", "trials")
        assert r.returncode == 0 and "trial budget raised by 1" in r.stdout, r.stderr
        r = steer(run, "prune", "n99")
        assert r.returncode == 1 and r.stderr.startswith("refused: unknown node n99 (this run has n0..n"), r.stderr
        wait_for(lambda: any(e["type"] == "node_finished" and e["node_id"] == "n3" for e in events(run)), proc, first_log)
        r = steer(run, "pin", "n3")
        assert r.returncode == 0 and r.stdout.startswith("applied: pinned n3"), r.stderr
        r = steer(run, "status")
        assert r.returncode == 0, r.stderr
        lines = {line.split()[0]: line for line in r.stdout.splitlines() if line[:1] == "n"}
        assert "pruned-by-user" in lines["n1"] and "pinned" in lines["n3"] and "running" in lines["n2"]
        # a pruned trial does not count against the trial budget (its accelerator time does): n2, n3
        # and possibly already the next one under n3
        first = r.stdout.splitlines()[0]
        assert first.startswith("run running: trials ") and "/3 started" in first and "LLM account:" in r.stdout
        assert 'http-equiv="refresh"' in (run / "report.html").read_text()  # the live page reloads itself
    finally:
        os.killpg(proc.pid, signal.SIGKILL)  # the driver and the embedded Ray with it
        proc.wait()
    before = events(run)
    assert [e["type"] for e in before if e["type"].startswith("steer_")] == [
        "steer_annotate", "steer_prune", "steer_budget", "steer_refused", "steer_pin"]

    # sent while no driver runs: queued, applied by the resumed run
    r = steer(run, "budget", "+1", "trials", wait=1)
    assert r.returncode == 3 and r.stderr.startswith("queued: "), r.stderr
    second_log = tmp_path / "second.log"
    proc = _launch(["--resume", str(run)], second_log)
    try:
        wait_for(lambda: sum(e["type"] == "steer_budget" for e in events(run)) == 2, proc, second_log)
        # the pin was replayed: the next expansion grows n3's branch (the pruned n1 never grows again)
        wait_for(lambda: any(e["type"] == "expansion" for e in events(run)[len(before):]), proc, second_log)
        grown = [e["node_id"] for e in events(run)[len(before):] if e["type"] == "expansion"][0]
        assert "n3" in {n.id for n in Tree.replay(events(run), SearchParams()).path(grown)}
        r = steer(run, "prune", "n2")  # requeued on resume, long again
        assert r.returncode == 0 and "pruned n2" in r.stdout, r.stderr
        r = steer(run, "stop")
        assert r.returncode == 0 and r.stdout.startswith("applied: stopping"), r.stderr
        assert proc.wait(timeout=900) == 0, second_log.read_text()[-3000:]
    finally:
        if proc.poll() is None:
            os.killpg(proc.pid, signal.SIGKILL)
            proc.wait()
    after = events(run)
    assert after[: len(before)] == before  # nothing recorded was lost or rewritten
    tree = Tree.replay(after, SearchParams())
    assert tree.nodes["n1"].cut and tree.nodes["n3"].pinned and tree.extra_trials == 2
    assert tree.nodes["n0"].notes[0]["text"] == NOTE and tree.nodes["n0"].notes[0]["by"] == "tester"
    assert not any(n.parent_id in ("n1", "n2") for n in tree.nodes.values())  # pruned branches never grew
    resumed_nodes = [e["node_id"] for e in after[len(before):] if e["type"] == "node_planned"]
    assert resumed_nodes and all("n3" in {p.id for p in tree.path(n)} for n in resumed_nodes)  # the pin held
    assert tree.nodes["n1"].status == "pruned" and tree.nodes["n1"].cost.estimated
    summary = json.loads((run / "summary.json").read_text())
    assert summary["stop_reason"] == "stopped by tester" and summary["resumed"] is True
    saved = json.loads((run / "tree.json").read_text())
    spend = saved["spend"]["nodes"]
    assert spend["n0"]["branch"]["accelerator_seconds"] >= spend["n1"]["own"]["accelerator_seconds"] > 0
    assert spend["n0"]["branch"]["llm_tokens"] > 0  # the expansions' LLM calls, on the nodes they grew
    md = (run / "report.md").read_text()
    assert "### Steering" in md and "| tester | prune n1 |" in md and "refused: unknown node n99" in md
    page = (run / "report.html").read_text()
    assert 'http-equiv="refresh"' not in page and 'id="steering"' in page and "tree_spend" in page
    # a finished run refuses commands, and still answers status
    r = steer(run, "pin", "n3", wait=5)
    assert r.returncode == 1 and r.stderr.startswith("refused: the run has finished (stopped by tester)")


def test_a_trial_past_its_wall_time_is_stopped_and_the_run_exits_1(tiny_model_dir, tmp_path):
    run = tmp_path / "wall"
    args = tiny_args(tiny_model_dir, tmp_path, "wall", trials=1) + [
        "--train.train_samples=4000", "--train.num_epochs=10", "--limits.trial_wall_seconds=30",
        "--task.dev_limit=8", "--task.test_limit=0", "--run.steer_poll_s=0.5", "--run.num_cpus=2"]
    log = tmp_path / "wall.log"
    proc = _launch(args, log)
    try:
        code = proc.wait(timeout=900)
    finally:
        if proc.poll() is None:
            os.killpg(proc.pid, signal.SIGKILL)
    text = log.read_text()
    assert code == 1, text[-3000:]
    last = text.strip().splitlines()[-1]
    assert last.startswith("error: all 1 fine-tuning trial(s) failed; the first, n1: stopped: past its wall-time "
                           "limit of 30 s (limits.trial_wall_seconds)"), text[-2000:]
    tree = Tree.replay(events(run), SearchParams())
    n1 = tree.nodes["n1"]
    assert n1.status == "failed" and n1.cost.estimated and n1.cost.accelerator_seconds >= 30
    assert json.loads((run / "summary.json").read_text())["no_success"].startswith("all 1 fine-tuning trial(s) failed")
