"""LawBench scorers against values worked out by hand from LawBench's evaluation functions."""

from __future__ import annotations

import math

import pytest

from ftbench.metrics_cherrant import f_beta, sentence_edits, wsjd_f05
from ftbench.metrics_lawbench import SCORERS, cjrc_f1, cn_to_arabic, lawbench_scores, multi_choice_judge, rouge_l_zh


def run(task_id, preds, refs, prompts=None):
    return SCORERS[task_id](preds, refs, prompts or [""] * len(preds))


def test_rouge_l_on_jieba_words():
    # jieba: 我/爱/北京/天安门 vs 我/爱/北京 -> LCS 3, P = 3/4, R = 1
    assert rouge_l_zh("我爱北京天安门", "我爱北京") == pytest.approx(2 * 0.75 / 1.75, rel=1e-6)
    # word-level, not character-level: 北京 and 北 are different words
    assert rouge_l_zh("北", "北京") == 0.0
    # an empty prediction becomes "无内容" (no overlap here)
    assert rouge_l_zh("", "我爱北京") == 0.0
    # ... and, as in the source, "无内容" is not re-tokenised, so it never matches the words 无/内容
    assert rouge_l_zh("  ", "无内容") == 0.0
    assert rouge_l_zh("无内容", "无内容") == pytest.approx(1.0, rel=1e-6)
    # 1-1 strips "答案:" from the reference only
    assert run("1-1", ["我爱北京"], ["答案:我爱北京"])["score"] == pytest.approx(1.0, rel=1e-6)


def test_multiple_choice_requires_the_only_option():
    assert multi_choice_judge("答案是B", "ABCD", "B") == (1, 0)
    assert multi_choice_judge("B或C", "ABCD", "B") == (0, 0)
    assert multi_choice_judge("不知道", "ABCD", "B") == (0, 1)
    s = run("1-2", ["[正确答案]B<eoa>", "AB", "不知道"], ["正确答案：B。"] * 3)
    assert s == {"score": pytest.approx(1 / 3), "abstention_rate": pytest.approx(1 / 3)}
    # 2-8 reads the letter at index 6 of "[正确答案]C<eoa>"
    assert run("2-8", ["C"], ["[正确答案]C<eoa>"])["score"] == 1.0


def test_dispute_focus_skips_the_compensation_items():
    s = run("2-2", ["合同效力", "赔偿"], ["争议焦点类别：合同效力。", "争议焦点类别：赔偿。"])
    assert s["score"] == 1.0  # the 赔偿 item is skipped ...
    assert s["abstention_rate"] == 0.0  # ... but still counts in the abstention denominator


def test_label_set_f1_tasks():
    # 2-3: gold {婚后有子女, 限制行为能力子女抚养}, found {婚后有子女} -> P 1, R 1/2
    s = run("2-3", ["婚后有子女"], ["类别:婚后有子女、限制行为能力子女抚养。"])
    assert s["score"] == pytest.approx(2 / 3)
    s = run("2-9", ["无"], ["拘捕"])
    assert s == {"score": 0.0, "abstention_rate": 1.0}
    # 3-3: "合同诈骗" also contains the charge "诈骗" -> predicted {合同诈骗, 诈骗}, P 1/2
    assert run("3-3", ["合同诈骗"], ["罪名:合同诈骗"])["score"] == pytest.approx(2 / 3)


def test_reading_comprehension_char_f1():
    # gold 2,1,万,元 vs pred 2,1,万 -> P 1, R 3/4
    assert cjrc_f1("21万元", "21万") == pytest.approx(6 / 7)
    assert cjrc_f1("", "") == 1.0 and cjrc_f1("a", "") == 0.0
    assert run("2-5", ["21万元"], ["回答:21万元"])["score"] == 1.0


def test_entity_soft_f1():
    # 受害人 exact (1), 时间 今天 vs 昨天 (F1 1/2): P = R = 1.5 / 2
    s = run("2-6", ["受害人:张某\n时间:今天\n"], ["受害人:张某;时间:昨天"])
    assert s["score"] == pytest.approx(0.75)
    assert run("2-6", ["没有实体"], ["受害人:张某"]) == {"score": 0.0, "abstention_rate": 1.0}


def test_trigger_soft_f1_pairs_by_position():
    assert run("2-10", ["查扣;退还"], ["查扣;退给"])["score"] == pytest.approx(0.75)


def test_article_prediction():
    # Chinese numerals are converted; gold {234, 275}, predicted {234}
    s = run("3-1", ["刑法第二百三十四条"], ["法条:刑法第234、275条"])
    assert s["score"] == pytest.approx(2 / 3)
    assert cn_to_arabic("判处有期徒刑一年六个月") == "判处有期徒刑1年6个月"
    assert cn_to_arabic("两年") == "2年"


def test_prison_term_normalised_log_distance():
    log216 = math.log(216)
    assert run("3-4", ["有期徒刑一年"], ["刑期:12个月"])["score"] == pytest.approx(1.0)  # 1 year = 12 months
    d = abs(math.log(13) - math.log(7))
    assert run("3-4", ["6个月"], ["刑期:12个月"])["score"] == pytest.approx((log216 - d) / log216)
    s = run("3-5", ["无法判断", "6个月"], ["刑期:12个月", "刑期:死刑"])  # death sentence skipped
    assert s == {"score": pytest.approx(0.0), "abstention_rate": 0.5}


def test_crime_amount():
    assert run("3-7", ["[金额]8500元<eoa>"], ["上文涉及到的犯罪金额:8500.0元。"])["score"] == 1.0
    assert run("3-7", ["8000"], ["上文涉及到的犯罪金额:8500.0元。"])["score"] == 0.0


def test_cherrant_char_edits():
    assert sentence_edits("上诉证据", "上述证据") == {(1, 2, "述"): ["S"]}
    assert sentence_edits("我爱北京", "我很爱北京") == {(1, 1, "很"): ["M"]}
    assert sentence_edits("我爱北京", "我爱北京") == {(-1, -1, "-NONE-"): ["noop"]}
    # 爱 moved to the end: a word-order edit over the whole moved span
    assert sentence_edits("我爱北京", "我北京爱") == {(1, 4, "北京爱"): ["W"]}


def test_wsjd_corpus_f05():
    prompts = ["纠正句子。句子：\n我爱北京", "纠正句子。句子：\n今天天气好"]
    refs = ["我很爱北京", "今天天气很好"]
    # sentence 1 fixed (TP 1), sentence 2 left unchanged (FN 1): P 1, R 1/2
    assert wsjd_f05(["我很爱北京", "今天天气好"], refs, prompts) == round(1.25 * 0.5 / (0.25 + 0.5), 4)
    # a long prediction is cut to len(reference) + 5 chars: TP 1 plus one spurious insertion (FP 1)
    assert wsjd_f05(["我很爱北京" + "啊" * 10], refs[:1], prompts[:1]) == round(1.25 * 0.5 / (0.125 + 1), 4)
    assert f_beta(0, 0, 0) == 1.0  # nothing to fix and nothing changed


def test_average_over_tasks_present():
    s = lawbench_scores(["B", "A"], ["正确答案：B。", "正确答案:D。"], ["", ""], ["1-2", "3-6"])
    assert s["task_1-2"] == 1.0 and s["task_3-6"] == 0.0
    assert s["average"] == 0.5
