"""Bootstrap intervals of a task's metric (ftbench/intervals.py): a hand-checked case, agreement
with scipy.stats.bootstrap on accuracy, label-wise macro-F1 and ROUGE over fixed predictions,
and paired differences."""

from __future__ import annotations

import itertools

import numpy as np
import pytest

from ftbench.intervals import Interval, align, bootstrap, paired
from ftbench.tasks import get_task

SST2 = get_task("sst2")
HOC = get_task("hoc")
ACI = get_task("aci_bench")


def sst2_rows(n: int) -> list[dict]:
    return [{"id": f"r{i}", "input": f"film {i}", "label": i % 2, "reference": ("negative", "positive")[i % 2]}
            for i in range(n)]


def test_hand_checked_two_rows():
    """Two rows, one right and one wrong: a resample holds the right row 0, 1 or 2 times with
    probabilities 1/4, 1/2, 1/4, so its accuracy is 0, 0.5 or 1; the 95 % percentile interval of
    that distribution is [0, 1], and the interval of identical predictions is a point."""
    rows = sst2_rows(2)
    gens = ["negative", "negative"]  # row 0 right, row 1 wrong
    iv = bootstrap(SST2, gens, rows, resamples=4000, seed=1)
    assert (iv.value, iv.low, iv.high, iv.n) == (0.5, 0.0, 1.0, 2)
    # the resampled accuracies follow the binomial(2, 1/2) / 2 law
    idx = np.random.default_rng(1).integers(0, 2, size=(4000, 2))
    shares = np.bincount((idx == 0).sum(1), minlength=3) / 4000
    assert shares == pytest.approx([0.25, 0.5, 0.25], abs=0.03)
    right = bootstrap(SST2, ["negative", "positive"], rows, resamples=200)
    assert (right.low, right.high) == (1.0, 1.0)
    # seeded: the same inputs give the same interval, another seed another one
    assert bootstrap(SST2, gens * 20, sst2_rows(40), seed=3) == bootstrap(SST2, gens * 20, sst2_rows(40), seed=3)


def scipy_interval(task, gens: list[str], rows: list[dict], metric: str, seed: int = 0) -> tuple[float, float]:
    from scipy.stats import bootstrap as sp_bootstrap

    def stat(idx):
        idx = idx.astype(int)
        return task.score([gens[i] for i in idx], [rows[i] for i in idx])[metric]

    res = sp_bootstrap((np.arange(len(rows)),), stat, n_resamples=2000, vectorized=False, method="percentile",
                       confidence_level=0.95, random_state=seed)
    return float(res.confidence_interval.low), float(res.confidence_interval.high)


@pytest.mark.parametrize("case", ["accuracy", "macro_f1", "rouge1"])
def test_agrees_with_scipy_bootstrap(case):
    """The same percentile bootstrap as scipy's on fixed predictions, to within the Monte Carlo
    error of 2000 resamples, for a per-row metric, a corpus-level one and ROUGE."""
    rng = np.random.default_rng(7)
    if case == "accuracy":
        task, rows = SST2, sst2_rows(120)
        gens = [r["reference"] if rng.random() < 0.8 else "neutral" for r in rows]
    elif case == "macro_f1":
        from ftbench.tasks.hoc import LABELS

        task = HOC
        rows = []
        for i in range(80):
            labels = sorted(rng.choice(LABELS, size=1 + i % 3, replace=False).tolist())
            rows.append({"id": str(i), "input": f"abstract {i}", "labels": labels, "reference": ";".join(labels)})
        gens = ["; ".join(r["labels"][: 1 + (i % 2)]) if i % 5 else "none" for i, r in enumerate(rows)]
    else:
        task = ACI
        words = "the patient reports mild pain in the left knee since monday and takes ibuprofen daily".split()
        rows = [{"id": str(i), "input": "dialogue", "reference": " ".join(words[i % 5: i % 5 + 8])} for i in range(60)]
        gens = [" ".join(words[(i * 3) % 7: (i * 3) % 7 + 6]) for i in range(60)]
    ours = bootstrap(task, gens, rows, task.metric, resamples=2000, seed=0)
    lo, hi = scipy_interval(task, gens, rows, task.metric)
    assert ours.value == pytest.approx(task.score(gens, rows)[task.metric])
    assert ours.low == pytest.approx(lo, abs=0.02) and ours.high == pytest.approx(hi, abs=0.02)
    assert ours.low < ours.value < ours.high


def test_macro_f1_is_recomputed_per_resample_not_averaged_per_row():
    """Label-wise macro-F1 is a corpus statistic: the mean of per-row F1 values would be another
    number; the interval must be around the corpus value."""
    from ftbench.tasks.hoc import LABELS

    rows = [{"id": str(i), "input": "x", "labels": [LABELS[i % 2]], "reference": LABELS[i % 2]} for i in range(40)]
    gens = [LABELS[0]] * 40  # always the first label: its F1 is 2/3, the second label's 0
    iv = bootstrap(HOC, gens, rows, resamples=500)
    assert iv.value == pytest.approx(HOC.score(gens, rows)["macro_f1"])
    assert iv.low <= iv.value <= iv.high and iv.high < 0.5  # per-row mean of F1 would be 0.5


def test_paired_difference_sees_what_separate_intervals_cannot():
    """Two models that differ on 6 of 200 rows: their separate intervals overlap widely, the
    paired interval of the difference excludes 0."""
    rows = sst2_rows(200)
    a = [r["reference"] if i % 4 else "neutral" for i, r in enumerate(rows)]  # 75 % right
    b = list(a)
    for i in (0, 4, 8, 12, 16, 20):  # b fixes six of a's mistakes
        b[i] = rows[i]["reference"]
    ia, ib = bootstrap(SST2, a, rows), bootstrap(SST2, b, rows)
    assert ia.high > ib.low  # separately: no telling them apart
    d = paired(SST2, a, b, rows)
    assert d.value == pytest.approx(0.03) and d.excludes_zero() and d.low > 0
    assert paired(SST2, b, a, rows).high < 0
    same = paired(SST2, a, a, rows)
    assert (same.value, same.low, same.high) == (0.0, 0.0, 0.0) and not same.excludes_zero()


def test_align_compares_on_the_rows_both_cover():
    rows = sst2_rows(6)
    a = {r["id"]: "positive" for r in rows[:4]}
    b = {r["id"]: "negative" for r in rows[2:]}
    keep, (ga, gb) = align(rows, a, b)
    assert [r["id"] for r in keep] == ["r2", "r3"] and ga == ["positive"] * 2 and gb == ["negative"] * 2


def test_interval_round_trips_and_rejects_bad_input():
    iv = Interval(0.5, 0.4, 0.6, 100)
    assert Interval.from_dict(iv.to_dict()) == iv and iv.half_width == pytest.approx(0.1)
    with pytest.raises(ValueError, match="no rows"):
        bootstrap(SST2, [], [])
    with pytest.raises(ValueError, match="generations for"):
        paired(SST2, ["a"], ["a", "b"], sst2_rows(2))
    # every resample of a two-row set is one of three multisets: the interval is within their range
    vals = {SST2.score([g for g in combo], [sst2_rows(2)[0]] * 2)["accuracy"] for combo in itertools.product(["negative", "x"], repeat=2)}
    assert vals == {0.0, 0.5, 1.0}
