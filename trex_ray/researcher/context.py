"""What the LLM Researcher is told: the task's requirement spec and the tree's compressed
memory, rendered within a token budget as clearly delimited, untrusted data. No Ray here.

Task text, dataset columns, earlier rationales (themselves LLM output) and trial errors can all
carry text that reads like instructions, so all of it goes into one quoted block that the system
prompt declares to be data; the block's own delimiters are neutralised inside it.
"""

from __future__ import annotations

import json
from typing import Any

from trex_ray.config import TrainConfig
from trex_ray.llm_client import estimate_tokens
from trex_ray.recipes.ops import MAX_SYNTH_ROWS
from trex_ray.search.plan import template_fields
from trex_ray.search.request import ExpansionRequest, TaskSpec
from trex_ray.guard.untrusted import CLOSE, OPEN, fence, quote

KEEP_KEY_NODES = 2  # key nodes kept until everything else optional is gone
FIELD_CAP = 300  # characters of any one free-text field (rationale, failure, diagnosis)
EXACT_METRICS = ("accuracy", "exact_match", "em", "f1", "macro_f1")


def analyze_requirements(task: TaskSpec, defaults: TrainConfig | None = None) -> dict[str, Any]:
    """The requirement spec: target metric and direction, output format constraints, the data
    that exists and what is missing, and the risks worth steering around. Derived from the task
    alone (no LLM), so it is cheap, deterministic and computed once per run."""
    columns = list(task.columns)
    try:
        used = template_fields(task.prompt_template) + template_fields(task.completion_template)
    except ValueError:
        used = []
    missing = sorted({c for c in used if columns and c not in columns})
    risks = ["the dev split drives the search and the test split is held out: keep recipe.decontaminate on"]
    if not task.train_rows:
        risks.append("no train split: every training row comes from the extra sources (converted to the task's "
                     "columns with rename/derive) or from synthesis; unrelated data teaches the wrong task, and dev "
                     "rows may only seed synthesis (they are never trained on)")
    elif task.train_rows < 1000:
        risks.append(f"small training set ({task.train_rows} rows): overfitting; prefer LoRA, few epochs, low learning rates")
    if any(m in task.metric.lower() for m in EXACT_METRICS):
        risks.append("answers are scored by matching: the completion must keep the reference format exactly, "
                     "and the prompt should ask for the bare answer")
    if missing:
        risks.append(f"the templates use columns the data lacks: {missing}")
    if task.answer_format:  # a task file's own format: its parser reads only that
        risks.append(f"answers are parsed as {task.answer_format}: the completion must keep that form "
                     "(an answer in any other form counts as unparsed)")
    cap = defaults.max_train_samples if defaults is not None else None
    if cap and task.train_rows > cap:
        risks.append(f"only {cap} of {task.train_rows} training rows may be used per plan")
    return {
        "task": task.id,
        "description": task.description[:1000],
        "target": {"metric": task.metric, "direction": "maximize" if task.higher_is_better else "minimize"},
        "output_format": {
            "prompt_template": task.prompt_template,
            "completion_template": task.completion_template,
            "constraints": ["templates may use only plain {column} fields",
                            "the completion template defines what the model must output"],
            **({"answer": task.answer_format} if task.answer_format else {}),
        },
        "data": {
            "available": {"train": {"rows": task.train_rows, "columns": columns} if task.train_rows else
                          "none: the task publishes no training data; build it (see sources, synthesis)",
                          "dev": f"held out, scores every trial (never train on it; {task.dev_rows or '?'} rows)",
                          "test": "held out for the final report",
                          **({} if task.train_rows else _build_from(task))},
            "missing": ([f"columns {missing}"] if missing else [])
                       + ([] if columns else ["the train split's columns are unknown"]),
        },
        "risks": risks,
    }


def _build_from(task: TaskSpec) -> dict[str, Any]:
    """What a task without a train split can be trained on: its fitting extra sources (every
    other listed source is in the research catalog) and whether synthesis can run."""
    return {
        "sources": [{"source": s.source, "rows": s.rows, **({"rename": s.rename} if s.rename else {}),
                     "relevance_to_dev": s.relevance} for s in task.sources],
        "synthesis": (f"available: load task:dev, then synthesize mode=generate keep=replace (up to {MAX_SYNTH_ROWS} "
                      "rows per step) writing the template columns in the style of dev examples"
                      if task.synthesis else "not available (the run sets no llm.base_url)"),
    }


def source_rule(task: TaskSpec) -> str:
    """The plans prompt's rule on where a recipe's rows come from."""
    if task.train_rows:
        return ('recipe.steps start with a load step ({"op": "load", "source": "task:train"}) '
                f"(subsample n <= {task.train_rows})")
    return ("the task has NO train split (no task:train): recipe.steps start with a load or mix of the "
            "REQUIREMENTS' data sources or research findings, by their exact source string (rename or derive "
            "their columns to the task's)"
            + (', or with {"op": "load", "source": "task:dev"} followed by a synthesize step with mode generate '
               "and keep replace (dev rows only seed synthesis; add sources after it with concat)" if task.synthesis else ""))


def _clip(value: Any) -> Any:
    return value[:FIELD_CAP] + "…" if isinstance(value, str) and len(value) > FIELD_CAP else value


def _line(summary: dict[str, Any]) -> str:
    """One node as one compact JSON line (no plan body: ``knobs`` says what it set)."""
    return json.dumps({k: _clip(v) for k, v in summary.items() if k != "plan" and v is not None},
                      ensure_ascii=False)


def _insight_line(item: dict[str, Any]) -> str:
    return json.dumps({"kind": item.get("kind"), "text": _clip(item.get("text")), "nodes": item.get("nodes")},
                      ensure_ascii=False)


MAX_GUIDANCE = 6  # the user's most recent notes shown (each at most steering.MAX_NOTE characters)


def render_guidance(notes: list[dict[str, Any]]) -> str:
    """The notes the person running the search left on the selected node and the nodes above it
    (``steer annotate``), quoted as their words, outside the untrusted-data block: they are the
    user's guidance, not data and not this program's instructions."""
    if not notes:
        return ""
    lines = [f"- on {n['node']}, from {quote(str(n.get('by') or 'the user'))}: {quote(n['text'])}"
             for n in notes[-MAX_GUIDANCE:]]
    return ("USER GUIDANCE (notes the person running this search wrote about the selected node or the nodes "
            "above it; follow them when choosing the direction and the plans, within the rules):\n" + "\n".join(lines))


def render_context(request: ExpansionRequest, requirement: dict[str, Any], max_tokens: int) -> str:
    """The prompt's data block, at most ``max_tokens`` (estimated) long.

    When too long, the least useful parts go first: key nodes beyond the top few, then the
    node's siblings, then the path's oldest entries, then the distilled insights (last first),
    then the rest of the key nodes and the existing children; as a last resort the text is cut.
    Diagnoses ride on each node's line (clipped like any free text). The selected node (with its
    full plan) and the requirement spec are what an expansion cannot do without, so they come first.
    The user's guidance (``render_guidance``) follows the block and is never dropped.
    """
    mem = request.memory
    guidance = render_guidance(mem.get("user_notes") or [])
    if not guidance:
        return _render_block(request, requirement, max_tokens)
    room = max(200, max_tokens - estimate_tokens(guidance) - 1)
    return _render_block(request, requirement, room) + "\n" + guidance


def _render_block(request: ExpansionRequest, requirement: dict[str, Any], max_tokens: int) -> str:
    mem = request.memory
    path = [_line(s) for s in mem["path"][:-1]]  # the last entry is the node itself, shown in full
    children = [_line(s) for s in mem["children"]]
    siblings = [_line(s) for s in mem["siblings"]]
    key_nodes = [_line(s) for s in mem["key_nodes"]]
    insights = [_insight_line(i) for i in mem.get("insights") or []]
    node = {k: _clip(v) for k, v in mem["node"].items() if k != "plan" and v is not None}
    dropped = {"path": 0, "siblings": 0, "key_nodes": 0, "children": 0, "insights": 0}

    def render() -> str:
        # Most essential first: a last-resort cut keeps the head.
        parts = [
            "SELECTED NODE " + json.dumps(node, ensure_ascii=False),
            "SELECTED NODE PLAN " + json.dumps(mem["node"]["plan"], ensure_ascii=False),
            f"SCORES base={mem.get('base_score')} best={mem.get('best_score')} (metric {requirement['target']['metric']}, "
            f"{requirement['target']['direction']}; reward = normalised gain over base)",
            "REQUIREMENTS " + json.dumps(requirement, ensure_ascii=False),
            *(["DISTILLED INSIGHTS (lessons from the whole tree so far)", *insights] if insights else []),
            "PATH FROM ROOT (oldest first)", *path,
            "EXISTING CHILDREN OF THE SELECTED NODE (do not repeat)", *children,
            "SIBLINGS", *siblings,
            "KEY NODES (largest gains, recent failures)", *key_nodes,
        ]
        if any(dropped.values()):
            parts.append("OMITTED FOR LENGTH " + json.dumps({k: v for k, v in dropped.items() if v}))
        return fence("\n".join(parts))

    text = render()
    while estimate_tokens(text) > max_tokens:
        if len(key_nodes) > KEEP_KEY_NODES:
            key_nodes.pop(); dropped["key_nodes"] += 1  # noqa: E702
        elif siblings:
            siblings.pop(); dropped["siblings"] += 1  # noqa: E702
        elif path:
            path.pop(0); dropped["path"] += 1  # noqa: E702
        elif insights:
            insights.pop(); dropped["insights"] += 1  # noqa: E702
        elif key_nodes:
            key_nodes.pop(); dropped["key_nodes"] += 1  # noqa: E702
        elif children:
            children.pop(); dropped["children"] += 1  # noqa: E702
        else:
            break
        text = render()
    if estimate_tokens(text) > max_tokens:
        # Still too long (a huge task description or plan): cut the middle of the block, keeping
        # both delimiters so the data stays fenced.
        body = text[len(OPEN) + 1: -(len(CLOSE) + 1)]
        room = max(0, max_tokens - estimate_tokens(f"{OPEN}\n\n…[cut]\n{CLOSE}") - 2)
        lo, hi = 0, min(len(body), room * 4)  # longest prefix within the room (binary search)
        while lo < hi:
            mid = (lo + hi + 1) // 2
            lo, hi = (mid, hi) if estimate_tokens(body[:mid]) <= room else (lo, mid - 1)
        text = f"{OPEN}\n{body[:lo]}\n…[cut]\n{CLOSE}"
    return text
