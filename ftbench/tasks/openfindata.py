"""OpenFinData: Chinese financial exam questions from real business scenarios; accuracy.

Source: open-compass/OpenFinData (East Money & Shanghai AI Lab). The repo is Apache-2.0, but its
README says the data is "for academic research only; do not use it for model training": use it to
evaluate, not to fine-tune. Test only (no train, no dev): dev is 50 items carved from test by a
hash of the id and left out of every test score. The data ships as the GitHub release
asset ``openfindata_release.zip``: one JSON list per subset (``<subset>.json``, records with
``question``, ``A``..``E`` and ``answer``). No Hugging Face copy with a confirmed id is known, so
the task has no hub source; unzip the release and pass the folder (``paths={"data_dir": ...}``).

Scoring follows OpenCompass (``configs/datasets/OpenFinData/OpenFinData_gen_46dedb.py`` and
``opencompass/datasets/OpenFinData.py``) for the 9 objective subsets it scores: multiple-choice
subsets (3, 4 or 5 options) take the last capital letter of the output
(``last_capital_postprocess``) and compare it exactly with the answer; entity_recognition counts
a hit when every ``、``-separated gold entity occurs in the output. The prompt is OpenCompass's:
``{question}\\nA. ..\\nB. ..\\n答案: ``. Primary ``accuracy``: the unweighted mean of the subset
accuracies present (OpenCompass's naive average); ``accuracy_<subset>`` beside it.
"""

from __future__ import annotations

from pathlib import Path

from ftbench.datafiles import read_json_records
from ftbench.metrics import mean
from ftbench.task import Task

CHOICES = {
    "emotion_identification": "ABC", "entity_disambiguation": "ABC", "financial_facts": "ABC",
    "data_inspection": "ABCD", "financial_terminology": "ABCD", "metric_calculation": "ABCD",
    "value_extraction": "ABCD", "intent_understanding": "ABCDE", "entity_recognition": "",
}
SUBSETS = tuple(CHOICES)


def last_capital(text: str) -> str:
    """OpenCompass ``last_capital_postprocess``: the last upper-case character, or ""."""
    for ch in reversed(text if isinstance(text, str) else ""):
        if ch.isupper():
            return ch
    return ""


def parse(text: str, row: dict | None = None) -> str:
    if (row or {}).get("subset") == "entity_recognition":
        return text if isinstance(text, str) else ""
    return last_capital(text)


def correct(pred: str, row: dict) -> bool:
    if row["subset"] == "entity_recognition":
        return all(item in pred for item in str(row["reference"]).split("、"))
    return pred == str(row["reference"])


def score(generations: list[str], rows: list[dict]) -> dict[str, float]:
    per: dict[str, list[bool]] = {}
    for g, r in zip(generations, rows):
        per.setdefault(r["subset"], []).append(correct(parse(g, r), r))
    out = {f"accuracy_{s}": mean(v) for s, v in sorted(per.items())}
    out["accuracy"] = mean(mean(v) for v in per.values())
    return out


def build_prompt(row: dict, subset: str) -> str:
    options = "".join(f"\n{k}. {row[k]}" for k in CHOICES[subset])
    return f"{row['question']}{options}\n答案: "


def read_folder(folder: Path, split: str) -> list[dict] | None:
    """Rows of the release folder (or a folder holding ``openfindata_release/``), test only."""
    if split != "test":
        return None
    if (folder / "openfindata_release").is_dir():
        folder = folder / "openfindata_release"
    rows = []
    for subset in SUBSETS:
        f = folder / f"{subset}.json"
        if f.exists():
            rows += [{**r, "id": f"{subset}/{i}", "subset": subset} for i, r in enumerate(read_json_records(f))]
    return rows or None


def normalize(row: dict) -> dict:
    if "prompt" in row and "reference" in row and "subset" in row:
        return row
    subset = row["subset"]
    if subset not in CHOICES:
        raise ValueError(f"unknown OpenFinData subset {subset!r}")
    return {"id": row["id"], "subset": subset, "prompt": build_prompt(row, subset), "reference": str(row["answer"])}


OPENFINDATA = Task(
    id="openfindata",
    name="OpenFinData Chinese financial evaluation",
    description=(
        "Answer Chinese financial questions drawn from real business scenarios: identify sentiment, "
        "disambiguate and recognise financial entities, recall financial facts and terminology, check "
        "and extract values from tables, compute financial metrics, and understand customer intent. "
        "For multiple-choice questions answer with the option letter; for entity recognition list the "
        "entities separated by '、'. Metric: accuracy averaged over the 9 subsets."
    ),
    metric="accuracy",
    prompt_template="{prompt}",
    completion_template="{reference}",
    input_columns=("prompt", "reference", "subset"),
    parse=parse,
    score=score,
    max_new_tokens=64,
    hub=None,
    normalize=normalize,
    read_folder=read_folder,
    source_splits=("test",),
    dev_from_test=50,  # 1,500 items: 50 dev rows, hash-spread over the subsets
    source="open-compass/OpenFinData release openfindata_release.zip; scoring OpenCompass OpenFinData_gen_46dedb",
    licence="Apache-2.0 repo; data for academic research only, not for model training",
)
