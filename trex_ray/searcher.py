"""The bridge between Ray Tune and the tree: Tune asks for trials, the tree supplies nodes.

``TreeSearcher`` runs inside the Tune driver loop, so every call must return quickly: it never
waits on the Researcher. An expansion is fired as an async actor call and collected on a later
``suggest``; meanwhile ``suggest`` returns None, which Tune treats as "ask again soon".
``SteeringScheduler`` runs in the same loop: it applies the user's steering commands and stops
the trials that must stop (pruned, past their wall time, over the run's budget).
"""

from __future__ import annotations

import json
import logging
import time
from dataclasses import asdict
from typing import Any, Callable

import ray
from ray.tune import Callback
from ray.tune.experiment import Trial
from ray.tune.schedulers import FIFOScheduler
from ray.tune.search import Searcher

from trex_ray.search.inbox import Inbox
from trex_ray.search.outcome import Cost, TrialOutcome
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
        self.stopped: dict[str, str] = {}  # Tune trial id -> why the SteeringScheduler stopped it
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
            if reply.running:  # not finished while trials run: a steering command may add budget
                return None
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
        if trial_id in self.stopped:  # the TreeState recorded why already (pruned, wall time, budget)
            self.on_event("finished", {"node_id": node_id, "phase": "stopped", "error": self.stopped.pop(trial_id)})
            return
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
            cost = Cost(**json.loads(result["cost"])) if result.get("cost") else None
            ray.get(self.tree_state.fail.remote(node_id, result["error"], cost))
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


class SteeringScheduler(FIFOScheduler):
    """Tune's FIFO scheduling, plus the run's steering. Tune calls ``choose_trial_to_run`` on
    every turn of its loop, with the controller that can stop trials; every ``poll_s`` seconds
    this applies the commands waiting in the run's inbox through the TreeState, answers them,
    and stops the trials the TreeState says must stop. Tune's own stop waits for the trial to
    report, which a trial deep in a training step or a data build may not do for minutes, so the
    trial's actor is also killed: its slot is free within a second."""

    HEARTBEAT_S = 10.0

    def __init__(self, tree_state, searcher: TreeSearcher, inbox: Inbox | None, poll_s: float,
                 account=None, on_event: Callable[[str, dict[str, Any]], None] | None = None) -> None:
        super().__init__()
        self.tree_state, self.searcher, self.inbox, self.poll_s = tree_state, searcher, inbox, poll_s
        self.account = account  # the run's LLM account actor, for status replies
        self.on_event = on_event or (lambda kind, info: None)
        self._last = self._beat = 0.0
        self._since: dict[str, float] = {}  # Tune trial id -> when it was first seen RUNNING

    def choose_trial_to_run(self, tune_controller) -> Trial | None:
        now = time.time()
        if now - self._last >= self.poll_s:
            self._last = now
            try:
                self.tick(tune_controller, now)
            except Exception as e:  # noqa: BLE001 - a storage hiccup must not stop the search
                log.warning("steering: %s: %s", type(e).__name__, str(e)[:300])
        return super().choose_trial_to_run(tune_controller)

    def tick(self, tune_controller, now: float) -> None:
        if self.inbox is not None:
            for cmd in self.inbox.pending():
                reply = ray.get(self.tree_state.steer.remote(cmd))
                if reply.status is not None and self.account is not None:
                    reply.status["llm_account"] = ray.get(self.account.snapshot.remote())
                self.inbox.answer(reply)
                self.on_event("steered", {"command": cmd.describe(), "by": cmd.by, "accepted": reply.accepted,
                                          "message": reply.message})
            if now - self._beat >= self.HEARTBEAT_S:
                self._beat = now
                self.inbox.heartbeat("running")
        trials = {t.config["node_id"]: t for t in list(tune_controller.get_live_trials()) if t.config.get("node_id")}
        for t in trials.values():
            if t.status == Trial.RUNNING:
                self._since.setdefault(t.trial_id, now)
        since = {node_id: self._since.get(t.trial_id) for node_id, t in trials.items()}
        for node_id, reason in ray.get(self.tree_state.enforce.remote(since)).items():
            self.stop(tune_controller, trials[node_id], reason)

    def stop(self, tune_controller, trial: Trial, reason: str) -> None:
        log.info("stopping %s (%s): %s", trial.config.get("node_id"), trial.trial_id, reason)
        self.searcher.stopped[trial.trial_id] = reason
        actor = trial.temporary_state.ray_actor
        tune_controller.stop_trial(trial)
        if actor is not None:
            ray.kill(actor, no_restart=True)
