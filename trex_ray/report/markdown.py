"""``report.md``: a short written summary of a run for a pull request or a chat message."""

from __future__ import annotations

from typing import Any, Sequence

from trex_ray.report.data import RunData


def cell(text: Any) -> str:
    """A Markdown table cell: no pipes or line breaks from untrusted text."""
    return " ".join(str(text).replace("|", "/").split())


def fmt(x: float | None) -> str:
    return "-" if x is None else f"{x:.4f}"


def fmt_iv(x: float | None, iv: dict[str, Any] | None) -> str:
    """A score with its interval: ``0.8500 [0.8000, 0.8950]``."""
    return fmt(x) + (f" [{iv['low']:.4f}, {iv['high']:.4f}]" if iv and x is not None else "")


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
             f"- **Dev score** ({int(run.confidence * 100)} % bootstrap intervals): base "
             f"{fmt_iv(tree.base_score, tree.root.interval if tree.root else None)} → best "
             f"{fmt_iv(best.score if best else None, best.interval if best else None)}"
             + (f" (node `{best.id}`)" if best else ""), ]
    if tree.selection:
        lines.append(f"- **Chosen by the final selection:** {cell(tree.selection.get('reason', ''))}")
    if s.get("best_test_score") is not None or s.get("base_test_score") is not None:
        gain = s.get("test_gain")
        lines.append(f"- **Test score** (held out, scored once, not used for selection): base "
                     f"{fmt_iv(s.get('base_test_score'), s.get('base_test_interval'))} → best "
                     f"{fmt_iv(s.get('best_test_score'), s.get('best_test_interval'))}"
                     + (f"; gain {gain['value']:+.4f} [{gain['low']:+.4f}, {gain['high']:+.4f}] on the same rows, "
                        + ("larger than the interval" if gain["low"] > 0 else "within the interval") if gain else ""))
    elif s.get("test_error"):
        lines.append(f"- **Test score:** not available ({cell(s['test_error'])[:200]})")
    if s:
        lines.append(f"- **Trials:** {s.get('trials')} ({s.get('failed_trials')} failed), {s.get('wall_seconds')} s wall")
    if best:
        lines += ["", "### Best node lineage", "", "| node | direction | change | dev score |", "|---|---|---|---|"]
        for n in tree.lineage(best.id):
            lines.append(f"| {n.id} | {n.plan.direction} | {cell(n.plan.knobs())} | {fmt(n.score)} |")
    lines += ["", "### Leaderboard", "", f"| # | node | parent | direction | change | {run.metric} [interval] | trained | status |",
              "|---|---|---|---|---|---|---|---|"]
    for i, n in enumerate(tree.ranked(), 1):
        trained = f"{n.fidelity:.0%}" if n.plan.training is not None and n.score is not None else "-"
        lines.append(f"| {i} | {n.id} | {n.parent_id or '-'} | {n.plan.direction} | {cell(n.plan.knobs())} "
                     f"| {fmt_iv(n.score, n.interval)} | {trained} | {n.status} |")
    compute = s.get("compute")
    if compute:
        per = ", ".join(f"rung {k}: {v['runs']} runs, {v['example_epochs']} example-epochs, {v['accelerator_seconds']} accelerator-s"
                        for k, v in sorted(compute.get("per_rung", {}).items()))
        lines += ["", f"**Compute:** {compute['example_epochs']} example-epochs, {compute['accelerator_seconds']} "
                      f"accelerator-seconds ({per or 'no trials'})"
                  + (f"; budget {compute['budget']:g} {compute['budget_unit'].replace('_', '-')}" if compute.get("budget") else "")]
    lines += list(sections)
    if run.config is not None:
        found = [(f"{a}.{b}", getattr(getattr(run.config, a), b)) for a, b in HIGHLIGHTS]
        lines += ["", "### Config highlights", "", *(f"- `{k}` = `{cell(v)}`" for k, v in found)]
    lines += ["", "Full interactive report: `report.html` in the run directory.", ""]
    return "\n".join(lines)
