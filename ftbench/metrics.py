"""Metrics shared by FT-Bench tasks, written to match the sources' scoring scripts.

Domain-specific metrics live beside this module: ``metrics_chem`` (RDKit: TOMG-Bench, oMeBench),
``metrics_lawbench`` (LawBench's 20 scorers) and ``metrics_cherrant`` (LawBench 2-1's F0.5).
"""

from __future__ import annotations

from functools import lru_cache
from typing import Any, Iterable, Sequence


def accuracy(predicted: Sequence[Any], gold: Sequence[Any]) -> float:
    """Fraction of exact matches; an unparsable prediction (None) is wrong. Empty input -> 0."""
    if len(predicted) != len(gold):
        raise ValueError(f"{len(predicted)} predictions for {len(gold)} references")
    if not gold:
        return 0.0
    return sum(p is not None and p == g for p, g in zip(predicted, gold)) / len(gold)


def mean(values: Iterable[float]) -> float:
    """Arithmetic mean; 0 for no values (a split with nothing scorable scores 0, not NaN)."""
    vals = list(values)
    return sum(vals) / len(vals) if vals else 0.0


def labelwise_macro_f1(pred: Sequence[Iterable[str]], gold: Sequence[Iterable[str]], labels: Sequence[str]) -> float:
    """Label-wise macro-F1 over a documents x labels indicator matrix.

    Same as sklearn ``f1_score(y_true, y_pred, average='macro')``: per label
    F1 = 2TP / (2TP + FP + FN), 0 when the label is absent from both gold and prediction
    (sklearn's default ``zero_division``), then the unweighted mean over ``labels``.
    """
    pred_sets, gold_sets = [set(p) for p in pred], [set(g) for g in gold]
    scores = []
    for label in labels:
        tp = sum(label in p and label in g for p, g in zip(pred_sets, gold_sets))
        fp = sum(label in p and label not in g for p, g in zip(pred_sets, gold_sets))
        fn = sum(label not in p and label in g for p, g in zip(pred_sets, gold_sets))
        scores.append(2 * tp / (2 * tp + fp + fn) if tp + fp + fn else 0.0)
    return mean(scores)


def example_based_f1(pred: Sequence[Iterable[str]], gold: Sequence[Iterable[str]]) -> dict[str, float]:
    """BLUE's HoC score (``blue/eval_hoc.py``): per-document precision and recall, averaged over
    documents, then F = 2PR/(P+R) of the two means (not the mean of per-document F).

    A document with no predicted label has precision 0; one with no gold label (never the case
    in the BLUE split) has recall 0 here instead of BLUE's ZeroDivisionError.
    """
    precs, recs = [], []
    for p, g in zip(pred, gold):
        p, g = set(p), set(g)
        tt = len(p & g)
        precs.append(tt / len(p) if p else 0.0)
        recs.append(tt / len(g) if g else 0.0)
    mp, mr = mean(precs), mean(recs)
    return {"precision": mp, "recall": mr, "f1": 2 * mp * mr / (mp + mr) if mp + mr else 0.0}


ROUGE_TYPES = ("rouge1", "rouge2", "rougeL", "rougeLsum")


def rouge_per_example(predictions: Sequence[str], references: Sequence[str]) -> dict[str, list[float]]:
    """Per-example ROUGE F-measures exactly as Hugging Face ``evaluate.load('rouge').compute(
    predictions, references, use_aggregator=False)`` returns them.

    ``evaluate``'s rouge wraps ``rouge_score.RougeScorer(rouge_types, use_stemmer=False,
    tokenizer=None)`` with ``rouge_types=['rouge1','rouge2','rougeL','rougeLsum']`` and calls
    ``scorer.score(reference, prediction)``; those are its defaults, and ACI-Bench passes none.
    """
    if len(predictions) != len(references):
        raise ValueError(f"{len(predictions)} predictions for {len(references)} references")
    out: dict[str, list[float]] = {k: [] for k in ROUGE_TYPES}
    for ref, pred in zip(references, predictions):
        for k, f in zip(ROUGE_TYPES, _rouge_pair(str(ref), str(pred))):
            out[k].append(f)
    return out


@lru_cache(maxsize=1 << 14)
def _rouge_pair(reference: str, prediction: str) -> tuple[float, ...]:
    """The ROUGE F-measures of one pair, cached by its texts: a bootstrap rescores the same
    rows many times, and ROUGE on long notes costs milliseconds a pair."""
    scores = _rouge_scorer().score(reference, prediction)
    return tuple(scores[k].fmeasure for k in ROUGE_TYPES)


@lru_cache(maxsize=1)
def _rouge_scorer():
    from rouge_score import rouge_scorer

    return rouge_scorer.RougeScorer(list(ROUGE_TYPES), use_stemmer=False)
