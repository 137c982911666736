"""The experiment tree: nodes (plans and their outcomes) and the UCT search over them.

The tree changes only through events (``Tree.apply``): the live run appends each event to the
ledger and then applies it, and ``Tree.replay`` applies the same events to rebuild the tree after
a crash, so the two cannot drift apart. No Ray here.
"""

from __future__ import annotations

import heapq
import math
from dataclasses import asdict, dataclass, field
from typing import Any, Iterable, Literal

from trex_ray.config import SearchConfig
from trex_ray.search.outcome import Cost
from trex_ray.search.plan import Plan

Status = Literal["planned", "running", "succeeded", "failed", "pruned"]
PENDING: tuple[str, ...] = ("planned", "running")


def _diff(d: dict[str, Any] | None) -> dict[str, Any] | None:
    """A paired difference as the Researcher reads it: the change, its interval, and whether
    the interval says the change is real (excludes 0) or within noise."""
    if not d:
        return None
    return {"diff": round(d["value"], 4), "low": round(d["low"], 4), "high": round(d["high"], 4),
            "real": d["low"] > 0 or d["high"] < 0}


def node_number(node_id: str) -> int:
    """``n12`` -> 12: node ids sort by number, not as strings (n2 before n10)."""
    return int(node_id[1:])


@dataclass
class Node:
    # identity and lineage
    id: str
    parent_id: str | None
    depth: int
    plan: Plan
    source: str = "builtin"  # which policy proposed it
    source_note: str | None = None  # e.g. why the LLM's proposal was not used
    status: Status = "planned"
    # outcome
    metrics: dict[str, float] = field(default_factory=dict)
    score: float | None = None
    reward: float | None = None  # (score - base score) / metric range, sign so that higher is better
    failure: str | None = None
    diagnosis: str | None = None  # short text: what went wrong on dev (see diagnosis.py)
    diagnosis_detail: dict[str, Any] | None = None  # its structured form: categories, shares, directions
    cost: Cost = field(default_factory=Cost)  # summed over the node's runs (one per rung)
    artifacts: dict[str, str] = field(default_factory=dict)
    recipe_stats: dict[str, Any] = field(default_factory=dict)
    # successive halving: the rung the node last trained to (or, while pending, will train to),
    # its score at every rung it finished, and how sure the latest score is
    rung: int = 0
    rung_scores: dict[int, float] = field(default_factory=dict)
    fidelity: float = 0.0  # fraction of the plan's full run its latest score was trained with (1.0: all of it)
    rung_costs: dict[int, Cost] = field(default_factory=dict)  # what each rung's run spent
    interval: dict[str, Any] | None = None  # bootstrap interval of ``score`` (ftbench.intervals)
    paired: dict[str, dict[str, Any]] = field(default_factory=dict)  # vs "parent", vs "best": differences
    rescored: dict[str, Any] | None = None  # a finalist's score and interval on the larger final dev slice
    # search statistics (visits and value include the whole subtree)
    visits: int = 0
    value_sum: float = 0.0
    pending: int = 0  # planned or running nodes below (and including) this one: the virtual loss
    expansions: int = 0
    children: list[str] = field(default_factory=list)
    # bookkeeping
    trial_id: str | None = None
    attempts: int = 0
    created_at: float | None = None
    started_at: float | None = None
    finished_at: float | None = None
    # steering (search/steering.py) and limits (search/limits.py)
    pinned: bool = False  # the user pinned it: expansions stay under it while it can grow
    cut: bool = False  # the user pruned it: never expanded again, nothing new grows under it
    notes: list[dict[str, Any]] = field(default_factory=list)  # the user's annotations (text, by, ts)
    clipped: list[str] = field(default_factory=list)  # how the run's limits changed its plan
    llm: dict[str, float] = field(default_factory=dict)  # LLM calls made at it: expansion, diagnosis

    @property
    def value(self) -> float:
        return self.value_sum / self.visits if self.visits else 0.0

    @property
    def is_pending(self) -> bool:
        return self.status in PENDING

    @property
    def done_rung(self) -> int:
        """The highest rung the node has finished (-1: none); ``rung`` is where it is headed."""
        return max(self.rung_scores, default=-1)

    def summary(self) -> dict[str, Any]:
        """What a Researcher needs to know about a node, in a few fields."""
        return {
            "id": self.id,
            "parent": self.parent_id,
            "direction": self.plan.direction,
            "knobs": self.plan.knobs(),
            "rationale": self.plan.rationale[:300],
            "status": self.status,
            "score": self.score,
            "interval": [round(self.interval["low"], 4), round(self.interval["high"], 4)] if self.interval else None,
            "vs_parent": _diff(self.paired.get("parent")),
            "rung": self.rung,
            "reward": None if self.reward is None else round(self.reward, 4),
            "failure": self.failure,
            "diagnosis": self.diagnosis,
        }

    def to_dict(self) -> dict[str, Any]:
        d = asdict(self)
        d["plan"] = self.plan.model_dump(mode="json")
        return d


@dataclass(frozen=True)
class SearchParams:
    """Knobs of the tree policy: the search config's (see ``SearchConfig`` for their meaning)
    and the task metric's direction and range."""

    search: SearchConfig = field(default_factory=SearchConfig)
    higher_is_better: bool = True
    metric_range: float = 1.0  # high - low of the metric: rewards are gains over base / range

    @classmethod
    def of(cls, search: SearchConfig, higher_is_better: bool, metric_range: tuple[float, float]) -> "SearchParams":
        """The one way a run builds its params: the search config, and the task metric's
        direction and (low, high) range."""
        return cls(search, higher_is_better, metric_range[1] - metric_range[0])

    @property
    def sign(self) -> float:
        return 1.0 if self.higher_is_better else -1.0

    @property
    def top_rung(self) -> int:
        return len(self.search.rungs) - 1


class Tree:
    def __init__(self, params: SearchParams | None = None) -> None:
        self.params = params or SearchParams()
        self.nodes: dict[str, Node] = {}
        self.fingerprints: dict[str, str] = {}  # plan fingerprint -> first node that ran it
        self.root_id: str | None = None
        self.last_seq = 0
        self.insights: list[dict[str, Any]] = []  # the latest distilled insights (diagnosis.py)
        self.insights_after = 0  # finished trials they were distilled after
        self.selected: str | None = None  # the node the final selection chose (best_selected)
        self.selection: dict[str, Any] | None = None  # how it was chosen
        # steering: every command, accepted (steer_*) or refused (steer_refused), in order
        self.steering: list[dict[str, Any]] = []
        self.extra_trials = 0  # trials the user added (steer budget +N trials)
        self.extra_accelerator_seconds = 0.0  # accelerator-seconds the user added
        self.stop_requested: str | None = None  # who asked the run to stop (until a resume)
        self.run_llm: dict[str, float] = {}  # LLM calls made for no node: research, insights
        # Derived views (nodes by status, the best node) are recomputed only after the tree
        # changed: a scan of 10k nodes costs milliseconds, and one decision asks several times.
        self._version = 0
        self._views: dict[Any, tuple[int, Any]] = {}

    # ------------------------------------------------------------------ events
    def apply(self, ev: dict[str, Any]) -> None:
        """Apply one ledger event. Deterministic: the same events give the same tree."""
        kind, ts = ev["type"], ev.get("ts")
        if (kind.startswith("node_") and kind != "node_diagnosed") or kind.startswith("steer_") \
                or kind in ("best_selected", "promotion_dropped"):
            self._version += 1  # statuses, scores or what may be expanded change
        self.last_seq = max(self.last_seq, int(ev.get("seq", 0)))
        if kind == "node_planned":
            parent = self.nodes.get(ev["parent_id"]) if ev["parent_id"] else None
            node = Node(
                id=ev["node_id"], parent_id=ev["parent_id"], depth=parent.depth + 1 if parent else 0,
                plan=Plan.model_validate(ev["plan"]), source=ev.get("source", "builtin"),
                source_note=ev.get("note"), created_at=ts, clipped=list(ev.get("clipped") or []),
            )
            self.nodes[node.id] = node
            key = node.plan.fingerprint()
            if node.plan.training is not None and node.plan.training.warm_start:
                # a warm start repeats an experiment only from the same parent (whose children
                # the policies check themselves): the same plan from another parent is new
                key += f"@{node.parent_id}"
            self.fingerprints.setdefault(key, node.id)
            if parent is None:
                self.root_id = node.id
            else:
                parent.children.append(node.id)
            self._add_pending(node, +1)
        elif kind == "expansion":
            self.nodes[ev["node_id"]].expansions += 1
        elif kind == "node_started":
            node = self.nodes[ev["node_id"]]
            node.status, node.trial_id, node.started_at = "running", ev.get("trial_id"), ts
            node.attempts += 1
        elif kind == "node_requeued":
            self.nodes[ev["node_id"]].status = "planned"
        elif kind == "node_finished":
            node = self.nodes[ev["node_id"]]
            self._finish(node, "succeeded", ev, ts)
            node.metrics, node.score = dict(ev["metrics"]), float(ev["score"])
            node.recipe_stats = dict(ev.get("recipe_stats") or {})
            # a ledger from before rungs existed ran every plan at full fidelity
            node.rung = int(ev.get("rung", self.params.top_rung))
            node.rung_scores[node.rung] = node.score
            node.fidelity = float(ev.get("fidelity", 1.0))
            node.rung_costs[node.rung] = Cost(**ev["cost"]) if ev.get("cost") else Cost()
            node.interval, node.paired = ev.get("interval"), dict(ev.get("paired") or {})
            old = node.reward
            if node.id == self.root_id:
                node.reward = 0.0
                self._rescore_all()
            else:
                node.reward = self._reward(node.score)
            if old is None:
                self._backprop(node, node.reward if node.reward is not None else 0.0)
            else:  # a promoted node finished a higher rung: its reward is revised, not counted twice
                for n in self.path(node.id):
                    n.value_sum += (node.reward or 0.0) - old
        elif kind == "node_promoted":  # successive halving: train further, to a higher rung
            node = self.nodes[ev["node_id"]]
            node.rung, node.status = int(ev["rung"]), "planned"
            self._add_pending(node, +1)
        elif kind == "promotion_dropped":  # the run ended before a promotion ran: back to the last rung
            node = self.nodes[ev["node_id"]]
            if node.is_pending:
                self._add_pending(node, -1)
            node.status, node.rung = "succeeded", node.done_rung
        elif kind == "node_rescored":
            self.nodes[ev["node_id"]].rescored = dict(ev["interval"])
        elif kind == "best_selected":
            self.selected, self.selection = ev["node_id"], {k: v for k, v in ev.items() if k not in ("seq", "ts", "type")}
        elif kind == "node_failed":
            node = self._finish(self.nodes[ev["node_id"]], "failed", ev, ts)
            node.failure = ev.get("cause", "unknown")
            self._backprop(node, self.params.search.failure_reward)
        elif kind == "node_pruned":
            node = self._finish(self.nodes[ev["node_id"]], "pruned", ev, ts)
            node.failure = ev.get("reason")
        elif kind == "node_diagnosed":
            node = self.nodes[ev["node_id"]]
            node.diagnosis, node.diagnosis_detail = ev["diagnosis"], ev.get("detail")
        elif kind == "insights_distilled":
            self.insights, self.insights_after = list(ev["insights"]), int(ev.get("after_trials", 0))
        elif kind == "llm_spent":
            target = self.nodes[ev["node_id"]].llm if ev.get("node_id") in self.nodes else self.run_llm
            for key in ("calls", "tokens", "cost"):
                target[key] = target.get(key, 0) + ev.get(key, 0)
        elif kind.startswith("steer_"):
            self._steer(kind, ev, ts)
        elif kind == "run_resumed":
            self.stop_requested = None  # a resume is the user's word to go on
        # run_* and other informational events leave the tree unchanged

    def _steer(self, kind: str, ev: dict[str, Any], ts: float | None) -> None:
        """A steering command (search/steering.py checked it could apply before it was recorded)."""
        self.steering.append(ev)
        node = self.nodes.get(ev.get("node_id") or "")
        if kind == "steer_pin" and node is not None:
            node.pinned = True
        elif kind == "steer_unpin" and node is not None:
            node.pinned = False
        elif kind == "steer_prune" and node is not None:
            node.cut, node.pinned = True, False
        elif kind == "steer_annotate" and node is not None:
            node.notes.append({"text": ev["text"], "by": ev.get("by"), "ts": ts})
        elif kind == "steer_budget":
            self.extra_trials += int(ev.get("trials", 0))
            self.extra_accelerator_seconds += float(ev.get("accelerator_seconds", 0.0))
        elif kind == "steer_stop":
            self.stop_requested = ev.get("by") or "user"

    @classmethod
    def replay(cls, events: Iterable[dict[str, Any]], params: SearchParams | None = None) -> "Tree":
        tree = cls(params)
        for ev in events:
            tree.apply(ev)
        return tree

    def _finish(self, node: Node, status: Status, ev: dict, ts: float | None) -> Node:
        if node.is_pending:
            self._add_pending(node, -1)
        node.status, node.finished_at = status, ts
        if ev.get("cost"):
            node.cost = node.cost.add(Cost(**ev["cost"]))
        if ev.get("artifacts"):
            node.artifacts = {**node.artifacts, **ev["artifacts"]}
        return node

    def _add_pending(self, node: Node, delta: int) -> None:
        for n in self.path(node.id):
            n.pending += delta

    def _backprop(self, node: Node, reward: float) -> None:
        for n in self.path(node.id):
            n.visits += 1
            n.value_sum += reward

    def _reward(self, score: float | None) -> float | None:
        base = self.base_score
        if score is None or base is None:
            return None
        return self.params.sign * (score - base) / self.params.metric_range

    def _rescore_all(self) -> None:
        """The base score arrived: give every already-finished node its reward (rare: only when a
        child finished before the root's baseline did)."""
        for n in self.nodes.values():
            if n.status == "succeeded" and n.id != self.root_id and n.reward is None:
                n.reward = self._reward(n.score)
                self._backprop(n, n.reward or 0.0)

    # ------------------------------------------------------------------ queries
    @property
    def root(self) -> Node | None:
        return self.nodes.get(self.root_id) if self.root_id else None

    @property
    def base_score(self) -> float | None:
        root = self.root
        return root.score if root is not None and root.status == "succeeded" else None

    def path(self, node_id: str) -> list[Node]:
        """Nodes from ``node_id`` up to the root (inclusive both ends)."""
        out, cur = [], self.nodes.get(node_id)
        while cur is not None:
            out.append(cur)
            cur = self.nodes.get(cur.parent_id) if cur.parent_id else None
        return out

    def children(self, node: Node) -> list[Node]:
        return [self.nodes[c] for c in node.children]

    def _view(self, key: Any, compute: Any) -> Any:
        hit = self._views.get(key)
        if hit is None or hit[0] != self._version:
            hit = (self._version, compute())
            self._views[key] = hit
        return hit[1]

    def by_status(self, *status: str) -> list[Node]:
        return list(self._view(("status", status), lambda: [n for n in self.nodes.values() if n.status in status]))

    def best(self, trained_only: bool = True) -> Node | None:
        return self._view(("best", trained_only), lambda: self._best(trained_only))

    def _best(self, trained_only: bool) -> Node | None:
        if self.selected is not None and self.nodes[self.selected].status == "succeeded":
            return self.nodes[self.selected]
        # only a node trained at full fidelity may be the best: a proxy's score is a guess
        done = [n for n in self.by_status("succeeded") if not (trained_only and n.id == self.root_id)
                and n.fidelity >= 1.0]
        return min(done, key=self.rank_key) if done else None

    def leader(self) -> Node | None:
        """The trained node ranked first at any fidelity (what the live view shows while no
        node has been trained in full yet)."""
        done = [n for n in self.nodes.values() if n.id != self.root_id and n.rung_scores and n.status != "failed"]
        return min(done, key=self.rank_key) if done else None

    def rank_key(self, node: Node) -> tuple:
        """The one ranking of the run (leaderboards, reports, the best node): higher rung first
        (a proxy's score is not comparable with a full run's), then better score, unscored last;
        ties go to the shallower, then the earlier node (found first, and cost no more)."""
        unscored = node.score is None
        return (unscored, -node.fidelity, 0.0 if unscored else -self.params.sign * node.score,
                node.depth, node_number(node.id))

    def ranked(self) -> list[Node]:
        return sorted(self.nodes.values(), key=self.rank_key)

    def lineage(self, node_id: str) -> list[Node]:
        """Nodes from the root down to ``node_id`` (empty for an unknown id)."""
        return list(reversed(self.path(node_id)))

    # ------------------------------------------------------------------ selection
    def uct(self, q: float, n: int, parent_n: int) -> float:
        if n <= 0:
            return math.inf
        return q + self.params.search.exploration * math.sqrt(math.log(max(parent_n, 1)) / n)

    def _virtual_q(self, node: Node) -> float:
        """Mean reward with each pending trial below counted as a loss, so parallel selections
        spread over the tree instead of all piling onto the branch that is already busy."""
        n = node.visits + node.pending
        return (node.value_sum - self.params.search.virtual_loss * node.pending) / n if n else 0.0

    def can_expand(self, node: Node) -> bool:
        return (
            node.status == "succeeded"
            and not node.cut
            and node.depth < self.params.search.max_depth
            and (node.expansions < self.params.search.max_expansions or node.pinned)
        )

    def in_cut_branch(self, node_id: str) -> bool:
        """Whether the user pruned this node or one above it (nothing may grow there)."""
        return any(n.cut for n in self.path(node_id))

    def _frontier(self) -> set[str]:
        """Ids of succeeded nodes with an expandable node at or below them, in one pass from
        the leaves up (a walk per candidate would cost O(nodes x depth) per selection)."""
        found: set[str] = set()
        for node in reversed(list(self.nodes.values())):  # children are created after their parents
            if node.status == "succeeded" and not node.cut and (
                    self.can_expand(node) or any(c in found for c in node.children)):
                found.add(node.id)
        return found

    def select(self, start: str | None = None) -> Node | None:
        """UCT descent from the root (or from ``start``, a pinned node) to the node to expand
        next, or None if nothing can be.

        At each node the choice is between expanding it (again) and descending into one of its
        succeeded children; expanding a never-expanded node always wins (an unvisited option),
        re-expanding competes with the node's own reward, children with their virtual-loss
        adjusted mean reward.
        """
        node = self.nodes.get(start) if start else self.root
        if node is None or node.status != "succeeded":
            return None
        frontier = self._frontier()
        if node.id not in frontier:
            return None
        while True:
            parent_n = node.visits + node.pending
            options: list[tuple[float, Node | None]] = []
            if self.can_expand(node):
                options.append((self.uct(node.reward or 0.0, node.expansions, parent_n), None))
            for kid in self.children(node):
                if kid.id in frontier:
                    options.append((self.uct(self._virtual_q(kid), kid.visits + kid.pending, parent_n), kid))
            if not options:
                return None
            _, choice = max(options, key=lambda o: o[0])
            if choice is None:
                return node
            node = choice

    # ------------------------------------------------------------------ memory
    def memory(self, node_id: str, max_siblings: int = 6, max_key_nodes: int = 6) -> dict[str, Any]:
        """The Researcher's compressed view of the tree around ``node_id``: the path from the
        root, the node's existing children and siblings, and the tree's key nodes (largest gains
        and instructive failures)."""
        node = self.nodes[node_id]
        path = list(reversed(self.path(node_id)))
        siblings = [s for s in (self.children(self.nodes[node.parent_id]) if node.parent_id else []) if s.id != node_id]
        scored = heapq.nlargest(max_key_nodes - max_key_nodes // 3, self.by_status("succeeded"),
                                key=lambda n: n.reward or 0.0)
        failed = heapq.nlargest(max_key_nodes // 3, self.by_status("failed"), key=lambda n: n.finished_at or 0.0)
        key = scored + failed
        return {
            "node": node.summary() | {"plan": node.plan.model_dump(mode="json")},
            "path": [n.summary() for n in path],
            "children": [c.summary() | {"plan": c.plan.model_dump(mode="json")} for c in self.children(node)],
            "siblings": [s.summary() for s in siblings[:max_siblings]],
            "key_nodes": [n.summary() for n in key],
            "base_score": self.base_score,
            "best_score": (b.score if (b := self.best()) else None),
            "higher_is_better": self.params.higher_is_better,
            "insights": list(self.insights),
            # what the person running the search wrote about this node and the nodes above it
            "user_notes": [{"node": n.id, **{k: v for k, v in note.items() if k != "ts"}}
                           for n in path for note in n.notes],
            # fingerprints of every plan in the tree, so no experiment is proposed twice
            "tried": list(self.fingerprints),
        }

    def to_dict(self) -> dict[str, Any]:
        return {
            "root": self.root_id,
            "base_score": self.base_score,
            "best": (b.id if (b := self.best()) else None),
            "insights": {"after_trials": self.insights_after, "items": list(self.insights)},
            "selection": self.selection,
            "nodes": [n.to_dict() for n in self.nodes.values()],
        }
