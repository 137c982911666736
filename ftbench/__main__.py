"""Command line for FT-Bench: ``python -m ftbench {list,eval,score}``.

``eval`` generates with a model and scores; ``score`` re-scores a predictions file with the same
parsing and metric, so numbers can be checked or recomputed without the model. Both print the
scores as one JSON object on the last line of stdout; progress goes to stderr through logging.
``score`` takes one prediction per row of the split (``--partial``: fewer); on a test split whose
dev was carved from it, both say how many rows are withheld as dev. ``list`` shows where each
task's dev comes from and whether a search can start on it. Bad input (unknown task, missing or
unreadable file, repeated ids, a non-positive count) ends with one line on stderr and exit 2.
"""

from __future__ import annotations

import argparse
import json
import logging
import os
import sys
from collections import Counter
from pathlib import Path

from ftbench.datafiles import iter_jsonl
from ftbench.task import (
    DEV_FROM_TEST, DEV_FROM_TRAIN, DEV_NONE, SPLITS, MissingSplitError, Task, TaskDataError,
    declared_dev_source, dev_source, load_split, withheld_test_ids,
)
from ftbench.tasks import TASKS, get_task

log = logging.getLogger("ftbench")


class UsageError(Exception):
    """Input the user can fix; reported as one line, exit status 2."""


def _paths(data_dir: str | None) -> dict[str, str] | None:
    if data_dir and not Path(data_dir).is_dir():
        raise UsageError(f"data folder not found: {data_dir}")
    return {"data_dir": data_dir} if data_dir else None


def _task(task_id: str | None, task_file: str | None = None, data_dir: str | None = None) -> Task:
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


def _task_and_paths(args: argparse.Namespace) -> tuple[Task, dict[str, str] | None]:
    """(task, load_split paths): a task file's task reads its own data locations."""
    task = _task(args.task, args.task_file, args.data_dir)
    return task, (None if args.task_file else _paths(args.data_dir))


def _positive(option: str, value: int | None) -> None:
    if value is not None and value < 1:
        raise UsageError(f"{option} must be a positive number, not {value}")


def _dev_from(task: Task, source: str) -> str:
    if source == DEV_FROM_TRAIN:
        return f"train ({task.dev_from_train})"
    if source == DEV_FROM_TEST:
        return f"test ({task.dev_from_test}{f' per {task.dev_strata}' if task.dev_strata else ''})"
    return source  # published, none


def _search(train: bool, dev: bool) -> str:
    """Whether a search can start: it trains on train and chooses on dev."""
    if train and dev:
        return "ready"
    return "needs " + " + ".join(w for w, ok in (("train data (extra_sources)", train), ("a dev split", dev)) if not ok)


def _count(task: Task, split: str, paths: dict, notes: list[str]) -> str:
    try:
        return str(len(load_split(task, split, paths)))
    except MissingSplitError:
        return "-"
    except TaskDataError as e:
        notes.append(f"{task.id} {split}: {e}")
        return "error"


def cmd_list(args: argparse.Namespace) -> None:
    """One line per task: metric, split sizes (with --data-root) or the splits the source
    publishes, where dev comes from, and whether a search can start on it as configured."""
    header = (f"{'task':<12} {'metric':<14} {'train':>7} {'dev':>6} {'test':>6}  {'dev from':<21} "
              f"{'search':<40} hub dataset")
    lines, notes = [header, "-" * len(header)], []
    for task in TASKS.values():
        folder = Path(args.data_root) / task.id if args.data_root else None
        if folder is not None and folder.is_dir():
            paths = {"data_dir": str(folder)}
            sizes = [_count(task, s, paths, notes) for s in SPLITS]
            source = dev_source(task, paths)
            search = _search(sizes[0].isdigit(), sizes[1].isdigit())
        else:
            source = declared_dev_source(task)
            sizes = ["yes" if s in task.source_splits else "-" for s in SPLITS]
            sizes[1] = "yes" if source != DEV_NONE else "-"
            search = _search("train" in task.source_splits, source != DEV_NONE)
            if folder is not None:
                search = f"no folder {task.id}/"
        hub = task.hub.repo_id if task.hub else "(local folder only)"
        lines.append(f"{task.id:<12} {task.metric:<14} {sizes[0]:>7} {sizes[1]:>6} {sizes[2]:>6}  "
                     f"{_dev_from(task, source):<21} {search:<40} {hub}")
    lines.append("")
    lines.append("dev from test: those rows are withheld from every test score of the task.")
    print("\n".join(lines + notes))


def _withheld(task: Task, split: str, paths: dict | None, scores: dict) -> None:
    """Say in the scores (and the log) how many test rows are withheld as dev."""
    if split != "test":
        return
    n = len(withheld_test_ids(task, paths))
    if n:
        scores["withheld_as_dev"] = n
        log.info("%d rows of the %s test split are its dev split (carved from test) and are not scored", n, task.id)


def cmd_eval(args: argparse.Namespace) -> dict[str, float]:
    task, paths = _task_and_paths(args)
    for option, value in (("--limit", args.limit), ("--batch-size", args.batch_size),
                          ("--max-new-tokens", args.max_new_tokens)):
        _positive(option, value)
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
    _withheld(task, args.split, paths, scores)
    log.info("predictions written to %s", out)
    return scores


def _read_predictions(path: str) -> list[dict]:
    p = Path(path)
    if not p.is_file():
        raise UsageError(f"predictions file not found: {path}")
    try:
        lines = list(iter_jsonl(p))
    except OSError as e:
        raise UsageError(f"{path}: cannot be read ({e.strerror or type(e).__name__})") from None
    for n, rec in lines:
        if "id" not in rec or "prediction" not in rec:
            raise UsageError(f"{path}:{n}: each line needs 'id' and 'prediction'")
    if not lines:
        raise UsageError(f"{path}: no predictions")
    return [rec for _, rec in lines]


def _check_ids(path: str, task: Task, split: str, pred_ids: list[str], split_ids: list[str],
               withheld: frozenset[str], partial: bool) -> None:
    """Refuse predictions that would give a meaningless score: repeated ids, ids outside the
    split, and (unless ``partial``) predictions that do not cover the whole split."""
    counts = Counter(pred_ids)
    repeated = [(i, c) for i, c in counts.items() if c > 1]
    if repeated:
        raise UsageError(f"{path}: {len(repeated)} id(s) appear more than once (e.g. {repeated[0][0]!r}, "
                         f"{repeated[0][1]} times); give one prediction per row")
    in_split = set(split_ids)
    dev_rows = [i for i in pred_ids if i in withheld]
    if dev_rows:
        raise UsageError(f"{len(dev_rows)} prediction id(s) are rows of the {task.id} dev split, carved from "
                         f"test and withheld from every test score (e.g. {dev_rows[0]!r}); score them with --split dev")
    outside = [i for i in pred_ids if i not in in_split]
    if outside:
        raise UsageError(f"{len(outside)} prediction id(s) not in the {task.id} {split} split, e.g. {outside[0]!r}")
    uncovered = [i for i in split_ids if i not in counts]
    if uncovered and not partial:
        raise UsageError(f"{path} covers {len(pred_ids)} of the {len(split_ids)} rows of the {task.id} {split} split "
                         f"(no prediction for {uncovered[0]!r}, ...); predict every row, or pass --partial "
                         f"to score only the rows given")


def cmd_score(args: argparse.Namespace) -> dict[str, float]:
    task, paths = _task_and_paths(args)
    preds = _read_predictions(args.predictions)
    split_rows = load_split(task, args.split, paths)
    by_id = {str(r["id"]): r for r in split_rows}
    withheld = withheld_test_ids(task, paths) if args.split == "test" else frozenset()
    pred_ids = [str(p["id"]) for p in preds]
    _check_ids(args.predictions, task, args.split, pred_ids, list(by_id), withheld, args.partial)
    rows = [by_id[i] for i in pred_ids]
    gens = [p["prediction"] if isinstance(p["prediction"], str) else "" for p in preds]
    scores = task.score(gens, rows)
    scores["n"] = len(rows)
    scores["split_rows"] = len(by_id)
    if len(rows) < len(by_id):
        log.info("--partial: scored %d of the %d rows of the %s %s split", len(rows), len(by_id), task.id, args.split)
    _withheld(task, args.split, paths, scores)
    return scores


def build_parser() -> argparse.ArgumentParser:
    ap = argparse.ArgumentParser(prog="python -m ftbench", description="FT-Bench tasks: list, evaluate, score.")
    sub = ap.add_subparsers(dest="command", required=True)

    p = sub.add_parser("list", help="tasks, metrics, where dev comes from, whether a search can start; "
                                    "with --data-root, local split sizes")
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
    p.add_argument("--partial", action="store_true",
                   help="score predictions that cover only part of the split (reports how many)")
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
