"""Small builders for tests of the Ray-free core: the task, the train defaults, search params, a
SearchState and a trial outcome, each from the product's own types."""

from __future__ import annotations

import os
from typing import Any

from trex_ray.config import Config, SearchConfig, TrainConfig
from trex_ray.search.outcome import Cost, TrialOutcome
from trex_ray.search.request import ExpansionRequest, TaskSpec
from trex_ray.search.state import SearchState
from trex_ray.search.tree import SearchParams, Tree

TASK = TaskSpec(id="sst2", description="sentiment", metric="accuracy", higher_is_better=True,
                prompt_template="Review: {input}", completion_template="{reference}", train_rows=1000,
                columns=["id", "input", "label", "reference"])
DEFAULTS = TrainConfig(train_samples=100, eval_batch_size=8)


def params(higher_is_better: bool = True, metric_range: float = 1.0, **search: Any) -> SearchParams:
    """SearchParams with some SearchConfig fields set (``exploration=2.0``, ...)."""
    return SearchParams(SearchConfig(**search), higher_is_better, metric_range)


def config(max_trials: int = 3, children_per_expansion: int = 2, **search: Any) -> Config:
    """A run config for state tests: one rung (every plan at full fidelity) unless ``rungs`` says
    otherwise, so a test of the tree's other rules is not about successive halving."""
    search = {"rungs": [1.0], **search}
    return Config(search=SearchConfig(max_trials=max_trials, children_per_expansion=children_per_expansion, **search),
                  train=DEFAULTS)


def make_state(run_dir: str | os.PathLike, max_trials: int = 3, children_per_expansion: int = 2,
               task: TaskSpec = TASK, **kw: Any) -> SearchState:
    """A SearchState on ``run_dir``; ``kw``: SearchState's own keywords (fit, on_change, gate) or
    SearchConfig fields."""
    own = {k: kw.pop(k) for k in ("fit", "on_change", "gate") if k in kw}
    return SearchState(run_dir, config(max_trials, children_per_expansion, **kw), task, **own)


def outcome(score: float, metric: str = "accuracy", **kw: Any) -> TrialOutcome:
    """A trial outcome scoring ``score``; ``kw``: TrialOutcome fields (cost may be a dict)."""
    cost = kw.pop("cost", None)
    cost = Cost(**cost) if isinstance(cost, dict) else (cost or Cost())
    return TrialOutcome(score=score, metrics=kw.pop("metrics", {metric: score}), cost=cost, **kw)


def request(tree: Tree, node_id: str, n: int, defaults: TrainConfig = DEFAULTS, task: TaskSpec = TASK) -> ExpansionRequest:
    return ExpansionRequest(node_id=node_id, task=task, memory=tree.memory(node_id), n=n, defaults=defaults)


def proposal(plans: list[Any], source: str = "builtin", note: str | None = None) -> "Proposal":
    """A Researcher's answer from plans given as Plan objects or plan dicts (validated here)."""
    from trex_ray.search.plan import Plan
    from trex_ray.search.request import Proposal

    return Proposal([p if isinstance(p, Plan) else Plan.model_validate(p) for p in plans], source, note)


def trial_context(model_dir: str | os.PathLike, run_dir: str | os.PathLike, data_dir: str | os.PathLike | None = None,
                  task: str = "sst2", storage: str | None = None, **kw: Any) -> "TrialContext":
    """A TrialContext for calling ``execute`` directly; ``kw``: TrialContext fields (dev_limit, ...)."""
    from trex_ray.config import LLMConfig, ModelConfig, TaskConfig
    from trex_ray.executor.context import TrialContext
    from trex_ray.search.plan import TrialResources

    return TrialContext(task=TaskConfig(name=task, data_dir=str(data_dir) if data_dir else None).resolved(),
                        model=ModelConfig(name_or_path=str(model_dir)), llm=kw.pop("llm", LLMConfig()),
                        resources=kw.pop("resources", TrialResources()), run_dir=str(run_dir),
                        dev_limit=kw.pop("dev_limit", 4), storage=storage, **kw)
