"""The ledger, hardened: every event schema-checked (on append and on replay), the last line
handled one way (a complete event kept, a torn one dropped), a damaged line refused with its
number before Ray starts (``--resume`` and ``python -m trex_ray.report`` alike), and a ledger
that belongs to another task or base model refused on ``--resume``."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import pytest

from core_helpers import make_state, outcome, proposal
from test_core import plan_dict
from trex_ray.config import Config, dump_config
from trex_ray.search.events import EventError
from trex_ray.search.ledger import Ledger, LedgerError, read_events
from trex_ray.search.tree import SearchParams, Tree

REPO = Path(__file__).resolve().parents[1]


def small_run(run_dir: Path) -> list[dict]:
    """A run directory as a driver leaves it after a crash: config.yaml, and a ledger with the
    baseline, two children (one finished, one running)."""
    s = make_state(run_dir)
    s.next_node("t0")
    s.finish("n0", outcome(0.5))
    s.begin_expansion()
    s.add_children("n0", proposal([plan_dict(), plan_dict(learning_rate=3e-4)]))
    s.next_node("t1")
    s.next_node("t2")
    s.finish("n1", outcome(0.6))
    s.ledger.close()
    (run_dir / "config.yaml").write_text(dump_config(Config()))
    return list(read_events(run_dir / "events.jsonl"))


def lines(run_dir: Path) -> list[str]:
    return (run_dir / "events.jsonl").read_text().splitlines()


def write_lines(run_dir: Path, rows: list[str], newline_at_end: bool = True) -> None:
    (run_dir / "events.jsonl").write_text("\n".join(rows) + ("\n" if newline_at_end else ""))


# ---------------------------------------------------------------- the last line
def test_a_complete_last_event_without_its_newline_is_kept_and_finished(tmp_path):
    events = small_run(tmp_path)
    write_lines(tmp_path, lines(tmp_path), newline_at_end=False)
    assert list(read_events(tmp_path / "events.jsonl")) == events  # reading keeps it, changes nothing
    assert not (tmp_path / "events.jsonl").read_text().endswith("\n")
    led = Ledger(tmp_path)  # the writer ends it with its newline before appending
    led.append({"type": "run_resumed"})
    led.close()
    after = list(read_events(tmp_path / "events.jsonl"))
    assert after[:-1] == events and after[-1]["type"] == "run_resumed" and after[-1]["seq"] == events[-1]["seq"] + 1


def test_a_torn_last_line_is_dropped_by_reader_and_writer(tmp_path):
    events = small_run(tmp_path)
    torn = lines(tmp_path)[-1][:25]
    write_lines(tmp_path, lines(tmp_path)[:-1] + [torn], newline_at_end=False)
    assert list(read_events(tmp_path / "events.jsonl")) == events[:-1]
    assert (tmp_path / "events.jsonl").read_text().endswith(torn)  # a reader never changes the file
    led = Ledger(tmp_path)
    led.append({"type": "run_resumed"})
    led.close()
    assert [e["seq"] for e in read_events(tmp_path / "events.jsonl")] == [e["seq"] for e in events[:-1]] + [events[-1]["seq"]]
    assert all(json.loads(row) for row in lines(tmp_path))  # the torn text is gone, every line whole


def test_a_state_resumed_from_a_complete_unterminated_line_keeps_that_change(tmp_path):
    small_run(tmp_path)
    write_lines(tmp_path, lines(tmp_path), newline_at_end=False)  # the last event: n1 finished
    s = make_state(tmp_path)
    assert s.tree.nodes["n1"].status == "succeeded"  # the live tree agrees with the file
    replayed = Tree.replay(read_events(tmp_path / "events.jsonl"), s.tree.params)
    assert replayed.to_dict() == s.tree.to_dict()


# ---------------------------------------------------------------- damaged lines
@pytest.mark.parametrize("damage, message", [
    (lambda row: row[:-5], "corrupt ledger line"),
    (lambda row: json.dumps({**json.loads(row), "type": "node_teleported"}), "unknown event type 'node_teleported'"),
    (lambda row: json.dumps({k: v for k, v in json.loads(row).items() if k != "score"}),
     "node_finished event: score: Field required"),
    (lambda row: json.dumps({**json.loads(row), "seq": 1}), "sequence number 1 after 3"),
    (lambda row: "[1, 2]", "an event is a JSON object, not list"),
    (lambda row: "\x00\x00\x00", "corrupt ledger line"),
])
@pytest.mark.parametrize("last", [False, True], ids=["middle", "last-with-newline"])
def test_a_damaged_line_is_refused_with_its_number(tmp_path, damage, message, last):
    """Anywhere, a line that is not a valid event is damage; so is the last one when it has its
    newline (only a last line without one can be a write cut short)."""
    small_run(tmp_path)
    rows = lines(tmp_path)
    i = len(rows) - 1 if last else next(i for i, r in enumerate(rows) if json.loads(r)["type"] == "node_finished")
    assert json.loads(rows[i])["type"] == "node_finished" and json.loads(rows[i - 1])["seq"] == 3 or last
    rows[i] = damage(rows[i])
    write_lines(tmp_path, rows)
    if last and "sequence" in message:
        message = "sequence number 1 after"
    with pytest.raises(LedgerError, match=f"events.jsonl:{i + 1}: .*{message}"):
        list(read_events(tmp_path / "events.jsonl"))


def test_append_refuses_an_event_a_replay_could_not_read(tmp_path):
    led = Ledger(tmp_path)
    led.append({"type": "run_started", "task": "sst2"})
    with pytest.raises(EventError, match="node_failed event: cause"):
        led.append({"type": "node_failed", "node_id": "n1", "cause": ""})  # every failure has a cause
    with pytest.raises(EventError, match="node_id"):
        led.append({"type": "node_started", "node_id": "../etc"})
    led.append({"type": "run_resumed"})
    led.close()
    assert [e["seq"] for e in read_events(tmp_path / "events.jsonl")] == [1, 2]  # nothing half-written


# ---------------------------------------------------------------- through the command line
def _cli(*args: str, cwd: Path) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, *args], cwd=cwd, capture_output=True, text=True, timeout=120,
                          env={**__import__("os").environ, "PYTHONPATH": str(REPO)})


def _one_error(r: subprocess.CompletedProcess) -> str:
    lines_ = r.stderr.strip().splitlines()
    assert r.returncode == 2 and len(lines_) == 1 and lines_[0].startswith("error: "), r.stdout + r.stderr
    assert "Traceback" not in r.stdout + r.stderr and "Started a local Ray" not in r.stdout + r.stderr
    return lines_[0]


def _snapshot(root: Path) -> dict[str, bytes]:
    return {str(p.relative_to(root)): p.read_bytes() for p in sorted(root.rglob("*")) if p.is_file()}


def test_resume_and_report_refuse_a_corrupt_middle_line_before_ray(tmp_path):
    run = tmp_path / "run"
    small_run(run)
    rows = lines(run)
    rows[3] = rows[3][:40]
    write_lines(run, rows)
    before = _snapshot(tmp_path)
    err = _one_error(_cli(str(REPO / "launch.py"), "--resume", str(run), cwd=tmp_path))
    assert f"{run / 'events.jsonl'}:4: corrupt ledger line" in err
    err = _one_error(_cli("-m", "trex_ray.report", str(run), cwd=tmp_path))
    assert f"{run / 'events.jsonl'}:4: corrupt ledger line" in err
    assert _snapshot(tmp_path) == before  # nothing written, nothing cut


@pytest.mark.parametrize("event_change, config_change, message", [
    ({"task": "hoc"}, {}, "the ledger is a run of task hoc"),
    ({}, {"model": {"name_or_path": "/models/another"}}, "names task sst2 on /models/another"),
    ({"type": "node_finished", "node_id": "n9", "score": 1.0, "metrics": {}}, {}, "(node_finished n9) cannot be replayed"),
])
def test_resume_refuses_a_ledger_of_another_run(tmp_path, event_change, config_change, message):
    run = tmp_path / "run"
    small_run(run)
    rows = lines(run)
    first = json.loads(rows[0])
    assert first["type"] == "run_started" and first["base_model"] == Config().model.name_or_path
    if "type" in event_change:  # an event about a node that does not exist
        rows.append(json.dumps({"seq": len(rows) + 1, "ts": 1.0, **event_change}))
    else:
        rows[0] = json.dumps({**first, **event_change})
    write_lines(run, rows)
    (run / "config.yaml").write_text(dump_config(Config.model_validate(config_change)))
    before = _snapshot(tmp_path)
    assert message in _one_error(_cli(str(REPO / "launch.py"), "--resume", str(run), cwd=tmp_path))
    assert _snapshot(tmp_path) == before


def test_events_of_a_real_state_replay_through_the_schema(tmp_path):
    events = small_run(tmp_path)
    s = make_state(tmp_path)  # resumed: requeues n2
    s.next_node("t3")
    s.fail("n2", "boom")
    s.close("test over")
    kinds = {e["type"] for e in read_events(tmp_path / "events.jsonl")}
    assert {"run_started", "node_planned", "expansion", "node_started", "node_finished", "run_resumed",
            "node_requeued", "node_failed", "run_finished"} <= kinds
    replayed = Tree.replay(read_events(tmp_path / "events.jsonl"), SearchParams())
    assert replayed.nodes["n2"].failure == "boom" and len(events) > 5
