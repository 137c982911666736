"""What crosses between the tree and the Researcher: the task as the Researcher sees it, the
request to expand one node, and the plans that come back. Plain data, no Ray.

Any proposer (the built-in rules, an LLM) implements ``Researcher.propose``; the TreeState only
ever sees ``ExpansionRequest`` going out and ``Proposal`` coming back.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any, Protocol

from trex_ray.config import TrainConfig
from trex_ray.search.plan import FormatOp, LoadOp, Plan, Recipe


MIN_RELEVANCE = 0.1  # below this an extra source's rows share next to nothing with the task's


@dataclass(frozen=True)
class DataSource:
    """Data outside the task that fits it: the exact ``source`` string a recipe loads it by (a
    local path or ``hub:<id>``), its rows, the column renames that give it the task's columns,
    and how much its rows read like the task's."""

    source: str
    name: str
    rows: int
    rename: dict[str, str] = field(default_factory=dict)
    relevance: float | None = None
    """Likeness of its rows to the task's dev rows (0..1: TF-IDF cosine of the two samples);
    None: not measured (a hub dataset, named by the user and not downloaded before the run)."""

    @property
    def related(self) -> bool:
        """Not plainly unrelated to the task (another language or kind of text reads near 0)."""
        return self.relevance is None or self.relevance >= MIN_RELEVANCE


@dataclass(frozen=True)
class TaskSpec:
    """What the Researcher knows about the task (plain data, safe to send to an LLM)."""

    id: str
    description: str
    metric: str
    higher_is_better: bool
    prompt_template: str
    completion_template: str
    train_rows: int
    columns: list[str] = field(default_factory=list)
    metric_range: tuple[float, float] = (0.0, 1.0)
    """(low, high) of the metric, to normalise rewards."""
    answer_format: str | None = None
    """A task file's answer format in words (label set, JSON fields...); None for FT-Bench tasks,
    whose description states it."""
    sources: tuple[DataSource, ...] = ()
    """For a task without a train split (``train_rows`` 0): the extra sources that fit it."""
    synthesis: bool = False
    """An LLM endpoint is configured, so recipes may ``synthesize`` rows (from dev examples, when
    the task has no train split)."""
    dev_rows: int = 0
    """Rows of the dev split (what synthesis may take its examples from)."""

    @property
    def data_rows(self) -> int:
        """Rows that exist to draw on: the train split's, or without one the fitting sources'
        (what synthesis writes comes on top, per plan)."""
        return self.train_rows or sum(s.rows for s in self.sources)


@dataclass(frozen=True)
class ExpansionRequest:
    """Everything needed to propose children of one node."""

    node_id: str
    task: TaskSpec
    memory: dict[str, Any]  # Tree.memory(node_id): the compressed view of the tree around the node
    n: int  # plans wanted
    defaults: TrainConfig  # what the first plans start from
    seed: int = 0


@dataclass
class Proposal:
    """One expansion's outcome: the plans, who proposed them, why, and what it cost."""

    plans: list[Plan]
    source: str  # "builtin" | "llm" | "builtin-fallback"
    note: str | None = None  # why the LLM was not used, or the direction it chose
    usage: dict[str, Any] | None = None  # LLM tokens and cost of this expansion
    direction: str | None = None
    first_try_valid: list[bool] = field(default_factory=list)  # per LLM ask: valid without a re-ask
    findings: list[str] = field(default_factory=list)  # ids of the research findings in the plan prompt


class Researcher(Protocol):
    def propose(self, request: ExpansionRequest) -> list[Plan]: ...


def baseline_plan(task: TaskSpec) -> Plan:
    """The root: the untrained base model, prompted exactly as trained models will be."""
    return Plan(
        direction="baseline",
        rationale="Score of the base model before any fine-tuning; every gain is measured from it.",
        recipe=Recipe(steps=[LoadOp(), FormatOp(prompt=task.prompt_template, completion=task.completion_template)]),
    )
