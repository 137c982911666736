"""LawBench 2-1 (ChERRANT character-level M2 + F0.5) scores exactly as the source's own code.

The fixture's expected counts come from running LawBench's own pipeline (wsjd.py,
parallel_to_m2.py -g char, compare_m2_for_evaluation.py) on the same items; see its README."""

from __future__ import annotations

import json
import re
from pathlib import Path

import pytest

from ftbench.cherrant_align import sub_cost
from ftbench.metrics_cherrant import _counts, origin_sentence, sentence_edits, wsjd_f05

FIXTURE = Path(__file__).resolve().parents[1] / "fixtures" / "ftbench" / "lawbench_2-1" / "predictions.json"


@pytest.mark.parametrize(
    "a, b, cost",
    [
        # semantic (Cilin class levels shared: 3 -> 0, 1 -> 4, 0 -> 6, unknown -> 4) / 6
        # + char (0 when the pinyin or the confusion set links two Chinese characters, else 0.5)
        # + pos (0 both punctuation, 0.25 neither, 0.499 one of them)
        ("的", "地", 0 / 6 + 0.0 + 0.25),  # same Cilin class Kd01, both read "de"
        ("在", "再", 4 / 6 + 0.0 + 0.25),  # Kb01 vs Ka14 share one level; both read "zai"
        ("述", "诉", 2 / 6 + 0.0 + 0.25),  # Hi13 vs Hi12; shu/su differ but the confusion set pairs them
        ("和", "与", 0 / 6 + 0.5 + 0.25),  # same class Kc01; neither pinyin nor confusion
        ("人", "士", 6 / 6 + 0.5 + 0.25),  # Dn03 vs Al01: nothing shared
        ("a", "b", 4 / 6 + 0.5 + 0.25),  # not in Cilin, not Chinese
        # the source's punctuation list has the half-width ｡ but not 。, so this pair is "mixed"
        ("，", "。", 4 / 6 + 0.5 + 0.499),
    ],
)
def test_substitution_cost_is_cherrants(a, b, cost):
    assert sub_cost(a, b) == pytest.approx(cost)
    assert sub_cost(b, a) == pytest.approx(cost)


def _fixture() -> dict:
    return json.loads(FIXTURE.read_text(encoding="utf-8"))


def test_per_sentence_counts_match_the_source():
    for n, it in enumerate(_fixture()["items"]):
        origin = origin_sentence(it["origin_prompt"])
        pred, ref = re.sub(r"\n|\t", "", it["prediction"]), it["refr"]
        pred = (pred[: len(ref) + 5] if len(pred) - len(ref) > 5 else pred) or "无内容"
        hyp = sentence_edits(origin, pred)
        gold = sentence_edits(origin, re.sub(r"\n|\t", "", ref))
        assert list(_counts(hyp, gold)) == it["source_tp_fp_fn"], (n, it["from"])


def test_corpus_f05_matches_the_source():
    fx = _fixture()
    items = fx["items"]
    f = wsjd_f05([i["prediction"] for i in items], [i["refr"] for i in items], [i["origin_prompt"] for i in items])
    assert f == fx["source_f05"] == 0.0602


def test_traditional_characters_are_simplified_like_the_source():
    # OpenCC t2s turns 證據 into 证据, so the prediction fixes exactly the reference's one edit
    assert sentence_edits("上诉证据", "上述證據") == sentence_edits("上诉证据", "上述证据") == {(1, 2, "述"): ["S"]}
