"""LawBench: 20 Chinese legal tasks (memorisation, understanding, application); mean task score.

Source: open-compass/LawBench (Fei et al. 2023); the repo is Apache-2.0 and its data mixes
upstream sets whose own licences apply (FLK, JEC_QA, CAIL2018/2019/2021/2022, LAIC2021, AIStudio,
CrimeKgAssitant, LEVEN, LawGPT_zh). 20 tasks x 500 items, test only (no train: the search must
build its own training data). Dev is carved from test: the 10 items of each sub-task whose id
ranks first by a hash (200 with all 20 sub-tasks present), removed from test for good, so every
test score here is over the remaining items (8,800 of the shared 9,000-item copy). Prompts are
the zero-shot ``instruction + "\\n" + question`` that LawBench's prediction files show as
``origin_prompt``.

Scoring: each task by its ``evaluation/evaluation_functions`` scorer (``ftbench.metrics_lawbench``,
2-1 in ``ftbench.metrics_cherrant``), on the raw generation; the primary ``average`` is the
unweighted mean of the task scores over the tasks present (the leaderboard average / 100 when all
20 are there). Per-task scores are reported as ``task_<id>``. Deviations (cn2an; ChERRANT's
machine-dependent timeout) are listed in those modules.

Hub: no Hugging Face copy is known. Load a local folder: either this package's ``test.jsonl``
(id, task_id, prompt, instruction, reference) or a LawBench checkout's ``data/`` folder, whose
``zero_shot/<task>.json`` files (instruction, question, answer) are read directly.
"""

from __future__ import annotations

import json
from pathlib import Path

from ftbench.metrics_lawbench import SCORERS, lawbench_scores
from ftbench.task import Task, TaskDataError

TASK_IDS = tuple(SCORERS)


def parse(text: str, row: dict | None = None) -> str:
    """LawBench scorers read the raw generation themselves; the answer is the generation."""
    return text if isinstance(text, str) else ""


def score(generations: list[str], rows: list[dict]) -> dict[str, float]:
    return lawbench_scores(
        [parse(g) for g in generations],
        [str(r["reference"]) for r in rows],
        [r["prompt"] for r in rows],
        [r["task_id"] for r in rows],
    )


def read_folder(folder: Path, split: str) -> list[dict] | None:
    """Rows from a LawBench ``data/`` folder (``zero_shot/<task>.json``), test split only."""
    zs = folder / "zero_shot"
    if split != "test" or not zs.is_dir():
        return None
    rows = []
    for tid in TASK_IDS:
        f = zs / f"{tid}.json"
        if not f.exists():
            continue
        try:
            items = json.loads(f.read_text(encoding="utf-8"))
        except (UnicodeDecodeError, json.JSONDecodeError) as e:
            raise TaskDataError(f"{f}: not valid JSON ({e})") from None
        for i, it in enumerate(items):
            rows.append({"id": f"{tid}/{i}", "task_id": tid, "instruction": it["instruction"],
                         "prompt": it["instruction"] + "\n" + it["question"], "reference": it["answer"]})
    return rows or None


def normalize(row: dict) -> dict:
    if row.get("task_id") not in SCORERS:
        raise ValueError(f"row {row.get('id')}: unknown LawBench task id {row.get('task_id')!r}")
    return row


LAWBENCH = Task(
    id="lawbench",
    name="LawBench Chinese legal knowledge",
    description=(
        "Answer Chinese legal questions across 20 tasks: recite statute articles, answer judicial-exam "
        "multiple-choice questions, proofread legal documents, classify disputes and consultations, "
        "extract entities and events, summarise news, predict the applicable articles, charges and "
        "prison terms from case facts, compute crime amounts, and give legal advice, in Chinese, in "
        "the answer format each instruction asks for. Metric: the mean of the 20 task scores "
        "(accuracy, F1, F0.5, ROUGE-L or normalised log-distance, as LawBench defines each)."
    ),
    metric="average",
    prompt_template="{prompt}",
    completion_template="{reference}",
    input_columns=("prompt", "reference", "task_id"),
    parse=parse,
    score=score,
    max_new_tokens=512,  # 95% of answers are under 300 characters, the longest ~730
    hub=None,
    normalize=normalize,
    read_folder=read_folder,
    source_splits=("test",),
    dev_from_test=10,  # per sub-task: 200 dev rows, every sub-task in dev
    dev_strata="task_id",
    source="open-compass/LawBench data/zero_shot/*.json; scoring evaluation/evaluation_functions/*.py",
    licence="Apache-2.0 repo; upstream datasets' own licences apply",
)
