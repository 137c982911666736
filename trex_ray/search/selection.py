"""The end of a search: which node is the best, chosen so that noise does not choose it.

The top-rung nodes ranked first on dev (the finalists) are re-scored on a larger dev slice; the
one that scores best there leads, and every finalist whose paired interval against the leader
contains 0 (no real difference on the same rows) is as good as far as the data can tell: of
those the cheapest plan (fewest trained examples) wins. No Ray here.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

from trex_ray.search.tree import Node, Tree


@dataclass(frozen=True)
class Rescore:
    """One finalist re-scored on the final dev slice."""

    node_id: str
    interval: dict[str, Any]  # its score there (ftbench.intervals.Interval.to_dict)
    vs_leader: dict[str, Any] | None  # paired difference leader - this node (None for the leader itself)


def finalists(tree: Tree, k: int) -> list[Node]:
    """The ``k`` nodes trained in full ranked first (the tree's own ranking)."""
    done = [n for n in tree.by_status("succeeded") if n.id != tree.root_id and n.fidelity >= 1.0]
    return sorted(done, key=tree.rank_key)[:k]


def leader_of(tree: Tree, scores: dict[str, float]) -> str:
    """The finalist scoring best on the final slice (ties: the tree's ranking)."""
    return min(scores, key=lambda i: (-tree.params.sign * scores[i], tree.rank_key(tree.nodes[i])))


def choose(tree: Tree, rescored: list[Rescore]) -> tuple[str, str]:
    """(winner, why) among re-scored finalists: the cheapest of those the data cannot tell from
    the leader."""
    leader = next(r for r in rescored if r.vs_leader is None)
    tied = [r for r in rescored if r.vs_leader is None or r.vs_leader["low"] <= 0 <= r.vs_leader["high"]]
    cost = {r.node_id: tree.nodes[r.node_id].cost.examples for r in tied}
    winner = min(tied, key=lambda r: (cost[r.node_id], r.vs_leader is not None))
    if winner.node_id == leader.node_id:
        others = [r.node_id for r in tied if r is not leader]
        why = (f"best on the final dev slice ({leader.interval['n']} rows)"
               + (f"; within noise of {', '.join(others)} but no more expensive" if others else
                  "; every other finalist is worse beyond the interval"))
    else:
        d = winner.vs_leader
        why = (f"{leader.node_id} scored {d['value']:+.4f} better on the final dev slice, within the paired "
               f"interval [{d['low']:+.4f}, {d['high']:+.4f}]: the cheaper plan ({cost[winner.node_id]} vs "
               f"{tree.nodes[leader.node_id].cost.examples} trained examples) wins")
    return winner.node_id, why
