"""EconLogicQA: put four economic events in their logical order; exact-order accuracy.

Source: Quan & Liu, EMNLP Findings 2024 (arXiv 2405.07938); data only on Hugging Face,
``yinzhu-quan/econ_logic_qa`` (650 questions: train 390 / val 130 / test 130; CSV columns
Question, A, B, C, D, Answer such as "D, A, C, B"), licence reported as CC BY-NC-SA 4.0. The
hub split for our dev is ``val`` as lm-evaluation-harness's ``econ_logic_qa`` task names it
(unsure whether the hub also exposes it as ``validation``). A local copy is a folder with
``train``/``val`` (or ``dev``)/``test`` files in .csv, .jsonl or .parquet.

The paper released no scoring code; its metric is accuracy of the exact 4-event order after
extracting the letter sequence with a regular expression. ``extract_order`` follows
lm-evaluation-harness ``lm_eval/tasks/econ_logic_qa/utils.py`` (prefer what follows the last
"answer/order/sequence" marker; separated runs like "D, A, C, B" or "D -> A -> C -> B", then
tight "DACB", then the first window of four standalone capitals forming a permutation), which
also gives ``pairwise_accuracy`` (share of the 6 event pairs in the right relative order).
"""

from __future__ import annotations

import re
from itertools import combinations
from pathlib import Path

from ftbench.datafiles import local_file, read_local
from ftbench.metrics import mean
from ftbench.task import HubSource, Task

LETTERS = ("A", "B", "C", "D")
_SEP = r"\s*(?:,|;|->|-->|→|>|\||\band\b|\bthen\b)?\s*"
_RUN_SEPARATED = re.compile(rf"(?<![A-Za-z])[ABCD](?:{_SEP}(?<![A-Za-z])[ABCD](?![A-Za-z])){{3}}", re.IGNORECASE)
_RUN_TIGHT = re.compile(r"(?<![A-Za-z])[ABCD]{4}(?![A-Za-z])")
_STANDALONE = re.compile(r"(?<![A-Za-z])([ABCD])(?![A-Za-z])")
_MARKER = re.compile(r"(?i)\b(?:answer|order|sequence|ordering)\b\s*(?:is)?\s*[:\-–]?\s*")


def _is_perm(letters: list[str]) -> bool:
    return sorted(letters) == list(LETTERS)


def gold_order(answer: str) -> list[str]:
    letters = re.findall(r"[ABCD]", str(answer).upper())
    return letters if _is_perm(letters) else []


def extract_order(text: str) -> list[str]:
    """The predicted permutation of A-D, or [] when there is none."""
    if not isinstance(text, str) or not text:
        return []
    markers = list(_MARKER.finditer(text))
    for segment in ([text[markers[-1].end():], text] if markers else [text]):
        for pattern in (_RUN_SEPARATED, _RUN_TIGHT):
            for m in pattern.finditer(segment):
                letters = re.findall(r"[ABCD]", m.group(0).upper())
                if _is_perm(letters):
                    return letters
        caps = _STANDALONE.findall(segment)
        for i in range(len(caps) - 3):
            if _is_perm(caps[i : i + 4]):
                return caps[i : i + 4]
    return []


def pairwise_accuracy(pred: list[str], gold: list[str]) -> float:
    if not _is_perm(pred) or not _is_perm(gold):
        return 0.0
    rank = {x: i for i, x in enumerate(pred)}
    pairs = list(combinations(gold, 2))
    return sum(rank[a] < rank[b] for a, b in pairs) / len(pairs)


def parse(text: str, row: dict | None = None) -> str | None:
    """The predicted order written like the gold ("D, A, C, B"), or None."""
    order = extract_order(text)
    return ", ".join(order) if order else None


def score(generations: list[str], rows: list[dict]) -> dict[str, float]:
    preds = [extract_order(g) for g in generations]
    golds = [gold_order(r["reference"]) for r in rows]
    return {
        "accuracy": mean(bool(p) and p == g for p, g in zip(preds, golds)),
        "pairwise_accuracy": mean(pairwise_accuracy(p, g) for p, g in zip(preds, golds)),
        "parse_rate": mean(bool(p) for p in preds),
    }


def build_prompt(row: dict) -> str:
    options = "\n".join(f"{k}. {row[k]}" for k in LETTERS)
    return (f"Question: {row['Question']}\n{options}\n"
            "Give the logical order of the four events as letters, for example \"D, A, C, B\".\nAnswer:")


def normalize(row: dict) -> dict:
    if "prompt" in row and "reference" in row:
        return row
    return {"id": row["id"], "question": row["Question"], **{k: row[k] for k in LETTERS},
            "prompt": build_prompt(row), "reference": str(row["Answer"]).strip()}


def read_folder(folder: Path, split: str) -> list[dict] | None:
    """The hub's ``val`` split file stands for our dev split."""
    if split != "dev":
        return None
    for name in ("val", "validation"):
        f = local_file(folder, name)
        if f is not None:
            return read_local(f)
    return None


ECONLOGICQA = Task(
    id="econlogicqa",
    name="EconLogicQA economic event sequencing",
    description=(
        "Given a short economic or business scenario and four events labelled A-D, order the events "
        "by their logical (causal and temporal) sequence and answer with the four letters in order, "
        "such as 'D, A, C, B'. Metric: accuracy of the exact order."
    ),
    metric="accuracy",
    prompt_template="{prompt}",
    completion_template="{reference}",
    input_columns=("prompt", "reference"),
    parse=parse,
    score=score,
    max_new_tokens=32,
    hub=HubSource(repo_id="yinzhu-quan/econ_logic_qa", splits={"train": "train", "dev": "val", "test": "test"}),
    normalize=normalize,
    read_folder=read_folder,
    source_splits=("train", "dev", "test"),
    source="Hugging Face yinzhu-quan/econ_logic_qa; extraction as lm-evaluation-harness econ_logic_qa",
    licence="CC BY-NC-SA 4.0 (as reported)",
)
