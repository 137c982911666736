"""Answer formats of a user's own task: how a generation is parsed, and the metrics that score it.

Five formats cover what people fine-tune for: one ``label`` of a set, several ``labels``, a
``number``, a ``json`` object with named fields, and free ``text``. Each has a parser (a
generation -> the answer it states, ``None`` when it states none; never raises) and the metrics
that fit it, computed by the field's maintained libraries: scikit-learn (accuracy, F1, MAE,
RMSE), rouge-score (ROUGE) and sacrebleu (BLEU, chrF). Exact match and token F1 on text follow
the SQuAD v1.1 evaluation script (its answer normalisation and bag-of-tokens F1).

A task file names one metric as its primary score; ``score`` reports every metric of the format
(and ``parse_rate``), as the FT-Bench tasks report theirs beside the primary one.
"""

from __future__ import annotations

import json
import re
import string
from collections import Counter
from dataclasses import dataclass
from typing import Any, Sequence

ANSWER_FORMATS = ("label", "labels", "number", "json", "text")
JSON_TYPES = ("string", "number", "integer", "boolean", "list")


@dataclass(frozen=True)
class MetricInfo:
    """One metric: the answer formats it fits, its direction and its natural range (None: the
    range depends on the data, e.g. an error in the target's own units, and the task file states it)."""

    formats: tuple[str, ...]
    higher_is_better: bool
    range: tuple[float, float] | None


METRICS: dict[str, MetricInfo] = {
    "accuracy": MetricInfo(("label",), True, (0.0, 1.0)),
    "macro_f1": MetricInfo(("label", "labels"), True, (0.0, 1.0)),
    "micro_f1": MetricInfo(("label", "labels"), True, (0.0, 1.0)),
    "weighted_f1": MetricInfo(("label", "labels"), True, (0.0, 1.0)),
    "samples_f1": MetricInfo(("labels",), True, (0.0, 1.0)),
    "exact_match": MetricInfo(("label", "labels", "json", "text"), True, (0.0, 1.0)),
    "field_accuracy": MetricInfo(("json",), True, (0.0, 1.0)),
    "field_f1": MetricInfo(("json",), True, (0.0, 1.0)),
    "token_f1": MetricInfo(("text",), True, (0.0, 1.0)),
    "rouge1": MetricInfo(("text",), True, (0.0, 1.0)),
    "rouge2": MetricInfo(("text",), True, (0.0, 1.0)),
    "rougeL": MetricInfo(("text",), True, (0.0, 1.0)),
    "bleu": MetricInfo(("text",), True, (0.0, 100.0)),  # sacrebleu's 0-100 scale
    "chrf": MetricInfo(("text",), True, (0.0, 100.0)),
    "mae": MetricInfo(("number",), False, None),
    "rmse": MetricInfo(("number",), False, None),
}


def metrics_for(fmt: str) -> list[str]:
    return [m for m, info in METRICS.items() if fmt in info.formats]


# ---------------------------------------------------------------- parsing
def _norm(text: str) -> str:
    return " ".join(text.casefold().split())


_NUMBER = re.compile(r"[-+]?(?:\d[\d,]*(?:\.\d+)?|\.\d+)")
_FENCE = re.compile(r"^```[a-zA-Z]*\s*|\s*```$")


def parse_number(text: str) -> float | None:
    """The first number in the text (``1,250.5`` reads as 1250.5), else None."""
    m = _NUMBER.search(text)
    if m is None:
        return None
    try:
        return float(m.group(0).replace(",", ""))
    except ValueError:
        return None


def extract_object(text: str) -> dict | None:
    """The first JSON object in the text (whole text, a fenced block, or embedded in prose)."""
    body = _FENCE.sub("", text.strip())
    try:
        obj = json.loads(body)
        return obj if isinstance(obj, dict) else None
    except json.JSONDecodeError:
        pass
    decoder = json.JSONDecoder()
    for i, ch in enumerate(body):
        if ch == "{":
            try:
                obj, _ = decoder.raw_decode(body, i)
            except json.JSONDecodeError:
                continue
            if isinstance(obj, dict):
                return obj
    return None


def field_value(value: Any, kind: str) -> Any:
    """One JSON field's value in comparable form: text case- and space-folded, numbers as floats
    (a number written as text counts), lists as sorted tuples; None stays None (no value)."""
    if value is None or value == "":
        return None
    if kind in ("number", "integer"):
        if isinstance(value, bool):
            return None
        if isinstance(value, (int, float)):
            return float(value)
        return parse_number(str(value))
    if kind == "boolean":
        if isinstance(value, bool):
            return value
        return {"true": True, "yes": True, "false": False, "no": False}.get(_norm(str(value)))
    if kind == "list":
        items = value if isinstance(value, list) else [value]
        return tuple(sorted(_norm(str(v)) for v in items if v is not None and str(v).strip())) or None
    return _norm(value if isinstance(value, str) else json.dumps(value, ensure_ascii=False))


@dataclass(frozen=True)
class AnswerParser:
    """Generation (and its row) -> the answer it states, per answer format; never raises.

    label: the label the text is (case-insensitive), else the first label it names (word
    bounded; the longer label wins at one position); labels: the labels named, in the set's
    order; number: the first number; json: the first JSON object, reduced to the schema's fields
    (``field_value`` form); text: the stripped text.
    """

    answer: str
    labels: tuple[str, ...] = ()
    separator: str = "; "
    fields: tuple[tuple[str, str], ...] = ()  # (name, type) of the JSON answer's fields

    def __call__(self, text: str, row: dict | None = None) -> Any:
        text = text if isinstance(text, str) else ""
        if self.answer == "label":
            return self._label(text)
        if self.answer == "labels":
            return self._labels(text)
        if self.answer == "number":
            return parse_number(text)
        if self.answer == "json":
            obj = extract_object(text)
            return None if obj is None else {f: field_value(obj.get(f), kind) for f, kind in self.fields}
        return text.strip()

    def _positions(self, text: str) -> list[tuple[int, str]]:
        low = _norm(text)
        found = []
        for label in self.labels:
            m = re.search(rf"(?<!\w){re.escape(_norm(label))}(?!\w)", low)
            if m:
                found.append((m.start(), label))
        return found

    def _label(self, text: str) -> str | None:
        whole = _norm(text).strip(" .!'\"")
        for label in self.labels:
            if _norm(label) == whole:
                return label
        found = self._positions(text)
        return min(found, key=lambda f: (f[0], -len(f[1])))[1] if found else None

    def _labels(self, text: str) -> list[str]:
        by_norm = {_norm(label): label for label in self.labels}
        parts = [_norm(p).strip(" .") for p in re.split(rf"{re.escape(self.separator.strip())}|,|\n", text)]
        parts = [p for p in parts if p]
        if parts and all(p in by_norm for p in parts):
            named = {by_norm[p] for p in parts}
        else:
            named = {label for _, label in self._positions(text)}
        return [label for label in self.labels if label in named]

    def gold(self, reference: str) -> Any:
        """The gold answer from a row's canonical ``reference`` text (see taskfile's rows)."""
        if self.answer == "labels":
            parts = [p.strip() for p in reference.split(self.separator.strip())] if reference.strip() else []
            return [label for label in self.labels if label in parts]
        if self.answer == "number":
            return parse_number(reference)
        if self.answer == "label":
            return reference.strip()
        return self(reference)


# ---------------------------------------------------------------- metrics
def squad_normalize(text: str) -> str:
    """SQuAD v1.1 ``normalize_answer``: lower case, no punctuation, no articles, single spaces."""
    text = "".join(ch for ch in text.lower() if ch not in set(string.punctuation))
    return " ".join(re.sub(r"\b(a|an|the)\b", " ", text).split())


def token_f1(prediction: str, reference: str) -> float:
    """SQuAD v1.1 ``f1_score``: F1 of the shared normalised tokens (bag of words)."""
    pred, gold = squad_normalize(prediction).split(), squad_normalize(reference).split()
    common = sum((Counter(pred) & Counter(gold)).values())
    if common == 0:
        return 0.0
    p, r = common / len(pred), common / len(gold)
    return 2 * p * r / (p + r)


UNPARSED = "\u0000unparsed"  # a prediction with no answer: a class no gold row has


def _canon(value: Any) -> str:
    return json.dumps(value, ensure_ascii=False, sort_keys=True)


def _label_scores(pred: list[Any], gold: list[Any], labels: Sequence[str]) -> dict[str, float]:
    from sklearn.metrics import accuracy_score, f1_score

    y_pred = [UNPARSED if p is None else p for p in pred]
    out = {"accuracy": float(accuracy_score(gold, y_pred))}
    out["exact_match"] = out["accuracy"]
    for avg in ("macro", "micro", "weighted"):
        # labels= the task's set: an unparsed answer is a miss of the gold class, not a class of its own
        out[f"{avg}_f1"] = float(f1_score(gold, y_pred, labels=list(labels), average=avg, zero_division=0))
    return out


def _multilabel_scores(pred: list[list[str]], gold: list[list[str]], labels: Sequence[str]) -> dict[str, float]:
    from sklearn.metrics import accuracy_score, f1_score
    from sklearn.preprocessing import MultiLabelBinarizer

    mlb = MultiLabelBinarizer(classes=list(labels))
    yg, yp = mlb.fit_transform(gold), mlb.transform(pred)
    out = {f"{avg}_f1": float(f1_score(yg, yp, average=avg, zero_division=0))
           for avg in ("macro", "micro", "weighted", "samples")}
    out["exact_match"] = float(accuracy_score(yg, yp))  # subset accuracy
    return out


def _number_scores(pred: list[float | None], gold: list[float], bounds: tuple[float, float]) -> dict[str, float]:
    from sklearn.metrics import mean_absolute_error, root_mean_squared_error

    lo, hi = bounds
    # no number in the answer: the worst value the range allows for that row
    filled = [p if p is not None else (hi if abs(hi - g) >= abs(g - lo) else lo) for p, g in zip(pred, gold)]
    return {"mae": float(mean_absolute_error(gold, filled)), "rmse": float(root_mean_squared_error(gold, filled))}


def _json_scores(pred: list[dict | None], gold: list[dict], fields: Sequence[str]) -> dict[str, float]:
    from sklearn.metrics import accuracy_score, f1_score
    from sklearn.preprocessing import MultiLabelBinarizer

    out: dict[str, float] = {}
    for f in fields:
        g = [_canon(r.get(f)) for r in gold]
        p = [UNPARSED if r is None else _canon(r.get(f)) for r in pred]
        out[f"field_accuracy_{f}"] = float(accuracy_score(g, p))
    out["field_accuracy"] = sum(out[f"field_accuracy_{f}"] for f in fields) / max(len(fields), 1)

    def pairs(obj: dict | None) -> list[str]:  # the values stated: field=value, no value -> no pair
        return [] if obj is None else [f"{f}={_canon(obj.get(f))}" for f in fields if obj.get(f) is not None]

    gp, pp = [pairs(r) for r in gold], [pairs(r) for r in pred]
    mlb = MultiLabelBinarizer().fit(gp + pp)
    out["field_f1"] = float(f1_score(mlb.transform(gp), mlb.transform(pp), average="micro", zero_division=0)) \
        if mlb.classes_.size else 1.0
    out["exact_match"] = sum(p is not None and _canon(p) == _canon(g) for p, g in zip(pred, gold)) / max(len(gold), 1)
    return out


def _text_scores(pred: list[str], gold: list[str]) -> dict[str, float]:
    import sacrebleu

    from ftbench.metrics import mean, rouge_per_example

    rouge = rouge_per_example(pred, gold)
    return {
        "exact_match": mean(squad_normalize(p) == squad_normalize(g) for p, g in zip(pred, gold)),
        "token_f1": mean(token_f1(p, g) for p, g in zip(pred, gold)),
        **{k: mean(rouge[k]) for k in ("rouge1", "rouge2", "rougeL")},
        "bleu": float(sacrebleu.corpus_bleu(pred, [gold]).score),
        "chrf": float(sacrebleu.corpus_chrf(pred, [gold]).score),
    }


@dataclass(frozen=True)
class AnswerScorer:
    """(generations, rows) -> every metric of the answer format, and ``parse_rate``. Gold answers
    come from each row's canonical ``reference``; ``bounds`` is the metric range (number answers
    with no number count as the far end of it)."""

    parser: AnswerParser
    bounds: tuple[float, float] = (0.0, 1.0)

    def __call__(self, generations: list[str], rows: list[dict]) -> dict[str, float]:
        if len(generations) != len(rows):
            raise ValueError(f"{len(generations)} generations for {len(rows)} rows")
        p = self.parser
        pred = [p(g, r) for g, r in zip(generations, rows)]
        gold = [p.gold(str(r["reference"])) for r in rows]
        fmt = p.answer
        if not rows:
            return {m: 0.0 for m in metrics_for(fmt)} | {"parse_rate": 0.0}
        if fmt == "label":
            out = _label_scores(pred, gold, p.labels)
        elif fmt == "labels":
            out = _multilabel_scores(pred, gold, p.labels)
        elif fmt == "number":
            out = _number_scores(pred, [g if g is not None else 0.0 for g in gold], self.bounds)
        elif fmt == "json":
            out = _json_scores(pred, [g or {} for g in gold], [f for f, _ in p.fields])
        else:
            out = _text_scores(pred, gold)
        empty = (lambda x: x is None or x == []) if fmt != "text" else (lambda x: not x)
        out["parse_rate"] = sum(not empty(x) for x in pred) / len(pred)
        return out
