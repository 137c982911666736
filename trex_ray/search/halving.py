"""Multi-fidelity search: which node trains next, and at which rung. No Ray here.

A plan is first trained as a proxy: the first ``rungs[0]`` fraction of its full run's steps (the
same data order and learning-rate schedule, stopped early and checkpointed), scored on a smaller
dev slice. Promotion continues that run from its checkpoint to the next rung, so the plan's top
rung is exactly the full run and no step is trained twice.

Promotions follow ASHA (Li et al., "A System for Massively Parallel Hyperparameter Tuning",
2020), as Ray Tune's ``AsyncHyperBandScheduler`` implements it: whenever a slot is free, the
highest rung with a node in the top 1/eta of those that finished it (and not yet promoted)
promotes that node; otherwise a new plan starts at the bottom rung. ASHA never waits for a rung
to fill, which suits a tree that keeps proposing. (Optuna's ``SuccessiveHalvingPruner`` makes
the same decision from the other side, pruning a trial outside the top 1/eta at a rung.) Tune's
scheduler itself is not reused: it stops or continues one running trial that reports at
milestones, while here a rung is a separate run of a node that can be handed to any free slot,
after a restart too, and the decision must be a ledger event; the rule is the same. The tree needs one rule of its own on top, a
budget that holds: a new plan starts only if, after it, the budget can still carry the current
leader to the top rung, and once no new plan may start the rest of the budget goes to
promotions in rank order until the final selection has its finalists at the top rung, so a
run never ends with its best idea untested at full fidelity.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

from trex_ray.config import SearchConfig
from trex_ray.search.plan import Plan
from trex_ray.search.tree import Node, Tree


@dataclass(frozen=True)
class Rung:
    """What one run of a node trains and scores."""

    index: int
    fraction: float  # of the plan's full training steps, counted from the start of the run
    dev_limit: int  # dev rows scored


def rung(search: SearchConfig, index: int, dev_limit: int) -> Rung:
    top = index == len(search.rungs) - 1
    return Rung(index, search.rungs[index], dev_limit if top else min(dev_limit, search.proxy_dev_limit))


def _rows(plan: Plan, train_rows: int) -> int:
    """The rows a plan trains on, estimated before its data is built: its sample cap, at most the
    rows it can draw on (``train_rows``: the task's train split, or for a task without one its
    sources', plus what its synthesize steps write); filters may leave fewer."""
    cap, avail = plan.recipe.sample_cap, train_rows + plan.recipe.synthetic_rows
    return min(cap or avail, avail) if avail else (cap or 0)


def full_steps(plan: Plan, train_rows: int) -> int:
    """Optimizer steps of the plan's full run (0: no training)."""
    return plan.training.full_steps(_rows(plan, train_rows)) if plan.training else 0


def stop_step(plan: Plan, train_rows: int, fraction: float) -> int:
    """The step a run at ``fraction`` of the plan's full run stops at."""
    return plan.training.stop_at(_rows(plan, train_rows), fraction) if plan.training else 0


def examples(plan: Plan, train_rows: int, fraction: float, from_fraction: float = 0.0) -> int:
    """Training examples processed going from ``from_fraction`` to ``fraction`` of the full run."""
    t = plan.training
    if t is None:
        return 0
    start = stop_step(plan, train_rows, from_fraction) if from_fraction > 0 else 0
    return max(0, stop_step(plan, train_rows, fraction) - start) * t.batch_size * t.grad_accum


class Budget:
    """The run's compute account: what finished runs spent, what running ones will, and what
    a planned run would cost, in the configured unit."""

    def __init__(self, tree: Tree, search: SearchConfig, train_rows: int) -> None:
        self.tree, self.search, self.train_rows = tree, search, train_rows

    def _per_example(self) -> float:
        """Accelerator-seconds per trained example, from the runs so far (evaluation included)."""
        done = [n for n in self.tree.by_status("succeeded", "failed") if n.cost.examples > 0]
        ex = sum(n.cost.examples for n in done)
        return sum(n.cost.accelerator_seconds for n in done) / ex if ex else 0.0

    def cost(self, node: Node, to_rung: int) -> float:
        """What training ``node`` from its last finished rung to ``to_rung`` costs."""
        rungs = self.search.rungs
        done = max(node.rung_scores, default=-1)
        n = examples(node.plan, self.train_rows, rungs[to_rung], rungs[done] if done >= 0 else 0.0)
        return n if self.search.budget_unit == "example_epochs" else n * self._per_example()

    def spent(self) -> float:
        """Finished runs' cost, plus running runs' predicted cost (they will be paid for)."""
        unit = self.search.budget_unit
        total = sum(n.cost.examples if unit == "example_epochs" else n.cost.accelerator_seconds
                    for n in self.tree.nodes.values() if n.id != self.tree.root_id)
        return total + sum(self.cost(n, n.rung) for n in self.tree.by_status("running"))

    def left(self) -> float:
        if self.search.budget is None:
            return math.inf
        # accelerator-seconds the user added while the run went (steer budget +S) count here too
        extra = self.tree.extra_accelerator_seconds if self.search.budget_unit == "accelerator_seconds" else 0.0
        return self.search.budget + extra - self.spent()

    def reserve(self) -> float:
        """What carrying the current leader below the top rung up to it would cost (0 when the
        leader is at the top already, or when there is none)."""
        leader = self.tree.leader()
        top = self.tree.params.top_rung
        if leader is None or leader.rung >= top:  # at the top, or promoted there already (running)
            return 0.0
        return self.cost(leader, top)


def asha_promotion(tree: Tree, eta: float) -> Node | None:
    """ASHA's next promotion: from the highest rung down, the best node in the top 1/eta of the
    nodes that finished that rung, still at that rung (not promoted yet)."""
    top = tree.params.top_rung
    trained = [n for n in tree.nodes.values() if n.id != tree.root_id]
    for k in range(top - 1, -1, -1):
        finished = sorted((n for n in trained if k in n.rung_scores),
                          key=lambda n: (-tree.params.sign * n.rung_scores[k], n.depth, n.created_at or 0))
        for n in finished[: int(len(finished) // eta)]:
            if n.status == "succeeded" and n.rung == k:
                return n
    return None


def forced_promotion(tree: Tree, finalists: int) -> Node | None:
    """Once no new plan may start: the best-ranked finished node below the top rung, while fewer
    than ``finalists`` nodes have reached (or are training to) the top rung, so the final
    selection has its candidates and the rest of the budget is not spent carrying every proxy up."""
    top = tree.params.top_rung
    at_top = sum(1 for n in tree.nodes.values() if n.id != tree.root_id and n.rung == top and n.status != "failed")
    below = [n for n in tree.by_status("succeeded") if n.id != tree.root_id and n.rung < top]
    return min(below, key=tree.rank_key) if below and at_top < finalists else None
