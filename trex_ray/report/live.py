"""What the user sees while a run goes and when it ends: one plain line per event (it must read
well in ``ray job logs``, so no cursor tricks) and a final leaderboard."""

from __future__ import annotations

import logging
import time
from typing import Any

from trex_ray.search.plan import Plan
from trex_ray.search.tree import Tree
from trex_ray.guard.redact import terminal_safe

log = logging.getLogger("trex_ray.live")


class LiveView:
    def __init__(self, metric: str, max_trials: int, higher_is_better: bool = True,
                 budget: float | None = None, budget_unit: str = "example_epochs") -> None:
        self.metric, self.max_trials, self.sign = metric, max_trials, 1.0 if higher_is_better else -1.0
        self.budget, self.unit = budget, budget_unit
        self.t0 = time.time()
        self.base: float | None = None
        self.best: tuple[float, str, str] | None = None  # score, node, its interval as text (full runs only)
        self.spent: dict[int, float] = {}  # compute per rung, in the budget's unit
        self.finished = self.failed = 0
        self.running: set[str] = set()
        self._last_step: dict[str, int] = {}

    def event(self, kind: str, info: dict[str, Any]) -> None:
        node = info.get("node_id", "?")
        if kind == "started":
            plan = Plan.model_validate(info["plan"])
            self.running.add(node)
            log.info("start   %-4s parent=%-4s r%d %-15s %s", node, info.get("parent_id") or "-", info.get("rung", 0),
                     plan.direction, plan.knobs())
        elif kind == "progress":
            self._progress(node, info)
        elif kind == "expanding":
            log.info("expand  %-4s (the Researcher is proposing children)", node)
        elif kind == "expanded":
            note = f": {_one_line(info['note'])[:200]}" if info.get("note") else ""
            log.info("planned %s under %s (%s%s)", ", ".join(info["children"]) or "nothing", node, info["source"], note)
        elif kind == "finished":
            self._finished(node, info)
        elif kind == "steered":
            verdict = "applied" if info["accepted"] else "REFUSED"
            log.info("steer   %s by %s: %s: %s", info["command"], info["by"], verdict, info["message"])

    def _progress(self, node: str, r: dict[str, Any]) -> None:
        phase = r.get("phase")
        if phase == "train" and "loss" in r:
            step = int(r.get("step", 0))
            if self._last_step.get(node) != step:
                self._last_step[node] = step
                log.info("train   %-4s step %d/%s loss %.4f", node, step, r.get("max_steps", "?"), r["loss"])
        elif phase == "eval":
            log.info("eval    %-4s %s/%s dev examples", node, r.get("evaluated"), r.get("total"))
        elif phase == "data":
            log.info("data    %-4s building the recipe", node)

    def _finished(self, node: str, r: dict[str, Any]) -> None:
        self.running.discard(node)
        if r.get("phase") == "done":
            score, iv = float(r["score"]), interval_text(r.get("interval"))
            if node == "n0":
                self.base = score
                log.info("done    %-4s base model %s=%.4f%s (%.0fs)", node, self.metric, score, iv, r["cost"]["wall_seconds"])
                return
            self.finished += 1
            cost = r.get("cost") or {}
            rung = int(r.get("rung", 0))
            unit = "examples" if self.unit == "example_epochs" else "accelerator_seconds"
            self.spent[rung] = self.spent.get(rung, 0.0) + float(cost.get(unit, 0.0))
            full = float(r.get("fidelity", 1.0)) >= 1.0
            if full and (self.best is None or self.sign * (score - self.best[0]) > 0):
                self.best = (score, node, iv)
            delta = f" ({score - self.base:+.4f} vs base)" if self.base is not None else ""
            vs = (r.get("paired") or {}).get("parent")
            vs_text = f", {vs['value']:+.4f}{interval_text(vs)} vs {vs['node']}" if vs else ""
            log.info("done    %-4s %s=%.4f%s%s%s r%d%s in %.0fs", node, self.metric, score, iv, delta, vs_text, rung,
                     "" if full else " (proxy)", cost.get("wall_seconds", 0))
        elif r.get("phase") == "stopped":
            log.info("STOPPED %-4s %s", node, " ".join(str(r.get("error", "")).split())[:300])
        else:
            self.failed += 1
            # one line per event: a multi-line error (a traceback's tail) is folded onto it
            log.info("FAILED  %-4s %s", node, _one_line(r.get("error", "unknown"))[:300])
        best = f"{self.best[0]:.4f}{self.best[2]} ({self.best[1]})" if self.best else "-"
        unit = "example-epochs" if self.unit == "example_epochs" else "accelerator-s"
        per = ", ".join(f"r{k} {v:.0f}" for k, v in sorted(self.spent.items()))
        spent = f"{sum(self.spent.values()):.0f}" + (f"/{self.budget:.0f}" if self.budget else "")
        log.info("status  runs %d done, %d failed, %d running | best %s | spent %s %s (%s) | %.0fs elapsed",
                 self.finished, self.failed, len(self.running), best, spent, unit, per or "-", time.time() - self.t0)


def interval_text(iv: dict[str, Any] | None) -> str:
    """`` [0.8100, 0.8900]`` for an interval, "" without one."""
    return f" [{iv['low']:.4f}, {iv['high']:.4f}]" if iv else ""


def _one_line(text: object) -> str:
    """Untrusted text (LLM notes, trial errors that quote data) as one plain console line: no
    escape sequences or control characters, whitespace folded (a traceback's tail included)."""
    return " ".join(terminal_safe(str(text)).split())


def leaderboard(tree: Tree, metric: str) -> str:
    """The run's nodes as a table, in the tree's ranking (full runs first, then by score;
    unscored last), each score with its interval and the fraction of the full run behind it."""
    head = (f"{'node':<5} {'parent':<6} {'direction':<15} {'knobs':<40} {metric:>9} {'interval':<19} "
            f"{'trained':>7} {'status':<9}")
    lines = [head, "-" * len(head)]
    for n in tree.ranked():
        score = f"{n.score:.4f}" if n.score is not None else "-"
        iv = f"[{n.interval['low']:.4f},{n.interval['high']:.4f}]" if n.interval else "-"
        chosen = " *" if tree.selected == n.id else ""
        trained = f"{n.fidelity:.0%}" if n.plan.training is not None and n.score is not None else "-"
        lines.append(f"{n.id:<5} {n.parent_id or '-':<6} {n.plan.direction:<15} {n.plan.knobs()[:40]:<40} "
                     f"{score:>9} {iv:<19} {trained:>7} {n.status:<9}{chosen}")
    if tree.selection:
        lines.append(f"* chosen by the final selection: {tree.selection.get('reason', '')}")
    return "\n".join(lines)


def render_status(view: dict[str, Any]) -> str:
    """``steer status``: the run's state and spend, then every node (best first) with what its
    branch spent, then the latest steering commands."""
    t, sp = view["trials"], view["spend"]
    budget = view.get("accelerator_budget_seconds")
    lines = [f"run {view['state']}: trials {t['started']}/{t['max']} started, {t['running']} running, "
             f"{t['planned']} planned; base {view['metric']} {_num(view.get('base_score'))}",
             f"spend: {sp['accelerator_seconds']:.0f}{f' of {budget:.0f}' if budget is not None else ''} "
             f"accelerator-seconds, {sp['train_samples']} examples / {sp['train_tokens']} tokens trained, "
             f"LLM {sp['llm_tokens']} tokens (cost {sp['llm_cost']:.4f})"]
    account = view.get("llm_account")
    if account:
        total = account["total"]
        caps = [f"{account['max_tokens']} tokens" if account.get("max_tokens") else "",
                f"cost {account['max_cost']:g}" if account.get("max_cost") is not None else ""]
        caps_text = " / ".join(c for c in caps if c) or "no limit"
        lines.append(f"LLM account: {total['prompt_tokens'] + total['completion_tokens']} tokens, cost "
                     f"{total['cost']:.4f} in {total['calls']} calls (limit {caps_text})"
                     + (f"; SPENT: {account['spent']}" if account.get("spent") else ""))
    head = (f"{'node':<6}{'parent':<7}{'status':<10}{'direction':<16}{view['metric'][:9]:>9} {'Δbase':>8} "
            f"{'accel-s':>9} {'branch':>9} {'llm tok':>8}  flags")
    lines += ["", head, "-" * len(head)]
    for n in view["nodes"]:
        flags = " ".join(f for f, on in (("pinned", n["pinned"]), ("pruned-by-user", n["cut"]),
                                         (f"{n['notes']} note(s)", n["notes"])) if on)
        lines.append(f"{n['id']:<6}{n['parent'] or '-':<7}{n['status']:<10}{n['direction']:<16}{_num(n['score']):>9} "
                     f"{_num(n['delta'], '+.4f'):>8} {n['accelerator_seconds']:>9.1f} "
                     f"{n['branch_accelerator_seconds']:>9.1f} {n['branch_llm_tokens']:>8}  {flags}")
    if view.get("steering"):
        lines += ["", "steering (latest):"]
        lines += [f"  {e['command']} by {e['by']}" + (f" -- refused: {e['refused']}" if e.get("refused") else "")
                  for e in view["steering"]]
    return "\n".join(lines)


def _num(x: float | None, fmt: str = ".4f") -> str:
    return "-" if x is None else format(x, fmt)
