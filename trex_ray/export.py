"""The model card of the exported best model (``best/README.md``).

``best/`` holds what the best node saved (a LoRA adapter or full weights, plus the tokenizer);
the card says what it is, how well it does on dev and on test, what data and training made it,
how it was reached from the base model, and under which licences its data came. Pushing to the
Hugging Face Hub is left to the user (``huggingface-cli upload``); the card is in the Hub's format.
"""

from __future__ import annotations

import json
import logging
from pathlib import Path
from typing import Any

from ftbench.tasks import get_task
from trex_ray.config import Config
from trex_ray.plan import Plan

log = logging.getLogger(__name__)


def lineage(tree: dict[str, Any], node_id: str) -> list[dict[str, Any]]:
    """Nodes from the root down to ``node_id``."""
    nodes = {n["id"]: n for n in tree["nodes"]}
    path, cur = [], nodes.get(node_id)
    while cur is not None:
        path.append(cur)
        cur = nodes.get(cur["parent_id"]) if cur["parent_id"] else None
    return list(reversed(path))


def data_licences(plan: Plan, task_id: str) -> list[str]:
    """One line per data source of the plan's recipe (load, concat and mix sources), with its
    licence where TREX-Ray knows it; hub datasets and local files point to their own source."""
    task = get_task(task_id)
    sources: list[str] = []
    for step in plan.recipe.steps:
        found = [getattr(step, "source", None)] + [getattr(x, "source", None) for x in getattr(step, "sources", None) or []]
        sources += [x for x in found if x and x not in sources]
    out = []
    for src in sources:
        if src == "task:train":
            out.append(f"{task_id} train split ({task.source or 'FT-Bench'}): {task.licence or 'not stated'}")
        elif src.startswith("hub:"):
            out.append(f"Hugging Face dataset {src[4:]}: see its dataset card for the licence")
        else:
            out.append(f"local data {src}: licence not recorded (check where the file came from)")
    return out


def _fmt(x: float | None) -> str:
    return "-" if x is None else f"{x:.4f}"


def model_card(cfg: Config, tree: dict[str, Any], summary: dict[str, Any]) -> str:
    """The card's Markdown text (YAML front matter in the Hub's model-card format)."""
    task = get_task(cfg.task.name)
    best = next(n for n in tree["nodes"] if n["id"] == summary["best_node"])
    plan = Plan.model_validate(best["plan"])
    is_lora = plan.training is not None and plan.training.method == "lora"
    base = cfg.model.name_or_path
    front = {"base_model": base, "library_name": "peft" if is_lora else "transformers",
             "tags": ["trex-ray", task.id], "metrics": [task.metric]}
    lines = ["---", *(f"{k}: {json.dumps(v)}" for k, v in front.items()), "---", "",
             f"# {task.name}: {base} fine-tuned by TREX-Ray", "",
             f"Node `{best['id']}` of run `{cfg.run.run_id}` — the best of {summary['trials']} trials on the dev split.", "",
             f"- **Base model:** `{base}`",
             f"- **Task:** `{task.id}` — {task.description}",
             f"- **Weights:** {'LoRA adapter (load the base model, then PeftModel.from_pretrained)' if is_lora else 'full weights (AutoModelForCausalLM.from_pretrained)'}"
             + (" ; merged full weights in `merged/`" if summary.get("merged_model_dir") else ""),
             "", f"## Scores ({task.metric}, {'higher' if task.higher_is_better else 'lower'} is better)", "",
             "| split | examples | base model | this model |", "|---|---|---|---|",
             f"| dev (chose the model) | {cfg.task.dev_limit} | {_fmt(summary['base_score'])} | {_fmt(summary['best_score'])} |",
             f"| test (held out, scored once) | {int((summary.get('best_test_metrics') or summary.get('base_test_metrics') or {}).get('n', 0)) or '-'} | "
             f"{_fmt(summary.get('base_test_score'))} | {_fmt(summary.get('best_test_score'))} |", ""]
    if summary.get("test_error"):
        lines += [f"Test evaluation failed: `{summary['test_error'][:300]}`", ""]
    lines += ["## Data recipe", "", "```json", json.dumps(plan.recipe.model_dump(mode="json"), indent=1), "```", ""]
    stats = {k: v for k, v in best.get("recipe_stats", {}).items() if k != "loss_curve"}
    if stats:
        lines += ["Recipe statistics:", "", "```json", json.dumps(stats, indent=1, default=str), "```", ""]
    lines += ["## Training configuration", "", "```json",
              json.dumps(plan.training.model_dump(mode="json") if plan.training else None, indent=1), "```", "",
              "## Lineage from the base model", "", "| node | direction | change | dev score |", "|---|---|---|---|"]
    for n in lineage(tree, best["id"]):
        p = Plan.model_validate(n["plan"])
        lines.append(f"| {n['id']} | {p.direction} | {p.knobs().replace('|', '/')} | {_fmt(n['score'])} |")
    lines += ["", "## Data licences", "", *(f"- {x}" for x in data_licences(plan, task.id)), "",
              "Check these licences before redistributing the model.", ""]
    return "\n".join(lines)


def write_model_card(run_dir: Path, cfg: Config, tree: dict[str, Any], summary: dict[str, Any]) -> Path | None:
    """Write ``best/README.md``; None when the run has no exported best model."""
    best_dir = Path(run_dir) / "best"
    if not summary.get("best_node") or not best_dir.is_dir():
        return None
    path = best_dir / "README.md"
    path.write_text(model_card(cfg, tree, summary), encoding="utf-8")
    return path
