"""The bridge between Ray Tune and the tree: Tune asks for trials, the tree supplies nodes.

``TreeSearcher`` runs inside the Tune driver loop, so every call must return quickly: it never
waits on the Researcher. An expansion is fired as an async actor call and collected on a later
``suggest``; meanwhile ``suggest`` returns None, which Tune treats as "ask again soon".
"""

from __future__ import annotations

import logging
import time
from dataclasses import asdict
from typing import Any, Callable

import ray
from ray.tune import Callback
from ray.tune.search import Searcher

from trex_ray.search.outcome import TrialOutcome
from trex_ray.search.request import Proposal
from trex_ray.search.state import Handout

log = logging.getLogger(__name__)


class TreeSearcher(Searcher):
    def __init__(self, tree_state, researcher, on_event: Callable[[str, dict[str, Any]], None] | None = None) -> None:
        super().__init__()  # no metric/mode: trials report progress rows without a score
        self.tree_state, self.researcher = tree_state, researcher
        self.on_event = on_event or (lambda kind, info: None)
        self.live: dict[str, str] = {}  # Tune trial id -> node id
        self._expansion: tuple[str, ray.ObjectRef] | None = None
        self.finished_reason: str | None = None
        # trials the cluster can hold now (None: no limit beyond Tune's); re-read every few seconds
        self.capacity: Callable[[], int] | None = None
        self._capacity_cache: tuple[float, int] = (0.0, 0)

    def _room(self) -> bool:
        if self.capacity is None:
            return True
        now = time.time()
        if now - self._capacity_cache[0] > 5.0:
            try:
                self._capacity_cache = (now, self.capacity())
            except Exception:  # a cluster too small right now: wait for nodes to join
                self._capacity_cache = (now, 0)
        return len(self.live) < self._capacity_cache[1]

    def suggest(self, trial_id: str) -> dict[str, Any] | str | None:
        self._collect_expansion()
        if not self._room():
            return None
        reply: Handout = ray.get(self.tree_state.next_node.remote(trial_id))
        if reply.node_id is not None:
            assert reply.plan is not None
            self.live[trial_id] = reply.node_id
            plan = reply.plan.model_dump(mode="json")
            self.on_event("started", {"node_id": reply.node_id, "parent_id": reply.parent_id, "plan": plan,
                                      "rung": reply.rung.index if reply.rung else 0})
            # The trial's config is only what differs between trials (Tune writes it to
            # params.json and trackers); the run's context reaches the trainable through
            # tune.with_parameters. init_from: the parent's model a warm start trains further;
            # rung, resume_from: how far to train, and the checkpoint a promotion continues.
            return {"node_id": reply.node_id, "plan": plan, "init_from": reply.init_from,
                    "rung": asdict(reply.rung) if reply.rung else None, "resume_from": reply.resume_from,
                    "compare": {k: list(v) for k, v in reply.compare.items()}}
        if reply.done is not None:
            self.finished_reason = reply.done
            return Searcher.FINISHED
        if self._expansion is None:
            request = ray.get(self.tree_state.begin_expansion.remote())
            if request is not None:
                self._expansion = (request.node_id, self.researcher.propose.remote(request))
                self.on_event("expanding", {"node_id": request.node_id})
            elif reply.running == 0:
                self.finished_reason = "no node left to expand"
                return Searcher.FINISHED
        return None

    def _collect_expansion(self) -> None:
        if self._expansion is None:
            return
        parent, ref = self._expansion
        ready, _ = ray.wait([ref], timeout=0)
        if not ready:
            return
        self._expansion = None
        try:
            proposal: Proposal = ray.get(ref)
        except Exception as e:  # a broken Researcher must not stop the search
            log.warning("expansion of %s failed: %s", parent, e)
            ray.get(self.tree_state.expansion_failed.remote(parent, f"{type(e).__name__}: {e}"))
            return
        ids = ray.get(self.tree_state.add_children.remote(parent, proposal))
        self.on_event("expanded", {"node_id": parent, "children": ids, "source": proposal.source, "note": proposal.note})

    def on_trial_result(self, trial_id: str, result: dict[str, Any]) -> None:
        self.on_event("progress", result)

    def on_trial_complete(self, trial_id: str, result: dict[str, Any] | None = None, error: bool = False) -> None:
        node_id = self.live.pop(trial_id, None)
        if node_id is None or error:
            return  # errors: TrialErrorCallback records them, with the trial's error text
        phase = (result or {}).get("phase")
        if phase == "done":
            outcome = TrialOutcome.from_json(result["outcome"])
            ray.get(self.tree_state.finish.remote(node_id, outcome))
            result = {**result, "score": outcome.score, "cost": asdict(outcome.cost), "bad_cases": outcome.bad_cases,
                      "rung": outcome.rung, "fidelity": outcome.fidelity, "interval": outcome.interval,
                      "paired": outcome.paired}
        elif phase == "failed":
            ray.get(self.tree_state.fail.remote(node_id, result["error"]))
        else:
            ray.get(self.tree_state.fail.remote(node_id, f"trial ended without a result (last phase: {phase})"))
        # Diagnosis and insights run on the Researcher actor, which records them on the
        # TreeState itself: fired and forgotten, so trial scheduling never waits on an LLM.
        self.researcher.after_trial.remote(node_id, (result or {}).get("bad_cases"), self.tree_state)
        self.on_event("finished", {"node_id": node_id, **(result or {})})

    # The ledger is the run's durable state; Tune's experiment checkpoints need nothing more.
    def save(self, checkpoint_path: str) -> None:
        pass

    def restore(self, checkpoint_path: str) -> None:
        pass


class TrialErrorCallback(Callback):
    """Records a trial that Tune gave up on (after ``max_failures`` retries) as a failed node,
    with the error Tune stored for it."""

    def __init__(self, tree_state, on_event: Callable[[str, dict[str, Any]], None] | None = None) -> None:
        self.tree_state = tree_state
        self.on_event = on_event or (lambda kind, info: None)

    def on_trial_error(self, iteration: int, trials: list, trial, **info: Any) -> None:
        node_id = trial.config.get("node_id")
        if node_id is None:
            return
        try:
            err = trial.get_error()
        except Exception:  # the error file may be unreadable; the failure still counts
            err = None
        cause = f"infrastructure: trial failed after {trial.num_failures} attempt(s): {err or 'no error text'}"
        ray.get(self.tree_state.fail.remote(node_id, cause[-4000:]))
        self.on_event("finished", {"node_id": node_id, "phase": "failed", "error": cause})
