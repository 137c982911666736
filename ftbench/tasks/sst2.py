"""SST-2 (GLUE): binary sentiment of movie-review phrases, scored by accuracy.

Source: GLUE SST-2 (Socher et al., 2013; Wang et al., 2019). GLUE's test labels are hidden, so
the 872 GLUE dev sentences are the test split here (as for LLM evaluations generally) and the
search's dev split is carved from train.
"""

from __future__ import annotations

import re

from ftbench.metrics import accuracy
from ftbench.task import PACKAGE_DATA, HubSource, Task

LABELS = ("negative", "positive")
_WORD = re.compile(r"\b(positive|negative)\b")


def parse(text: str, row: dict | None = None) -> int | None:
    """The label of the first 'positive'/'negative' word in the generation, else None."""
    m = _WORD.search(text.lower())
    return None if m is None else LABELS.index(m.group(1))


def score(generations: list[str], rows: list[dict]) -> dict[str, float]:
    parsed = [parse(g) for g in generations]
    return {
        "accuracy": accuracy(parsed, [int(r["label"]) for r in rows]),
        "parse_rate": sum(p is not None for p in parsed) / max(len(parsed), 1),
    }


SST2 = Task(
    id="sst2",
    name="SST-2 binary sentiment",
    description=(
        "Classify the sentiment of a movie-review sentence as positive or negative. "
        "The model must answer with the single word 'positive' or 'negative'. Metric: accuracy."
    ),
    metric="accuracy",
    prompt_template=(
        "Classify the sentiment of this movie review as positive or negative.\n"
        "Review: {input}\nAnswer with one word."
    ),
    completion_template="{reference}",
    input_columns=("input", "label", "reference"),
    parse=parse,
    score=score,
    max_new_tokens=4,
    hub=HubSource(
        repo_id="nyu-mll/glue",
        config="sst2",
        splits={"train": "train", "test": "validation"},
        columns={"sentence": "input"},
    ),
    local_dir=PACKAGE_DATA / "sst2",
    dev_from_train=500,
    source_splits=("train", "test"),
    source="GLUE SST-2 (nyu-mll/glue, config sst2); packaged sample: 5,000 train rows + 872 GLUE dev",
    licence="no explicit licence (GLUE/SST); Hugging Face lists 'unknown'",
)
