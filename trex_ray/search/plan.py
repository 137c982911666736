"""An experiment plan: what data to train on and how. Plain, schema-validated data, never code.

Plans come from the Researcher (the built-in policy or an LLM), so every field is bounded and
unknown fields are rejected: a plan that validates is safe to act on.
"""

from __future__ import annotations

import hashlib
import math
from typing import Literal

from pydantic import BaseModel, ConfigDict, Field, ValidationError, field_validator, model_validator

from trex_ray.config import ResourcesConfig

# The recipe vocabulary lives with the recipe package; Plan embeds it, so Plan stays the one schema.
from trex_ray.recipes.ops import (  # noqa: F401  (re-exported)
    FormatOp, LoadOp, Recipe, RecipeStep, SubsampleOp, template_fields,
)

# The search's vocabulary: what a child changes relative to its parent. Every list of directions
# (the policies, the LLM's schemas and prompts, the diagnosis) is derived from these two names.
SearchDirection = Literal["more_data", "data_quality", "hyperparameters", "method", "prompt_format"]
Direction = Literal["baseline", SearchDirection]
SEARCH_DIRECTIONS: tuple[str, ...] = SearchDirection.__args__  # type: ignore[attr-defined]
DIRECTIONS: tuple[str, ...] = ("baseline", *SEARCH_DIRECTIONS)
DIRECTION_HELP: dict[str, str] = {
    "more_data": "train on more rows (a larger subsample n)",
    "data_quality": "change which rows are used (filters, deduplication, balancing, sources, decontamination)",
    "hyperparameters": "learning rate, epochs, batch size, scheduler, warmup, weight decay",
    "method": "LoRA versus full fine-tuning, LoRA rank/alpha/dropout/target modules",
    "prompt_format": "the prompt and completion templates over the data's columns",
}


class _Strict(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)


class TrainingConfig(_Strict):
    """How to fine-tune. Bounds are wide enough for real runs and tight enough to catch nonsense."""

    method: Literal["lora", "full"] = "lora"
    learning_rate: float = Field(2e-4, gt=0, le=1e-2)
    num_epochs: float = Field(1.0, gt=0, le=50)
    max_steps: int = Field(-1, ge=-1, le=1_000_000)  # -1: run num_epochs
    batch_size: int = Field(8, ge=1, le=1024)
    grad_accum: int = Field(1, ge=1, le=1024)
    max_seq_length: int = Field(256, ge=16, le=131_072)
    lora_r: int = Field(16, ge=1, le=1024)
    lora_alpha: int = Field(32, ge=1, le=4096)
    lora_dropout: float = Field(0.05, ge=0, le=0.5)
    lora_target_modules: list[str] = Field(default_factory=lambda: ["all-linear"], min_length=1, max_length=32)
    warmup_ratio: float = Field(0.0, ge=0, le=0.5)
    scheduler: Literal["linear", "cosine", "constant", "constant_with_warmup"] = "linear"
    weight_decay: float = Field(0.0, ge=0, le=1)
    seed: int = Field(0, ge=0, le=2**31 - 1)
    # Start from the parent node's trained weights instead of the base model: its LoRA adapter,
    # trained further (method lora), or its full weights (method full); num_epochs/max_steps then
    # count the extra training. Needs a trained parent with the same method and LoRA shape.
    warm_start: bool = False

    def full_steps(self, rows: int) -> int:
        """Optimizer steps of the full run over ``rows`` examples, counted as the HF Trainer
        counts them (batches per epoch, floor-divided by the accumulation)."""
        if self.max_steps > 0:
            return self.max_steps
        per_epoch = max(math.ceil(rows / self.batch_size) // self.grad_accum, 1)
        return max(1, math.ceil(per_epoch * self.num_epochs))

    def stop_at(self, rows: int, fraction: float) -> int:
        """The step a run over ``rows`` examples stops at for ``fraction`` of its full length
        (successive halving's proxies: at least one step)."""
        return max(1, math.ceil(fraction * self.full_steps(rows) - 1e-9))

    @field_validator("lora_target_modules")
    @classmethod
    def _module_names(cls, v: list[str]) -> list[str]:
        bad = [m for m in v if not m.replace("-", "_").replace(".", "_").isidentifier()]
        if bad:
            raise ValueError(f"not module names: {bad}")
        return v


class TrialResources(_Strict):
    """What one trial runs on. One worker trains in the trial's own process; several workers (or
    a ZeRO stage) train with DeepSpeed through Ray Train, packed onto as few nodes as fit."""

    num_workers: int = Field(1, ge=1, le=1024)
    gpus_per_worker: float = Field(0.0, ge=0, le=16)
    cpus_per_worker: float = Field(1.0, gt=0, le=512)
    zero_stage: Literal[0, 2, 3] = 0
    offload: bool = False

    @property
    def distributed(self) -> bool:
        return self.num_workers > 1 or self.zero_stage > 0

    @property
    def reserved_units(self) -> tuple[float, str]:
        """(units, kind) a trial of this shape holds: its GPUs if it has any, else its CPUs (what
        its accelerator-seconds count, search/spend.py)."""
        gpus = self.num_workers * self.gpus_per_worker
        return (gpus, "gpu") if gpus > 0 else (self.num_workers * self.cpus_per_worker, "cpu")

    @classmethod
    def of(cls, r: ResourcesConfig) -> "TrialResources":
        """The run's default trial shape (config section ``resources``), for plans that set none."""
        return cls(num_workers=r.num_workers, gpus_per_worker=r.gpus_per_trial, cpus_per_worker=r.cpus_per_trial,
                   zero_stage=r.zero_stage, offload=r.offload)


class Plan(_Strict):
    """One experiment: a direction from the search vocabulary, why, the data and the training.

    ``training`` is None only for the baseline (the untrained base model evaluated on dev).
    """

    direction: Direction
    rationale: str = Field("", max_length=4000)
    recipe: Recipe
    training: TrainingConfig | None = None
    resources: TrialResources | None = None  # None: the run's defaults (config section resources)

    @model_validator(mode="after")
    def _baseline_has_no_training(self) -> "Plan":
        if (self.direction == "baseline") != (self.training is None):
            raise ValueError("the baseline plan (and only it) has no training config")
        return self

    def fingerprint(self) -> str:
        """What the experiment is (data, training, resources), not why: two plans with the same
        fingerprint are the same experiment, whatever their direction or rationale says.
        A warm start is a different experiment than the same plan from scratch; a plan without
        one keeps the fingerprint it had before the field existed."""
        exclude: dict = {"rationale": True, "direction": True}
        if self.training is not None and not self.training.warm_start:
            exclude["training"] = {"warm_start"}
        body = self.model_dump_json(exclude=exclude)
        return hashlib.sha256(body.encode()).hexdigest()[:16]

    def knobs(self) -> str:
        """A short human summary of what this plan sets, for leaderboards and prompts."""
        cap = self.recipe.sample_cap
        if self.training is None:
            return "base model, no training"
        t = self.training
        parts = [t.method, f"lr={t.learning_rate:g}", f"ep={t.num_epochs:g}", f"bs={t.batch_size * t.grad_accum}"]
        if t.method == "lora":
            parts.append(f"r={t.lora_r}")
        parts.append(f"n={cap if cap is not None else 'all'}")
        if t.warm_start:
            parts.append("warm")
        return " ".join(parts)


def explain(error: ValidationError, prefix: str = "plan") -> str:
    """One line per problem, each naming the field path (``plan.training.learning_rate: ...``)."""
    lines = []
    for e in error.errors():
        loc = ".".join(str(p) for p in (prefix, *e["loc"]) if p != "")
        lines.append(f"{loc}: {e['msg']}")
    return "; ".join(lines)


def parse_plan(data: dict) -> Plan:
    """Validate untrusted plan data; ValueError with every bad field named on failure."""
    try:
        return Plan.model_validate(data)
    except ValidationError as e:
        raise ValueError(explain(e)) from None


def bounds(model: type[BaseModel], names: tuple[str, ...]) -> str:
    """The allowed values of some of ``model``'s fields, read from the schema itself
    (``0 < learning_rate <= 0.01, method lora|full``), so a prompt never restates a bound that
    could drift from what validation enforces."""
    out = []
    for name in names:
        f = model.model_fields[name]
        choices = getattr(f.annotation, "__args__", None)
        if choices and all(isinstance(c, str) for c in choices):
            out.append(f"{name} {'|'.join(choices)}")
            continue
        lo = hi = ""
        for m in f.metadata:
            if getattr(m, "gt", None) is not None:
                lo = f"{m.gt:g} < "
            if getattr(m, "ge", None) is not None:
                lo = f"{m.ge:g} <= "
            if getattr(m, "lt", None) is not None:
                hi = f" < {m.lt:g}"
            if getattr(m, "le", None) is not None:
                hi = f" <= {m.le:g}"
        out.append(f"{lo}{name}{hi}")
    return ", ".join(out)
