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
    def __init__(self, metric: str, max_trials: int) -> None:
        self.metric, self.max_trials = metric, max_trials
        self.t0 = time.time()
        self.base: float | None = None
        self.best: tuple[float, str] | None = None
        self.finished = self.failed = 0
        self.running: set[str] = set()
        self._last_step: dict[str, int] = {}

    def event(self, kind: str, info: dict[str, Any]) -> None:
        node = info.get("node_id", "?")
        if kind == "started":
            plan = Plan.model_validate(info["plan"])
            self.running.add(node)
            log.info("start   %-4s parent=%-4s %-15s %s", node, info.get("parent_id") or "-", plan.direction, plan.knobs())
        elif kind == "progress":
            self._progress(node, info)
        elif kind == "expanding":
            log.info("expand  %-4s (the Researcher is proposing children)", node)
        elif kind == "expanded":
            note = f": {_one_line(info['note'])[:200]}" if info.get("note") else ""
            log.info("planned %s under %s (%s%s)", ", ".join(info["children"]) or "nothing", node, info["source"], note)
        elif kind == "finished":
            self._finished(node, info)

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
            score = float(r["score"])
            if node == "n0":
                self.base = score
                log.info("done    %-4s base model %s=%.4f (%.0fs)", node, self.metric, score, r["cost"]["wall_seconds"])
                return
            self.finished += 1
            if self.best is None or score > self.best[0]:
                self.best = (score, node)
            delta = f" ({score - self.base:+.4f} vs base)" if self.base is not None else ""
            log.info("done    %-4s %s=%.4f%s in %.0fs", node, self.metric, score, delta, r["cost"]["wall_seconds"])
        else:
            self.failed += 1
            # one line per event: a multi-line error (a traceback's tail) is folded onto it
            log.info("FAILED  %-4s %s", node, _one_line(r.get("error", "unknown"))[:300])
        best = f"{self.best[0]:.4f} ({self.best[1]})" if self.best else "-"
        log.info("status  trials %d/%d done, %d failed, %d running | best %s | %.0fs elapsed",
                 self.finished, self.max_trials, self.failed, len(self.running), best, time.time() - self.t0)


def _one_line(text: object) -> str:
    """Untrusted text (LLM notes, trial errors that quote data) as one plain console line: no
    escape sequences or control characters, whitespace folded (a traceback's tail included)."""
    return " ".join(terminal_safe(str(text)).split())


def leaderboard(tree: Tree, metric: str) -> str:
    """The run's nodes as a table, in the tree's ranking (best first, unscored last)."""
    head = f"{'node':<5} {'parent':<6} {'direction':<15} {'knobs':<44} {metric:>9} {'status':<9}"
    lines = [head, "-" * len(head)]
    for n in tree.ranked():
        score = f"{n.score:.4f}" if n.score is not None else "-"
        lines.append(f"{n.id:<5} {n.parent_id or '-':<6} {n.plan.direction:<15} {n.plan.knobs()[:44]:<44} "
                     f"{score:>9} {n.status:<9}")
    return "\n".join(lines)
