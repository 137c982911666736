"""Command line for FT-Bench: ``python -m ftbench {list,eval,score}``.

``eval`` generates with a model and scores; ``score`` re-scores a predictions file with the same
parsing and metric, so numbers can be checked or recomputed without the model. Both print the
scores as one JSON object on the last line of stdout; progress goes to stderr through logging.
Bad input (unknown task, missing file, unreadable data) ends with one line on stderr and exit 2.
"""

from __future__ import annotations

import argparse
import json
import logging
import os
import sys
from pathlib import Path

from ftbench.task import SPLITS, TaskDataError, load_split
from ftbench.tasks import TASKS, get_task

log = logging.getLogger("ftbench")


class UsageError(Exception):
    """Input the user can fix; reported as one line, exit status 2."""


def _paths(data_dir: str | None) -> dict[str, str] | None:
    if data_dir and not Path(data_dir).is_dir():
        raise UsageError(f"data folder not found: {data_dir}")
    return {"data_dir": data_dir} if data_dir else None


def _task(task_id: str | None, task_file: str | None = None, data_dir: str | None = None):
    if task_file:  # a user's own task (ftbench.taskfile); --data-dir overrides its data_dir
        from ftbench.taskcheck import check_task_file
        from ftbench.taskfile import build_task, read_task_file

        tf = read_task_file(task_file)
        tf = tf.model_copy(update={"data_dir": str(Path(data_dir).resolve())}) if data_dir else tf
        check_task_file(tf)  # against its data, one error line per problem, before any model loads
        return build_task(tf)
    if not task_id:
        raise UsageError("give --task (an FT-Bench task id) or --task-file (your own task's YAML)")
    try:
        return get_task(task_id)
    except KeyError as e:
        raise UsageError(e.args[0]) from None


def _task_and_paths(args: argparse.Namespace):
    """(task, load_split paths): a task file's task reads its own data locations."""
    task = _task(args.task, args.task_file, args.data_dir)
    return task, (None if args.task_file else _paths(args.data_dir))


def cmd_list(args: argparse.Namespace) -> None:
    header = f"{'task':<13} {'metric':<14} {'hub dataset':<30} {'train':>7} {'dev':>6} {'test':>6}"
    lines = [header, "-" * len(header)]
    for task in TASKS.values():
        sizes = ["-", "-", "-"]
        if args.data_root:
            folder = Path(args.data_root) / task.id
            if folder.is_dir():
                for i, split in enumerate(SPLITS):
                    try:
                        sizes[i] = str(len(load_split(task, split, {"data_dir": str(folder)})))
                    except TaskDataError:
                        pass
        hub = task.hub.repo_id if task.hub else "(local folder only)"
        lines.append(f"{task.id:<13} {task.metric:<14} {hub:<30} {sizes[0]:>7} {sizes[1]:>6} {sizes[2]:>6}")
    print("\n".join(lines))


def cmd_eval(args: argparse.Namespace) -> dict[str, float]:
    task, paths = _task_and_paths(args)
    rows = load_split(task, args.split, paths, args.limit)
    if args.max_new_tokens:
        from dataclasses import replace

        task = replace(task, max_new_tokens=args.max_new_tokens)
    out = Path(args.out or f"{task.id}_{args.split}_predictions.jsonl")
    from ftbench.evaluate import evaluate, load_model

    log.info("loading model %s%s", args.model, f" + adapter {args.adapter}" if args.adapter else "")
    try:
        model, tok = load_model(args.model, args.adapter, trust_remote_code=args.trust_remote_code)
    except (OSError, ValueError) as e:
        raise UsageError(f"cannot load model {args.model}: {str(e).splitlines()[0] if str(e) else type(e).__name__}") from None
    log.info("evaluating %s on %d %s examples", task.id, len(rows), args.split)
    scores = evaluate(
        task, model, tok, rows, batch_size=args.batch_size, predictions_path=out,
        on_batch=lambda done, total: log.info("generated %d/%d", done, total),
    )
    log.info("predictions written to %s", out)
    return scores


def _read_predictions(path: str) -> list[dict]:
    p = Path(path)
    if not p.is_file():
        raise UsageError(f"predictions file not found: {path}")
    recs = []
    with open(p, encoding="utf-8") as f:
        for n, line in enumerate(f, 1):
            if not line.strip():
                continue
            try:
                rec = json.loads(line)
            except json.JSONDecodeError as e:
                raise UsageError(f"{path}:{n}: not valid JSON ({e.msg})") from None
            if not isinstance(rec, dict) or "id" not in rec or "prediction" not in rec:
                raise UsageError(f"{path}:{n}: each line needs 'id' and 'prediction'")
            recs.append(rec)
    if not recs:
        raise UsageError(f"{path}: no predictions")
    return recs


def cmd_score(args: argparse.Namespace) -> dict[str, float]:
    task, paths = _task_and_paths(args)
    preds = _read_predictions(args.predictions)
    by_id = {str(r["id"]): r for r in load_split(task, args.split, paths)}
    missing = [str(p["id"]) for p in preds if str(p["id"]) not in by_id]
    if missing:
        raise UsageError(f"{len(missing)} prediction id(s) not in the {task.id} {args.split} split, e.g. {missing[0]!r}")
    rows = [by_id[str(p["id"])] for p in preds]
    gens = [p["prediction"] if isinstance(p["prediction"], str) else "" for p in preds]
    scores = task.score(gens, rows)
    scores["n"] = len(rows)
    return scores


def build_parser() -> argparse.ArgumentParser:
    ap = argparse.ArgumentParser(prog="python -m ftbench", description="FT-Bench tasks: list, evaluate, score.")
    sub = ap.add_subparsers(dest="command", required=True)

    p = sub.add_parser("list", help="tasks, metrics, hub sources and (with --data-root) local split sizes")
    p.add_argument("--data-root", help="folder with one sub-folder per task holding {train,dev,test}.jsonl")

    p = sub.add_parser("eval", help="generate with a model, save predictions, print scores")
    p.add_argument("--task", help="FT-Bench task id")
    p.add_argument("--task-file", help="your own task, defined in YAML (instead of --task)")
    p.add_argument("--model", required=True, help="any from_pretrained path or hub id")
    p.add_argument("--adapter", help="LoRA adapter folder applied on top of --model")
    p.add_argument("--split", choices=("dev", "test"), default="test")
    p.add_argument("--limit", type=int, help="first N examples only")
    p.add_argument("--data-dir", help="local folder with the task's data (default: the task's hub source)")
    p.add_argument("--out", help="predictions JSONL (default: <task>_<split>_predictions.jsonl)")
    p.add_argument("--batch-size", type=int, default=16)
    p.add_argument("--max-new-tokens", type=int, help="override the task's generation budget")
    p.add_argument("--trust-remote-code", action="store_true", help="allow custom model code (off by default)")

    p = sub.add_parser("score", help="score a predictions JSONL (id, prediction) as eval does")
    p.add_argument("--task", help="FT-Bench task id")
    p.add_argument("--task-file", help="your own task, defined in YAML (instead of --task)")
    p.add_argument("--predictions", required=True)
    p.add_argument("--data-dir")
    p.add_argument("--split", choices=SPLITS, default="test")
    return ap


def main(argv: list[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    logging.basicConfig(level=os.environ.get("FTBENCH_LOG", "INFO"), stream=sys.stderr,
                        format="%(asctime)s %(levelname)s %(name)s: %(message)s")
    try:
        if args.command == "list":
            cmd_list(args)
            return 0
        scores = cmd_eval(args) if args.command == "eval" else cmd_score(args)
    except (UsageError, TaskDataError) as e:
        print(f"error: {e}", file=sys.stderr)
        return 2
    print(json.dumps(scores, ensure_ascii=False))
    return 0


if __name__ == "__main__":
    sys.exit(main())
