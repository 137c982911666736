"""A run's report: ``report.html`` (one self-contained interactive page) and ``report.md`` (a short
written summary for a pull request), both built from the run directory alone.

Everything needed is on disk (tree.json, events.jsonl, summary.json, config.yaml), so a report can
be (re)built for any run, finished or not, with ``python -m trex_ray.report RUN_DIR``. The page's
rendering lives in ``report_page.py``; this module gathers the data and writes the Markdown.
"""

from __future__ import annotations

import argparse
import json
import logging
import os
import sys
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import yaml

from trex_ray.ledger import LEDGER_NAME, read_events
from trex_ray.plan import Plan

log = logging.getLogger(__name__)


@dataclass
class RunData:
    """What the report shows, read from a run directory."""

    run_dir: Path
    tree: dict[str, Any]
    config: dict[str, Any] = field(default_factory=dict)  # config.yaml as saved (raw mapping)
    config_text: str = ""
    summary: dict[str, Any] = field(default_factory=dict)  # only when the run has finished
    finished: str | None = None  # the run_finished reason, None while the run goes on
    task: str = "?"
    metric: str = "score"
    higher_is_better: bool = True

    @property
    def nodes(self) -> dict[str, dict[str, Any]]:
        return {n["id"]: n for n in self.tree["nodes"]}


def load_run(run_dir: str | os.PathLike) -> RunData:
    """Read a run directory; only tree.json is required."""
    run_dir = Path(run_dir)
    tree_path = run_dir / "tree.json"
    if not tree_path.is_file():
        raise FileNotFoundError(f"{run_dir} has no tree.json (not a TREX-Ray run directory, or no node finished yet)")
    data = RunData(run_dir=run_dir, tree=json.loads(tree_path.read_text(encoding="utf-8")))
    cfg_path = run_dir / "config.yaml"
    if cfg_path.is_file():
        data.config_text = cfg_path.read_text(encoding="utf-8")
        data.config = yaml.safe_load(data.config_text) or {}
    ledger = run_dir / LEDGER_NAME
    events = list(read_events(ledger)) if ledger.is_file() else []
    if events and events[-1]["type"] == "run_finished":
        data.finished = events[-1].get("reason", "finished")
        # a summary.json from before a resume would describe an older state: only trust it at the end
        if (run_dir / "summary.json").is_file():
            data.summary = json.loads((run_dir / "summary.json").read_text(encoding="utf-8"))
    data.task = data.summary.get("task") or data.config.get("task", {}).get("name") or next(
        (e.get("task") for e in events if e["type"] == "run_started"), "?")
    try:
        from ftbench.tasks import get_task

        t = get_task(data.task)
        data.metric, data.higher_is_better = t.metric, t.higher_is_better
    except KeyError:
        log.warning("unknown task %r: assuming higher scores are better", data.task)
    return data


def ranked(run: RunData) -> list[dict[str, Any]]:
    """Nodes best first (unscored last), as the leaderboard lists them."""
    sign = -1.0 if run.higher_is_better else 1.0
    return sorted(run.tree["nodes"], key=lambda n: (n["score"] is None, sign * (n["score"] or 0.0), int(n["id"][1:])))


def lineage(run: RunData, node_id: str | None) -> list[dict[str, Any]]:
    """Nodes from the root down to ``node_id`` (empty when there is none)."""
    nodes, path = run.nodes, []
    cur = nodes.get(node_id or "")
    while cur is not None:
        path.append(cur)
        cur = nodes.get(cur["parent_id"] or "")
    return list(reversed(path))


def best_so_far(run: RunData) -> list[dict[str, Any]]:
    """One point per finished trial in the order trials ended: trial number, cumulative compute
    (wall seconds of the baseline and every trial so far), the trial's score and the best score
    found up to then (the base score until a trial beats it)."""
    nodes = sorted((n for n in run.tree["nodes"] if n["status"] in ("succeeded", "failed")),
                   key=lambda n: (n["finished_at"] or 0.0, int(n["id"][1:])))
    better = (lambda a, b: a > b) if run.higher_is_better else (lambda a, b: a < b)
    out, best, compute, k = [], None, 0.0, 0
    for n in nodes:
        compute += float((n.get("cost") or {}).get("wall_seconds") or 0.0)
        if n["score"] is not None and (best is None or better(n["score"], best)):
            best = n["score"]
        is_root = n["parent_id"] is None
        out.append({"trial": 0 if is_root else (k := k + 1), "node": n["id"], "compute_s": round(compute, 2),
                    "score": n["score"], "best": best, "status": n["status"]})
    return out


def knobs(node: dict[str, Any]) -> str:
    return Plan.model_validate(node["plan"]).knobs()


def _cell(text: Any) -> str:
    """A Markdown table cell: no pipes or line breaks from untrusted text."""
    return " ".join(str(text).replace("|", "/").split())


def _f(x: float | None) -> str:
    return "-" if x is None else f"{x:.4f}"


def render_markdown(run: RunData) -> str:
    """The PR-ready summary: task, model, scores, the best node's lineage, leaderboard, config."""
    s, cfg, tree = run.summary, run.config, run.tree
    best_id = tree.get("best")
    best = run.nodes.get(best_id or "")
    model = s.get("base_model") or cfg.get("model", {}).get("name_or_path", "?")
    lines = [f"## TREX-Ray run `{_cell(run.run_dir.name)}`", "",
             f"- **Task:** `{_cell(run.task)}` (metric: {run.metric}, {'higher' if run.higher_is_better else 'lower'} is better)",
             f"- **Base model:** `{_cell(model)}`",
             f"- **Status:** {'finished — ' + _cell(run.finished) if run.finished else 'in progress'}",
             f"- **Dev score:** base {_f(tree.get('base_score'))} → best {_f(best['score'] if best else None)}"
             + (f" (node `{best_id}`)" if best else ""), ]
    if s.get("best_test_score") is not None or s.get("base_test_score") is not None:
        lines.append(f"- **Test score** (held out, scored once, not used for selection): base "
                     f"{_f(s.get('base_test_score'))} → best {_f(s.get('best_test_score'))}")
    elif s.get("test_error"):
        lines.append(f"- **Test score:** not available ({_cell(s['test_error'])[:200]})")
    if s:
        lines.append(f"- **Trials:** {s.get('trials')} ({s.get('failed_trials')} failed), {s.get('wall_seconds')} s wall")
    if best:
        lines += ["", "### Best node lineage", "", "| node | direction | change | dev score |", "|---|---|---|---|"]
        for n in lineage(run, best_id):
            lines.append(f"| {n['id']} | {n['plan']['direction']} | {_cell(knobs(n))} | {_f(n['score'])} |")
    lines += ["", "### Leaderboard", "", f"| # | node | parent | direction | change | {run.metric} | status |",
              "|---|---|---|---|---|---|---|"]
    for i, n in enumerate(ranked(run), 1):
        lines.append(f"| {i} | {n['id']} | {n['parent_id'] or '-'} | {n['plan']['direction']} | {_cell(knobs(n))} "
                     f"| {_f(n['score'])} | {n['status']} |")
    highlights = [("search", "max_trials"), ("search", "max_concurrent_trials"), ("search", "policy"),
                  ("train", "method"), ("train", "learning_rate"), ("task", "dev_limit"), ("task", "test_limit"),
                  ("resources", "cpus_per_trial"), ("resources", "gpus_per_trial")]
    found = [(f"{a}.{b}", cfg[a][b]) for a, b in highlights if b in cfg.get(a, {})]
    if found:
        lines += ["", "### Config highlights", "", *(f"- `{k}` = `{_cell(v)}`" for k, v in found)]
    lines += ["", "Full interactive report: `report.html` in the run directory.", ""]
    return "\n".join(lines)


def write_report(run_dir: str | os.PathLike) -> Path:
    """Write ``report.html`` and ``report.md`` into ``run_dir``; returns the HTML's path."""
    from trex_ray.report_page import render_html

    run = load_run(run_dir)
    out = run.run_dir / "report.html"
    for path, text in ((out, render_html(run)), (run.run_dir / "report.md", render_markdown(run))):
        tmp = path.with_suffix(path.suffix + ".tmp")  # readers never see a half-written page
        tmp.write_text(text, encoding="utf-8")
        os.replace(tmp, path)
    return out


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(prog="python -m trex_ray.report", description="(Re)build a run's report.html and report.md.")
    ap.add_argument("run_dir")
    args = ap.parse_args(argv)
    logging.basicConfig(level=logging.INFO, format="%(message)s")
    try:
        path = write_report(args.run_dir)
    except FileNotFoundError as e:
        log.error("%s", e)
        return 2
    log.info("wrote %s and %s", path, path.with_name("report.md"))
    return 0


if __name__ == "__main__":
    sys.exit(main())
