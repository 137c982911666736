"""The run's state: the tree, its ledger and the trial budget, as plain Python.

``TreeState`` (the Ray actor in ``actors.py``) is exactly this class, hosted in one process so
the tree has a single writer. Every change goes ledger-first: append (durable) then apply.
"""

from __future__ import annotations

import json
import logging
import os
import time
from pathlib import Path
from typing import Any

from trex_ray.ledger import LEDGER_NAME, Ledger, read_events
from trex_ray.plan import Plan
from trex_ray.policy import ExpansionRequest, TaskSpec, baseline_plan
from trex_ray.tree import Node, SearchParams, Tree

log = logging.getLogger(__name__)

ROOT_ID = "n0"


class SearchState:
    def __init__(
        self,
        run_dir: str,
        params: SearchParams,
        task: TaskSpec,
        defaults: dict[str, Any],
        max_trials: int,
        children_per_expansion: int,
        seed: int = 0,
        live_report: bool = False,
        fit_check: dict[str, Any] | None = None,
        storage: str | None = None,
    ) -> None:
        self.run_dir = Path(run_dir)
        self.storage = storage  # remote storage the views and ledger are mirrored to (storage.py)
        self._views_written_at, self._views_cost = 0.0, 0.0
        # {"dims": ModelDims fields, "resources": default TrialResources, "gpu_memory_gb": float}
        self.fit_check = fit_check
        self.live_report = live_report  # rebuild report.html/.md whenever a node ends
        self.task, self.defaults, self.seed = task, defaults, seed
        self.max_trials, self.children_per_expansion = max_trials, children_per_expansion
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
            self._record({"type": "run_started", "task": task.id, "max_trials": max_trials})
        self._next_id = 1 + max((int(n[1:]) for n in self.tree.nodes), default=-1)
        self.expanding: str | None = None
        self.closed = False  # after close(): late diagnoses and insights are dropped
        self._insights_asked = 0  # finished trials when insights were last asked for (not durable)

    # ------------------------------------------------------------------ ledger-first changes
    def _record(self, event: dict[str, Any]) -> dict[str, Any]:
        event = self.ledger.append(event)
        self.tree.apply(event)
        if event["type"] in ("node_finished", "node_failed", "node_pruned"):
            self.refresh_views()
        return event

    def _plan_node(self, parent_id: str | None, plan: Plan, source: str, note: str | None = None) -> str:
        node_id = ROOT_ID if parent_id is None else f"n{self._next_id}"
        self._next_id = max(self._next_id, int(node_id[1:]) + 1)
        self._record({"type": "node_planned", "node_id": node_id, "parent_id": parent_id,
                      "plan": plan.model_dump(mode="json"), "source": source,
                      **({"note": note[:2000]} if note else {})})
        return node_id

    # ------------------------------------------------------------------ budget
    def trials_started(self) -> int:
        """Fine-tuning trials that have run or are running (the baseline is not counted)."""
        return sum(1 for n in self.tree.by_status("running", "succeeded", "failed") if n.id != ROOT_ID)

    def trials_left(self) -> int:
        planned = sum(1 for n in self.tree.by_status("planned") if n.id != ROOT_ID)
        return self.max_trials - self.trials_started() - planned

    # ------------------------------------------------------------------ the searcher's calls
    def next_node(self, trial_id: str) -> dict[str, Any]:
        """Hand out the oldest planned node and mark it running, or say why there is none:
        ``{"node_id", "plan"}`` | ``{"wait": True, "running": k}`` | ``{"done": True}``."""
        if self.tree.root is None:
            self._plan_node(None, baseline_plan(self.task), "builtin")
        root = self.tree.root
        if root.status == "failed":
            return {"done": True, "reason": f"the baseline failed: {root.failure}"}
        budget_left = self.trials_started() < self.max_trials
        planned = [n for n in self.tree.by_status("planned") if n.id == ROOT_ID or budget_left]
        for node in sorted(planned, key=lambda n: int(n.id[1:])):
            cause = self._does_not_fit(node.plan) or self._cannot_warm_start(node)
            if cause is None:
                break
            # rejected before any accelerator time: a failed node the Researcher learns from
            self._record({"type": "node_started", "node_id": node.id, "trial_id": None})
            self._record({"type": "node_failed", "node_id": node.id, "cause": cause})
        else:
            node = None
        if node is not None:
            # derived from the tree at every handout, so a node requeued on resume gets it too
            init_from = self._init_from(node)
            self._record({"type": "node_started", "node_id": node.id, "trial_id": trial_id,
                          **({"init_from": init_from} if init_from else {})})
            return {"node_id": node.id, "plan": node.plan.model_dump(mode="json"), "parent_id": node.parent_id,
                    "init_from": init_from}
        running = len(self.tree.by_status("running"))
        if self.trials_started() >= self.max_trials:
            return {"done": True, "reason": "trial budget spent", "running": running}
        return {"wait": True, "running": running}

    def _does_not_fit(self, plan: Plan) -> str | None:
        if not self.fit_check or not self.fit_check.get("dims"):
            return None
        from trex_ray.memory import ModelDims, check_fits
        from trex_ray.plan import TrialResources

        res = plan.resources or TrialResources.model_validate(self.fit_check["resources"])
        return check_fits(ModelDims(**self.fit_check["dims"]), plan.training, res, self.fit_check["gpu_memory_gb"])

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

    def begin_expansion(self) -> dict[str, Any] | None:
        """Select a node by UCT and return the Researcher's request for it, or None when no
        expansion is possible now (nothing selectable, one in flight, or no budget left)."""
        if self.expanding is not None or self.trials_left() <= 0:
            return None
        node = self.tree.select()
        if node is None:
            return None
        self.expanding = node.id
        self._record({"type": "expansion", "node_id": node.id})
        request = ExpansionRequest(
            task=self.task, memory=self.tree.memory(node.id),
            n=min(self.children_per_expansion, self.trials_left()), defaults=self.defaults, seed=self.seed,
        )
        return {"node_id": node.id, "request": request}

    def add_children(self, parent_id: str, plans: list[dict[str, Any]], source: str,
                     note: str | None = None) -> list[str]:
        """Record the Researcher's plans as planned children (each re-validated: it is the last
        gate before a plan is run). ``note`` says why, e.g. why the LLM was not used."""
        self.expanding = None
        ids = []
        for raw in plans[: max(self.trials_left(), 0)]:
            try:
                plan = Plan.model_validate(raw)
            except ValueError as e:
                log.warning("dropping an invalid plan for %s: %s", parent_id, e)
                continue
            ids.append(self._plan_node(parent_id, plan, source, note))
        return ids

    def expansion_failed(self, parent_id: str, cause: str) -> None:
        self.expanding = None
        self._record({"type": "expansion_failed", "node_id": parent_id, "cause": cause[:2000]})

    def finish(self, node_id: str, outcome: dict[str, Any]) -> None:
        if outcome.get("bad_cases"):
            # the rule-based diagnosis, so every run has one; recorded before the node ends so
            # that the views written at its end show it (an LLM diagnosis may replace it later)
            from trex_ray.diagnosis import rule_diagnosis

            self.record_diagnosis(node_id, rule_diagnosis(outcome["bad_cases"]), refresh=False)
        self._record({"type": "node_finished", "node_id": node_id, "score": outcome["score"],
                      "metrics": outcome["metrics"], "cost": outcome.get("cost"),
                      "artifacts": outcome.get("artifacts"), "recipe_stats": outcome.get("recipe_stats")})

    def fail(self, node_id: str, cause: str, cost: dict[str, Any] | None = None) -> None:
        if self.tree.nodes[node_id].is_pending:
            self._record({"type": "node_failed", "node_id": node_id, "cause": cause[:4000], "cost": cost})

    # ------------------------------------------------------------------ diagnoses and insights
    def diagnosis_request(self, node_id: str) -> dict[str, Any] | None:
        """What the Researcher needs to diagnose a finished node: the task and the node's summary."""
        node = self.tree.nodes.get(node_id)
        return None if node is None or self.closed else {"task": self.task, "node": node.summary()}

    def record_diagnosis(self, node_id: str, detail: dict[str, Any], refresh: bool = True) -> None:
        """Store a node's diagnosis (``diagnosis.py``) as a ``node_diagnosed`` event carrying the
        structured detail and its short text. Dropped after ``close`` or for an unknown node."""
        from trex_ray.diagnosis import describe

        if self.closed or node_id not in self.tree.nodes:
            log.info("dropping a late diagnosis of %s", node_id)
            return
        self._record({"type": "node_diagnosed", "node_id": node_id, "diagnosis": describe(detail), "detail": detail})
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
        from trex_ray.diagnosis import insight_memory

        self._insights_asked = done
        return {"after_trials": done, "memory": insight_memory(self.tree)}

    def record_insights(self, out: dict[str, Any]) -> None:
        """Store distilled insights (``Diagnostician.distill``) as an ``insights_distilled`` event."""
        if self.closed:
            return
        self._record({"type": "insights_distilled", "after_trials": int(out["after_trials"]),
                      "insights": out["insights"], "usage": out.get("usage")})
        self.refresh_views()

    def close(self, reason: str) -> dict[str, Any]:
        """End the run: planned nodes that will not run are pruned (kept in the tree as ideas);
        a node still running lost its trial with the driver's loop and is failed."""
        for node in self.tree.by_status("running"):
            self._record({"type": "node_failed", "node_id": node.id, "cause": f"run ended before its trial reported ({reason})"})
        for node in self.tree.by_status("planned"):
            self._record({"type": "node_pruned", "node_id": node.id, "reason": reason})
        self._record({"type": "run_finished", "reason": reason})
        self.write_tree()
        self.closed = True
        self.ledger.close()
        return self.snapshot()

    # ------------------------------------------------------------------ reads
    def snapshot(self) -> dict[str, Any]:
        return self.tree.to_dict()

    def refresh_views(self) -> None:
        """Rewrite tree.json (and the report) unless that would take more than a tenth of the
        actor's time: on a large tree the views are rewritten less often, the decisions stay
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
        if self.storage:
            from trex_ray.storage import RunStorage

            RunStorage(self.storage).mirror_run_files(self.run_dir)
        if self.live_report:
            try:
                from trex_ray.report import write_report

                write_report(self.run_dir)
            except Exception as e:  # noqa: BLE001 - the report is a view; it must never stop the run
                log.warning("could not update the report: %s", e)
