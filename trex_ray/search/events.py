"""The ledger's event types, as pydantic models: what each event must carry, checked on every
append and on every replay. No Ray here.

``Tree.apply`` stays the one place an event changes the tree; these models only decide whether
a line of ``events.jsonl`` is an event it can apply. A damaged or foreign ledger is then refused
with its line number before Ray starts, instead of failing halfway through a replay inside the
TreeState actor. Fields not named here are allowed (an event may carry more over time); the
fields a replay reads must be present and of the right type. A new event type needs its model
here (an unknown type is refused: it would be silently ignored by an older replay).
"""

from __future__ import annotations

from typing import Any, Literal

from pydantic import BaseModel, ConfigDict, Field, ValidationError, field_validator

from trex_ray.search.outcome import Cost


class _Event(BaseModel):
    model_config = ConfigDict(extra="allow")

    seq: int = Field(ge=1)
    """Position in the ledger: strictly increasing, stamped by ``Ledger.append``."""
    ts: float
    """Unix time the event was written."""


class _NodeEvent(_Event):
    node_id: str = Field(pattern=r"^n\d+$")
    """The node the event is about (``n<number>``)."""


def _cost(v: Any) -> Any:
    """A trial's cost as ``Cost`` takes it (the dataclass itself is the schema)."""
    if v is not None:
        if not isinstance(v, dict):
            raise ValueError("cost must be a mapping")
        Cost(**v)
    return v


class RunStarted(_Event):
    type: Literal["run_started"]
    task: str
    """Task id of the run; ``--resume`` refuses a config naming another."""
    metric: str | None = None
    higher_is_better: bool = True
    metric_range: tuple[float, float] | None = None
    max_trials: int | None = None
    base_model: str | None = None
    """The base model every trial starts from (absent in ledgers written before it was recorded)."""


class RunResumed(_Event):
    type: Literal["run_resumed"]


class RunFinished(_Event):
    type: Literal["run_finished"]
    reason: str


class NodePlanned(_NodeEvent):
    type: Literal["node_planned"]
    parent_id: str | None
    plan: dict[str, Any]
    """The plan's data (``Tree.apply`` validates it as a ``Plan``; a resumed run replays the
    whole tree before Ray starts, so a plan it cannot rebuild is refused there)."""
    source: str = "builtin"
    note: str | None = None


class Expansion(_NodeEvent):
    type: Literal["expansion"]


class ExpansionFailed(_NodeEvent):
    type: Literal["expansion_failed"]
    cause: str


class NodeStarted(_NodeEvent):
    type: Literal["node_started"]
    trial_id: str | None = None
    init_from: str | None = None
    rung: int | None = None  # the successive-halving rung this run trains to
    resume_from: str | None = None  # the checkpoint a promotion continues


class NodeRequeued(_NodeEvent):
    type: Literal["node_requeued"]


class NodeFinished(_NodeEvent):
    type: Literal["node_finished"]
    score: float
    metrics: dict[str, float]
    cost: dict[str, Any] | None = None
    artifacts: dict[str, str] | None = None
    recipe_stats: dict[str, Any] | None = None
    rung: int | None = None  # absent in ledgers from before rungs: a full run
    fidelity: float | None = None
    interval: dict[str, Any] | None = None
    paired: dict[str, Any] | None = None

    _check_cost = field_validator("cost")(_cost)


class NodeFailed(_NodeEvent):
    type: Literal["node_failed"]
    cause: str = Field(min_length=1)
    """Why: every failure has a cause."""
    cost: dict[str, Any] | None = None
    artifacts: dict[str, str] | None = None

    _check_cost = field_validator("cost")(_cost)


class NodePruned(_NodeEvent):
    type: Literal["node_pruned"]
    reason: str | None = None


class NodeDiagnosed(_NodeEvent):
    type: Literal["node_diagnosed"]
    diagnosis: str
    detail: dict[str, Any] | None = None


class InsightsDistilled(_Event):
    type: Literal["insights_distilled"]
    after_trials: int = 0
    insights: list[dict[str, Any]]
    usage: dict[str, Any] | None = None


# ---------------------------------------------------------------- successive halving, final selection
class NodePromoted(_NodeEvent):
    type: Literal["node_promoted"]
    rung: int = Field(ge=1)
    """The rung the node trains to next (search/halving.py)."""


class PromotionDropped(_NodeEvent):
    type: Literal["promotion_dropped"]
    reason: str | None = None


class NodeRescored(_NodeEvent):
    type: Literal["node_rescored"]
    interval: dict[str, Any]
    """The finalist's score on the final dev slice, with its interval (ftbench.intervals)."""


class BestSelected(_NodeEvent):
    type: Literal["best_selected"]
    reason: str
    finalists: list[str] = Field(default_factory=list)


# ---------------------------------------------------------------- spend and steering
class LLMSpent(_Event):
    type: Literal["llm_spent"]
    node_id: str | None = None  # absent: calls made for the run, not a node (research, insights)


class Steered(_Event):
    """A steering command applied (search/steering.py), or refused with its reason."""

    type: Literal["steer_pin", "steer_unpin", "steer_prune", "steer_annotate", "steer_budget", "steer_stop",
                  "steer_refused"]
    node_id: str | None = None


EVENT_TYPES: dict[str, type[_Event]] = {
    kind: m
    for m in (RunStarted, RunResumed, RunFinished, NodePlanned, Expansion, ExpansionFailed, NodeStarted,
              NodeRequeued, NodeFinished, NodeFailed, NodePruned, NodeDiagnosed, InsightsDistilled,
              NodePromoted, PromotionDropped, NodeRescored, BestSelected, LLMSpent, Steered)
    for kind in m.model_fields["type"].annotation.__args__  # type: ignore[union-attr]
}


class EventError(ValueError):
    """An event that is not one the tree can apply (the message says what is wrong)."""


def check_event(ev: Any) -> None:
    """Raise EventError unless ``ev`` is a well-formed event of a known type."""
    if not isinstance(ev, dict):
        raise EventError(f"an event is a JSON object, not {type(ev).__name__}")
    kind = ev.get("type")
    model = EVENT_TYPES.get(kind) if isinstance(kind, str) else None
    if model is None:
        raise EventError(f"unknown event type {str(kind)[:40]!r}")
    try:
        model.model_validate(ev)
    except ValidationError as e:
        first = e.errors()[0]
        where = ".".join(str(p) for p in first["loc"]) or "event"
        raise EventError(f"{kind} event: {where}: {first['msg']}") from None
