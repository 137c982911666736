"""oMeBench: write an organic reaction mechanism as a JSON list of steps; scored by oMeS.

Source: skylarkie/oMeBench, MIT. Test = oMe-Gold (196 expert-curated reactions with weighted
steps); train = oMe-Template (167 abstract mechanisms with R-groups; the paper's oMe-Silver
training set is built by instantiating them). 158 Template reaction ids also occur in Gold: a
Template is the abstracted form of the same named reaction, so named reactions overlap with test.
There is no dev split: dev is carved from train, never from test.

Prompt: the source's ``prompts/default.txt`` filled as ``scripts/run.py`` does (the data's
``prompt`` field, used verbatim). Parsing and scoring follow ``scripts/run.py``
(``evaluate_results``) and ``scripts/utils_eval.py`` (``oMeS``): see
``ftbench.metrics_chem.omebench_parse`` / ``omes``. Reported: ``S_total`` (primary, exact
canonical-SMILES matches weighted by gold step weights), ``S_partial`` (Tanimoto-weighted, zeroed
below 0.60), ``V`` (valid SMILES rate) and ``L`` (matched steps / gold steps), each averaged over
reactions; per-reaction values are rounded to 2 places first, as the source does. A chat model's
output is read the source's way for chat models (no regex search for a JSON list inside prose).

Hub: no Hugging Face copy is known; load a local folder in this package's schema
(``paths={"data_dir": ...}`` with train.jsonl/test.jsonl: id, prompt, reference = gold steps).
"""

from __future__ import annotations

import json

from ftbench.metrics import mean
from ftbench.metrics_chem import omebench_parse, omes_reaction
from ftbench.task import Task

STEP_KEYS = ("step", "type", "subtype", "intermediate_smiles")


def parse(text: str, row: dict | None = None) -> list | None:
    return omebench_parse(text)


def score(generations: list[str], rows: list[dict]) -> dict[str, float]:
    per = [omes_reaction(parse(g), r["reference"]) for g, r in zip(generations, rows)]
    out = {k: mean(p[k] for p in per) for k in ("S_total", "S_partial", "V", "L")}
    out["parse_rate"] = mean(parse(g) is not None for g in generations)
    return out


def normalize(row: dict) -> dict:
    """Add ``completion``: the gold mechanism as the JSON the prompt asks for (used as the
    training target; the Template's free-text rationales are left out)."""
    steps = [{k: s[k] for k in STEP_KEYS if k in s} for s in row["reference"]]
    return {**row, "completion": json.dumps(steps, ensure_ascii=False)}


OMEBENCH = Task(
    id="omebench",
    name="oMeBench organic reaction mechanisms",
    description=(
        "Given the reactants, products and conditions of an organic reaction (as SMILES), write its "
        "step-by-step mechanism as a JSON list; each step has a step number, a reaction type and "
        "subtype from a fixed list, and the SMILES of the intermediate formed. Metric: oMeS, the "
        "weighted alignment score of predicted to expert steps (exact intermediates: S_total; "
        "similarity-credited: S_partial)."
    ),
    metric="S_total",
    prompt_template="{prompt}",
    completion_template="{completion}",
    input_columns=("prompt", "reference"),
    parse=parse,
    score=score,
    max_new_tokens=1024,
    hub=None,
    dev_from_train=17,
    normalize=normalize,
    source_splits=("train", "test"),
    source="skylarkie/oMeBench data/oMe_Gold.json (test), data/oMe_Template.json (train), prompts/default.txt",
    licence="MIT",
)
