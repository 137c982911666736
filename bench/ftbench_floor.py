"""Floor scores of a model on FT-Bench: evaluate it on each task with local data, one table.

For each task found under ``--data-root`` (one folder per task, as in the shared FT-Bench data)
the model is scored on the dev split, or, where the source has no dev split, on a fixed
200-example slice of test (the 200 examples whose ids rank first by SHA-256, so the slice does
not depend on file order). Prints task, split, n, metric, score and wall time per task.

    python bench/ftbench_floor.py --model path/to/hf-model --data-root ../shared/ftbench-data [--limit 4]
"""

from __future__ import annotations

import argparse
import hashlib
import logging
import sys
import time
from dataclasses import replace
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from ftbench.evaluate import evaluate, load_model  # noqa: E402
from ftbench.task import Task, TaskDataError, load_split  # noqa: E402
from ftbench.tasks import LOCAL_TASKS, get_task  # noqa: E402

log = logging.getLogger("ftbench_floor")
TEST_SLICE = 200


def floor_rows(task: Task, folder: Path) -> tuple[str, list[dict]]:
    """(split name, rows): dev when the source has one (or carves it), else the fixed test slice."""
    paths = {"data_dir": str(folder)}
    try:
        return "dev", load_split(task, "dev", paths)
    except TaskDataError:
        test = load_split(task, "test", paths)
        rank = lambda r: hashlib.sha256(f"{task.id}|floor|{r['id']}".encode()).hexdigest()  # noqa: E731
        return f"test[{TEST_SLICE}]", sorted(test, key=rank)[:TEST_SLICE]


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--model", required=True, help="Hugging Face model folder or hub id")
    ap.add_argument("--adapter", help="optional LoRA adapter folder")
    ap.add_argument("--data-root", required=True, help="folder with one sub-folder per task")
    ap.add_argument("--tasks", nargs="+", default=list(LOCAL_TASKS), help="task ids (default: the 7 local tasks)")
    ap.add_argument("--limit", type=int, help="first N examples of each split only")
    ap.add_argument("--batch-size", type=int, default=16)
    ap.add_argument("--max-new-tokens", type=int, help="override every task's generation budget")
    ap.add_argument("--out-dir", help="write <task>.jsonl predictions here")
    args = ap.parse_args(argv)
    logging.basicConfig(level=logging.INFO, stream=sys.stderr, format="%(asctime)s %(levelname)s %(message)s")

    try:
        tasks = [get_task(t) for t in args.tasks]
    except KeyError as e:
        print(f"error: {e.args[0]}", file=sys.stderr)
        return 2
    root = Path(args.data_root)
    if not root.is_dir():
        print(f"error: data root not found: {root}", file=sys.stderr)
        return 2
    model, tok = load_model(args.model, args.adapter)
    table = []
    for task in tasks:
        folder = root / task.id
        if not folder.is_dir():
            log.warning("skipping %s: no folder %s", task.id, folder)
            continue
        split, rows = floor_rows(task, folder)
        rows = rows[: args.limit] if args.limit else rows
        if args.max_new_tokens:
            task = replace(task, max_new_tokens=args.max_new_tokens)
        log.info("%s: %d %s examples", task.id, len(rows), split)
        t0 = time.time()
        out = Path(args.out_dir) / f"{task.id}.jsonl" if args.out_dir else None
        scores = evaluate(task, model, tok, rows, batch_size=args.batch_size, predictions_path=out)
        table.append((task.id, split, len(rows), task.metric, scores[task.metric], time.time() - t0))
    header = f"{'task':<12} {'split':<10} {'n':>5} {'metric':<13} {'score':>8} {'wall_s':>8}"
    print(header)
    print("-" * len(header))
    for tid, split, n, metric, value, wall in table:
        print(f"{tid:<12} {split:<10} {n:>5} {metric:<13} {value:>8.4f} {wall:>8.1f}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
