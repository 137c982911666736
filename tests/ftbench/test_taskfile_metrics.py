"""A task file's answer parsers and metrics: fixed predictions scored by the task, against the
libraries' own output (scikit-learn, rouge-score, sacrebleu) and against values worked by hand."""

from __future__ import annotations

import json

import pytest
import sacrebleu
from rouge_score import rouge_scorer
from sklearn.metrics import accuracy_score, f1_score, mean_absolute_error, root_mean_squared_error
from sklearn.preprocessing import MultiLabelBinarizer

from ftbench.formats import AnswerParser, token_f1
from ftbench.taskfile import TaskFile, build_task

LABELS = ["billing", "technical", "account"]


def task(**kw):
    base = dict(id="t", description="d", target="y", prompt="{x}", data_dir="/nowhere")
    return build_task(TaskFile(**(base | kw)))


def rows(refs):
    return [{"id": str(i), "x": "", "reference": r} for i, r in enumerate(refs)]


def test_label_parser_reads_the_label_the_text_gives():
    p = AnswerParser("label", tuple(LABELS))
    assert p("Billing.") == "billing"
    assert p("  ACCOUNT ") == "account"
    assert p("I think this is technical, not billing") == "technical"  # the first one named
    assert p("billings") is None and p("") is None and p(None) is None  # word bounded; never raises
    long = AnswerParser("label", ("tech", "tech support"))
    assert long("tech support") == "tech support"  # the longer label at one position


def test_labels_number_json_parsers():
    p = AnswerParser("labels", tuple(LABELS))
    assert p("account; billing") == ["billing", "account"]  # the set's order
    assert p("It is about billing and also the account.") == ["billing", "account"]
    assert p("nothing") == []
    n = AnswerParser("number")
    assert n("about 1,250.5 dollars") == 1250.5 and n("-3") == -3.0 and n("none") is None
    j = AnswerParser("json", fields=(("amount", "number"), ("product", "string"), ("urgent", "boolean")))
    assert j('```json\n{"amount": "19.99", "product": " Vela  Watch", "urgent": true}\n```') == {
        "amount": 19.99, "product": "vela watch", "urgent": True}
    assert j('Sure! {"product": "Orbit tablet"} hope it helps') == {"amount": None, "product": "orbit tablet", "urgent": None}
    assert j("no json here") is None and j("[1, 2]") is None


def test_label_metrics_match_sklearn():
    gold = ["billing", "billing", "technical", "account", "account", "technical", "billing"]
    gens = ["billing", "technical", "technical", "Account.", "garbage", "billing", "billing"]
    t = task(answer="label", labels=LABELS, metric="macro_f1")
    got = t.score(gens, rows(gold))
    pred = ["billing", "technical", "technical", "account", "<none>", "billing", "billing"]
    assert got["macro_f1"] == pytest.approx(f1_score(gold, pred, labels=LABELS, average="macro"))
    assert got["micro_f1"] == pytest.approx(f1_score(gold, pred, labels=LABELS, average="micro"))
    assert got["weighted_f1"] == pytest.approx(f1_score(gold, pred, labels=LABELS, average="weighted"))
    assert got["accuracy"] == pytest.approx(accuracy_score(gold, pred)) == pytest.approx(4 / 7)
    # by hand: billing P=2/3 R=2/3 -> 2/3; technical P=1/2 R=1/2 -> 1/2; account P=1 R=1/2 -> 2/3
    assert got["macro_f1"] == pytest.approx((2 / 3 + 1 / 2 + 2 / 3) / 3)
    assert got["parse_rate"] == pytest.approx(6 / 7)


def test_multilabel_metrics_match_sklearn():
    gold = ["billing; account", "technical", "account", "billing"]
    gens = ["billing", "technical; account", "account", "none of them"]
    t = task(answer="labels", labels=LABELS, metric="micro_f1")
    got = t.score(gens, rows(gold))
    mlb = MultiLabelBinarizer(classes=LABELS)
    yg = mlb.fit_transform([["billing", "account"], ["technical"], ["account"], ["billing"]])
    yp = mlb.transform([["billing"], ["technical", "account"], ["account"], []])
    for avg in ("macro", "micro", "samples"):
        assert got[f"{avg}_f1"] == pytest.approx(f1_score(yg, yp, average=avg, zero_division=0)), avg
    assert got["exact_match"] == pytest.approx(accuracy_score(yg, yp)) == pytest.approx(0.25)
    assert got["micro_f1"] == pytest.approx(2 * 3 / (2 * 3 + 1 + 2))  # TP 3, FP 1, FN 2


def test_number_metrics_match_sklearn_and_an_unparsed_answer_costs_the_range():
    t = task(answer="number", metric="mae", metric_range=[0, 100])
    got = t.score(["12", "the answer is 30.5", "no idea"], rows(["10", "30", "20"]))
    # "no idea": gold 20 is nearer 0 than 100, so the worst answer in range is 100
    assert got["mae"] == pytest.approx(mean_absolute_error([10, 30, 20], [12, 30.5, 100])) == pytest.approx(82.5 / 3)
    assert got["rmse"] == pytest.approx(root_mean_squared_error([10, 30, 20], [12, 30.5, 100]))
    assert t.higher_is_better is False and t.metric_range == (0, 100)


def test_json_is_scored_field_by_field():
    fields = {"product": "string", "amount": "number", "urgent": "boolean"}
    t = task(answer="json", json_fields=fields, metric="field_accuracy")
    gold = [{"product": "Vela watch", "amount": 19.99, "urgent": False},
            {"product": None, "amount": None, "urgent": True},
            {"product": "Orbit tablet", "amount": 120, "urgent": False}]
    gens = ['{"product": "vela watch", "amount": 19.99, "urgent": true}',  # 2 of 3 fields right
            '{"product": null, "amount": null, "urgent": true}',          # all right
            "I cannot answer"]                                             # unparsed: all wrong
    got = t.score(gens, rows([json.dumps(g) for g in gold]))
    assert got["field_accuracy_product"] == pytest.approx(2 / 3)
    assert got["field_accuracy_amount"] == pytest.approx(2 / 3)
    assert got["field_accuracy_urgent"] == pytest.approx(1 / 3)
    assert got["field_accuracy"] == pytest.approx((2 / 3 + 2 / 3 + 1 / 3) / 3)
    # stated values: gold 3 + 1 + 3 = 7 pairs, predicted 3 + 1 = 4, of which 3 match
    assert got["field_f1"] == pytest.approx(2 * 3 / (7 + 4))
    assert got["exact_match"] == pytest.approx(1 / 3) and got["parse_rate"] == pytest.approx(2 / 3)


def test_text_metrics_match_rouge_score_and_sacrebleu():
    gold = ["the customer wants a refund for the duplicate charge", "reset the password and unlock the account"]
    gens = ["customer wants refund of a duplicate charge", "unlock the account"]
    t = task(answer="text", metric="rougeL")
    got = t.score(gens, rows(gold))
    scorer = rouge_scorer.RougeScorer(["rouge1", "rouge2", "rougeL"], use_stemmer=False)
    for k in ("rouge1", "rouge2", "rougeL"):
        assert got[k] == pytest.approx(sum(scorer.score(g, p)[k].fmeasure for g, p in zip(gold, gens)) / 2), k
    assert got["bleu"] == pytest.approx(sacrebleu.corpus_bleu(gens, [gold]).score)
    assert got["chrf"] == pytest.approx(sacrebleu.corpus_chrf(gens, [gold]).score)
    assert t.metric_range == (0.0, 1.0) and task(answer="text", metric="bleu").metric_range == (0.0, 100.0)
    # SQuAD v1.1 token F1 by hand: "unlock the account" vs the second gold, articles dropped:
    # pred {unlock, account}, gold {reset, password, and, unlock, account} -> P 1, R 2/5
    assert token_f1(gens[1], gold[1]) == pytest.approx(2 * 1 * 0.4 / 1.4)
    assert got["token_f1"] == pytest.approx((token_f1(gens[0], gold[0]) + token_f1(gens[1], gold[1])) / 2)
    assert got["exact_match"] == 0.0 and t.score(["The Cat."], rows(["cat"]))["exact_match"] == 1.0
