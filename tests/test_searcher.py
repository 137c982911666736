"""The Tune ↔ tree bridge (``TreeSearcher``) driven call by call, without Ray: its actor handles
are stand-ins that run the real SearchState and ResearcherCore in this process, so every
decision it makes is checked on the ledger. (test_search.py runs the same bridge through real
Tune on a local Ray cluster.)"""

from __future__ import annotations

from types import SimpleNamespace

import pytest
from ray.tune.search import Searcher

import trex_ray.searcher as searcher_mod
from core_helpers import TASK, config, make_state, outcome
from trex_ray.actors import ResearcherCore
from trex_ray.search.ledger import read_events
from trex_ray.searcher import TreeSearcher


class Done:
    """What a stand-in ``.remote()`` returns: the call's result (or its error, raised by ``get``
    as Ray raises a remote error), already there."""

    def __init__(self, value=None, error: Exception | None = None):
        self.value, self.error = value, error

    def get(self):
        if self.error is not None:
            raise self.error
        return self.value


class Local:
    """An actor handle stand-in: ``handle.method.remote(*args)`` runs ``obj.method(*args)`` at once."""

    def __init__(self, obj):
        self.obj = obj
        self.calls: list[str] = []

    def __getattr__(self, name):
        fn = getattr(self.obj, name)

        def remote(*args, **kwargs):
            self.calls.append(name)
            try:
                return Done(fn(*args, **kwargs))
            except Exception as e:  # noqa: BLE001 - as Ray does: the error travels in the reference
                return Done(error=e)

        return SimpleNamespace(remote=remote)


@pytest.fixture
def local_ray(monkeypatch):
    """The searcher's ``ray`` module, as far as the bridge uses it: get and a non-blocking wait."""
    fake = SimpleNamespace(get=lambda ref: ref.get(), wait=lambda refs, timeout=0: (list(refs), []))
    monkeypatch.setattr(searcher_mod, "ray", fake)


def finish(searcher: TreeSearcher, trial_id: str, score: float) -> None:
    searcher.on_trial_complete(trial_id, {"phase": "done", "outcome": outcome(score).to_json()})


def test_the_bridge_hands_out_expands_records_and_finishes(tmp_path, local_ray):
    state = Local(make_state(tmp_path, max_trials=2, children_per_expansion=2))
    events: list[tuple[str, dict]] = []
    s = TreeSearcher(state, Local(ResearcherCore(config())), on_event=lambda k, i: events.append((k, i)))
    root = s.suggest("t0")
    assert root["node_id"] == "n0" and root["plan"]["direction"] == "baseline" and root["init_from"] is None
    # nothing run-wide in a trial's config (params.json): the node, its plan, and how to run it
    assert set(root) == {"node_id", "plan", "init_from", "rung", "resume_from", "compare"}
    assert root["rung"]["fraction"] == 1.0 and root["compare"] == {}
    # the baseline is running: nothing to hand out, nothing to expand yet
    assert s.suggest("t1") is None and "begin_expansion" in state.calls
    finish(s, "t0", 0.5)
    # now the root is expanded: the proposal is fired, then collected on a later suggest
    assert s.suggest("t1") is None and s._expansion is not None
    first = s.suggest("t1")
    assert first["node_id"] == "n1" and first["plan"]["training"] is not None
    assert s.suggest("t2")["node_id"] == "n2"
    # the budget is spent, but trials run: not finished yet (a steering command may still add budget)
    assert s.suggest("t3") is None and s.finished_reason is None
    finish(s, "t1", 0.7)
    s.on_trial_complete("t2", {"phase": "failed", "error": "RuntimeError: out of memory"})
    assert s.suggest("t3") is Searcher.FINISHED and s.finished_reason == "trial budget spent"
    tree = state.obj.tree
    assert (tree.nodes["n1"].score, tree.nodes["n2"].status) == (0.7, "failed")
    assert "out of memory" in tree.nodes["n2"].failure
    kinds = [k for k, _ in events]
    assert kinds.count("started") == 3 and kinds.count("finished") == 3 and "expanded" in kinds
    ledger = [e["type"] for e in read_events(tmp_path / "events.jsonl")]
    assert ledger.count("node_started") == 3 and ledger.count("expansion") == 1


def test_the_bridge_holds_back_while_the_cluster_is_full_and_records_a_silent_trial(tmp_path, local_ray):
    state = Local(make_state(tmp_path, max_trials=3, children_per_expansion=3))
    s = TreeSearcher(state, Local(ResearcherCore(config())))
    s.capacity = lambda: 1
    assert s.suggest("t0")["node_id"] == "n0"
    before = len(state.calls)
    assert s.suggest("t1") is None and len(state.calls) == before  # no room: the tree is not even asked
    s.on_trial_complete("t0", {"phase": "train"})  # ended without a result
    root = state.obj.tree.root
    assert root.status == "failed" and "without a result (last phase: train)" in root.failure
    assert s.suggest("t1") is Searcher.FINISHED and "baseline failed" in s.finished_reason


def test_a_broken_researcher_costs_the_expansion_not_the_search(tmp_path, local_ray):
    class Broken:
        def propose(self, request):
            raise RuntimeError("researcher crashed")

        def after_trial(self, *args):
            return None

    state = Local(make_state(tmp_path, max_trials=2, children_per_expansion=2))
    s = TreeSearcher(state, Local(Broken()))
    s.suggest("t0")
    finish(s, "t0", 0.5)
    assert s.suggest("t1") is None  # the expansion is fired ...
    assert s.suggest("t1") is None  # ... its error collected and recorded, and the next one fired
    failed = [e for e in read_events(tmp_path / "events.jsonl") if e["type"] == "expansion_failed"]
    assert failed and failed[0]["node_id"] == "n0" and "researcher crashed" in failed[0]["cause"]
    assert state.obj.expanding == "n0" and not state.obj.tree.root.children  # tried again, nothing planned
