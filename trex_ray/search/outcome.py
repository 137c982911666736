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
    train_samples: int = 0  # rows of the recipe's dataset
    train_tokens: int = 0
    examples: int = 0  # training examples processed in this run (steps x batch x accumulation): example-epochs
    # GPU-seconds where the trial held GPUs (wall x GPUs), else the CPU time its processes used;
    # ``estimated``: a trial stopped from outside, charged wall x reserved units instead
    accelerator_seconds: float = 0.0
    accelerator: str = "cpu"  # "gpu" | "cpu": what accelerator_seconds counts
    llm_tokens: int = 0  # of the trial's synthesize steps
    llm_cost: float = 0.0
    estimated: bool = False

    def add(self, other: "Cost") -> "Cost":
        """The two costs summed (a node's runs, one per rung)."""
        mine, theirs = asdict(self), asdict(other)
        return Cost(**{k: (v or theirs[k]) if isinstance(v, (str, bool)) else v + theirs[k] for k, v in mine.items()})


@dataclass
class TrialOutcome:
    score: float  # the task's primary metric on the dev rows
    metrics: dict[str, float]
    cost: Cost
    artifacts: dict[str, str] = field(default_factory=dict)  # "model", "dev_predictions": paths or storage URIs
    recipe_stats: dict[str, Any] = field(default_factory=dict)  # rows per step, loss curve, train steps, ...
    bad_cases: dict[str, Any] | None = None  # a sample of wrong dev answers (search/bad_cases.py)
    rung: int = 0  # the successive-halving rung this run trained to (config search.rungs)
    fidelity: float = 1.0  # that rung's fraction of the plan's full run (1.0: trained in full)
    # the score's bootstrap interval {value, low, high, n, ...} (ftbench.intervals.Interval.to_dict)
    interval: dict[str, Any] | None = None
    # paired differences on the shared dev rows: {"parent"|"best": {"node", value, low, high, n, ...}}
    paired: dict[str, dict[str, Any]] = field(default_factory=dict)

    def to_json(self) -> str:
        return json.dumps(asdict(self), default=str)

    @classmethod
    def from_json(cls, text: str | bytes) -> "TrialOutcome":
        d = json.loads(text)
        return cls(score=float(d["score"]), metrics={k: float(v) for k, v in d["metrics"].items()},
                   cost=Cost(**d.get("cost") or {}), artifacts=dict(d.get("artifacts") or {}),
                   recipe_stats=dict(d.get("recipe_stats") or {}), bad_cases=d.get("bad_cases"),
                   rung=int(d.get("rung", 0)), fidelity=float(d.get("fidelity", 1.0)), interval=d.get("interval"), paired=dict(d.get("paired") or {}))
