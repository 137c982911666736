"""What one trial produced: the one type every executor path returns and the tree records.

A single-worker trial (``executor/execute.py``) and a multi-worker one (``executor/distributed.py``)
both build a ``TrialOutcome``; it reaches the driver as JSON (Tune flattens nested result dicts,
and a multi-worker trial's rank 0 writes it to the run's storage), and ``from_json`` turns it back
into this type before the TreeState records it.
"""

from __future__ import annotations

import json
from dataclasses import asdict, dataclass, field
from typing import Any


@dataclass
class Cost:
    """What a trial spent (``search/spend.py`` sums it per branch and for the run)."""

    wall_seconds: float = 0.0
    train_samples: int = 0
    train_tokens: int = 0
    # GPU-seconds where the trial held GPUs (wall x GPUs), else the CPU time its processes used;
    # ``estimated``: a trial stopped from outside, charged wall x reserved units instead
    accelerator_seconds: float = 0.0
    accelerator: str = "cpu"  # "gpu" | "cpu": what accelerator_seconds counts
    llm_tokens: int = 0  # of the trial's synthesize steps
    llm_cost: float = 0.0
    estimated: bool = False


@dataclass
class TrialOutcome:
    score: float  # the task's primary metric on the dev rows
    metrics: dict[str, float]
    cost: Cost
    artifacts: dict[str, str] = field(default_factory=dict)  # "model", "dev_predictions": paths or storage URIs
    recipe_stats: dict[str, Any] = field(default_factory=dict)  # rows per step, loss curve, train steps, ...
    bad_cases: dict[str, Any] | None = None  # a sample of wrong dev answers (search/bad_cases.py)

    def to_json(self) -> str:
        return json.dumps(asdict(self), default=str)

    @classmethod
    def from_json(cls, text: str | bytes) -> "TrialOutcome":
        d = json.loads(text)
        return cls(score=float(d["score"]), metrics={k: float(v) for k, v in d["metrics"].items()},
                   cost=Cost(**d.get("cost") or {}), artifacts=dict(d.get("artifacts") or {}),
                   recipe_stats=dict(d.get("recipe_stats") or {}), bad_cases=d.get("bad_cases"))
