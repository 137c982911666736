"""HoC (Hallmarks of Cancer): assign the cancer hallmarks an abstract discusses; label-wise macro-F1.

Source: the document-level BLUE split (train 1,108 / dev 157 / test 315) of the HoC corpus
(Baker et al. 2016, sb895/Hallmarks-of-Cancer, GPL-3.0), as used by the BioNLP LLM benchmark of
Chen et al. (qingyu-qc/gpt_bionlp_benchmark, Nature Communications 2025), which reports
label-wise macro-F1: F1 per hallmark over the test documents, then the unweighted mean over the
10 hallmarks (sklearn ``f1_score(average='macro')`` on the documents x 10 indicator matrix).
Also reported: BLUE's example-based F1 (``blue/eval_hoc.py``: per-document precision and recall
averaged, then their harmonic mean). The benchmark repo has no prompt for HoC; the one below is
ours. A generation that names no hallmark predicts the empty set (a false negative for every
gold label, and precision 0 in the example-based score).

Hub: ``bigbio/hallmarks_of_cancer`` holds the BLURB split (1,295/186/371), a different split, so
it is not used; load a local folder (``paths={"data_dir": ...}``).
"""

from __future__ import annotations

from ftbench.metrics import example_based_f1, labelwise_macro_f1, mean
from ftbench.task import Task

LABELS = (
    "activating invasion and metastasis", "avoiding immune destruction", "cellular energetics",
    "enabling replicative immortality", "evading growth suppressors", "genomic instability and mutation",
    "inducing angiogenesis", "resisting cell death", "sustaining proliferative signaling",
    "tumor promoting inflammation",
)


def parse(text: str, row: dict | None = None) -> list[str]:
    """The hallmark names that occur in the generation (case-insensitive), sorted."""
    low = text.lower() if isinstance(text, str) else ""
    return sorted(label for label in LABELS if label in low)


def score(generations: list[str], rows: list[dict]) -> dict[str, float]:
    pred = [parse(g) for g in generations]
    gold = [list(r["labels"]) for r in rows]
    ex = example_based_f1(pred, gold)
    return {
        "macro_f1": labelwise_macro_f1(pred, gold, LABELS),
        "example_f1": ex["f1"],
        "example_precision": ex["precision"],
        "example_recall": ex["recall"],
        "empty_rate": mean(not p for p in pred),
    }


def normalize(row: dict) -> dict:
    """Accept a ``;``-separated label string when ``labels`` is missing (the source TSV form)."""
    if "labels" in row and isinstance(row["labels"], list):
        return row
    labels = sorted(x.strip() for x in str(row.get("labels") or row["reference"]).split(";") if x.strip())
    return {**row, "labels": labels, "reference": row.get("reference") or ";".join(labels)}


HOC = Task(
    id="hoc",
    name="Hallmarks of Cancer multi-label classification",
    description=(
        "Read a biomedical abstract and list which of the 10 hallmarks of cancer it discusses "
        "(activating invasion and metastasis; avoiding immune destruction; cellular energetics; "
        "enabling replicative immortality; evading growth suppressors; genomic instability and "
        "mutation; inducing angiogenesis; resisting cell death; sustaining proliferative signaling; "
        "tumor promoting inflammation). An abstract can have several. Answer with the hallmark names "
        "separated by semicolons. Metric: label-wise macro-F1."
    ),
    metric="macro_f1",
    prompt_template=(
        "Which hallmarks of cancer does this abstract discuss? Choose one or more of: "
        + "; ".join(LABELS)
        + ".\nAnswer with the hallmark names separated by semicolons.\n\nAbstract: {input}"
    ),
    completion_template="{reference}",
    input_columns=("input", "labels", "reference"),
    parse=parse,
    score=score,
    max_new_tokens=48,
    hub=None,
    normalize=normalize,
    source_splits=("train", "dev", "test"),
    source="qingyu-qc/gpt_bionlp_benchmark Benchmarks/Hoc/datasets/full_set (BLUE split of sb895/Hallmarks-of-Cancer)",
    licence="GPL-3.0 (HoC corpus)",
)
