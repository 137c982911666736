"""TOMG-Bench and oMeBench scoring against cases worked out by hand from the source rules."""

from __future__ import annotations

import json

import pytest

from ftbench.metrics_chem import ATOMIC_NUMBERS, BOND_TYPES, FUNCTIONAL_GROUPS, omebench_parse, omes, omes_reaction, tomg_extract_smiles, tomg_judge
from ftbench.tasks import tomg_bench


def atoms(**counts):
    return {e: counts.get(e, 0) for e in ATOMIC_NUMBERS}


def groups(**counts):
    return {g: counts.get(g.replace(" ", "_"), 0) for g in FUNCTIONAL_GROUPS}


def bonds(**counts):
    return {b: counts.get(b, 0) for b in BOND_TYPES}


def test_atom_counts():
    assert tomg_judge("AtomNum", atoms(carbon=2, oxygen=1), "CCO") == (True, True, None)
    assert tomg_judge("AtomNum", atoms(carbon=2, oxygen=1), "CCN") == (True, False, None)
    assert tomg_judge("AtomNum", atoms(carbon=1, chlorine=3), "ClC(Cl)Cl")[1]


def test_functional_group_counts():
    assert tomg_judge("FunctionalGroup", groups(hydroxyl=2), "OCCO")[1]  # ethylene glycol: 2 OH, nothing else
    assert not tomg_judge("FunctionalGroup", groups(hydroxyl=2), "OCC=O")[1]  # 1 OH + an aldehyde
    assert tomg_judge("FunctionalGroup", groups(benzene_rings=1, halo=1), "Clc1ccccc1")[1]


def test_bond_counts_skip_zero_targets():
    # CC=CC#N: single 2, double 1, triple 1; a 0 target (rotatable, aromatic) is not checked
    assert tomg_judge("BondNum", bonds(single=2, double=1, triple=1), "CC=CC#N")[1]
    assert tomg_judge("BondNum", bonds(single=3, rotatable=1), "CCCC")[1]  # butane: 1 rotatable bond
    assert not tomg_judge("BondNum", bonds(single=3, rotatable=2), "CCCC")[1]
    assert tomg_judge("BondNum", bonds(aromatic=6), "c1ccccc1")[1]


def test_mol_edit_add_delete_substitute():
    ok, sim = lambda r: r[1], lambda r: r[2]
    assert ok(tomg_judge("AddComponent", {"molecule": "CCC", "added_group": "hydroxyl"}, "CCCO"))
    assert not ok(tomg_judge("AddComponent", {"molecule": "CCC", "added_group": "hydroxyl"}, "CCCOC"))
    assert ok(tomg_judge("AddComponent", {"molecule": "CC", "added_group": "benzene ring"}, "Cc1ccccc1"))
    assert ok(tomg_judge("DelComponent", {"molecule": "OCCO", "removed_group": "hydroxyl"}, "CCO"))
    assert not ok(tomg_judge("DelComponent", {"molecule": "OCCO", "removed_group": "hydroxyl"}, "CC"))  # 2 -> 0
    ref = {"molecule": "CCCl", "removed_group": "halo", "added_group": "hydroxyl"}
    assert ok(tomg_judge("SubComponent", ref, "CCO"))
    assert not ok(tomg_judge("SubComponent", ref, "CC"))  # halo removed but no OH added
    assert sim(tomg_judge("AddComponent", {"molecule": "CCO", "added_group": "halo"}, "OCC")) == pytest.approx(1.0)


def test_mol_opt_direction():
    dec = {"molecule": "CCCCCC", "property": "logP", "direction": "decrease"}
    assert tomg_judge("LogP", dec, "CCO")[1]
    assert not tomg_judge("LogP", dec, "CCCCCCCC")[1]
    assert not tomg_judge("LogP", dec, "CCCCCC")[1]  # unchanged is not a success
    assert tomg_judge("MR", {"molecule": "CC", "property": "MR", "direction": "increase"}, "CCCC")[1]


def test_invalid_and_empty_outputs():
    for bad in ("C1CC", "", "   ", "xyz", None):
        assert tomg_judge("AtomNum", atoms(carbon=3), bad) == (False, False, None)


def test_smiles_extraction_as_source_correct_text():
    assert tomg_extract_smiles('Sure! {"molecule": "CCO"} done') == "CCO"
    assert tomg_extract_smiles("CCC -> CCO") == "CCO"
    assert tomg_extract_smiles("[CCO]") == "CCO"
    assert tomg_extract_smiles('{"molecule": null}') == "None"  # the source's failure value


def test_tomg_score_macro_over_subtasks():
    rows = [
        {"subtask": "AtomNum", "reference": atoms(carbon=2, oxygen=1)},
        {"subtask": "AtomNum", "reference": atoms(carbon=2, oxygen=1)},
        {"subtask": "LogP", "reference": {"molecule": "CCCCCC", "property": "logP", "direction": "decrease"}},
    ]
    s = tomg_bench.score(["CCO", "not a molecule", "CCO"], rows)
    assert s["success_rate_AtomNum"] == 0.5 and s["validity_AtomNum"] == 0.5
    assert s["success_rate_LogP"] == 1.0
    assert s["success_rate"] == pytest.approx(0.75)  # (0.5 + 1) / 2, not 2/3 over items
    assert s["validity"] == pytest.approx(0.75)


def test_tomg_normalize_raw_rows_uses_the_scorer_direction_rule():
    raw = {"id": "x", "subtask": "QED", "Instruction": "Please optimize the molecule CCO to have a lower QED value.",
           "molecule": "CCO"}
    assert tomg_bench.normalize(raw)["reference"]["direction"] == "decrease"
    raw["Instruction"] = "Modify the molecule CCO to have a higher QED value."
    assert tomg_bench.normalize(raw)["reference"]["direction"] == "increase"
    train = tomg_bench.normalize({"id": "t", "SubTask": "AtomNum", "Instruction": "2 carbons", "molecule": "CC"})
    assert train == {"id": "t", "subtask": "AtomNum", "prompt": "2 carbons", "reference": "CC"}


GOLD = [("a", "CC=O", 0.5), ("b", "CCO", 0.5)]


def test_omes_exact_and_canonical_match():
    r = omes(GOLD, [("a", "O=CC"), ("b", "OCC")])  # same molecules, other SMILES spellings
    assert r == {"S_total": 1.0, "S_partial": 1.0, "V": 1.0, "L": 1.0}


def test_omes_partial_credit_and_threshold():
    # stereo-specific SMILES: a different canonical SMILES, same (non-chiral) Morgan fingerprint
    r = omes([("a", "CC(N)O", 1.0)], [("a", "C[C@H](N)O")])
    assert r["S_total"] == 0.0 and r["S_partial"] == 1.0
    # benzene vs ethanol: similarity far below 0.60 -> no partial credit
    r = omes(GOLD, [("a", "CC=O"), ("b", "c1ccccc1")])
    assert r == {"S_total": 0.5, "S_partial": 0.5, "V": 1.0, "L": 1.0}


def test_omes_alignment_moves():
    # a wrong subtype cannot match: only the second step scores
    assert omes(GOLD, [("x", "CC=O"), ("b", "CCO")]) == {"S_total": 0.5, "S_partial": 0.5, "V": 1.0, "L": 0.5}
    # an extra predicted step is skipped
    assert omes(GOLD, [("a", "CC=O"), ("z", "C"), ("b", "CCO")])["S_total"] == 1.0
    # an unparsable intermediate still aligns (same subtype) but scores nothing; V counts it
    assert omes(GOLD, [("a", "CC=O"), ("b", "C1CC")]) == {"S_total": 0.5, "S_partial": 0.5, "V": 0.5, "L": 1.0}
    # rounding to 2 places per reaction, as the source does
    w = 1 / 3
    gold3 = [("a", "C", w), ("b", "CC", w), ("c", "CCC", w)]
    assert omes(gold3, [("a", "C"), ("b", "CC")])["S_total"] == 0.67
    assert omes(GOLD, [])["S_total"] == 0.0


def test_omebench_parse_and_malformed_outputs():
    steps = [{"step": 1, "subtype": "a", "intermediate_smiles": "CC=O"}]
    assert omebench_parse("[ANSWER]" + json.dumps(steps) + "[/ANSWER]") == steps
    assert omebench_parse("```json\n" + json.dumps(steps) + "\n```") == steps
    assert omebench_parse(json.dumps({"mechanism": steps})) == steps
    assert omebench_parse("The mechanism is : " + json.dumps(steps)) == steps
    assert omebench_parse("not json") is None
    assert omebench_parse('{"a": 1}') is None
    gold = [{"subtype": "a", "intermediate_smiles": "CC=O", "step_weight": 1.0}]
    zero = {"S_total": 0.0, "S_partial": 0.0, "V": 0.0, "L": 0.0}
    assert omes_reaction(None, gold) == zero
    assert omes_reaction([{"step": 1}], gold) == zero  # a step without subtype/SMILES
    assert omes_reaction([{"subtype": "a", "intermediate_smiles": None}], gold) == zero
    assert omes_reaction(steps, gold)["S_total"] == 1.0


def test_tomg_training_rows_get_constraints_checked_against_their_target():
    read = tomg_bench.constraints_from_instruction
    assert read("AtomNum", "Please generate a molecule composed of 2 carbon atoms and 1 oxygen atom.", "CCO") == atoms(carbon=2, oxygen=1)
    assert read("AtomNum", "Please generate a molecule composed of 3 carbon atoms.", "CCO") is None  # target disagrees
    assert read("BondNum", "A molecule with 3 single bonds and 1 rotatable bond.", "CCCC") == bonds(single=3, rotatable=1)
    assert read("SubComponent", "Modify the molecule CCCl by replacing a halo by hydroxyl.", "CCO") == {
        "molecule": "CCCl", "removed_group": "halo", "added_group": "hydroxyl"}
    assert read("AddComponent", "Add a benzene ring to the molecule CC.", "Cc1ccccc1") == {
        "molecule": "CC", "added_group": "benzene ring"}
    assert read("DelComponent", "Modify the molecule OCCO by removing a CCO.", "CCO") is None  # SMILES for a group name
    assert read("LogP", "Modify the molecule CCCCCC to have a lower LogP value.", "CCO")["direction"] == "decrease"
    row = {"id": "t", "subtask": "AtomNum", "prompt": "1 carbon atom.", "reference": "C"}
    assert tomg_bench.score(["C", "CC"], [row, {**row, "prompt": "make something"}]) == {
        "success_rate_AtomNum": 1.0, "validity_AtomNum": 1.0, "success_rate": 1.0, "validity": 1.0, "n_unscorable": 1.0}
