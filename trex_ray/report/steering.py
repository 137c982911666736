"""The report's steering and spend parts: who changed the run while it went (and what was
refused), what each branch spent, and the tree coloured by that spend. Shared by report.html
and report.md; run text (notes, commands) is untrusted and escaped by the callers' rules."""

from __future__ import annotations

import html
import time
from typing import Any, Callable

from trex_ray.config import Config
from trex_ray.search.plan import TrialResources
from trex_ray.search.spend import Spend, accelerator_budget, branch_spend, run_spend
from trex_ray.search.tree import Tree


def history(tree: Tree) -> list[dict[str, str]]:
    """Every steering command in order: when, who, what, and what became of it."""
    rows = []
    for e in tree.steering:
        when = time.strftime("%Y-%m-%d %H:%M:%S", time.localtime(e["ts"])) if e.get("ts") else "?"
        if e["type"] == "steer_refused":
            result = f"refused: {e.get('reason', '')}"
        elif e["type"] == "steer_prune":
            result = f"applied: {len(e.get('running', []))} running, {len(e.get('planned', []))} planned cancelled"
        else:
            result = "applied"
        rows.append({"when": when, "by": str(e.get("by") or "?"), "command": str(e.get("command") or e["type"]),
                     "result": result})
    return rows


def spend_line(tree: Tree, cfg: Config | None) -> str:
    """The run's spend in one line (``cfg``: the run's config, None: the defaults)."""
    cfg = cfg or Config()
    s = run_spend(tree, TrialResources.of(cfg.resources))
    budget = accelerator_budget(tree, cfg.limits.accelerator_hours)
    of = f" of {budget:.0f}" if budget is not None else ""
    return (f"{s.accelerator_seconds:.0f}{of} accelerator-seconds, {s.train_samples} examples / {s.train_tokens} tokens "
            f"trained, LLM {s.llm_tokens} tokens (cost {s.llm_cost:.4f})")


def steering_html(tree: Tree) -> str:
    rows = history(tree)
    if not rows:
        return ("<p><i>No steering commands (python -m trex_ray steer RUN_DIR pin|prune|annotate|budget|stop|"
                "status).</i></p>")
    head = "".join(f"<th>{h}</th>" for h in ("when", "who", "command", "result"))
    body = "".join("<tr>" + "".join(f"<td>{html.escape(r[k])}</td>" for k in ("when", "by", "command", "result"))
                   + "</tr>" for r in rows)
    return f'<table id="steering"><thead><tr>{head}</tr></thead><tbody>{body}</tbody></table>'


def notes_of(tree: Tree) -> dict[str, list[dict[str, Any]]]:
    """The user's notes per node (for the node details panel)."""
    return {n.id: list(n.notes) for n in tree.nodes.values() if n.notes}


def spend_by_node(tree: Tree) -> dict[str, dict[str, Any]]:
    return {nid: s.to_dict() for nid, s in branch_spend(tree).items()}


def spend_figure(tree: Tree, pos: dict[str, tuple[float, float]]) -> dict[str, Any]:
    """The tree again, every node coloured by what its branch spent (accelerator-seconds),
    so the expensive branches stand out; the hover shows the node's own and its branch's spend."""
    import plotly.graph_objects as go

    spent: dict[str, Spend] = branch_spend(tree)
    nodes = [n for n in tree.nodes.values() if n.id in pos]
    fig = go.Figure()
    xs: list[float | None] = []
    ys: list[float | None] = []
    for n in nodes:
        if n.parent_id in pos:
            (x0, y0), (x1, y1) = pos[n.parent_id], pos[n.id]
            xs += [x0, x1, None]
            ys += [y0, y1, None]
    fig.add_trace(go.Scatter(x=xs, y=ys, mode="lines", hoverinfo="skip", showlegend=False,
                             line={"color": "#bbb", "width": 1.5}))
    fig.add_trace(go.Scatter(
        x=[pos[n.id][0] for n in nodes], y=[pos[n.id][1] for n in nodes], mode="markers+text",
        text=[n.id for n in nodes], textposition="top center", customdata=[n.id for n in nodes], showlegend=False,
        marker={"size": 20, "color": [spent[n.id].accelerator_seconds for n in nodes], "colorscale": "YlOrRd",
                "showscale": True, "line": {"width": 1, "color": "#333"},
                "symbol": ["x" if n.cut else "circle" for n in nodes],
                "colorbar": {"title": {"text": "branch accel-s"}, "thickness": 12}},
        hovertemplate="%{hovertext}<extra></extra>",
        hovertext=[f"{n.id} · {n.status}{' · pinned' if n.pinned else ''}{' · pruned by user' if n.cut else ''}"
                   f"<br>own {n.cost.accelerator_seconds:.1f} accel-s · branch {spent[n.id].accelerator_seconds:.1f}"
                   f" accel-s<br>branch LLM {spent[n.id].llm_tokens} tokens, {spent[n.id].train_samples} examples"
                   for n in nodes]))
    depth = max((n.depth for n in nodes), default=0)
    fig.update_layout(margin={"l": 10, "r": 10, "t": 10, "b": 10}, height=140 + 110 * (depth + 1),
                      plot_bgcolor="white", xaxis={"visible": False},
                      yaxis={"visible": False, "range": [-depth - 0.5, 0.6]}, hovermode="closest")
    return fig.to_plotly_json()


def steering_markdown(tree: Tree, cfg: Config | None, cell: Callable[[Any], str]) -> list[str]:
    """report.md's spend and steering sections; ``cell`` makes text safe in a table cell."""
    lines = ["", "### Spend", "", f"- {spend_line(tree, cfg)}"]
    spent = branch_spend(tree)
    root = tree.root
    if root is not None:
        top = sorted(tree.children(root), key=lambda n: -spent[n.id].accelerator_seconds)[:5]
        lines += [f"- branch `{n.id}`: {spent[n.id].accelerator_seconds:.0f} accelerator-seconds, "
                  f"{spent[n.id].llm_tokens} LLM tokens" for n in top]
    rows = history(tree)
    if rows:
        lines += ["", "### Steering", "", "| when | who | command | result |", "|---|---|---|---|"]
        lines += [f"| {r['when']} | {cell(r['by'])} | {cell(r['command'])} | {cell(r['result'])} |" for r in rows]
    return lines
