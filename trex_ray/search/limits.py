"""The user's limits (config ``limits:``) applied to plans, and the config checked against the
plan schema before Ray starts. No Ray.

Plans are written by the builtin rules or an LLM; the limits hold whatever a plan asks for.
``PlanGate.check`` returns the plan clipped to them, one note per change, or why it may not run
at all (data it may not read: that cannot be clipped). The SearchState applies it where plans
are recorded, so a plan outside the limits never reaches a worker, and the notes or the reason
stay on its node.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from pydantic import ValidationError

from trex_ray.config import Config, ConfigError, LimitsConfig
from trex_ray.recipes.ops import hub_id_problem
from trex_ray.search.plan import Plan, TrainingConfig, TrialResources

# a recipe step's size fields that count rows, and what they are clipped to
ROW_FIELDS = {"subsample": "n", "mix": "n", "balance_labels": "max_per_label", "synthesize": "n"}


def _within(path: Path, root: Path) -> bool:
    return path == root or root in path.parents


@dataclass(frozen=True)
class DataRules:
    """Which data a plan may read: ``task:train``, ``hub:<id>`` (never a local path through
    ``hub:``), and local files under the user's ``task.extra_sources``, except the task's own
    data files by any path (train is read as ``task:train``, dev and test never)."""

    task_id: str
    allowed: tuple[Path, ...] = ()  # resolved task.extra_sources
    own: tuple[Path, ...] = ()  # the task's own files and folders (tasks.own_data_paths)

    def why_not(self, source: str, dev_seeds: bool = False) -> str | None:
        """Why a plan may not read ``source``, or None. ``dev_seeds``: the recipe is seeded from
        ``task:dev``, which its schema allows only as examples for a synthesize step that replaces
        them (decontaminated, so no dev row is trained on; ``Recipe._dev_only_seeds``)."""
        if source == "task:train" or source == "task:dev" and dev_seeds:
            return None
        if source.startswith("task:"):
            return (f"source {source}: only task:train may be read (the task's dev and test splits are held "
                    "out; task:dev only as the first step of a recipe that synthesises from it)")
        if source.startswith("hub:"):
            return hub_id_problem(source[len("hub:"):])
        p = Path(source).expanduser()
        if not p.is_absolute():
            return f"source {source}: a local source must be an absolute path under task.extra_sources"
        p = p.resolve()
        # the FT-Bench layout keeps each task's splits in a folder named after it
        if any(_within(p, o) or _within(o, p) for o in self.own) or self.task_id in (p.name, p.parent.name):
            return (f"source {source}: the task's own data may not be read by path (its train split is "
                    "task:train; dev and test are held out)")
        if not any(_within(p, a) for a in self.allowed):
            return (f"source {source}: not under task.extra_sources (a plan may read task:train, hub:<id> "
                    "and the user's extra sources)")
        return None


@dataclass
class GateResult:
    plan: Plan | None  # the plan to record (clipped), None when rejected
    clipped: list[str] = field(default_factory=list)  # one note per change
    rejected: str | None = None  # why it may not run


class PlanGate:
    """The limits a run's plans are held to: ``limits`` (with the run's own trial shape
    ``default`` where a per-trial limit is unset) and the data ``rules``."""

    def __init__(self, limits: LimitsConfig, default: TrialResources, rules: DataRules | None = None) -> None:
        self.limits, self.default, self.rules = limits, default, rules

    @property
    def max_workers(self) -> int:
        return self.limits.max_workers or self.default.num_workers

    @property
    def max_gpus_per_worker(self) -> float:
        g = self.limits.max_gpus_per_worker
        return self.default.gpus_per_worker if g is None else g

    @property
    def max_cpus_per_worker(self) -> float:
        return self.limits.max_cpus_per_worker or self.default.cpus_per_worker

    def check(self, plan: Plan) -> GateResult:
        if plan.training is None:  # the baseline: the task's own template on task:train
            return GateResult(plan)
        d = plan.model_dump(mode="json")
        notes: list[str] = []
        for source in self._sources(d["recipe"]["steps"]):
            why = self.rules.why_not(source, plan.recipe.seeded_from_dev) if self.rules else None
            if why:
                return GateResult(None, rejected=f"rejected by the run's data rules: {why}")
        self._clip_recipe(d["recipe"], notes)
        self._clip_training(d["training"], notes)
        if d.get("resources"):
            self._clip_resources(d["resources"], notes)
        if not notes:
            return GateResult(plan)
        try:
            return GateResult(Plan.model_validate(d), clipped=notes)
        except ValidationError as e:  # clipping never breaks a valid plan; if it did, do not run it
            return GateResult(None, rejected=f"could not be clipped to the run's limits: {str(e)[:500]}")

    @staticmethod
    def _sources(steps: list[dict[str, Any]]) -> list[str]:
        found = []
        for s in steps:
            if s["op"] == "load":
                found.append(s["source"])
            elif s["op"] in ("mix", "concat"):
                found += [part["source"] for part in s["sources"]]
        return found

    def _clip(self, d: dict[str, Any], key: str, cap: float, where: str, limit: str, notes: list[str]) -> None:
        v = d.get(key)
        if v is not None and v > cap:
            d[key] = type(v)(cap) if isinstance(v, int) and not isinstance(cap, int) else cap
            notes.append(f"{where} {v:g} -> {d[key]:g} ({limit})")

    def _clip_recipe(self, r: dict[str, Any], notes: list[str]) -> None:
        L = self.limits
        self._clip(r, "max_rows", L.max_rows, "recipe.max_rows", "limits.max_rows", notes)
        for i, s in enumerate(r["steps"]):
            key = ROW_FIELDS.get(s["op"])
            if key:
                self._clip(s, key, L.max_rows, f"recipe step {i} ({s['op']}) {key}", "limits.max_rows", notes)
        if r.get("decontaminate", True) != L.decontaminate:
            r["decontaminate"] = L.decontaminate
            notes.append(f"recipe.decontaminate -> {str(L.decontaminate).lower()} (only the user's "
                         "limits.decontaminate decides it)")

    def _clip_training(self, t: dict[str, Any], notes: list[str]) -> None:
        L = self.limits
        self._clip(t, "num_epochs", L.max_epochs, "training.num_epochs", "limits.max_epochs", notes)
        self._clip(t, "max_steps", L.max_steps, "training.max_steps", "limits.max_steps", notes)
        self._clip(t, "max_seq_length", L.max_seq_length, "training.max_seq_length", "limits.max_seq_length", notes)

    def _clip_resources(self, res: dict[str, Any], notes: list[str]) -> None:
        for key, cap, limit in (("num_workers", self.max_workers, "limits.max_workers"),
                                ("gpus_per_worker", self.max_gpus_per_worker, "limits.max_gpus_per_worker"),
                                ("cpus_per_worker", self.max_cpus_per_worker, "limits.max_cpus_per_worker")):
            self._clip(res, key, cap, f"resources.{key}", limit, notes)


# ---------------------------------------------------------------- the config, before Ray starts
# a plan field -> the config key the first plans take it from
TRAIN_KEYS = {"lora_alpha": "lora_r (the first plans use lora_alpha = 2 x lora_r)"}
RESOURCE_KEYS = {"num_workers": "num_workers", "gpus_per_worker": "gpus_per_trial", "cpus_per_worker": "cpus_per_trial"}


def _schema_error(e: ValidationError, section: str, keys: dict[str, str], values: dict[str, Any]) -> ConfigError:
    err = e.errors()[0]
    name = str(err["loc"][0]) if err["loc"] else "?"
    return ConfigError(f"config {section}.{keys.get(name, name)}: {err['msg']} for any plan "
                       f"(got {values.get(name)!r}); the run's plans could never use it")


def check_config(cfg: Config) -> None:
    """The config against the plan schema's bounds and the run's own limits. The first plans
    are built from ``train`` and trials run in the ``resources`` shape, so a value no plan may
    hold would otherwise fail every expansion after Ray started. ConfigError names the key."""
    t, r, L = cfg.train, cfg.resources, cfg.limits
    training = {"method": t.method, "learning_rate": t.learning_rate, "num_epochs": t.num_epochs,
                "batch_size": t.batch_size, "grad_accum": t.grad_accum, "max_seq_length": t.max_seq_length,
                "lora_r": t.lora_r, "lora_alpha": 2 * t.lora_r}
    try:
        TrainingConfig(**training)
    except ValidationError as e:
        raise _schema_error(e, "train", TRAIN_KEYS, training) from None
    shape = {"num_workers": r.num_workers, "gpus_per_worker": r.gpus_per_trial, "cpus_per_worker": r.cpus_per_trial}
    try:
        TrialResources(**shape, zero_stage=r.zero_stage, offload=r.offload)
    except ValidationError as e:
        raise _schema_error(e, "resources", RESOURCE_KEYS, shape) from None
    over = [(f"train.num_epochs {t.num_epochs:g}", "limits.max_epochs", t.num_epochs, L.max_epochs),
            (f"train.max_seq_length {t.max_seq_length}", "limits.max_seq_length", t.max_seq_length, L.max_seq_length),
            (f"train.train_samples {t.train_samples}", "limits.max_rows", t.train_samples, L.max_rows),
            (f"resources.num_workers {r.num_workers}", "limits.max_workers", r.num_workers, L.max_workers),
            (f"resources.gpus_per_trial {r.gpus_per_trial:g}", "limits.max_gpus_per_worker", r.gpus_per_trial,
             L.max_gpus_per_worker),
            (f"resources.cpus_per_trial {r.cpus_per_trial:g}", "limits.max_cpus_per_worker", r.cpus_per_trial,
             L.max_cpus_per_worker)]
    for what, limit, value, cap in over:
        if cap is not None and value > cap:
            raise ConfigError(f"config {what} is above {limit} {cap:g}: the first plans would break the run's own limit")
