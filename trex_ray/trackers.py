"""Experiment trackers for the trials' metrics, as Tune logger callbacks.

TensorBoard needs nothing from us: Tune's default logger callbacks already write each trial's
reported metrics (score, loss, ...) as event files under ``RUN_DIR/tune/search-*/<trial>/``, so
``tensorboard --logdir RUN_DIR/tune`` shows them. ``run.tracker=mlflow`` adds MLflow through Ray
Tune's ``MLflowLoggerCallback``, by default into a local file store in the run directory;
``run.tracker=wandb`` adds Weights & Biases through Tune's ``WandbLoggerCallback`` (one W&B run per
trial, grouped by Tune experiment), offline into ``RUN_DIR/wandb`` unless an API key is there. A
tracker is a view of the run: its errors are logged and never stop the search.
"""

from __future__ import annotations

import importlib.util
import logging
import os
from pathlib import Path
from typing import Any

from trex_ray.config import Config, ConfigError

log = logging.getLogger(__name__)

# What each tracker needs installed, checked before Ray starts.
_NEEDS = {"mlflow": ("mlflow", "pip install mlflow-skinny"), "wandb": ("wandb", "pip install wandb")}


def tracker_names(cfg: Config) -> list[str]:
    """``run.tracker`` as a list (it may be one name or several)."""
    t = cfg.run.tracker
    return [t] if isinstance(t, str) else list(dict.fromkeys(t))


def mlflow_uri(cfg: Config, run_dir: Path) -> str:
    """The configured MLflow tracking URI, or a file store at ``RUN_DIR/mlruns``."""
    return cfg.run.mlflow_tracking_uri or (Path(run_dir) / "mlruns").resolve().as_uri()


def wandb_mode(cfg: Config) -> str:
    """``online`` or ``offline``: the configured mode, else online only when WANDB_API_KEY is set
    (an explicit mode wins; a run without a key still keeps its metrics, for ``wandb sync``)."""
    if cfg.run.wandb_mode:
        return cfg.run.wandb_mode
    return "online" if os.environ.get("WANDB_API_KEY") else "offline"


def check_trackers(cfg: Config) -> None:
    """Before Ray starts: every chosen tracker is installed, and online W&B has a key."""
    for name in tracker_names(cfg):
        if name in _NEEDS and importlib.util.find_spec(_NEEDS[name][0]) is None:
            raise ConfigError(f"run.tracker={name} needs {_NEEDS[name][0]}: {_NEEDS[name][1]}")
    if "wandb" in tracker_names(cfg) and wandb_mode(cfg) == "online" and not os.environ.get("WANDB_API_KEY"):
        raise ConfigError("run.wandb_mode=online needs the WANDB_API_KEY environment variable "
                          "(or leave run.wandb_mode unset to log offline and wandb sync later)")


class _SafeCallback:
    """Mixin for a Tune logger callback whose failures (a server away, a too-long param, a
    tracker's own bug) are warnings: the search goes on without that view."""

    tracker = "tracker"

    def _safe(self, what: str, fn, *args, **kwargs) -> None:  # noqa: ANN001
        try:
            fn(*args, **kwargs)
        except Exception as e:  # noqa: BLE001
            log.warning("%s %s failed: %s", self.tracker, what, e)

    def log_trial_start(self, trial) -> None:  # noqa: ANN001
        self._safe("trial start", super().log_trial_start, trial)

    def log_trial_result(self, iteration: int, trial, result: dict) -> None:  # noqa: ANN001
        self._safe("result", super().log_trial_result, iteration, trial, result)

    def log_trial_end(self, trial, failed: bool = False) -> None:  # noqa: ANN001
        self._safe("trial end", super().log_trial_end, trial, failed)


def _mlflow_callback(cfg: Config, run_dir: Path) -> Any:
    from ray.air.integrations.mlflow import MLflowLoggerCallback

    uri = mlflow_uri(cfg, run_dir)
    if uri.startswith("file:"):
        # MLflow 3 keeps its file store behind this switch (it prefers a database server); a run
        # directory's own store needs no server, which is the point here.
        os.environ.setdefault("MLFLOW_ALLOW_FILE_STORE", "true")

    class SafeMLflowLoggerCallback(_SafeCallback, MLflowLoggerCallback):
        tracker = "MLflow"

    log.info("MLflow tracking: %s", uri)
    return SafeMLflowLoggerCallback(
        tracking_uri=uri, experiment_name=f"trex-ray-{Path(run_dir).name}",
        tags={"trex_ray.run_dir": str(run_dir), "task": cfg.task.name, "base_model": cfg.model.name_or_path},
    )


def _wandb_callback(cfg: Config, run_dir: Path) -> Any:
    from ray.air.integrations.wandb import WandbLoggerCallback, _WandbLoggingActor

    mode = wandb_mode(cfg)

    class FlushingWandbLoggingActor(_WandbLoggingActor):
        """Tune's per-trial logging actor, which also tears wandb down before returning: Tune
        kills the actor (and wandb-core, its child) as soon as ``run`` returns, and wandb-core
        writes a run's records only when its stream closes, so without this the last trial's
        run file stays empty."""

        def run(self) -> None:
            try:
                super().run()
            finally:
                self._wandb.teardown()

    class SafeWandbLoggerCallback(_SafeCallback, WandbLoggerCallback):
        tracker = "W&B"
        _logger_actor_cls = FlushingWandbLoggingActor

        def setup(self, *args, **kwargs) -> None:
            # Tune's setup insists on an API key unless WANDB_MODE=offline is in the driver's
            # environment; offline needs none, and the mode travels in wandb.init's arguments
            # (to the logging actors) rather than through this process's environment.
            if mode != "offline":
                super().setup(*args, **kwargs)

    where = f"offline files under {Path(run_dir) / 'wandb'} (upload with: wandb sync {Path(run_dir) / 'wandb'}/offline-run-*)"
    if mode == "offline" and not cfg.run.wandb_mode:
        log.info("W&B: WANDB_API_KEY is not set, logging offline: %s", where)
    else:
        log.info("W&B: project %s, %s", cfg.run.wandb_project, "online" if mode == "online" else where)
    extra = {"entity": cfg.run.wandb_entity} if cfg.run.wandb_entity else {}
    return SafeWandbLoggerCallback(
        project=cfg.run.wandb_project, mode=mode, dir=str(Path(run_dir).resolve()),
        tags=["trex-ray", cfg.task.name], excludes=["context"],  # the trial's plumbing, not its settings
        **extra,
    )


def tracker_callbacks(cfg: Config, run_dir: Path) -> list[Any]:
    """The extra Tune callbacks ``run.tracker`` asks for (none for TensorBoard, Tune's default)."""
    check_trackers(cfg)
    names = tracker_names(cfg)
    out = []
    if "mlflow" in names:
        out.append(_mlflow_callback(cfg, run_dir))
    if "wandb" in names:
        out.append(_wandb_callback(cfg, run_dir))
    return out
