"""RDKit metrics for TOMG-Bench and oMeBench, matching the sources' scoring code.

TOMG-Bench: ``evaluate.py`` + ``utils/evaluation.py`` (``mol_prop``, ``calculate_similarity``) of
phenixace/S2-TOMG-Bench. oMeBench: ``scripts/utils_eval.py`` (``oMeS``) and ``evaluate_results`` in
``scripts/run.py`` of skylarkie/oMeBench. Descriptors, SMARTS and fingerprints are the same RDKit
calls, so values agree with the sources for the same RDKit version.
"""

from __future__ import annotations

import json
import re
from functools import lru_cache
from typing import Any

from rdkit import Chem, DataStructs, RDLogger
from rdkit.Chem import Descriptors
from rdkit.Chem.rdFingerprintGenerator import GetMorganGenerator

# RDKit prints a line per unparsable SMILES; model outputs are often unparsable, so silence it.
RDLogger.DisableLog("rdApp.*")

_MORGAN = GetMorganGenerator(radius=2, fpSize=2048)

ATOMIC_NUMBERS = {
    "carbon": 6, "oxygen": 8, "nitrogen": 7, "sulfur": 16, "fluorine": 9, "chlorine": 17,
    "bromine": 35, "iodine": 53, "phosphorus": 15, "boron": 5, "silicon": 14, "selenium": 34,
    "tellurium": 52, "arsenic": 33, "antimony": 51, "bismuth": 83, "polonium": 84,
}
# Group counts are numbers of SMARTS matches (TOMG's utils/evaluation.py); sulfide excludes the
# S-S matches that the disulfide pattern counts.
GROUP_SMARTS = {
    "benzene_ring": "[cR1]1[cR1][cR1][cR1][cR1][cR1]1",
    "hydroxyl": "[OX2H]",
    "anhydride": "[CX3](=[OX1])[OX2][CX3](=[OX1])",
    "aldehyde": "[CX3H1](=O)[#6]",
    "ketone": "[#6][CX3](=O)[#6]",
    "carboxyl": "[CX3](=O)[OX2H1]",
    "ester": "[#6][CX3](=O)[OX2H0][#6]",
    "amide": "[NX3][CX3](=[OX1])[#6]",
    "amine": "[NX3;H2,H1;!$(NC=O)]",
    "nitro": "[$([NX3](=O)=O),$([NX3+](=O)[O-])][!#8]",
    "halo": "[F,Cl,Br,I]",
    "thioether": "[SX2][CX4]",
    "nitrile": "[NX1]#[CX2]",
    "thiol": "[#16X2H]",
    "sulfide": "[#16X2H0]",
    "disulfide": "[#16X2H0][#16X2H0]",
    "sulfoxide": "[$([#16X3]=[OX1]),$([#16X3+][OX1-])]",
    "sulfone": "[$([#16X4](=[OX1])=[OX1]),$([#16X4+2]([OX1-])[OX1-])]",
    "borane": "[BX3]",
}
# MolCustom/FunctionalGroup checks these 18 columns (the CSV's thioether column is not checked).
FUNCTIONAL_GROUPS = (
    "benzene rings", "hydroxyl", "anhydride", "aldehyde", "ketone", "carboxyl", "ester", "amide",
    "amine", "nitro", "halo", "nitrile", "thiol", "sulfide", "disulfide", "sulfoxide", "sulfone", "borane",
)
BOND_TYPES = ("single", "double", "triple", "rotatable", "aromatic")
_BOND = {"single": Chem.BondType.SINGLE, "double": Chem.BondType.DOUBLE,
         "triple": Chem.BondType.TRIPLE, "aromatic": Chem.BondType.AROMATIC}
_PROPERTY = {"logp": Descriptors.MolLogP, "mr": Descriptors.MolMR, "qed": Descriptors.qed}


@lru_cache(maxsize=4096)
def _smarts(pattern: str):
    return Chem.MolFromSmarts(pattern)


def mol(smiles: Any):
    """RDKit Mol, or None when unparsable, not a string, or empty.

    The TOMG scorer reads predictions with pandas, which turns an empty field into NaN, which
    RDKit rejects; so an empty output is invalid here too (RDKit alone would accept "").
    """
    if not isinstance(smiles, str) or not smiles.strip():
        return None
    try:
        return Chem.MolFromSmiles(smiles)
    except Exception:
        return None


def group_count(m, group: str) -> int:
    """Number of matches of a named functional group (``benzene ring`` = ``benzene_ring``)."""
    group = group.replace(" ", "_")
    if group == "benzene_rings":
        group = "benzene_ring"
    n = len(m.GetSubstructMatches(_smarts(GROUP_SMARTS[group])))
    if group == "sulfide":
        n -= len(m.GetSubstructMatches(_smarts(GROUP_SMARTS["disulfide"])))
    return n


def atom_count(m, element: str) -> int:
    return sum(a.GetAtomicNum() == ATOMIC_NUMBERS[element] for a in m.GetAtoms())


def bond_count(m, kind: str) -> int:
    if kind == "rotatable":
        return Descriptors.NumRotatableBonds(m)
    return sum(b.GetBondType() == _BOND[kind] for b in m.GetBonds())


def property_value(m, prop: str) -> float:
    """logP (Crippen), MR (molar refractivity) or QED, as TOMG's MolOpt compares them."""
    return _PROPERTY[prop.lower()](m)


@lru_cache(maxsize=1 << 16)
def tanimoto(smiles_a: str, smiles_b: str) -> float:
    """Morgan (r=2, 2048 bits) Tanimoto similarity; 0 when either SMILES is unparsable."""
    a, b = mol(smiles_a), mol(smiles_b)
    if a is None or b is None:
        return 0.0
    return DataStructs.TanimotoSimilarity(_MORGAN.GetFingerprint(a), _MORGAN.GetFingerprint(b))


def tomg_judge(subtask: str, reference: dict, smiles: str | None) -> tuple[bool, bool, float | None]:
    """``_tomg_judge`` cached by its inputs (a bootstrap rescores the same rows many times)."""
    return _tomg_judge(subtask, json.dumps(reference, sort_keys=True, default=str), smiles)


@lru_cache(maxsize=1 << 16)
def _tomg_judge(subtask: str, reference_json: str, smiles: str | None) -> tuple[bool, bool, float | None]:
    """(valid, success, similarity-to-source or None) of one TOMG-Bench output.

    MolCustom: every count must equal the target (AtomNum: 17 elements; FunctionalGroup: 18
    groups; BondNum: 5 bond kinds, a target of 0 is not checked). MolEdit: the named group's
    count goes up by one (add), down by one (delete), or both (substitute). MolOpt: the property
    moves strictly in the requested direction relative to the source molecule.
    """
    reference = json.loads(reference_json)
    m = mol(smiles)
    if m is None:
        return False, False, None
    if subtask == "AtomNum":
        return True, all(atom_count(m, e) == int(reference[e]) for e in ATOMIC_NUMBERS), None
    if subtask == "FunctionalGroup":
        return True, all(group_count(m, g) == int(reference[g]) for g in FUNCTIONAL_GROUPS), None
    if subtask == "BondNum":
        ok = all(int(reference[k]) == 0 or bond_count(m, k) == int(reference[k]) for k in BOND_TYPES)
        return True, ok, None
    src = mol(reference["molecule"])
    sim = tanimoto(reference["molecule"], smiles)
    if subtask in ("AddComponent", "DelComponent", "SubComponent"):
        ok = True
        if reference.get("added_group"):
            g = reference["added_group"]
            ok = ok and group_count(m, g) == group_count(src, g) + 1
        if reference.get("removed_group"):
            g = reference["removed_group"]
            ok = ok and group_count(m, g) == group_count(src, g) - 1
        return True, ok, sim
    if subtask in ("LogP", "MR", "QED"):
        new, old = property_value(m, reference["property"]), property_value(src, reference["property"])
        return True, (new < old) if reference["direction"] == "decrease" else (new > old), sim
    raise ValueError(f"unknown TOMG-Bench subtask {subtask!r}")


def tomg_extract_smiles(text: str) -> str:
    """The SMILES in a raw TOMG output, by the source's ``correct_text`` (``evaluate.py --correct``):
    the ``molecule`` of the first ``{...}`` JSON object if any, else the whole text; then the part
    after the last ``=>``/``->``; without JSON, one pair of enclosing brackets is removed. Any
    failure gives the string "None" (an invalid molecule), as in the source."""
    text = text if isinstance(text, str) else ""
    try:
        match = re.search(r"\{.*?\}", text, re.DOTALL)
        if match:
            blob = match.group().replace('""', '"')
            try:
                s = json.loads(blob).get("molecule", blob)
            except Exception:
                s = blob.split(":")[1].strip().strip("}").strip().strip('"').strip()
            for sep in ("=>", "->"):
                if sep in s:
                    s = s.split(sep)[-1].strip()
            return s.strip()
        s = text.replace("\n", " ").strip()
        for sep in ("=>", "->"):
            if sep in s:
                s = s.split(sep)[-1].strip()
        if len(s) >= 2 and s[0] == "[" and s[-1] == "]":
            s = s[1:-1]
        return s
    except Exception:
        return "None"


# ---------------------------------------------------------------- oMeBench
TAU = 0.60
NON_MATCH_PENALTY = 1e-6


@lru_cache(maxsize=1 << 16)
def canonical_smiles(smiles: str) -> str:
    """Canonical RDKit SMILES, "" when unparsable. Non-strings raise, as in the source, which
    makes the whole reaction score 0 there."""
    if not isinstance(smiles, str):
        raise TypeError(f"SMILES must be a string, got {type(smiles).__name__}")
    m = Chem.MolFromSmiles(smiles)
    return "" if m is None else Chem.MolToSmiles(m, canonical=True)


@lru_cache(maxsize=1 << 16)
def _sim(a: str, b: str) -> float:
    ma, mb = Chem.MolFromSmiles(a), Chem.MolFromSmiles(b)
    if ma is None or mb is None:
        return 0.0
    return DataStructs.TanimotoSimilarity(_MORGAN.GetFingerprint(ma), _MORGAN.GetFingerprint(mb))


def omes(gold: list[tuple[str, str, float]], pred: list[tuple[str, str]], tau: float = TAU) -> dict[str, float]:
    """oMeS of one reaction: weighted Needleman-Wunsch alignment of predicted to gold steps.

    gold: (subtype, intermediate_smiles, step_weight); pred: (subtype, intermediate_smiles).
    A diagonal move is a "match" when the subtypes are equal (scoring the step weight if the
    canonical SMILES are equal: S_total; weight x Tanimoto, zeroed below tau: S_partial), else a
    "type_mismatch". Ties are broken by (S_total, S_partial, move rank, -penalty) as in the
    source. V = valid predicted SMILES / M, L = matched steps / N; S and V, L rounded to 2 places.
    """
    n, m = len(gold), len(pred)
    rank = {"match": 3, "type_mismatch": 2, "skip_gold": 1, "skip_pred": 1}
    tot = [[0.0] * (m + 1) for _ in range(n + 1)]
    par = [[0.0] * (m + 1) for _ in range(n + 1)]
    pen = [[0.0] * (m + 1) for _ in range(n + 1)]
    trace: list[list[str | None]] = [[None] * (m + 1) for _ in range(n + 1)]
    for i in range(1, n + 1):
        pen[i][0], trace[i][0] = pen[i - 1][0] - NON_MATCH_PENALTY, "skip_gold"
    for j in range(1, m + 1):
        pen[0][j], trace[0][j] = pen[0][j - 1] - NON_MATCH_PENALTY, "skip_pred"
    gold_can = [canonical_smiles(s) for _, s, _ in gold]
    pred_can = [canonical_smiles(s) for _, s in pred]
    for i in range(1, n + 1):
        g_type, g_smi, w = gold[i - 1]
        for j in range(1, m + 1):
            p_type, p_smi = pred[j - 1]
            if g_type == p_type:
                g_can, p_can = gold_can[i - 1], pred_can[j - 1]
                m_tot = w if (g_can == p_can and g_can) else 0.0
                sim = _sim(g_smi, p_smi) if (g_can and p_can) else 0.0
                m_par = w * (0.0 if sim < tau else sim) if (g_can and p_can) else 0.0
                diag = (m_tot, m_par, 0.0, "match")
            else:
                diag = (0.0, 0.0, -NON_MATCH_PENALTY, "type_mismatch")
            cands = [
                (tot[i - 1][j], par[i - 1][j], pen[i - 1][j] - NON_MATCH_PENALTY, rank["skip_gold"], "skip_gold"),
                (tot[i][j - 1], par[i][j - 1], pen[i][j - 1] - NON_MATCH_PENALTY, rank["skip_pred"], "skip_pred"),
                (tot[i - 1][j - 1] + diag[0], par[i - 1][j - 1] + diag[1], pen[i - 1][j - 1] + diag[2],
                 rank[diag[3]], diag[3]),
            ]
            best = max(cands, key=lambda c: (c[0], c[1], c[3], c[2]))
            tot[i][j], par[i][j], pen[i][j], _, trace[i][j] = best
    matched, i, j = 0, n, m
    while i > 0 or j > 0:
        act = "skip_pred" if i == 0 else "skip_gold" if j == 0 else trace[i][j]
        if act in ("match", "type_mismatch"):
            matched += act == "match"
            i, j = i - 1, j - 1
        elif act == "skip_gold":
            i -= 1
        else:
            j -= 1
    valid = sum(1 for c in pred_can if c) / max(1, m)
    return {
        "S_total": round(round(tot[n][m], 2), 2),
        "S_partial": round(round(par[n][m], 2), 2),
        "V": round(valid, 2),
        "L": round(matched / max(1, n), 2),
    }


def omebench_parse(text: str) -> list | None:
    """The predicted mechanism (a list of steps) as oMeBench's ``scripts/run.py`` reads a chat
    model's output: the part inside ``[ANSWER]...[/ANSWER]`` (or after ``[ANSWER]``), code fences
    stripped, the part after ``is :``, then ``json.loads``; a dict yields its ``mechanism``.
    None when that is not a list (the source scores it 0)."""
    raw = text if isinstance(text, str) else ""
    try:
        if "[ANSWER]" in raw:
            raw = raw.split("[ANSWER]")[1]
            raw = raw.split("[/ANSWER]")[0].strip() if "[/ANSWER]" in raw else raw.strip()
        if raw.startswith("```"):
            raw = raw.strip("`").replace("json\n", "").replace("JSON\n", "").strip()
        if "is :" in raw:
            raw = raw.split("is :")[1].strip()
        parsed = json.loads(raw)
    except Exception:
        return None
    if isinstance(parsed, dict):
        parsed = parsed.get("mechanism", parsed)
    return parsed if isinstance(parsed, list) else None


def omes_reaction(pred_steps: list | None, gold_steps: list[dict]) -> dict[str, float]:
    """oMeS of one reaction from the parsed prediction; 0 on everything when it is missing,
    not a list, or malformed (a step without ``subtype``/``intermediate_smiles``, a non-string
    SMILES), as ``evaluate_results`` does."""
    zero = {"S_total": 0.0, "S_partial": 0.0, "V": 0.0, "L": 0.0}
    if not isinstance(pred_steps, list):
        return zero
    try:
        pred = [(s["subtype"], s["intermediate_smiles"]) for s in pred_steps]
        gold = [(s["subtype"], s["intermediate_smiles"], s["step_weight"]) for s in gold_steps]
        return omes(gold, pred)
    except Exception:
        return zero
