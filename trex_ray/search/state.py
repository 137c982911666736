"""The run's state: the tree, its ledger and the trial budget, as plain Python.

``TreeState`` (the Ray actor in ``actors.py``) is exactly this class, hosted in one process so
the tree has a single writer. Every change goes ledger-first: append (durable) then apply.
What the views need (the report, a storage mirror) is the driver's business: it hands in
``on_change``, called after each rewrite of tree.json.
"""

from __future__ import annotations

import json
import logging
import os
import time
from dataclasses import asdict, dataclass, field, replace
from pathlib import Path
from typing import Any, Callable

from trex_ray.config import Config
from trex_ray.search.bad_cases import describe, insight_memory, rule_diagnosis
from trex_ray.search import spend, steering
from trex_ray.search.fit import FitCheck
from trex_ray.search.halving import Budget, Rung, asha_promotion, forced_promotion, rung
from trex_ray.search.limits import PlanGate
from trex_ray.search.ledger import LEDGER_NAME, Ledger, read_events
from trex_ray.search.outcome import Cost, TrialOutcome
from trex_ray.search.plan import Plan, TrialResources
from trex_ray.search.request import ExpansionRequest, Proposal, TaskSpec, baseline_plan
from trex_ray.search.selection import Rescore, choose, finalists
from trex_ray.search.tree import Node, SearchParams, Tree, node_number

log = logging.getLogger(__name__)

ROOT_ID = "n0"


@dataclass(frozen=True)
class Handout:
    """The TreeState's answer to "which node runs next?": a node to run (``node_id``, its plan,
    and for a warm start the parent's model ``init_from``), nothing yet (``wait``), or the end
    of the search (``done``, with why)."""

    node_id: str | None = None
    plan: Plan | None = None
    parent_id: str | None = None
    init_from: str | None = None  # the parent's trained model a warm-start plan trains further
    rung: Rung | None = None  # how far to train and how many dev rows to score (successive halving)
    resume_from: str | None = None  # a promoted node's checkpoint at its last rung: the run continues it
    # nodes to compare with on the shared dev rows (paired intervals): role -> (node id, predictions)
    compare: dict[str, tuple[str, str]] = field(default_factory=dict)
    done: str | None = None  # why the search is over
    running: int = 0  # trials running now


def run_facts(tree: Tree, cfg: Config, closed: str | None = None, now: float | None = None) -> steering.RunFacts:
    """What steering needs to know of a run beyond its tree: its trial shape, accelerator budget
    (limits.accelerator_hours plus what the user added) and what is left of it, its wall limit."""
    default = TrialResources.of(cfg.resources)
    budget, left = spend.budget_now(tree, default, cfg.limits.accelerator_hours, now)
    return steering.RunFacts(default=default, accelerator_budget=budget, accelerator_left=left,
                             trial_wall_seconds=cfg.limits.trial_wall_seconds, closed=closed)


class SearchState:
    def __init__(self, run_dir: str | os.PathLike, cfg: Config, task: TaskSpec, fit: FitCheck | None = None,
                 on_change: Callable[[Path, Tree], None] | None = None, gate: PlanGate | None = None) -> None:
        self.run_dir = Path(run_dir)
        self.cfg, self.task, self.fit = cfg, task, fit
        # the run's limits on plans (search/limits.py); None: only the plan schema's bounds
        self.gate = gate
        self.on_change = on_change  # after tree.json is rewritten: the driver's views (report, mirror)
        self._views_written_at, self._views_cost = 0.0, 0.0
        params = SearchParams.of(cfg.search, task.higher_is_better, task.metric_range)
        ledger_path = self.run_dir / LEDGER_NAME
        existing = list(read_events(ledger_path)) if ledger_path.exists() else []
        self.ledger = Ledger(self.run_dir)
        self.tree = Tree.replay(existing, params)
        if existing:
            self._record({"type": "run_resumed"})
            # Trials that were running when the run stopped are re-run from their plan: their
            # node is kept (same id), nothing is duplicated.
            for node in self.tree.by_status("running"):
                self._record({"type": "node_requeued", "node_id": node.id})
        else:
            self._record({"type": "run_started", "task": task.id, "metric": task.metric,
                          "higher_is_better": task.higher_is_better, "metric_range": list(task.metric_range),
                          "max_trials": cfg.search.max_trials, "base_model": cfg.model.name_or_path})
        self._next_id = 1 + max((node_number(n) for n in self.tree.nodes), default=-1)
        self.expanding: str | None = None
        self.closed = False  # after close(): late diagnoses and insights are dropped
        self.closed_reason: str | None = None
        self._insights_asked = 0  # finished trials when insights were last asked for (not durable)

    # ------------------------------------------------------------------ ledger-first changes
    def _record(self, event: dict[str, Any]) -> dict[str, Any]:
        event = self.ledger.append(event)
        self.tree.apply(event)
        if event["type"] in ("node_finished", "node_failed", "node_pruned"):
            self.refresh_views()
        return event

    def _plan_node(self, parent_id: str | None, plan: Plan, source: str, note: str | None = None,
                   clipped: list[str] | None = None) -> str:
        node_id = ROOT_ID if parent_id is None else f"n{self._next_id}"
        self._next_id = max(self._next_id, node_number(node_id) + 1)
        self._record({"type": "node_planned", "node_id": node_id, "parent_id": parent_id,
                      "plan": plan.model_dump(mode="json"), "source": source,
                      **({"note": note[:2000]} if note else {}), **({"clipped": clipped} if clipped else {})})
        return node_id

    # ------------------------------------------------------------------ budget
    def trials_started(self) -> int:
        """Plans (fine-tuning nodes, the baseline aside) that have started at least once: a
        promotion trains a started plan further and does not count again; a plan the user
        pruned while it ran does not count (its accelerator time does, in spend)."""
        return sum(1 for n in self.tree.nodes.values() if n.id != ROOT_ID and n.attempts > 0 and n.status != "pruned")

    def trials_left(self) -> int:
        planned = sum(1 for n in self.tree.by_status("planned") if n.id != ROOT_ID and n.attempts == 0)
        return self.max_trials - self.trials_started() - planned

    @property
    def max_trials(self) -> int:
        """The trial budget: the config's, plus what the user added while the run went."""
        return self.cfg.search.max_trials + self.tree.extra_trials

    def _out_of_budget(self) -> str | None:
        """Why nothing further may start, promotions included: stopped, or the run's
        accelerator limit spent (search/spend.py)."""
        if self.tree.stop_requested:
            return f"stopped by {self.tree.stop_requested}"
        facts = self.facts
        if facts.accelerator_left is not None and facts.accelerator_left <= 0:
            return f"accelerator budget spent ({facts.accelerator_budget:.0f} accelerator-seconds)"
        return None

    # ------------------------------------------------------------------ the searcher's calls
    def budget(self) -> Budget:
        return Budget(self.tree, self.cfg.search, self.task.data_rows)  # rows plans draw on, with or without a train split

    def may_start_new(self) -> str | None:
        """Why no new plan may start now (its trial count or the compute budget), else None.
        The compute check keeps enough to carry the current leader to the top rung."""
        if self.trials_started() >= self.max_trials:
            return "trial budget spent"
        stop = self._out_of_budget()
        if stop is not None:
            return stop
        b = self.budget()
        if self.cfg.search.budget is not None:
            first = next(iter(sorted(self.tree.by_status("planned"), key=lambda n: node_number(n.id))), None)
            need = b.cost(first, 0) if first is not None and first.id != ROOT_ID and first.rung == 0 else 0.0
            if b.left() < max(need, 1e-9) + b.reserve():
                return "compute budget spent"
        return None

    def _promote(self) -> Node | None:
        """The node to train to its next rung now, if any (ASHA; once no new plan may start, the
        rest of the budget carries the best-ranked nodes up)."""
        s = self.cfg.search
        if len(s.rungs) == 1 or self._out_of_budget() is not None:  # stopped: running trials finish, nothing more
            return None
        node = asha_promotion(self.tree, s.eta)
        if node is None and self.may_start_new() is not None:
            node = forced_promotion(self.tree, s.finalists)
        if node is None:
            return None
        b = self.budget()
        top = self.tree.params.top_rung
        full = any(n.rung == top for n in self.tree.nodes.values() if n.id != ROOT_ID and n.status != "failed" and n.rung_scores
                   or n.rung == top and n.is_pending and n.id != ROOT_ID and n.attempts > 0)
        # Over budget, the leader is still carried up when no plan has been trained in full yet:
        # a run must end with a best model (the budget is overspent by that one promotion, at
        # most; it happens when the first proxies' cost could not be known before they ran).
        if b.left() < b.cost(node, node.rung + 1) and (full or node is not forced_promotion(self.tree, 1)):
            return None
        self._record({"type": "node_promoted", "node_id": node.id, "rung": node.rung + 1})
        return node

    def next_node(self, trial_id: str) -> Handout:
        """Hand out the next run: a promotion if one is due, else the oldest planned node; mark
        it running, or say why there is none."""
        if self.tree.root is None:
            self._plan_node(None, baseline_plan(self.task), "builtin")
        root = self.tree.root
        if root.status == "failed":
            return Handout(done=f"the baseline failed: {root.failure}")
        if root.status == "succeeded":
            self._promote()  # ASHA: a due promotion goes before any new plan
        stop = self.may_start_new() if root.status == "succeeded" else None
        # planned nodes: the baseline, started ones (promoted, or requeued on resume), and new plans while they may start
        planned = [n for n in self.tree.by_status("planned") if n.id == ROOT_ID or n.attempts > 0 or stop is None]
        for node in sorted(planned, key=lambda n: (-n.rung, node_number(n.id))):
            cause = (self.fit.why_not(node.plan) if self.fit else None) or self._cannot_warm_start(node)
            if cause is None:
                break
            # rejected before any accelerator time: a failed node the Researcher learns from
            self._record({"type": "node_started", "node_id": node.id, "trial_id": None})
            self._record({"type": "node_failed", "node_id": node.id, "cause": cause})
        else:
            node = None
        if node is not None:
            return self._hand_out(node, trial_id)
        running = len(self.tree.by_status("running"))
        if stop is not None and (running == 0 or len(self.cfg.search.rungs) == 1):
            # nothing new may start, nothing runs whose result could promote a node, and no
            # promotion is left that the budget can pay for: the search is over (Tune lets the
            # running trials finish)
            return Handout(done=stop, running=running)
        return Handout(running=running)

    def _hand_out(self, node: Node, trial_id: str) -> Handout:
        # derived from the tree at every handout, so a node requeued on resume gets them too
        init_from = self._init_from(node)
        r = rung(self.cfg.search, node.rung if node.id != ROOT_ID else len(self.cfg.search.rungs) - 1,
                 self.cfg.task.dev_limit)
        resume = node.artifacts.get("checkpoint") if node.rung_scores else None
        compare = {}
        parent = self.tree.nodes.get(node.parent_id) if node.parent_id else None
        best = self.tree.best() or self.tree.leader()
        for role, other in (("parent", parent), ("best", best)):
            if other is not None and other.id != node.id and other.artifacts.get("dev_predictions"):
                compare[role] = (other.id, other.artifacts["dev_predictions"])
        self._record({"type": "node_started", "node_id": node.id, "trial_id": trial_id, "rung": r.index,
                      **({"init_from": init_from} if init_from else {}),
                      **({"resume_from": resume} if resume else {})})
        return Handout(node_id=node.id, plan=node.plan, parent_id=node.parent_id, init_from=init_from,
                       rung=r, resume_from=resume, compare=compare)

    def _init_from(self, node: Node) -> str | None:
        """The parent's trained model (a local path or storage URI) a warm-start node starts from."""
        if node.plan.training is None or not node.plan.training.warm_start or not node.parent_id:
            return None
        return self.tree.nodes[node.parent_id].artifacts.get("model")

    def _cannot_warm_start(self, node: Node) -> str | None:
        """Why a warm-start plan cannot run (checked before any accelerator time), else None."""
        t = node.plan.training
        if t is None or not t.warm_start:
            return None
        parent = self.tree.nodes.get(node.parent_id) if node.parent_id else None
        if parent is None or parent.plan.training is None:
            return "cannot warm-start: the parent is the untrained base model (baseline), there are no trained weights to start from"
        if parent.status != "succeeded" or not parent.artifacts.get("model"):
            why = f"it {parent.status}" + (f": {parent.failure[:300]}" if parent.failure else "")
            return f"cannot warm-start: parent {parent.id} has no trained model ({why})"
        pt = parent.plan.training
        # the parent's adapter is loaded as it is: the method and LoRA shape must match it
        fields = ("method",) if t.method == "full" or pt.method != t.method else (
            "method", "lora_r", "lora_alpha", "lora_target_modules")
        changed = [f"{f} {getattr(pt, f)} -> {getattr(t, f)}" for f in fields if getattr(pt, f) != getattr(t, f)]
        if changed:
            return (f"cannot warm-start from parent {parent.id}: the plan changes {', '.join(changed)}, so the "
                    "parent's weights cannot be loaded; a warm start keeps the parent's method and LoRA shape")
        return None

    def begin_expansion(self) -> ExpansionRequest | None:
        """Select a node by UCT and return the Researcher's request for it, or None when no
        expansion is possible now (nothing selectable, one in flight, or no budget left)."""
        if self.expanding is not None or self.trials_left() <= 0 or self.may_start_new() is not None:
            return None
        # a pinned node keeps the expansions under it while it can grow (search/steering.py)
        node = next((n for start in steering.focus(self.tree) if (n := self.tree.select(start))), None)
        node = node or self.tree.select()
        if node is None:
            return None
        self.expanding = node.id
        self._record({"type": "expansion", "node_id": node.id})
        s = self.cfg.search
        return ExpansionRequest(node_id=node.id, task=self.task, memory=self.tree.memory(node.id),
                                n=min(s.children_per_expansion, self.trials_left()), defaults=self.cfg.train,
                                seed=s.seed)

    def add_children(self, parent_id: str, proposal: Proposal) -> list[str]:
        """Record the Researcher's plans as planned children (each re-validated from its data:
        this is the last gate before a plan is run). The proposal's ``note`` says why, e.g. why
        the LLM was not used."""
        self.expanding = None
        usage = proposal.usage or {}
        if usage.get("calls"):  # the expansion's LLM spend, on the node it grew
            self.record_llm_spend(parent_id, usage, "expansion")
        if self.tree.in_cut_branch(parent_id) or self.closed:
            log.info("dropping %d plan(s) for %s: the user pruned that branch", len(proposal.plans), parent_id)
            return []
        ids = []
        for plan in proposal.plans[: max(self.trials_left(), 0)]:
            try:
                plan = Plan.model_validate(plan.model_dump())
            except ValueError as e:
                log.warning("dropping an invalid plan for %s: %s", parent_id, e)
                continue
            ids.append(self._gated_node(parent_id, plan, proposal))
        return ids

    def _gated_node(self, parent_id: str, plan: Plan, proposal: Proposal) -> str:
        """Record ``plan`` held to the run's limits: clipped (how, on the node), or rejected
        before any accelerator time (a failed node with the reason)."""
        gated = self.gate.check(plan) if self.gate else None
        if gated is None or gated.plan is not None:
            node_id = self._plan_node(parent_id, gated.plan if gated else plan, proposal.source, proposal.note,
                                      clipped=gated.clipped if gated else None)
        else:
            node_id = self._plan_node(parent_id, plan, proposal.source, proposal.note)
            self._record({"type": "node_started", "node_id": node_id, "trial_id": None})
            self._record({"type": "node_failed", "node_id": node_id, "cause": gated.rejected})
        return node_id

    def record_llm_spend(self, node_id: str | None, usage: dict[str, Any], what: str) -> None:
        """LLM calls made at a node (its expansion, its diagnosis) or for none (research,
        insights), as an ``llm_spent`` event: the per-branch LLM spend (search/spend.py)."""
        tokens = int(usage.get("prompt_tokens", 0)) + int(usage.get("completion_tokens", 0))
        self._record({"type": "llm_spent", "node_id": node_id, "what": what, "calls": int(usage.get("calls", 0)),
                      "tokens": tokens, "cost": float(usage.get("cost", 0.0))})

    def expansion_failed(self, parent_id: str, cause: str) -> None:
        self.expanding = None
        self._record({"type": "expansion_failed", "node_id": parent_id, "cause": cause[:2000]})

    def finish(self, node_id: str, outcome: TrialOutcome) -> None:
        node = self.tree.nodes[node_id]
        if node_id != ROOT_ID and outcome.rung != node.rung:
            # the rung is the one this node was handed out at, whatever the trial reports: a
            # trial that reported a lower one would be promoted to the same rung again, forever
            log.warning("%s was started at rung %d but its trial reported rung %d: recorded at rung %d",
                        node_id, node.rung, outcome.rung, node.rung)
            outcome = replace(outcome, rung=node.rung, fidelity=self.cfg.search.rungs[node.rung])
        if outcome.bad_cases:
            # the rule-based diagnosis, so every run has one; recorded before the node ends so
            # that the views written at its end show it (an LLM diagnosis may replace it later)
            self.record_diagnosis(node_id, rule_diagnosis(outcome.bad_cases), refresh=False)
        self._record({"type": "node_finished", "node_id": node_id, "score": outcome.score,
                      "metrics": outcome.metrics, "cost": asdict(outcome.cost), "rung": outcome.rung,
                      "fidelity": outcome.fidelity,
                      "interval": outcome.interval, "paired": outcome.paired,
                      "artifacts": outcome.artifacts, "recipe_stats": outcome.recipe_stats})

    def fail(self, node_id: str, cause: str, cost: Cost | None = None) -> None:
        if self.tree.nodes[node_id].is_pending:
            self._record({"type": "node_failed", "node_id": node_id, "cause": cause[:4000],
                          "cost": asdict(cost) if cost else None})

    # ------------------------------------------------------------------ diagnoses and insights
    def diagnosis_request(self, node_id: str) -> dict[str, Any] | None:
        """What the Researcher needs to diagnose a finished node: the task and the node's summary."""
        node = self.tree.nodes.get(node_id)
        return None if node is None or self.closed else {"task": self.task, "node": node.summary()}

    def record_diagnosis(self, node_id: str, detail: dict[str, Any], refresh: bool = True) -> None:
        """Store a node's diagnosis (``diagnosis.py``) as a ``node_diagnosed`` event carrying the
        structured detail and its short text. Dropped after ``close`` or for an unknown node."""
        if self.closed or node_id not in self.tree.nodes:
            log.info("dropping a late diagnosis of %s", node_id)
            return
        self._record({"type": "node_diagnosed", "node_id": node_id, "diagnosis": describe(detail), "detail": detail})
        if (detail.get("usage") or {}).get("calls"):
            self.record_llm_spend(node_id, detail["usage"], "diagnosis")
        if refresh:
            self.refresh_views()

    def finished_trials(self) -> int:
        return sum(1 for n in self.tree.by_status("succeeded", "failed") if n.id != ROOT_ID)

    def insights_request(self, every: int) -> dict[str, Any] | None:
        """The tree memory to distill insights from when ``every`` more trials finished since the
        last distillation (asked for or recorded), else None."""
        done = self.finished_trials()
        if every <= 0 or self.closed or done - max(self.tree.insights_after, self._insights_asked) < every:
            return None
        self._insights_asked = done
        return {"after_trials": done, "memory": insight_memory(self.tree)}

    def record_insights(self, out: dict[str, Any]) -> None:
        """Store distilled insights (``Diagnostician.distill``) as an ``insights_distilled`` event."""
        if self.closed:
            return
        self._record({"type": "insights_distilled", "after_trials": int(out["after_trials"]),
                      "insights": out["insights"], "usage": out.get("usage")})
        if (out.get("usage") or {}).get("calls"):
            self.record_llm_spend(None, out["usage"], "insights")
        self.refresh_views()

    def close(self, reason: str) -> Tree:
        """End the run: planned nodes that will not run are pruned (kept in the tree as ideas);
        a node still running lost its trial with the driver's loop and is failed. Returns the
        final tree."""
        for node in self.tree.by_status("running", "planned"):
            if node.rung_scores:  # a promotion that will not run: the node keeps its last rung
                self._record({"type": "promotion_dropped", "node_id": node.id, "reason": reason})
        for node in self.tree.by_status("running"):
            self._record({"type": "node_failed", "node_id": node.id, "cause": f"run ended before its trial reported ({reason})"})
        for node in self.tree.by_status("planned"):
            self._record({"type": "node_pruned", "node_id": node.id, "reason": reason})
        self._record({"type": "run_finished", "reason": reason})
        self.closed, self.closed_reason = True, reason
        self.write_tree()
        self.ledger.close()
        return self.tree

    # ------------------------------------------------------------------ the final selection
    def finalists(self) -> list[Node]:
        """The top-rung nodes to re-score on the final dev slice before the run ends."""
        return finalists(self.tree, self.cfg.search.finalists)

    def record_selection(self, rescored: list[Rescore]) -> str:
        """Record the finalists' final scores and the winner (``search/selection.py``); returns it."""
        for r in rescored:
            self._record({"type": "node_rescored", "node_id": r.node_id, "interval": r.interval,
                          **({"vs_leader": r.vs_leader} if r.vs_leader else {})})
        winner, why = choose(self.tree, rescored)
        self._record({"type": "best_selected", "node_id": winner, "reason": why,
                      "finalists": [r.node_id for r in rescored]})
        return winner
    # ------------------------------------------------------------------ steering
    @property
    def facts(self) -> steering.RunFacts:
        """The run's limits and budget as they stand now (search/steering.py)."""
        return run_facts(self.tree, self.cfg, self.closed_reason)

    def steer(self, cmd: steering.Command) -> steering.Reply:
        """Apply one steering command (search/steering.py): its events, or a ``steer_refused``
        event and the one-line reason. A command seen before (same id: the driver died after
        recording it) is answered again, not applied twice."""
        if any(e.get("cmd_id") == cmd.id for e in self.tree.steering):
            return steering.Reply(cmd.id, True, f"{cmd.describe()}: applied already")
        now = time.time()
        d = steering.decide(self.tree, cmd, self.facts, now)
        if cmd.op == "status" and d.refused is None:
            facts = self.facts
            view = steering.status(self.tree, facts, self.task.metric, self.max_trials, self.trials_started(),
                                   spend.snapshot(self.tree, facts.default, self.cfg.limits.accelerator_hours, now))
            return steering.Reply(cmd.id, True, "status", status=view)
        if d.refused is not None:
            if not self.closed:
                self._record({"type": "steer_refused", "cmd_id": cmd.id, "by": cmd.by, "command": cmd.describe(),
                              "reason": d.refused})
            return steering.Reply(cmd.id, False, d.refused)
        for ev in d.events:
            self._record(ev)
        self.refresh_views()
        return steering.Reply(cmd.id, True, d.message)

    def enforce(self, running_since: dict[str, float | None]) -> dict[str, str]:
        """Which trials handed out must stop now and why (pruned, past their wall time, over
        the run's budget, stopped before they started); the causes are recorded first."""
        events, stops = steering.enforce(self.tree, running_since, self.facts, time.time())
        for ev in events:
            self._record(ev)
        return stops

    # ------------------------------------------------------------------ reads
    def snapshot(self) -> dict[str, Any]:
        d = self.tree.to_dict()
        d["spend"] = spend.snapshot(self.tree, TrialResources.of(self.cfg.resources), self.cfg.limits.accelerator_hours)
        d["steering"] = list(self.tree.steering)
        d["max_trials"] = self.max_trials
        return d

    def refresh_views(self) -> None:
        """Rewrite tree.json (and the driver's views) unless that would take more than a tenth of
        the actor's time: on a large tree the views are rewritten less often, the decisions stay
        fast; the ledger, not the views, is what makes the run durable. ``close`` always writes."""
        if time.time() - self._views_written_at < 9 * self._views_cost:
            return
        t0 = time.time()
        self.write_tree()
        self._views_written_at, self._views_cost = time.time(), time.time() - t0

    def write_tree(self) -> None:
        tmp = self.run_dir / "tree.json.tmp"
        tmp.write_text(json.dumps(self.snapshot(), indent=1, default=str), encoding="utf-8")
        os.replace(tmp, self.run_dir / "tree.json")
        if self.on_change is not None:
            try:
                self.on_change(self.run_dir, self.tree)
            except Exception as e:  # noqa: BLE001 - the views must never stop the run
                log.warning("could not update the run's views: %s", e)
