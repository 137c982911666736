"""The interactive report page: one HTML file with plotly.js inlined, so it opens offline.

Plans and dataset text are untrusted (an LLM or a user wrote them), so nothing from a run is
ever put into the page as markup: tables go through ``html.escape`` and the node data travels as
JSON in a ``<script type="application/json">`` block with ``<``, ``>`` and ``&`` escaped, and
the page's script shows it with ``textContent`` only.
"""

from __future__ import annotations

import html
import json
import os
import re
from pathlib import Path
from typing import Any

from trex_ray.report.data import RunData, best_so_far, load_run
from trex_ray.report.markdown import cell, render_markdown
from trex_ray.report.steering import notes_of, spend_by_node, spend_figure, spend_line, steering_html, steering_markdown
from trex_ray.search.tree import Node, Tree

LIVE_REFRESH_S = 15  # seconds between reloads of the page while the run goes
STATUS_STYLE = {  # marker symbol and colour of nodes without a score to colour them by
    "failed": ("x", "#d62728"),
    "pruned": ("circle-open", "#9e9e9e"),
    "planned": ("circle-open", "#ff9800"),
    "running": ("circle-open", "#ff9800"),
}


def safe_json(obj: Any) -> str:
    """JSON that cannot end a script block or open a comment, whatever strings it holds
    (NaN and infinities become null, which JSON.parse accepts)."""
    from plotly.utils import PlotlyJSONEncoder

    text = json.dumps(obj, cls=PlotlyJSONEncoder)
    return text.replace("&", "\\u0026").replace("<", "\\u003c").replace(">", "\\u003e")


def layout(tree: Tree) -> dict[str, tuple[float, float]]:
    """(x, y) per node: leaves spread left to right in depth-first order, each parent centred
    over its children, one row per depth (root at the top)."""
    pos: dict[str, tuple[float, float]] = {}
    next_leaf = [0.0]

    def place(node_id: str) -> float:
        n = tree.nodes[node_id]
        kids = [k for k in n.children if k in tree.nodes]
        x = sum(place(k) for k in kids) / len(kids) if kids else next_leaf[0]
        if not kids:
            next_leaf[0] += 1.0
        pos[node_id] = (x, -float(n.depth))
        return x

    for n in tree.nodes.values():
        if n.parent_id is None or n.parent_id not in tree.nodes:
            place(n.id)
    return pos


def tree_figure(run: RunData) -> dict[str, Any]:
    """The tree as a plotly figure: edges labelled with the child's direction, scored nodes
    coloured by score, failed/pruned/pending nodes with their own symbols, the best ringed."""
    import plotly.graph_objects as go

    tree, pos = run.tree, layout(run.tree)
    nodes = list(tree.nodes.values())
    best_id = run.best.id if run.best else None
    fig = go.Figure()
    for dashed in (False, True):
        xs: list[float | None] = []
        ys: list[float | None] = []
        for n in nodes:
            if n.parent_id in pos and (n.status in ("pruned", "planned")) == dashed:
                (x0, y0), (x1, y1) = pos[n.parent_id], pos[n.id]
                xs += [x0, x1, None]
                ys += [y0, y1, None]
        fig.add_trace(go.Scatter(x=xs, y=ys, mode="lines", hoverinfo="skip", showlegend=False,
                                 line={"color": "#bbb", "width": 1.5, "dash": "dot" if dashed else "solid"}))
    for n in nodes:
        if n.parent_id in pos:
            (x0, y0), (x1, y1) = pos[n.parent_id], pos[n.id]
            fig.add_annotation(x=(x0 + x1) / 2, y=(y0 + y1) / 2, text=html.escape(n.plan.direction),
                               showarrow=False, font={"size": 10, "color": "#555"}, bgcolor="rgba(255,255,255,0.8)")
    scored = [n for n in nodes if n.status == "succeeded" and n.score is not None]
    groups: list[tuple[str, list[Node], dict[str, Any]]] = [
        ("scored", scored, {"size": 22, "color": [n.score for n in scored], "colorscale": "Viridis",
                            "showscale": True, "colorbar": {"title": {"text": run.metric}, "thickness": 12},
                            "line": {"width": [4 if n.id == best_id else 1 for n in scored],
                                     "color": ["#e377c2" if n.id == best_id else "#333" for n in scored]}}),
    ]
    for status, (symbol, colour) in STATUS_STYLE.items():
        members = [n for n in nodes if n.status == status]
        groups.append((status, members, {"size": 20, "symbol": symbol, "color": colour, "line": {"width": 2, "color": colour}}))
    for name, members, marker in groups:
        if not members:
            continue
        fig.add_trace(go.Scatter(
            x=[pos[n.id][0] for n in members], y=[pos[n.id][1] for n in members], mode="markers+text",
            name=name, marker=marker, text=[n.id for n in members], textposition="top center",
            customdata=[n.id for n in members], hovertemplate="%{hovertext}<extra></extra>",
            hovertext=[f"{n.id} · {html.escape(n.plan.direction)} · {n.status}"
                       + (f" · {run.metric} {n.score:.4f}" if n.score is not None else "")
                       + (f" [{n.interval['low']:.4f}, {n.interval['high']:.4f}]" if n.interval else "")
                       + (f" · trained {n.fidelity:.0%}" if n.score is not None and n.plan.training else "")
                       for n in members],
        ))
    depth = max((n.depth for n in nodes), default=0)
    fig.update_layout(
        margin={"l": 10, "r": 10, "t": 10, "b": 10}, height=140 + 110 * (depth + 1), plot_bgcolor="white",
        xaxis={"visible": False}, yaxis={"visible": False, "range": [-depth - 0.5, 0.6]}, hovermode="closest",
        legend={"orientation": "h", "y": -0.02}, clickmode="event",
    )
    return fig.to_plotly_json()


def progress_figure(run: RunData, x_key: str, x_title: str) -> dict[str, Any]:
    """Best score so far (step line) and each trial's score against ``x_key`` of ``best_so_far``."""
    import plotly.graph_objects as go

    pts = best_so_far(run)
    fig = go.Figure()
    fig.add_trace(go.Scatter(x=[p[x_key] for p in pts], y=[p["best"] for p in pts], mode="lines+markers",
                             line={"shape": "hv", "color": "#1f77b4"}, name="best so far",
                             text=[p["node"] for p in pts], hovertemplate="%{text}: best %{y:.4f}<extra></extra>"))
    fig.add_trace(go.Scatter(x=[p[x_key] for p in pts], y=[p["score"] for p in pts], mode="markers",
                             marker={"color": "#aaa", "size": 7}, name="trial score", text=[p["node"] for p in pts],
                             hovertemplate="%{text}: %{y:.4f}<extra></extra>", error_y=_error_bars(pts)))
    if run.tree.base_score is not None:
        fig.add_hline(y=run.tree.base_score, line_dash="dash", line_color="#888", annotation_text="base")
    if x_key == "trial":
        fig.update_xaxes(dtick=1)
    fig.update_layout(margin={"l": 50, "r": 10, "t": 10, "b": 40}, height=300, xaxis_title=x_title,
                      yaxis_title=run.metric, legend={"orientation": "h", "y": 1.12}, plot_bgcolor="#fafafa")
    return fig.to_plotly_json()


def _error_bars(pts: list[dict[str, Any]]) -> dict[str, Any]:
    """Plotly's asymmetric error bars from each point's interval (0 where there is none)."""
    return {"type": "data", "symmetric": False, "color": "#bbb", "thickness": 1,
            "array": [(p["high"] - p["score"]) if p.get("high") is not None else 0 for p in pts],
            "arrayminus": [(p["score"] - p["low"]) if p.get("low") is not None else 0 for p in pts]}


def scores_figure(run: RunData) -> dict[str, Any]:
    """Every scored node's dev score with its bootstrap interval, in the tree's ranking; full
    runs and proxies apart (a proxy's score is a cheap guess about its full run)."""
    import plotly.graph_objects as go

    nodes = [n for n in run.tree.ranked() if n.score is not None]
    fig = go.Figure()
    for name, members in (("full run", [n for n in nodes if n.fidelity >= 1.0]),
                          ("proxy", [n for n in nodes if n.fidelity < 1.0])):
        if members:
            pts = [{"score": n.score, "low": (n.interval or {}).get("low"), "high": (n.interval or {}).get("high")}
                   for n in members]
            fig.add_trace(go.Scatter(x=[n.id for n in members], y=[n.score for n in members], mode="markers", name=name,
                                     error_y=_error_bars(pts), marker={"size": 8, "symbol": "circle" if name == "full run" else "diamond-open"},
                                     hovertemplate="%{x}: %{y:.4f}<extra></extra>"))
    if run.tree.base_score is not None:
        fig.add_hline(y=run.tree.base_score, line_dash="dash", line_color="#888", annotation_text="base")
    fig.update_layout(margin={"l": 50, "r": 10, "t": 10, "b": 40}, height=300, yaxis_title=run.metric,
                      xaxis={"type": "category"}, legend={"orientation": "h", "y": 1.12}, plot_bgcolor="#fafafa")
    return fig.to_plotly_json()


def _leaderboard_html(run: RunData) -> str:
    base = run.tree.base_score
    rows = []
    for i, n in enumerate(run.tree.ranked(), 1):
        delta = f"{n.score - base:+.4f}" if n.score is not None and base is not None and n.parent_id else ""
        cells = [str(i), n.id, n.parent_id or "-", n.plan.direction, n.plan.knobs(),
                 f"{n.score:.4f}" if n.score is not None else "-", delta, n.status, f"{n.cost.wall_seconds:.1f}"]
        tds = "".join(f"<td>{html.escape(c)}</td>" for c in cells)
        rows.append(f'<tr class="{html.escape(n.status)}" data-node="{html.escape(n.id)}">{tds}</tr>')
    head = "".join(f"<th>{h}</th>" for h in ("#", "node", "parent", "direction", "change", html.escape(run.metric),
                                              "Δ base", "status", "wall s"))
    return f'<table id="leaderboard"><thead><tr>{head}</tr></thead><tbody>{"".join(rows)}</tbody></table>'


def _summary_html(run: RunData) -> str:
    s, best = run.summary, run.best

    def f(x: Any) -> str:
        return "-" if x is None else f"{x:.4f}"

    def fi(x: Any, iv: dict[str, Any] | None) -> str:
        return f(x) + (f" [{iv['low']:.4f}, {iv['high']:.4f}]" if iv and x is not None else "")

    root = run.tree.root
    items = [("task", run.task), ("base model", run.base_model), ("metric", run.metric),
             ("status", f"finished: {run.finished}" if run.finished else "in progress"),
             ("dev score", f"base {fi(run.tree.base_score, root.interval if root else None)} → best "
              f"{fi(best.score if best else None, best.interval if best else None)}" + (f" ({best.id})" if best else ""))]
    if run.tree.selection:
        items.append(("selection", run.tree.selection.get("reason", "")))
    if s:
        gain = s.get("test_gain")
        items += [("test score", f"base {fi(s.get('base_test_score'), s.get('base_test_interval'))} → best "
                   f"{fi(s.get('best_test_score'), s.get('best_test_interval'))}"
                   + (f", gain {gain['value']:+.4f} [{gain['low']:+.4f}, {gain['high']:+.4f}]" if gain else "")
                   + (f" — {s['test_error'][:200]}" if s.get("test_error") else "")),
                  ("trials", f"{s.get('trials')} ({s.get('failed_trials')} failed), {s.get('wall_seconds')} s")]
    return "".join(f"<div><b>{html.escape(k)}</b> {html.escape(str(v))}</div>" for k, v in items)


def _insights_html(run: RunData) -> str:
    """The Researcher's latest distilled insights (LLM text: escaped, never markup)."""
    items = run.tree.insights
    if not items:
        return "<p><i>None distilled (the builtin policy, or too few trials yet).</i></p>"
    rows = "".join(f"<li><b>{html.escape(str(i.get('kind', '')))}</b> {html.escape(str(i.get('text', '')))}"
                   f" <small>({html.escape(', '.join(map(str, i.get('nodes', []))))})</small></li>" for i in items)
    return f"<p>after {int(run.tree.insights_after)} trials:</p><ul id=\"insights\">{rows}</ul>"


def render_html(run: RunData) -> str:
    """The whole page as one string."""
    from plotly.offline import get_plotlyjs

    data = {"nodes": [n.to_dict() for n in run.tree.nodes.values()], "metric": run.metric,
            "base": run.tree.base_score, "best": run.best.id if run.best else None,
            "spend": spend_by_node(run.tree), "notes": notes_of(run.tree),
            "figures": {"tree": tree_figure(run), "by_trial": progress_figure(run, "trial", "trial number"),
                        "by_compute": progress_figure(run, "compute_s", "cumulative compute (wall seconds)"),
                        "scores": scores_figure(run),
                        "tree_spend": spend_figure(run.tree, layout(run.tree))}}
    # while the run goes the page reloads itself (it is rewritten as trials end); finished, it stays
    refresh = "" if run.finished else f'<meta http-equiv="refresh" content="{LIVE_REFRESH_S}">'
    parts = {"TITLE": html.escape(f"TREX-Ray report — {run.run_dir.name}"), "SUMMARY": _summary_html(run),
             "LEADERBOARD": _leaderboard_html(run), "INSIGHTS": _insights_html(run), "CONFIG": html.escape(run.config_text or "(no config.yaml)"),
             "DATA": safe_json(data), "PLOTLYJS": get_plotlyjs(), "REFRESH": refresh, "STEERING": steering_html(run.tree),
             "SPEND": html.escape(spend_line(run.tree, run.config))}
    # one pass, so a placeholder-like string inside run text is never substituted itself
    return re.sub(r"%(TITLE|SUMMARY|LEADERBOARD|INSIGHTS|CONFIG|DATA|PLOTLYJS|REFRESH|STEERING|SPEND)%",
                  lambda m: parts[m.group(1)], PAGE)


def refresh_live(storage: str | None, run_dir: Path, tree: Tree) -> None:
    """What the driver has the TreeState do after each rewrite of tree.json: rebuild the report
    from the live tree, and mirror the run's small files to remote storage (if any)."""
    write_report(run_dir, tree)
    if storage:
        from trex_ray.storage import RunStorage

        RunStorage(storage).mirror_run_files(run_dir)


def write_report(run_dir: str | os.PathLike, tree: Tree | None = None) -> Path:
    """Write ``report.html`` and ``report.md`` into ``run_dir``; returns the HTML's path.
    ``tree``: the live tree, when the caller holds it (else the ledger is replayed)."""
    run = load_run(run_dir, tree)
    out = run.run_dir / "report.html"
    md = render_markdown(run, steering_markdown(run.tree, run.config, cell))
    for path, text in ((out, render_html(run)), (run.run_dir / "report.md", md)):
        tmp = path.with_suffix(path.suffix + ".tmp")  # readers never see a half-written page
        tmp.write_text(text, encoding="utf-8")
        os.replace(tmp, path)
    return out


PAGE = """<!DOCTYPE html>
<html lang="en"><head><meta charset="utf-8">%REFRESH%<title>%TITLE%</title>
<style>
body{font-family:system-ui,sans-serif;margin:16px;color:#222;background:#fff}
h1{font-size:20px;margin:0 0 8px} h2{font-size:16px;margin:18px 0 6px}
#summary{display:flex;flex-wrap:wrap;gap:6px 20px;font-size:14px}
#main{display:flex;gap:16px;align-items:flex-start} #tree{flex:3;min-width:0;border:1px solid #ddd}
#details{flex:2;border:1px solid #ddd;padding:8px;font-size:13px;max-height:80vh;overflow:auto}
#details pre,#config{white-space:pre-wrap;background:#f6f6f6;padding:6px;font-size:12px}
table{border-collapse:collapse;font-size:13px} td,th{border:1px solid #ddd;padding:3px 6px;text-align:left}
#leaderboard tbody tr{cursor:pointer} #leaderboard tr:hover{background:#eef}
tr.failed{color:#d62728} tr.pruned,tr.planned{color:#999} tr.selected{background:#ffe9a8}
.charts{display:flex;gap:16px} .charts>div{flex:1;min-width:0}
</style>
<script>%PLOTLYJS%</script>
</head><body>
<h1>%TITLE%</h1>
<div id="summary">%SUMMARY%</div>
<h2>Experiment tree <small>(click a node)</small></h2>
<div id="main"><div id="tree"></div><div id="details"><i>Click a node in the tree or a leaderboard row.</i></div></div>
<h2>Leaderboard</h2>
%LEADERBOARD%
<h2>Distilled insights</h2>
%INSIGHTS%
<h2>Spend per branch</h2>
<p id="spend">%SPEND%</p>
<div id="tree_spend"></div>
<h2>Steering history</h2>
%STEERING%
<h2>Best score so far</h2>
<div class="charts"><div id="by_trial"></div><div id="by_compute"></div></div>
<h2>Scores with their intervals</h2>
<div id="scores"></div>
<h2>Configuration</h2>
<pre id="config">%CONFIG%</pre>
<script type="application/json" id="run-data">%DATA%</script>
<script>
"use strict";
const RUN = JSON.parse(document.getElementById("run-data").textContent);
const NODES = Object.fromEntries(RUN.nodes.map(n => [n.id, n]));
const CONF = {displaylogo: false, responsive: true};
for (const id of ["tree", "by_trial", "by_compute", "scores", "tree_spend"]) {
  const f = RUN.figures[id];
  Plotly.newPlot(id, f.data, f.layout, CONF);
}
function el(tag, text, cls) {
  const e = document.createElement(tag);
  if (text !== undefined && text !== null) e.textContent = String(text);
  if (cls) e.className = cls;
  return e;
}
function kv(rows) {
  const t = el("table");
  for (const [k, v] of rows) {
    const tr = el("tr"); tr.appendChild(el("th", k)); tr.appendChild(el("td", v)); t.appendChild(tr);
  }
  return t;
}
function fmt(x) { return (x === null || x === undefined) ? "-" : (typeof x === "number" ? +x.toFixed(4) : x); }
function show(id) {
  const n = NODES[id]; if (!n) return;
  const d = document.getElementById("details"); d.replaceChildren();
  d.dataset.node = id;
  d.appendChild(el("h3", `${n.id} — ${n.plan.direction} (${n.status})`));
  const delta = (n.score !== null && RUN.base !== null && n.parent_id) ? (n.score - RUN.base).toFixed(4) : "-";
  d.appendChild(kv([["parent", n.parent_id || "-"], ["score (" + RUN.metric + ")", fmt(n.score)], ["vs base", delta],
    ["interval", n.interval ? `[${fmt(n.interval.low)}, ${fmt(n.interval.high)}] (${n.interval.n} rows)` : "-"],
    ["vs parent (paired)", n.paired && n.paired.parent ? `${fmt(n.paired.parent.value)} [${fmt(n.paired.parent.low)}, ${fmt(n.paired.parent.high)}]` : "-"],
    ["trained", n.plan.training ? `${Math.round(100 * n.fidelity)} % of its full run (rung ${n.rung})` : "-"],
    ["re-scored", n.rescored ? `${fmt(n.rescored.value)} [${fmt(n.rescored.low)}, ${fmt(n.rescored.high)}] (${n.rescored.n} rows)` : "-"],
    ["reward", fmt(n.reward)], ["proposed by", n.source], ["visits", n.visits]]));
  if (n.failure) { d.appendChild(el("h4", n.status === "pruned" ? "Pruned" : "Failure")); d.appendChild(el("pre", n.failure)); }
  if (n.diagnosis) { d.appendChild(el("h4", "Diagnosis")); d.appendChild(el("pre", n.diagnosis)); }
  for (const note of (RUN.notes[id] || [])) { d.appendChild(el("h4", "Note from " + (note.by || "the user"))); d.appendChild(el("pre", note.text)); }
  if ((n.clipped || []).length) { d.appendChild(el("h4", "Clipped to the run's limits")); d.appendChild(el("pre", n.clipped.join("\\n"))); }
  if (RUN.spend[id]) { d.appendChild(el("h4", "Branch spend")); d.appendChild(kv(Object.entries(RUN.spend[id]))); }
  d.appendChild(el("h4", "Rationale")); d.appendChild(el("div", n.plan.rationale || "-"));
  const curve = (n.recipe_stats || {}).loss_curve || [];
  d.appendChild(el("h4", "Training loss"));
  if (curve.length) {
    const div = el("div"); div.id = "loss"; d.appendChild(div);
    Plotly.newPlot(div, [{x: curve.map(p => p.step), y: curve.map(p => p.loss), mode: "lines+markers", name: "loss"}],
      {height: 220, margin: {l: 45, r: 10, t: 10, b: 35}, xaxis: {title: {text: "step"}}, yaxis: {title: {text: "loss"}}}, CONF);
  } else d.appendChild(el("div", n.plan.training ? "no loss logged" : "no training (evaluation only)"));
  d.appendChild(el("h4", "Metrics"));
  d.appendChild(kv(Object.entries(n.metrics || {}).map(([k, v]) => [k, fmt(v)])));
  d.appendChild(el("h4", "Cost"));
  d.appendChild(kv(Object.entries(n.cost || {}).map(([k, v]) => [k, v])));
  const stats = Object.assign({}, n.recipe_stats || {}); delete stats.loss_curve;
  d.appendChild(el("h4", "Recipe statistics")); d.appendChild(el("pre", JSON.stringify(stats, null, 1)));
  d.appendChild(el("h4", "Plan")); d.appendChild(el("pre", JSON.stringify(n.plan, null, 1)));
  d.appendChild(el("h4", "Artifacts")); d.appendChild(kv(Object.entries(n.artifacts || {})));
  for (const tr of document.querySelectorAll("#leaderboard tbody tr"))
    tr.classList.toggle("selected", tr.dataset.node === id);
}
for (const id of ["tree", "tree_spend"])
  document.getElementById(id).on("plotly_click", ev => { if (ev.points.length) show(ev.points[0].customdata); });
for (const tr of document.querySelectorAll("#leaderboard tbody tr")) tr.addEventListener("click", () => show(tr.dataset.node));
</script>
</body></html>
"""
