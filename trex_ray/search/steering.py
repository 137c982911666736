"""Live steering of a running search: the commands, what each means for the tree now, the limits
enforced on running trials, and the live status. No Ray, no I/O.

A command reaches the driver through the run's storage (``search/inbox.py``); the SearchState
asks ``decide`` what it means for the tree: the ledger events to record, or one line saying why
it cannot apply. Recorded events replay on resume like any other (``Tree.apply``), and the
report shows them as the steering history (who, what, when). ``enforce`` is the other half:
which running trials must stop now (pruned, past their wall time, over the run's budget).
"""

from __future__ import annotations

import re
from dataclasses import asdict, dataclass, field
from typing import Any, Literal

from pydantic import BaseModel, ConfigDict, Field, ValidationError

from trex_ray.search.plan import TrialResources
from trex_ray.search.tree import Node, Tree, node_number

Op = Literal["pin", "unpin", "prune", "annotate", "budget", "stop", "status"]
USAGE = ("pin NODE | unpin NODE | prune NODE | annotate NODE TEXT | budget +N trials | "
         "budget +S accelerator-seconds | stop | status")
MAX_NOTE = 2000


class Command(BaseModel):
    """One steering command, as ``python -m trex_ray steer`` writes it to the inbox."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    id: str = Field(pattern=r"^[0-9a-z-]{1,64}$")  # sorts in the order commands were sent
    op: Op
    node: str | None = Field(None, pattern=r"^n[0-9]{1,9}$")
    text: str | None = Field(None, min_length=1, max_length=MAX_NOTE)
    trials: int | None = Field(None, ge=1, le=1_000_000)
    accelerator_seconds: float | None = Field(None, gt=0, le=1e10)
    by: str = Field("user", min_length=1, max_length=200)
    at: float = 0.0

    def describe(self) -> str:
        """The command as the user typed it (for the history and answers)."""
        if self.op == "annotate":
            return f'annotate {self.node} "{self.text}"'
        if self.op == "budget":
            return f"budget +{self.trials} trials" if self.trials else f"budget +{self.accelerator_seconds:g} accelerator-seconds"
        return f"{self.op} {self.node}" if self.node else self.op


def parse(words: list[str], cmd_id: str, by: str, at: float) -> Command:
    """The command ``words`` spell (``["prune", "n3"]``); ValueError with one line naming the
    problem."""
    if not words:
        raise ValueError(f"no command given; one of: {USAGE}")
    op, args = words[0], words[1:]
    fields: dict[str, Any] = {"id": cmd_id, "op": op, "by": by, "at": at}
    if op in ("pin", "unpin", "prune", "annotate"):
        if not args or not re.fullmatch(r"n[0-9]{1,9}", args[0]):
            raise ValueError(f"{op} needs a node id like n3 (got {' '.join(args) or 'nothing'})")
        fields["node"] = args[0]
        if op == "annotate":
            text = " ".join(args[1:]).strip()
            if not text:
                raise ValueError('annotate needs the note\'s text: annotate n3 "prefer fewer epochs here"')
            if len(text) > MAX_NOTE:
                raise ValueError(f"the note is {len(text)} characters; at most {MAX_NOTE}")
            fields["text"] = text
        elif len(args) > 1:
            raise ValueError(f"{op} takes one node id (got {' '.join(args)})")
    elif op == "budget":
        m = re.fullmatch(r"\+?([0-9]+(?:\.[0-9]+)?)\s*(trials?|accelerator-seconds?|s)", " ".join(args).strip())
        if not m or float(m.group(1)) <= 0:
            raise ValueError(f"budget takes +N trials or +S accelerator-seconds (got {' '.join(args) or 'nothing'})")
        if m.group(2).startswith("trial"):
            if not float(m.group(1)).is_integer():
                raise ValueError(f"budget +N trials needs a whole number (got {m.group(1)})")
            fields["trials"] = int(float(m.group(1)))
        else:
            fields["accelerator_seconds"] = float(m.group(1))
    elif op in ("stop", "status"):
        if args:
            raise ValueError(f"{op} takes no arguments (got {' '.join(args)})")
    else:
        raise ValueError(f"unknown steering command {op!r}; one of: {USAGE}")
    try:
        return Command(**fields)
    except ValidationError as e:
        err = e.errors()[0]
        raise ValueError(f"{'.'.join(map(str, err['loc']))}: {err['msg']}") from None


@dataclass
class Reply:
    """The driver's answer to one command: applied or refused (one line), and for ``status``
    the live view."""

    id: str
    accepted: bool
    message: str
    status: dict[str, Any] | None = None

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)


@dataclass
class Decision:
    events: list[dict[str, Any]] = field(default_factory=list)
    refused: str | None = None
    message: str = ""


@dataclass(frozen=True)
class RunFacts:
    """What ``decide`` and ``enforce`` need beyond the tree: the run's trial shape for plans
    that set none, its accelerator budget and what is left of it now (``spend.budget_now``;
    None: no budget), the per-trial wall limit, and whether the run closed."""

    default: TrialResources
    accelerator_budget: float | None = None
    accelerator_left: float | None = None
    trial_wall_seconds: float | None = None
    closed: str | None = None  # why the run ended, once it has


def _stamp(cmd: Command) -> dict[str, Any]:
    return {"cmd_id": cmd.id, "by": cmd.by, "command": cmd.describe()}


def _node_problem(tree: Tree, cmd: Command) -> str | None:
    if cmd.node in tree.nodes:
        return None
    ids = sorted(tree.nodes, key=node_number)
    have = f"{ids[0]}..{ids[-1]}" if ids else "no nodes yet"
    return f"unknown node {cmd.node} (this run has {have})"


def _stopped(node: Node, now: float, facts: RunFacts) -> dict[str, Any]:
    """The estimated cost of a trial stopped from outside (it cannot report its own)."""
    held = now - node.started_at if node.started_at is not None else 0.0
    units, kind = (node.plan.resources or facts.default).reserved_units
    return {"wall_seconds": round(held, 2), "accelerator_seconds": round(max(0.0, held) * units, 2),
            "accelerator": kind, "estimated": True}


def decide(tree: Tree, cmd: Command, facts: RunFacts, now: float) -> Decision:
    """What ``cmd`` does to the tree now: the events to record, or why it cannot apply."""
    if cmd.op == "status":
        return Decision(message="status")  # read-only, nothing recorded, answered finished or not
    if facts.closed is not None:
        return Decision(refused=f"the run has finished ({facts.closed})")
    if cmd.node is not None and (why := _node_problem(tree, cmd)):
        return Decision(refused=why)
    node = tree.nodes.get(cmd.node or "")
    stamp = _stamp(cmd)
    if cmd.op in ("pin", "unpin", "prune") and node is not None and tree.in_cut_branch(node.id):
        return Decision(refused=f"{node.id} is in a branch pruned already")
    if cmd.op == "pin":
        assert node is not None
        if node.status in ("failed", "pruned"):
            return Decision(refused=f"{node.id} {node.status}: it has no result to grow from")
        if node.pinned:
            return Decision(refused=f"{node.id} is pinned already")
        if node.depth >= tree.params.search.max_depth:
            return Decision(refused=f"{node.id} is at search.max_depth {tree.params.search.max_depth}: nothing can grow under it")
        when = "" if node.status == "succeeded" else f" once it succeeds (it is {node.status})"
        return Decision([{"type": "steer_pin", "node_id": node.id, **stamp}],
                        message=f"pinned {node.id}: expansions stay under it{when}")
    if cmd.op == "unpin":
        assert node is not None
        if not node.pinned:
            return Decision(refused=f"{node.id} is not pinned")
        return Decision([{"type": "steer_unpin", "node_id": node.id, **stamp}], message=f"unpinned {node.id}")
    if cmd.op == "prune":
        assert node is not None
        if node.parent_id is None:
            return Decision(refused=f"{node.id} is the root (the baseline): prune its children, or stop the run")
        below = [n for n in tree.nodes.values() if n.is_pending and any(p.id == node.id for p in tree.path(n.id))]
        running = [n.id for n in below if n.status == "running"]
        planned = [n.id for n in below if n.status == "planned"]
        events = [{"type": "steer_prune", "node_id": node.id, "running": running, "planned": planned, **stamp}]
        reason = f"pruned by {cmd.by} (steer prune {node.id})"
        for n in below:
            ev = {"type": "node_pruned", "node_id": n.id, "reason": reason}
            if n.status == "running":
                ev["cost"] = _stopped(n, now, facts)
            events.append(ev)
        return Decision(events, message=f"pruned {node.id}: {len(running)} running and {len(planned)} planned "
                                        "trial(s) cancelled; nothing grows under it any more")
    if cmd.op == "annotate":
        assert node is not None and cmd.text
        return Decision([{"type": "steer_annotate", "node_id": node.id, "text": cmd.text, **stamp}],
                        message=f"note added to {node.id}: the Researcher sees it when expanding {node.id} or below")
    if cmd.op == "budget":
        if cmd.trials:
            return Decision([{"type": "steer_budget", "trials": cmd.trials, **stamp}],
                            message=f"trial budget raised by {cmd.trials}")
        budget = facts.accelerator_budget
        if budget is None:
            return Decision(refused="the run has no accelerator budget (limits.accelerator_hours is unset): "
                                    "there is nothing to raise")
        assert cmd.accelerator_seconds
        return Decision([{"type": "steer_budget", "accelerator_seconds": cmd.accelerator_seconds, **stamp}],
                        message=f"accelerator budget raised to {budget + cmd.accelerator_seconds:.0f} accelerator-seconds")
    assert cmd.op == "stop"
    if tree.stop_requested:
        return Decision(refused=f"the run is stopping already (asked by {tree.stop_requested})")
    return Decision([{"type": "steer_stop", **stamp}],
                    message="stopping: no new trial starts; running trials finish, then the run ends and writes its outputs")


def enforce(tree: Tree, running_since: dict[str, float | None], facts: RunFacts, now: float) -> tuple[list[dict], dict[str, str]]:
    """Which trials handed to Tune must stop now, and the events that record why.

    ``running_since``: node id -> when Tune started its trial (None: waiting for a slot). A trial
    stops when its node is no longer pending (pruned by the user: recorded already), when it is
    past ``limits.trial_wall_seconds``, when the run's accelerator budget is spent, or, waiting for
    a slot, when the user asked the run to stop."""
    events: list[dict[str, Any]] = []
    stops: dict[str, str] = {}
    left = facts.accelerator_left
    for node_id, since in running_since.items():
        node = tree.nodes.get(node_id)
        if node is None:
            continue
        if not node.is_pending:
            stops[node_id] = node.failure or node.status
            continue
        cause = None
        if since is None and tree.stop_requested:
            events.append({"type": "node_pruned", "node_id": node_id,
                           "reason": f"the run was stopped by {tree.stop_requested} before this trial started"})
            stops[node_id] = "stopped before it started"
            continue
        wall = facts.trial_wall_seconds
        if since is not None and wall is not None and now - since > wall:
            cause = f"stopped: past its wall-time limit of {wall:g} s (limits.trial_wall_seconds)"
        elif since is not None and left is not None and left <= 0:
            cause = f"stopped: the run's accelerator budget ({facts.accelerator_budget:.0f} accelerator-seconds) is spent"
        if cause:
            events.append({"type": "node_failed", "node_id": node_id, "cause": cause, "cost": _stopped(node, now, facts)})
            stops[node_id] = cause
    return events, stops


def status(tree: Tree, facts: RunFacts, metric: str, max_trials: int, started: int,
           spent: dict[str, Any]) -> dict[str, Any]:
    """The live view ``steer status`` prints: the run's state and spend, and every node in the
    tree's ranking with its branch's spend (``spent``: ``spend.snapshot``; plain data: it
    travels as JSON)."""
    base = tree.base_score
    nodes = []
    for n in tree.ranked():
        own, branch = spent["nodes"][n.id]["own"], spent["nodes"][n.id]["branch"]
        nodes.append({"id": n.id, "parent": n.parent_id, "status": n.status, "direction": n.plan.direction,
                      "knobs": n.plan.knobs(), "score": n.score,
                      "delta": None if n.score is None or base is None or not n.parent_id else n.score - base,
                      "accelerator_seconds": round(own["accelerator_seconds"], 1),
                      "branch_accelerator_seconds": round(branch["accelerator_seconds"], 1),
                      "branch_llm_tokens": branch["llm_tokens"], "pinned": n.pinned, "cut": n.cut,
                      "notes": len(n.notes)})
    state = (f"finished ({facts.closed})" if facts.closed else
             f"stopping (asked by {tree.stop_requested})" if tree.stop_requested else "running")
    return {"state": state, "metric": metric, "base_score": base,
            "trials": {"started": started, "max": max_trials, "running": len(tree.by_status("running")),
                       "planned": len(tree.by_status("planned"))},
            "spend": spent["run"], "accelerator_budget_seconds": facts.accelerator_budget,
            "nodes": nodes,
            "steering": [{"ts": e.get("ts"), "by": e.get("by"), "command": e.get("command"),
                          "refused": e.get("reason") if e["type"] == "steer_refused" else None}
                         for e in tree.steering[-10:]]}


def focus(tree: Tree) -> list[str]:
    """Pinned nodes that can still grow, the most recently pinned first: where expansions go."""
    order = {e["node_id"]: i for i, e in enumerate(tree.steering) if e["type"] == "steer_pin"}
    pinned = [n for n in tree.nodes.values() if n.pinned and n.status == "succeeded"]
    return [n.id for n in sorted(pinned, key=lambda n: -order.get(n.id, -1))]
