"""What the run spent, per node, per branch and in all: accelerator-seconds, trained examples and
tokens, LLM tokens and cost. No Ray.

A node's own spend is its trial's ``Cost`` (measured in the trial, see ``executor/execute.py``)
plus the LLM calls made at it (its expansion and diagnosis: ``llm_spent`` events). A branch's is
the sum over its subtree. The run's total adds the LLM calls made for no node (research,
insights) and, for trials still running, the accelerator time they hold so far (wall x reserved
units): a run-level budget must count those before they report, or it would not hold.

Accelerator-seconds are GPU-seconds where a trial holds GPUs and CPU-seconds otherwise. A run's
budget (``limits.accelerator_hours`` plus what steering added) is checked with ``budget_left``.
"""

from __future__ import annotations

import time
from dataclasses import asdict, dataclass
from typing import Any

from trex_ray.search.plan import TrialResources
from trex_ray.search.tree import Node, Tree


@dataclass
class Spend:
    accelerator_seconds: float = 0.0
    train_samples: int = 0
    train_tokens: int = 0
    llm_tokens: int = 0
    llm_cost: float = 0.0

    def add(self, other: "Spend") -> "Spend":
        self.accelerator_seconds += other.accelerator_seconds
        self.train_samples += other.train_samples
        self.train_tokens += other.train_tokens
        self.llm_tokens += other.llm_tokens
        self.llm_cost += other.llm_cost
        return self

    def to_dict(self) -> dict[str, Any]:
        d = asdict(self)
        d["accelerator_seconds"] = round(self.accelerator_seconds, 2)
        d["llm_cost"] = round(self.llm_cost, 6)
        return d


def estimate(res: TrialResources, seconds: float) -> float:
    """Accelerator-seconds of a trial that held ``res`` for ``seconds`` of wall time (what a
    trial stopped from outside, or still running, is charged: it cannot report its own)."""
    return max(0.0, seconds) * res.reserved_units[0]


def node_spend(node: Node) -> Spend:
    c = node.cost
    return Spend(accelerator_seconds=float(c.accelerator_seconds), train_samples=int(c.train_samples),
                 train_tokens=int(c.train_tokens), llm_tokens=int(c.llm_tokens) + int(node.llm.get("tokens", 0)),
                 llm_cost=float(c.llm_cost) + float(node.llm.get("cost", 0.0)))


def branch_spend(tree: Tree) -> dict[str, Spend]:
    """Each node's spend summed over its subtree, in one pass from the leaves up."""
    out: dict[str, Spend] = {}
    for node in reversed(list(tree.nodes.values())):  # children are created after their parents
        total = node_spend(node)
        for c in node.children:
            total.add(out[c])
        out[node.id] = total
    return out


def running_seconds(tree: Tree, default: TrialResources, now: float | None = None) -> float:
    """Accelerator-seconds that trials running now have held so far (an estimate)."""
    now = time.time() if now is None else now
    return sum(estimate(n.plan.resources or default, now - n.started_at)
               for n in tree.by_status("running") if n.started_at is not None)


def run_spend(tree: Tree, default: TrialResources, now: float | None = None) -> Spend:
    """Everything the run spent: every node's own spend, the LLM calls made for no node, and the
    accelerator time of trials running now."""
    total = Spend(llm_tokens=int(tree.run_llm.get("tokens", 0)), llm_cost=float(tree.run_llm.get("cost", 0.0)))
    for node in tree.nodes.values():
        total.add(node_spend(node))
    total.accelerator_seconds += running_seconds(tree, default, now)
    return total


def accelerator_budget(tree: Tree, hours: float | None) -> float | None:
    """The run's accelerator-seconds budget: ``hours`` (limits.accelerator_hours) plus what the
    user added while it ran; None: no budget."""
    if hours is None:
        return None
    return hours * 3600.0 + tree.extra_accelerator_seconds


def budget_left(tree: Tree, default: TrialResources, hours: float | None, now: float | None = None) -> float | None:
    """Accelerator-seconds left in the run's budget (negative once overspent), None: no budget."""
    budget = accelerator_budget(tree, hours)
    return None if budget is None else budget - run_spend(tree, default, now).accelerator_seconds


def snapshot(tree: Tree, default: TrialResources, hours: float | None, now: float | None = None) -> dict[str, Any]:
    """The spend part of ``tree.json``: per node its own and its branch's spend, and the run's."""
    branches = branch_spend(tree)
    return {
        "nodes": {nid: {"own": node_spend(tree.nodes[nid]).to_dict(), "branch": s.to_dict()}
                  for nid, s in branches.items()},
        "run": run_spend(tree, default, now).to_dict(),
        "accelerator_budget_seconds": accelerator_budget(tree, hours),
        "accelerator": sorted({n.cost.accelerator for n in tree.nodes.values() if n.cost.accelerator_seconds})
                       or [default.reserved_units[1]],
    }


def budget_now(tree: Tree, default: TrialResources, hours: float | None, now: float | None = None
               ) -> tuple[float | None, float | None]:
    """(the run's accelerator-seconds budget, what is left of it now); (None, None): no budget."""
    budget = accelerator_budget(tree, hours)
    return budget, None if budget is None else budget - run_spend(tree, default, now).accelerator_seconds
