"""What a user would reach for instead of TREX-Ray, run on the project's own trial function
(``executor.execute``) for a fair comparison: Ray Tune with Optuna's TPE, Ray Tune with random
search, and the single default recipe. Used by ``bench/compare_search.py``.

Every method trains full runs of plans built the same way TREX-Ray's first plan is (the
configured defaults with four knobs changed: learning rate, LoRA rank, epochs, rows), scores them
on the same dev rows, and picks the best dev score, as a user of those tools would.
"""

from __future__ import annotations

import math
import time
from pathlib import Path
from typing import Any

from trex_ray.config import Config
from trex_ray.executor.context import TrialContext
from trex_ray.search.request import TaskSpec

# The knobs the sweeps search, and their ranges: what the issue measured TREX-Ray against.
LR = (5e-5, 1e-3)
RANKS = [8, 16, 32, 64]
EPOCHS = [1.0, 2.0]
ROWS = [256, 512]


def plan_for(cfg: Config, spec: TaskSpec, knobs: dict[str, Any]):
    """The plan a sweep's trial trains: the default recipe with the sampled knobs."""
    from trex_ray.researcher.builtin import first_plan

    train = cfg.train.model_copy(update={"learning_rate": float(knobs["lr"]), "lora_r": int(knobs["rank"]),
                                         "num_epochs": float(knobs["epochs"]), "train_samples": int(knobs["rows"])})
    return first_plan(spec, train, cfg.search.seed)


def sweep_trial(config: dict[str, Any], ctx: TrialContext, cfg: Config, spec: TaskSpec) -> None:
    """One Tune trial: train and score a sampled plan with the project's trial function."""
    from ray import tune

    from trex_ray.executor.execute import execute

    out = execute(plan_for(cfg, spec, config), f"t{config['index']}", ctx)
    tune.report({"score": out.score, "accelerator_seconds": out.cost.accelerator_seconds,
                 "examples": out.cost.examples, "model": out.artifacts["model"], "node": f"t{config['index']}"})


class Budgeted:
    """A Tune searcher that stops suggesting once the trials' accelerator-seconds (finished, and
    running ones at the mean so far) would pass the budget: equal compute for every method."""

    def __new__(cls, inner, budget: float, concurrency: int):
        from ray.tune.search import Searcher

        class _Budgeted(Searcher):
            def __init__(self) -> None:
                super().__init__(metric="score", mode="max")
                self.inner, self.spent, self.done, self.running, self.count = inner, 0.0, 0, set(), 0

            def set_search_properties(self, metric, mode, config, **spec):
                return True  # the inner searcher holds its space already

            def suggest(self, trial_id: str):
                mean = self.spent / self.done if self.done else 0.0
                if self.done == 0 and len(self.running) >= concurrency:
                    return None
                if self.spent + mean * len(self.running) + mean >= budget and self.done:
                    return Searcher.FINISHED if not self.running else None
                cfg = self.inner.suggest(trial_id)
                if isinstance(cfg, dict):
                    cfg = {**cfg, "index": self.count}
                    self.count += 1
                    self.running.add(trial_id)
                return cfg

            def on_trial_complete(self, trial_id: str, result=None, error: bool = False) -> None:
                self.running.discard(trial_id)
                self.done += 1
                self.spent += float((result or {}).get("accelerator_seconds", 0.0))
                self.inner.on_trial_complete(trial_id, result, error)

        return _Budgeted()


def run_sweep(method: str, cfg: Config, spec: TaskSpec, ctx: TrialContext, budget: float, seed: int,
              concurrency: int, out: Path) -> dict[str, Any]:
    """A Tune sweep (``optuna`` or ``random``) within ``budget`` accelerator-seconds; returns the
    trial with the best dev score and what the sweep spent."""
    from ray import tune

    space = {"lr": tune.loguniform(*LR), "rank": tune.choice(RANKS), "epochs": tune.choice(EPOCHS),
             "rows": tune.choice(ROWS)}
    if method == "optuna":
        from ray.tune.search.optuna import OptunaSearch

        inner = OptunaSearch(space=space, metric="score", mode="max", seed=seed)
    else:
        inner = _Random(seed)
    algo = Budgeted(inner, budget, concurrency)
    t0 = time.time()
    results = tune.Tuner(
        tune.with_resources(tune.with_parameters(sweep_trial, ctx=ctx, cfg=cfg, spec=spec), {"CPU": 1}),
        tune_config=tune.TuneConfig(search_alg=algo, num_samples=-1, max_concurrent_trials=concurrency),
        run_config=tune.RunConfig(name=f"{method}-{seed}", storage_path=str(out / "tune"), verbose=0),
    ).fit()
    rows = [r.metrics for r in results if r.metrics and "score" in r.metrics]
    best = max(rows, key=lambda r: r["score"])
    return {"node": best["node"], "dev_score": best["score"], "model": best["model"], "trials": len(rows),
            "accelerator_seconds": round(sum(r["accelerator_seconds"] for r in rows), 1),
            "example_epochs": sum(r["examples"] for r in rows), "wall_seconds": round(time.time() - t0, 1)}


class _Random:
    """Random search over the same knobs (log-uniform learning rate, uniform choices), seeded, as
    a plain searcher the budget can wrap."""

    def __init__(self, seed: int) -> None:
        import random

        self.rng = random.Random(seed)

    def suggest(self, trial_id: str) -> dict[str, Any]:
        lo, hi = LR
        return {"lr": math.exp(self.rng.uniform(math.log(lo), math.log(hi))), "rank": self.rng.choice(RANKS),
                "epochs": self.rng.choice(EPOCHS), "rows": self.rng.choice(ROWS)}

    def on_trial_complete(self, trial_id: str, result=None, error: bool = False) -> None:
        pass


def run_default(cfg: Config, spec: TaskSpec, ctx: TrialContext) -> dict[str, Any]:
    """The single default recipe (TREX-Ray's own first plan), trained once."""
    from trex_ray.executor.execute import execute
    from trex_ray.researcher.builtin import first_plan

    t0 = time.time()
    out = execute(first_plan(spec, cfg.train, cfg.search.seed), "default", ctx)
    return {"node": "default", "dev_score": out.score, "model": out.artifacts["model"], "trials": 1,
            "accelerator_seconds": out.cost.accelerator_seconds, "example_epochs": out.cost.examples,
            "wall_seconds": round(time.time() - t0, 1)}
