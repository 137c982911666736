"""ACI-Bench: write the full clinical visit note from a doctor-patient dialogue; ROUGE-1.

Source: wyim/aci-bench (Yim et al., Nature Scientific Data 2023), CC BY 4.0. Splits: train 67,
valid 20 (our dev), and the three test sets (MEDIQA-CHAT B, MEDIQA-CHAT C, MEDIQA-SUM C) together
as test (120). Scoring follows ``evaluation/evaluate_fullnote.py``: Hugging Face
``evaluate.load('rouge').compute(references, predictions, use_aggregator=False)`` (rouge_score,
default options: no stemmer) and the mean per-note ``rouge1`` F; rouge2/rougeL/rougeLsum are
reported beside it. The script's BERTScore, BLEURT, UMLS F1 and per-section scores need models
or a section tagger and are not computed.

Hub: the authors publish the data on GitHub only; ``mkieffer/ACI-Bench`` is a community copy
(CC BY 4.0). Its split names and columns (``dialogue``, ``note``, ``encounter_id``, ``dataset``,
as in the source CSVs) were not verified from here, so treat that mapping as unsure and prefer a
local folder (``paths={"data_dir": ...}``) with train/dev/test.jsonl in this package's schema.
"""

from __future__ import annotations

from ftbench.metrics import ROUGE_TYPES, mean, rouge_per_example
from ftbench.task import HubSource, Task


def parse(text: str, row: dict | None = None) -> str:
    """The note is the whole generation, stripped; non-text becomes ""."""
    return text.strip() if isinstance(text, str) else ""


def score(generations: list[str], rows: list[dict]) -> dict[str, float]:
    per = rouge_per_example([parse(g) for g in generations], [str(r["reference"]) for r in rows])
    return {k: mean(per[k]) for k in ROUGE_TYPES}


def normalize(row: dict) -> dict:
    """Accept the source CSV columns (dialogue, note) as well as this package's schema."""
    if "input" in row and "reference" in row:
        return row
    out = dict(row)
    out["input"] = row["dialogue"]
    out["reference"] = row["note"]
    if row.get("encounter_id"):
        out["id"] = str(row["encounter_id"])
    return out


ACI_BENCH = Task(
    id="aci_bench",
    name="ACI-Bench clinical note generation",
    description=(
        "Given the transcript of a doctor-patient visit (turns tagged [doctor] and [patient]), write "
        "the complete clinical visit note: chief complaint, history of present illness, review of "
        "systems, physical exam, results, and assessment and plan, in the style of a physician's note. "
        "Metric: ROUGE-1 F against the physician's note, averaged over visits."
    ),
    metric="rouge1",
    prompt_template=(
        "Write the clinical note for the following doctor-patient visit. Include the chief complaint, "
        "history of present illness, review of systems, physical examination, results, and assessment "
        "and plan.\n\nDialogue:\n{input}\n\nClinical note:"
    ),
    completion_template="{reference}",
    input_columns=("input", "reference"),
    parse=parse,
    score=score,
    max_new_tokens=1536,  # notes average ~650 tokens, the longest ~1,300
    hub=HubSource(
        repo_id="mkieffer/ACI-Bench",
        splits={"train": "train", "dev": "validation", "test": "test"},
        columns={},
    ),
    normalize=normalize,
    source_splits=("train", "dev", "test"),
    source="wyim/aci-bench data/challenge_data (train, valid, clinicalnlp_taskB_test1, clinicalnlp_taskC_test2, clef_taskC_test3)",
    licence="CC BY 4.0",
)
