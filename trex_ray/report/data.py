"""What a run's report shows, read from the run directory alone: ``RunData``.

Everything needed is on disk (the ledger, config.yaml, summary.json), so a report can be
(re)built for any run, finished or not, with ``python -m trex_ray.report RUN_DIR``. The tree is
rebuilt from the ledger (or handed over by the TreeState while the run goes on), so the report
ranks, traces lineage and picks the best node with the tree's own rules, not copies of them.
"""

from __future__ import annotations

import json
import logging
import os
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from trex_ray.config import Config, ConfigError, load_config
from trex_ray.search.ledger import LEDGER_NAME, read_events
from trex_ray.search.tree import Node, SearchParams, Tree, node_number

log = logging.getLogger(__name__)


@dataclass
class RunData:
    """A run as the report sees it."""

    run_dir: Path
    tree: Tree
    config: Config | None = None  # None: config.yaml missing or unreadable
    config_text: str = ""
    summary: dict[str, Any] = field(default_factory=dict)  # summary.json, only once the run has finished
    finished: str | None = None  # the run_finished reason, None while the run goes on
    task: str = "?"
    metric: str = "score"
    higher_is_better: bool = True

    @property
    def confidence(self) -> float:
        return self.config.search.confidence if self.config else 0.95

    @property
    def best(self) -> Node | None:
        return self.tree.best()

    @property
    def base_model(self) -> str:
        return self.summary.get("base_model") or (self.config.model.name_or_path if self.config else "?")


def _task_info(started: dict[str, Any], cfg: Config | None) -> tuple[str, str, bool, tuple[float, float]]:
    """(task id, metric, higher is better, metric range) from the ledger's run_started event;
    ledgers written before it carried them fall back to the FT-Bench registry."""
    task = started.get("task") or (cfg.task.name if cfg else "?")
    if "metric" in started:
        lo, hi = started.get("metric_range") or (0.0, 1.0)
        return task, started["metric"], bool(started.get("higher_is_better", True)), (float(lo), float(hi))
    try:
        from ftbench.tasks import get_task

        t = get_task(task)
        return task, t.metric, t.higher_is_better, t.metric_range
    except KeyError:
        log.warning("unknown task %r: assuming higher scores are better", task)
        return task, "score", True, (0.0, 1.0)


def load_run(run_dir: str | os.PathLike, tree: Tree | None = None) -> RunData:
    """Read a run directory (its ledger is required); ``tree``: the live tree, when the caller
    holds it (the TreeState), instead of replaying the ledger."""
    run_dir = Path(run_dir)
    ledger = run_dir / LEDGER_NAME
    if not ledger.is_file():
        raise FileNotFoundError(f"{run_dir} has no {LEDGER_NAME} (not a TREX-Ray run directory)")
    events = list(read_events(ledger))
    cfg, text = None, ""
    cfg_path = run_dir / "config.yaml"
    if cfg_path.is_file():
        text = cfg_path.read_text(encoding="utf-8")
        try:
            cfg = load_config(cfg_path)
        except ConfigError as e:
            log.warning("config.yaml: %s", e)
    started = next((e for e in events if e["type"] == "run_started"), {})
    task, metric, higher, span = _task_info(started, cfg)
    if tree is None:
        tree = Tree.replay(events, SearchParams.of(cfg.search if cfg else Config().search, higher, span))
    data = RunData(run_dir=run_dir, tree=tree, config=cfg, config_text=text, task=task, metric=metric,
                   higher_is_better=higher)
    if events and events[-1]["type"] == "run_finished":
        data.finished = events[-1].get("reason", "finished")
        # a summary.json from before a resume would describe an older state: only trust it at the end
        if (run_dir / "summary.json").is_file():
            data.summary = json.loads((run_dir / "summary.json").read_text(encoding="utf-8"))
    return data


def best_so_far(run: RunData) -> list[dict[str, Any]]:
    """One point per finished trial in the order trials ended: trial number, cumulative compute
    (wall seconds of the baseline and every trial so far), the trial's score and the best score
    found up to then (the base score until a trial beats it)."""
    nodes = sorted(run.tree.by_status("succeeded", "failed"), key=lambda n: (n.finished_at or 0.0, node_number(n.id)))
    better = (lambda a, b: a > b) if run.higher_is_better else (lambda a, b: a < b)
    out, best, compute, k = [], None, 0.0, 0
    for n in nodes:
        compute += float(n.cost.wall_seconds or 0.0)
        # the best so far is a full run's (a proxy's score is a guess about one)
        if n.score is not None and n.fidelity >= 1.0 and (best is None or better(n.score, best)):
            best = n.score
        is_root = n.parent_id is None
        out.append({"trial": 0 if is_root else (k := k + 1), "node": n.id, "compute_s": round(compute, 2),
                    "score": n.score, "best": best, "status": n.status,
                    "low": n.interval["low"] if n.interval else None, "high": n.interval["high"] if n.interval else None})
    return out
