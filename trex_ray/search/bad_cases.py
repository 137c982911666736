"""What went wrong in a trial, from its dev predictions alone: pure functions, no LLM, no Ray.

* ``sample_bad_cases`` runs on the trial's worker after the dev evaluation: a small, bounded,
  deterministic sample of the WRONG dev predictions (dev only: the test split is never looked
  at during the search) plus counts of empty, unparsable and truncated answers.
* ``rule_diagnosis`` turns those counts into a cheap attribution without any LLM, so every run
  (builtin policy, spent budget, failed LLM call) gets a diagnosis; ``describe`` is its short text.
* ``insight_memory`` is what an insight distillation reads from the tree.

The LLM's attribution of the same samples lives with the Researcher (``researcher/diagnosis.py``).
"""

from __future__ import annotations

import hashlib
import json
import logging
from pathlib import Path
from typing import Any, Callable

log = logging.getLogger(__name__)

CATEGORIES = ("format_error", "label_confusion", "missing_knowledge", "truncation", "hallucination", "other")
MAX_CASES = 8  # wrong predictions sampled per trial
CASE_CAP = 300  # characters of a sampled prompt / prediction / reference


# ---------------------------------------------------------------------------- sampling
def clip_middle(text: Any, cap: int = CASE_CAP) -> str:
    """``text`` within ``cap`` characters, keeping its head and tail (a prompt's instruction is
    at the start, the item asked about often at the end)."""
    s = text if isinstance(text, str) else json.dumps(text, ensure_ascii=False, default=str)
    if len(s) <= cap:
        return s
    half = (cap - 1) // 2
    return s[:half] + "…" + s[len(s) - half:]


def _empty(parsed: Any) -> bool:
    return parsed is None or (isinstance(parsed, (str, list, tuple, dict, set)) and len(parsed) == 0)


def sample_bad_cases(task: Any, rows: list[dict], predictions: list[str], prompt_template: str | None = None,
                     count_tokens: Callable[[str], int] | None = None, k: int = MAX_CASES) -> dict[str, Any]:
    """The wrong dev predictions of one trial, summarised: counts over all rows and up to ``k``
    sampled cases ``{id, prompt, prediction, reference, rule}``.

    A prediction is wrong when the task's parser reads a different answer from it than from
    the gold completion (a per-row metric is not usable for every task: label-wise macro-F1 of
    one row is not 1 even for a perfect answer). The sample is the wrong rows in the order of
    a hash of their ids, so it is deterministic and, for the same dev rows, comparable across
    trials. ``count_tokens`` (the model's tokenizer) detects answers cut off at the task's
    ``max_new_tokens``; without it truncation is not counted.
    """
    if len(rows) != len(predictions):
        raise ValueError(f"{len(rows)} dev rows but {len(predictions)} predictions")
    counts = {"n": len(rows), "wrong": 0, "empty": 0, "unparsed": 0, "truncated": 0 if count_tokens else None}
    rule_counts = dict.fromkeys(CATEGORIES, 0)
    wrong: list[tuple[str, dict[str, Any]]] = []
    for row, pred in zip(rows, predictions):
        pred = pred if isinstance(pred, str) else ""
        parsed = task.parse(pred, row)
        gold = task.format_completion(row)
        is_empty, unparsed = not pred.strip(), _empty(parsed)
        truncated = bool(count_tokens and pred and count_tokens(pred) >= task.max_new_tokens)
        counts["empty"] += is_empty
        counts["unparsed"] += unparsed
        if count_tokens:
            counts["truncated"] += truncated
        if parsed == task.parse(gold, row):
            continue
        counts["wrong"] += 1
        rule = ("format_error" if is_empty else "truncation" if truncated
                else "format_error" if unparsed else "other")
        rule_counts[rule] += 1
        rank = hashlib.sha256(f"{task.id}|{row.get('id')}".encode()).hexdigest()
        wrong.append((rank, {"id": str(row.get("id")), "prompt": clip_middle(task.format_prompt(row, prompt_template)),
                             "prediction": clip_middle(pred), "reference": clip_middle(row.get("reference", gold)),
                             "rule": rule}))
    wrong.sort(key=lambda w: w[0])
    return {**counts, "max_new_tokens": task.max_new_tokens, "rule_counts": rule_counts,
            "cases": [c for _, c in wrong[:k]]}


def collect_bad_cases(task: Any, rows: list[dict], predictions_path: str | Path, prompt_template: str | None,
                      tokenizer: Any = None) -> dict[str, Any] | None:
    """``sample_bad_cases`` over a trial's ``dev_predictions.jsonl``; None (logged) on any error,
    since a diagnosis must never fail the trial that it describes."""
    try:
        lines = Path(predictions_path).read_text(encoding="utf-8").splitlines()
        preds = [json.loads(line)["prediction"] for line in lines if line.strip()]

        def count(text: str) -> int:
            return len(tokenizer(text, add_special_tokens=False)["input_ids"])

        return sample_bad_cases(task, rows, preds, prompt_template, count if tokenizer is not None else None)
    except Exception as e:  # noqa: BLE001 - see the docstring
        log.warning("could not sample the wrong dev predictions: %s: %s", type(e).__name__, e)
        return None


# ---------------------------------------------------------------------------- rules
def _categories(counts: dict[str, int]) -> dict[str, dict[str, float]]:
    total = sum(counts.values())
    return {c: {"count": int(n), "share": round(n / total, 3)} for c, n in counts.items() if n} if total else {}


def rule_diagnosis(bad_cases: dict[str, Any]) -> dict[str, Any]:
    """A diagnosis from counts alone (no LLM): empty or unparsable answers are format errors,
    answers as long as the generation limit are truncations, the rest is wrong content the
    rules cannot tell apart ("other")."""
    n, wrong = bad_cases.get("n", 0), bad_cases.get("wrong", 0)
    cats = _categories(bad_cases.get("rule_counts") or {})
    share = {c: v["share"] for c, v in cats.items()}
    directions: list[str] = []
    if share.get("format_error", 0) + share.get("truncation", 0) >= 0.3:
        directions.append("prompt_format")
    if share.get("other", 0) >= 0.5:
        directions += ["hyperparameters", "more_data"]
    if not directions and wrong:
        directions.append("data_quality")
    parts = [f"{bad_cases[key]}/{n} {key}" for key in ("empty", "unparsed", "truncated") if bad_cases.get(key)]
    summary = ("answers " + ", ".join(parts)) if parts else "every answer well-formed"
    return {"source": "rules", "n": n, "wrong": wrong, "categories": cats, "summary": summary,
            "suggested_directions": directions,
            "stats": {k: bad_cases.get(k) for k in ("n", "wrong", "empty", "unparsed", "truncated")}}


def describe(detail: dict[str, Any]) -> str:
    """The short text kept in ``Node.diagnosis`` (and so in the Researcher's memory lines)."""
    cats = sorted(detail.get("categories", {}).items(), key=lambda kv: -kv[1]["count"])
    text = f"{detail.get('source', 'rules')}: {detail.get('wrong', 0)}/{detail.get('n', 0)} wrong"
    if cats:
        text += "; " + ", ".join(f"{c} {round(100 * v['share'])}%" for c, v in cats[:3])
    if detail.get("suggested_directions"):
        text += "; try " + ", ".join(detail["suggested_directions"])
    if detail.get("summary"):
        text += ". " + detail["summary"]
    return text[:400]


# ---------------------------------------------------------------------------- tree memory for insights
def insight_memory(tree: Any, max_nodes: int = 40) -> dict[str, Any]:
    """What distillation reads: every finished trial's one-line summary (best first, then the
    failures), the scores, and the previous insights. ``tree`` is a ``Tree``."""
    done = sorted(tree.by_status("succeeded"), key=lambda n: -(n.reward or 0.0))
    failed = sorted(tree.by_status("failed"), key=lambda n: -(n.finished_at or 0.0))
    return {"nodes": [n.summary() for n in (done + failed)[:max_nodes]], "base_score": tree.base_score,
            "best_score": (b.score if (b := tree.best()) else None), "insights": list(tree.insights)}


