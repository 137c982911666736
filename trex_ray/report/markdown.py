"""``report.md``: a short written summary of a run for a pull request or a chat message."""

from __future__ import annotations

from typing import Any, Sequence

from trex_ray.report.data import RunData


def cell(text: Any) -> str:
    """A Markdown table cell: no pipes or line breaks from untrusted text."""
    return " ".join(str(text).replace("|", "/").split())


def fmt(x: float | None) -> str:
    return "-" if x is None else f"{x:.4f}"


HIGHLIGHTS = (("search", "max_trials"), ("search", "max_concurrent_trials"), ("search", "policy"),
              ("train", "method"), ("train", "learning_rate"), ("task", "dev_limit"), ("task", "test_limit"),
              ("resources", "cpus_per_trial"), ("resources", "gpus_per_trial"))


def render_markdown(run: RunData, sections: Sequence[str] = ()) -> str:
    """The PR-ready summary: task, model, scores, the best node's lineage, leaderboard, config;
    ``sections``: further lines after the leaderboard (spend and steering, report/steering.py)."""
    s, tree, best = run.summary, run.tree, run.best
    lines = [f"## TREX-Ray run `{cell(run.run_dir.name)}`", "",
             f"- **Task:** `{cell(run.task)}` (metric: {run.metric}, {'higher' if run.higher_is_better else 'lower'} is better)",
             f"- **Base model:** `{cell(run.base_model)}`",
             f"- **Status:** {'finished — ' + cell(run.finished) if run.finished else 'in progress'}",
             f"- **Dev score:** base {fmt(tree.base_score)} → best {fmt(best.score if best else None)}"
             + (f" (node `{best.id}`)" if best else ""), ]
    if s.get("best_test_score") is not None or s.get("base_test_score") is not None:
        lines.append(f"- **Test score** (held out, scored once, not used for selection): base "
                     f"{fmt(s.get('base_test_score'))} → best {fmt(s.get('best_test_score'))}")
    elif s.get("test_error"):
        lines.append(f"- **Test score:** not available ({cell(s['test_error'])[:200]})")
    if s:
        lines.append(f"- **Trials:** {s.get('trials')} ({s.get('failed_trials')} failed), {s.get('wall_seconds')} s wall")
    if best:
        lines += ["", "### Best node lineage", "", "| node | direction | change | dev score |", "|---|---|---|---|"]
        for n in tree.lineage(best.id):
            lines.append(f"| {n.id} | {n.plan.direction} | {cell(n.plan.knobs())} | {fmt(n.score)} |")
    lines += ["", "### Leaderboard", "", f"| # | node | parent | direction | change | {run.metric} | status |",
              "|---|---|---|---|---|---|---|"]
    for i, n in enumerate(tree.ranked(), 1):
        lines.append(f"| {i} | {n.id} | {n.parent_id or '-'} | {n.plan.direction} | {cell(n.plan.knobs())} "
                     f"| {fmt(n.score)} | {n.status} |")
    lines += list(sections)
    if run.config is not None:
        found = [(f"{a}.{b}", getattr(getattr(run.config, a), b)) for a, b in HIGHLIGHTS]
        lines += ["", "### Config highlights", "", *(f"- `{k}` = `{cell(v)}`" for k, v in found)]
    lines += ["", "Full interactive report: `report.html` in the run directory.", ""]
    return "\n".join(lines)
