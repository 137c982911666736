"""Shared metrics and the answer extraction of the classification-style tasks, against values
worked out by hand from each source's definition."""

from __future__ import annotations

import pytest

from ftbench.metrics import accuracy, example_based_f1, labelwise_macro_f1, mean, rouge_per_example
from ftbench.tasks import cs_bench, econlogicqa, gta, hoc, openfindata


def test_accuracy_counts_none_as_wrong_and_checks_lengths():
    assert accuracy([1, None, 0], [1, 0, 0]) == pytest.approx(2 / 3)
    assert accuracy([], []) == 0.0
    with pytest.raises(ValueError):
        accuracy([1], [1, 2])


def test_labelwise_macro_f1_by_hand():
    # a: TP1 FN1 -> 2/3; b: TP1 -> 1; c: FN1 -> 0  => (2/3 + 1 + 0) / 3
    gold = [{"a"}, {"a", "b"}, {"c"}]
    pred = [{"a"}, {"b"}, set()]
    assert labelwise_macro_f1(pred, gold, ["a", "b", "c"]) == pytest.approx((2 / 3 + 1) / 3)
    # a label absent from gold and prediction scores 0 (sklearn's zero_division), lowering the mean
    assert labelwise_macro_f1(pred, gold, ["a", "b", "c", "d"]) == pytest.approx((2 / 3 + 1) / 4)


def test_example_based_f1_is_f_of_mean_precision_and_recall():
    gold = [{"a"}, {"a", "b"}, {"c"}]
    pred = [{"a"}, {"b"}, set()]  # precisions 1, 1, 0 ; recalls 1, 1/2, 0
    ex = example_based_f1(pred, gold)
    assert ex["precision"] == pytest.approx(2 / 3)
    assert ex["recall"] == pytest.approx(0.5)
    assert ex["f1"] == pytest.approx(2 * (2 / 3) * 0.5 / (2 / 3 + 0.5))


def test_rouge_matches_hf_evaluate_defaults():
    r = rouge_per_example(["The CAT, sat!", "running dogs", ""], ["the cat sat on the mat", "run dog", "a note"])
    # unigrams: pred {the, cat, sat}, ref has 6 tokens with 3 overlapping -> P=1, R=1/2
    assert r["rouge1"][0] == pytest.approx(2 / 3)
    assert r["rouge2"][0] == pytest.approx(2 * 1 * 0.4 / 1.4)  # bigrams: 2/2 predicted, 2/5 reference
    assert r["rouge1"][1] == 0.0  # no stemming: "running" != "run"
    assert r["rouge1"][2] == 0.0  # empty output


def test_hoc_parse_and_score():
    assert hoc.parse("Inducing Angiogenesis; resisting cell death") == ["inducing angiogenesis", "resisting cell death"]
    assert hoc.parse("none of them") == []
    rows = [{"labels": ["inducing angiogenesis"]}, {"labels": ["cellular energetics", "resisting cell death"]}]
    s = hoc.score(["inducing angiogenesis", ""], rows)
    # angiogenesis F1 = 1; energetics and cell death F1 = 0 (missed); the other 7 labels 0 -> 1/10
    assert s["macro_f1"] == pytest.approx(0.1)
    assert s["empty_rate"] == 0.5
    assert s["example_f1"] == pytest.approx(2 * 0.5 * 0.5 / 1.0)


def test_cs_bench_multiple_choice_follows_the_source_regex():
    row = {"format": cs_bench.MC, "reference": "B"}
    assert cs_bench.parse("B", row) == "B"
    assert cs_bench.parse("(b) is right", row) == "B"
    # the source's first \b[ABCD]\b match is case-insensitive, so the article "a" is option A
    assert cs_bench.parse("It is a B", row) == "A"
    assert cs_bench.parse("no idea", row) is None


def test_cs_bench_assertion_is_case_insensitive_unlike_the_source_bug():
    rows = [{"format": cs_bench.TF, "reference": "True"}, {"format": cs_bench.TF, "reference": "False"},
            {"format": cs_bench.TF, "reference": "True"}, {"format": cs_bench.MC, "reference": "C"},
            {"format": cs_bench.OPEN, "reference": "long answer"}]
    s = cs_bench.score(["TRUE.", "It is false", "maybe", "C", "whatever"], rows)
    assert s["accuracy_assertion"] == pytest.approx(2 / 3)
    assert s["accuracy"] == pytest.approx(3 / 4)  # open-ended item needs a judge: not scored
    assert s["n_judge_required"] == 1


def test_econlogicqa_extraction_and_pairwise():
    assert econlogicqa.extract_order("The correct order is: D, A, C, B.") == ["D", "A", "C", "B"]
    assert econlogicqa.extract_order("DACB") == ["D", "A", "C", "B"]
    assert econlogicqa.extract_order("First B then A then D then C") == ["B", "A", "D", "C"]
    assert econlogicqa.extract_order("A, B, C") == []
    assert econlogicqa.extract_order("") == []
    # gold D,A,B,C vs pred D,A,C,B: only the (B, C) pair is reversed
    assert econlogicqa.pairwise_accuracy(list("DACB"), list("DABC")) == pytest.approx(5 / 6)
    s = econlogicqa.score(["D, A, B, C", "nothing"], [{"reference": "D, A, B, C"}, {"reference": "A, B, C, D"}])
    assert s == {"accuracy": 0.5, "pairwise_accuracy": 0.5, "parse_rate": 0.5}


def test_openfindata_last_capital_and_entities():
    assert openfindata.last_capital("我选B。") == "B"
    assert openfindata.last_capital("答案：A，不是C") == "C"
    assert openfindata.last_capital("不知道") == ""
    rows = [{"subset": "financial_facts", "reference": "A"}, {"subset": "financial_facts", "reference": "B"},
            {"subset": "entity_recognition", "reference": "贵州茅台、五粮液"}]
    s = openfindata.score(["A", "A", "贵州茅台和五粮液"], rows)
    assert s["accuracy_financial_facts"] == 0.5
    assert s["accuracy_entity_recognition"] == 1.0
    assert s["accuracy"] == pytest.approx(0.75)  # mean over subsets, not over items


def test_gta_whitelist_blacklist_whole_words():
    ref = {"whitelist": [["4", "four"], ["yes"]], "blacklist": [["no"]]}
    assert gta.is_correct("There are Four apples, yes.", ref)
    assert not gta.is_correct("4 apples, no", ref)  # blacklisted
    assert not gta.is_correct("14 apples, yes", ref)  # "4" must be a whole word
    assert gta.is_correct("5.75 in total", {"whitelist": [["5.75"]], "blacklist": None})


def test_mean_of_nothing_is_zero():
    assert mean([]) == 0.0
