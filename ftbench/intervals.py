"""How sure a score is: percentile-bootstrap confidence intervals of a task's metric, and of the
difference between two models scored on the same rows (paired).

Every resample recomputes the task's own metric (``task.score``) on a resampled list of rows,
so corpus-level metrics (label-wise macro-F1, LawBench's average over sub-tasks, ...) get a
correct interval, not the interval of a per-row mean. Recomputing is cheap because the metric
modules cache their expensive per-row work (ROUGE, tokenisation, RDKit) by its inputs: a
resample only repeats rows. Seeded: the same inputs and seed give the same interval.
"""

from __future__ import annotations

from dataclasses import asdict, dataclass
from typing import Any, Sequence

import numpy as np

from ftbench.task import Task

RESAMPLES = 1000
LEVEL = 0.95


@dataclass(frozen=True)
class Interval:
    """A score (or a difference of two scores) with its bootstrap interval."""

    value: float  # the metric on the rows as they are (a difference: b - a)
    low: float
    high: float
    n: int  # rows
    resamples: int = RESAMPLES
    level: float = LEVEL

    @property
    def half_width(self) -> float:
        return (self.high - self.low) / 2

    def excludes_zero(self) -> bool:
        """For a difference: the interval lies on one side of 0 (a real gain or loss)."""
        return self.low > 0 or self.high < 0

    def to_dict(self) -> dict[str, Any]:
        return {k: (round(v, 6) if isinstance(v, float) else v) for k, v in asdict(self).items()}

    @classmethod
    def from_dict(cls, d: dict[str, Any]) -> "Interval":
        return cls(**{k: d[k] for k in ("value", "low", "high", "n", "resamples", "level") if k in d})


def _indices(n: int, resamples: int, seed: int) -> np.ndarray:
    """``resamples`` x ``n`` row indices drawn with replacement."""
    return np.random.default_rng(seed).integers(0, n, size=(resamples, n))


def _metric(task: Task, generations: Sequence[str], rows: Sequence[dict], metric: str) -> float:
    return float(task.score(list(generations), list(rows))[metric])


def _bounds(values: np.ndarray, level: float) -> tuple[float, float]:
    tail = (1 - level) / 2 * 100
    lo, hi = np.percentile(values, [tail, 100 - tail])
    return float(lo), float(hi)


def bootstrap(task: Task, generations: Sequence[str], rows: Sequence[dict], metric: str | None = None,
              resamples: int = RESAMPLES, seed: int = 0, level: float = LEVEL) -> Interval:
    """The metric of ``generations`` on ``rows`` with its percentile-bootstrap interval."""
    metric = metric or task.metric
    n = len(rows)
    if n == 0:
        raise ValueError("no rows to bootstrap over")
    if len(generations) != n:
        raise ValueError(f"{len(generations)} generations for {n} rows")
    values = np.array([_metric(task, [generations[i] for i in ix], [rows[i] for i in ix], metric)
                       for ix in _indices(n, resamples, seed)])
    lo, hi = _bounds(values, level)
    return Interval(_metric(task, generations, rows, metric), lo, hi, n, resamples, level)


def paired(task: Task, generations_a: Sequence[str], generations_b: Sequence[str], rows: Sequence[dict],
           metric: str | None = None, resamples: int = RESAMPLES, seed: int = 0, level: float = LEVEL) -> Interval:
    """metric(b) - metric(a) on the same rows, with the interval of that difference: each
    resample draws one set of rows and scores both models on it, so what the two share (easy
    and hard rows) cancels out, and a real difference shows with fewer rows than two separate
    intervals would need."""
    metric = metric or task.metric
    n = len(rows)
    if n == 0:
        raise ValueError("no rows to bootstrap over")
    if not len(generations_a) == len(generations_b) == n:
        raise ValueError(f"{len(generations_a)} and {len(generations_b)} generations for {n} rows")
    diffs = []
    for ix in _indices(n, resamples, seed):
        sample = [rows[i] for i in ix]
        diffs.append(_metric(task, [generations_b[i] for i in ix], sample, metric)
                     - _metric(task, [generations_a[i] for i in ix], sample, metric))
    lo, hi = _bounds(np.array(diffs), level)
    value = _metric(task, generations_b, rows, metric) - _metric(task, generations_a, rows, metric)
    return Interval(value, lo, hi, n, resamples, level)


def align(rows: Sequence[dict], *predictions: dict[str, str]) -> tuple[list[dict], list[list[str]]]:
    """The rows every prediction set covers (by id, in ``rows``' order) and each set's
    generations on them: models scored on different slices of the same split are compared on
    the rows they share."""
    keep = [r for r in rows if all(str(r["id"]) in p for p in predictions)]
    return keep, [[p[str(r["id"])] for r in keep] for p in predictions]
