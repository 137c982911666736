"""TOMG-Bench (S²-Bench): open-domain molecule generation, editing and optimisation as SMILES.

Source: phenixace/TOMG-Bench and its maintained successor phenixace/S2-TOMG-Bench (Li et al.,
arXiv 2412.14642); no licence is stated in either repo (check the Hugging Face card before
redistributing). 9 subtasks: MolCustom {AtomNum, FunctionalGroup, BondNum}, MolEdit
{AddComponent, DelComponent, SubComponent}, MolOpt {LogP, MR, QED}. Training data: OpenMolIns.

Scoring follows S2-TOMG-Bench ``evaluate.py`` (see ``ftbench.metrics_chem.tomg_judge``), applied
after the source's ``--correct`` extraction of the SMILES from raw output. Per subtask it reports
the success rate (MolCustom "accuracy"), validity and, for MolEdit/MolOpt, the mean Morgan
Tanimoto similarity of valid outputs to the source molecule. Headline numbers are unweighted
means over the subtasks present: ``success_rate`` (primary; the leaderboard's mean SR) and
``validity`` (the TREX paper's "validation score" may mean either, so both are reported). The
leaderboard's weighted WSR and novelty (which needs ZINC250k) are not computed.

Hub: test = the 9 configs (``MolCustom_AtomNum`` ...) of ``phenixace/S2-TOMG-Bench-mini``
(500 per subtask; the full 5,000-per-subtask set is ``phenixace/S2-TOMG-Bench``); train =
``phenixace/OpenMolIns-small`` (columns SubTask, Instruction, molecule). These ids come from the
S2-TOMG-Bench code; their exact column names were not verified from here. There is no dev split:
dev is carved from train, and since OpenMolIns rows carry only an instruction and one target
SMILES, their constraints are read back from the instruction (``constraints_from_instruction``)
so dev is judged like test; rows whose constraints cannot be read are reported as
``n_unscorable`` and left out of the means.
"""

from __future__ import annotations

import re
from functools import lru_cache

from ftbench.metrics import mean
from ftbench.metrics_chem import ATOMIC_NUMBERS, BOND_TYPES, FUNCTIONAL_GROUPS, GROUP_SMARTS, tomg_extract_smiles, tomg_judge
from ftbench.task import HubSource, Task

SUBTASKS = {
    "AtomNum": "MolCustom", "FunctionalGroup": "MolCustom", "BondNum": "MolCustom",
    "AddComponent": "MolEdit", "DelComponent": "MolEdit", "SubComponent": "MolEdit",
    "LogP": "MolOpt", "MR": "MolOpt", "QED": "MolOpt",
}
TEST_REPO, TRAIN_REPO = "phenixace/S2-TOMG-Bench-mini", "phenixace/OpenMolIns-small"
_PROPERTY = {"LogP": "logP", "MR": "MR", "QED": "QED"}


def parse(text: str, row: dict | None = None) -> str:
    """The SMILES the scorer will judge (source's ``correct_text``)."""
    return tomg_extract_smiles(text)


def score(generations: list[str], rows: list[dict]) -> dict[str, float]:
    per: dict[str, dict[str, list]] = {}
    unscorable = 0
    for g, r in zip(generations, rows):
        ref = r["reference"]
        constraints = ref if isinstance(ref, dict) else constraints_from_instruction(r["subtask"], r["prompt"], ref)
        if constraints is None:  # a training row whose instruction could not be read
            unscorable += 1
            continue
        valid, ok, sim = tomg_judge(r["subtask"], constraints, parse(g))
        d = per.setdefault(r["subtask"], {"valid": [], "ok": [], "sim": []})
        d["valid"].append(valid)
        d["ok"].append(ok)
        if sim is not None:
            d["sim"].append(sim)
    out: dict[str, float] = {}
    for sub in sorted(per, key=list(SUBTASKS).index):
        d = per[sub]
        out[f"success_rate_{sub}"] = mean(d["ok"])
        out[f"validity_{sub}"] = mean(d["valid"])
        if SUBTASKS[sub] != "MolCustom":
            out[f"similarity_{sub}"] = mean(d["sim"])
    out["success_rate"] = mean(out[f"success_rate_{s}"] for s in per)
    out["validity"] = mean(out[f"validity_{s}"] for s in per)
    if unscorable:
        out["n_unscorable"] = float(unscorable)
    return out


def _reference(subtask: str, row: dict) -> dict:
    if subtask == "AtomNum":
        return {k: int(row[k]) for k in ATOMIC_NUMBERS}
    if subtask == "FunctionalGroup":
        return {k: int(row[k]) for k in FUNCTIONAL_GROUPS}
    if subtask == "BondNum":
        return {k: int(row[k]) for k in BOND_TYPES}
    ref = {"molecule": row["molecule"]}
    if SUBTASKS[subtask] == "MolEdit":
        for k in ("added_group", "removed_group"):
            if row.get(k):
                ref[k] = row[k]
        return ref
    instruction = row["Instruction"]
    ref["property"] = _PROPERTY[subtask]
    # the scorer's rule, verbatim: "lower" or "decrease" anywhere in the instruction
    ref["direction"] = "decrease" if ("lower" in instruction or "decrease" in instruction) else "increase"
    return ref


_GROUP_NAMES = sorted({g.replace("_", " ") for g in GROUP_SMARTS} | {"benzene rings"}, key=len, reverse=True)
_NUM = r"(\d+)\s+"


def _molecule_in(text: str) -> str | None:
    m = re.search(r"molecule (\S+)", text)
    return m.group(1).rstrip(".,") if m else None


@lru_cache(maxsize=65536)
def constraints_from_instruction(subtask: str, instruction: str, target: str) -> dict | None:
    """The benchmark-style constraints of an OpenMolIns training row, read from its instruction,
    so that dev rows carved from train are judged like test rows (computed when scored, not at
    load time: 18,000 RDKit checks would slow every load). Kept only when the row's own
    target molecule satisfies them: that rejects both misreadings and the rows whose instruction
    and target disagree (OpenMolIns has some, e.g. a SMILES where the group name should be)."""
    low = instruction.lower()
    ref: dict | None
    if subtask == "AtomNum":
        found = dict((name, int(n)) for n, name in re.findall(_NUM + r"([a-z]+) atoms?", low))
        ref = {e: found.pop(e, 0) for e in ATOMIC_NUMBERS} if found else None
        ref = None if found else ref  # an element name the scorer does not know
    elif subtask == "FunctionalGroup":
        found = {}
        for n, name in re.findall(_NUM + r"([a-z][a-z ]*?) groups?\b", low):
            name = "benzene rings" if name.startswith("benzene ring") else name
            found[name] = int(n)
        ref = {g: found.pop(g, 0) for g in FUNCTIONAL_GROUPS} if found else None
        ref = None if found else ref
    elif subtask == "BondNum":
        found = {name: int(n) for n, name in re.findall(_NUM + r"(single|double|triple|rotatable|aromatic) bonds?", low)}
        ref = {b: found.get(b, 0) for b in BOND_TYPES} if found else None
    else:
        molecule = _molecule_in(instruction)
        if molecule is None:
            return None
        rest = instruction.replace(molecule, " ")
        groups = [g for _, g in sorted((m.start(), g) for g in _GROUP_NAMES for m in re.finditer(rf"\b{g}\b", rest))]
        groups = [g for g in groups if not any(g in h and g != h for h in groups)]  # "benzene ring" in "benzene rings"
        if subtask == "AddComponent" and len(groups) == 1:
            ref = {"molecule": molecule, "added_group": groups[0]}
        elif subtask == "DelComponent" and len(groups) == 1:
            ref = {"molecule": molecule, "removed_group": groups[0]}
        elif subtask == "SubComponent" and len(groups) == 2 and groups[0] != groups[1]:
            ref = {"molecule": molecule, "removed_group": groups[0], "added_group": groups[1]}
        elif subtask in _PROPERTY:
            ref = _reference(subtask, {"molecule": molecule, "Instruction": instruction})
        else:
            ref = None
    if ref is None:
        return None
    try:
        return ref if tomg_judge(subtask, ref, target)[1] else None
    except Exception:  # an unparsable source molecule
        return None


def normalize(row: dict) -> dict:
    """Uniform rows pass through; raw hub/CSV rows (benchmark configs or OpenMolIns) are mapped."""
    if "prompt" in row and "reference" in row and "subtask" in row:
        return row
    if "SubTask" in row:  # OpenMolIns training row
        return {"id": row["id"], "subtask": row["SubTask"], "prompt": row["Instruction"], "reference": row["molecule"]}
    subtask = row["subtask"]
    return {"id": row["id"], "task": SUBTASKS[subtask], "subtask": subtask, "prompt": row["Instruction"],
            "reference": _reference(subtask, row)}


def hub_loader(split: str) -> list[dict]:
    """Test: the 9 benchmark configs concatenated, tagged with their subtask; train: OpenMolIns."""
    import datasets

    if split == "train":
        ds = datasets.load_dataset(TRAIN_REPO, split="train")
        return [{"id": f"openmolins/{i}", **r} for i, r in enumerate(ds.to_list())]
    if split != "test":
        return None  # type: ignore[return-value]  # no dev: carved from train
    rows = []
    for sub, group in SUBTASKS.items():
        ds = datasets.load_dataset(TEST_REPO, f"{group}_{sub}", split="test")
        rows += [{"id": f"{group}/{sub}/{i}", "subtask": sub, **r} for i, r in enumerate(ds.to_list())]
    return rows


TOMG_BENCH = Task(
    id="tomg_bench",
    name="TOMG-Bench open molecule generation",
    description=(
        "Generate molecules as SMILES strings from natural-language chemistry requests: build a "
        "molecule with given atom, bond or functional-group counts; add, remove or substitute a "
        "functional group in a given molecule; or modify a molecule to raise or lower its logP, "
        "molar refractivity or QED. Answer with the SMILES only. Metric: success rate (constraints "
        "satisfied, checked with RDKit), averaged over the 9 subtasks; validity is also reported."
    ),
    metric="success_rate",
    prompt_template="{prompt}",
    completion_template="{reference}",
    input_columns=("prompt", "reference", "subtask"),
    parse=parse,
    score=score,
    max_new_tokens=128,
    hub=HubSource(repo_id=TEST_REPO, splits={"test": "test"}),
    dev_from_train=450,
    normalize=normalize,
    hub_loader=hub_loader,
    source_splits=("train", "test"),
    source="phenixace/TOMG-Bench (data) + phenixace/S2-TOMG-Bench evaluate.py (scoring)",
    licence="not stated by the source repos",
)
