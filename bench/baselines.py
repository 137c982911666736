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
DRAWS = 20  # suggestions a sweep may draw for one start before it ends (none fit the budget left)


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
    """A Tune searcher that starts a trial only when the budget can pay for it: equal compute
    for every method. A trial's cost is estimated as its example-epochs (rows x epochs) times the
    accelerator-seconds per example-epoch measured on the finished trials, or, before any has
    finished, ``per_example`` (the default recipe's measured rate, when the caller has it; without
    it one trial runs alone until a cost is known). Once the next suggestion would not fit, the
    sweep draws again (the dropped suggestion is told to the inner searcher as errored), up to
    ``DRAWS`` times, then ends."""

    def __new__(cls, inner, budget: float, concurrency: int, per_example: float | None = None):
        from ray.tune.search import Searcher

        class _Budgeted(Searcher):
            def __init__(self) -> None:
                super().__init__(metric="score", mode="max")
                self.inner, self.spent, self.examples, self.count = inner, 0.0, 0, 0
                self.running: dict[str, float] = {}  # trial id -> its estimated cost

            def set_search_properties(self, metric, mode, config, **spec):
                return True  # the inner searcher holds its space already

            def _end(self):
                return Searcher.FINISHED if not self.running else None

            def suggest(self, trial_id: str):
                rate = self.spent / self.examples if self.examples else per_example
                if rate is None and self.running:
                    return None
                committed = self.spent + sum(self.running.values())
                if rate is not None and committed + rate * min(ROWS) * min(EPOCHS) > budget:
                    return self._end()
                for _ in range(DRAWS):  # suggestions the budget cannot pay for are dropped, and drawn again
                    cfg = self.inner.suggest(trial_id)
                    if not isinstance(cfg, dict):
                        return cfg
                    cost = rate * cfg["rows"] * cfg["epochs"] if rate is not None else 0.0
                    if rate is None or committed + cost <= budget:
                        break
                    self.inner.on_trial_complete(trial_id, None, error=True)
                else:
                    return self._end()
                self.running[trial_id] = cost
                cfg = {**cfg, "index": self.count}
                self.count += 1
                return cfg

            def on_trial_complete(self, trial_id: str, result=None, error: bool = False) -> None:
                self.running.pop(trial_id, None)
                self.spent += float((result or {}).get("accelerator_seconds", 0.0))
                self.examples += int((result or {}).get("examples", 0))
                self.inner.on_trial_complete(trial_id, result, error)

        return _Budgeted()


def run_sweep(method: str, cfg: Config, spec: TaskSpec, ctx: TrialContext, budget: float, seed: int,
              concurrency: int, out: Path, per_example: float | None = None) -> dict[str, Any]:
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
    algo = Budgeted(inner, budget, concurrency, per_example)
    t0 = time.time()
    results = tune.Tuner(
        tune.with_resources(tune.with_parameters(sweep_trial, ctx=ctx, cfg=cfg, spec=spec), {"CPU": 1}),
        tune_config=tune.TuneConfig(search_alg=algo, num_samples=-1, max_concurrent_trials=concurrency),
        run_config=tune.RunConfig(name=f"{method}-{seed}", storage_path=str(out / "tune"), verbose=0),
    ).fit()
    rows = [r.metrics for r in results if r.metrics and "score" in r.metrics]
    if not rows:
        raise RuntimeError(f"{method} seed {seed}: no trial fitted the budget of {budget:g} accelerator-seconds")
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
