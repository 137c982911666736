"""Experiment trackers for the trials' metrics, as Tune logger callbacks.

TensorBoard needs nothing from us: Tune's default logger callbacks already write each trial's
reported metrics (score, loss, ...) as event files under ``RUN_DIR/tune/search-*/<trial>/``, so
``tensorboard --logdir RUN_DIR/tune`` shows them. ``run.tracker=mlflow`` adds MLflow through Ray
Tune's ``MLflowLoggerCallback``, by default into a local file store in the run directory. A
tracker is a view of the run: its errors are logged and never stop the search.
"""

from __future__ import annotations

import logging
import os
from pathlib import Path
from typing import Any

from trex_ray.config import Config, ConfigError

log = logging.getLogger(__name__)


def mlflow_uri(cfg: Config, run_dir: Path) -> str:
    """The configured MLflow tracking URI, or a file store at ``RUN_DIR/mlruns``."""
    return cfg.run.mlflow_tracking_uri or (Path(run_dir) / "mlruns").resolve().as_uri()


def tracker_callbacks(cfg: Config, run_dir: Path) -> list[Any]:
    """The extra Tune callbacks ``run.tracker`` asks for (none for TensorBoard, Tune's default)."""
    if cfg.run.tracker != "mlflow":
        return []
    try:
        from ray.air.integrations.mlflow import MLflowLoggerCallback
        import mlflow  # noqa: F401
    except ImportError:
        raise ConfigError("run.tracker=mlflow needs MLflow: pip install mlflow-skinny") from None
    uri = mlflow_uri(cfg, run_dir)
    if uri.startswith("file:"):
        # MLflow 3 keeps its file store behind this switch (it prefers a database server); a run
        # directory's own store needs no server, which is the point here.
        os.environ.setdefault("MLFLOW_ALLOW_FILE_STORE", "true")

    class SafeMLflowLoggerCallback(MLflowLoggerCallback):
        """MLflowLoggerCallback whose failures (a server away, a too-long param) are warnings."""

        def _safe(self, what: str, fn, *args, **kwargs) -> None:  # noqa: ANN001
            try:
                fn(*args, **kwargs)
            except Exception as e:  # noqa: BLE001
                log.warning("MLflow %s failed: %s", what, e)

        def log_trial_start(self, trial) -> None:  # noqa: ANN001
            self._safe("trial start", super().log_trial_start, trial)

        def log_trial_result(self, iteration: int, trial, result: dict) -> None:  # noqa: ANN001
            self._safe("result", super().log_trial_result, iteration, trial, result)

        def log_trial_end(self, trial, failed: bool = False) -> None:  # noqa: ANN001
            self._safe("trial end", super().log_trial_end, trial, failed)

    log.info("MLflow tracking: %s", uri)
    return [SafeMLflowLoggerCallback(
        tracking_uri=uri, experiment_name=f"trex-ray-{Path(run_dir).name}",
        tags={"trex_ray.run_dir": str(run_dir), "task": cfg.task.name, "base_model": cfg.model.name_or_path},
    )]
