"""Deduplication (exact and near) and decontamination against the task's evaluation rows.

All three keep the first occurrence, so they are deterministic for a given row order. Hashing
and MinHash signatures are computed with ``datasets.map`` (parallel where it pays); the pass that
decides which rows survive is sequential by nature and cheap.
"""

from __future__ import annotations

import hashlib
import logging
import re
from collections import Counter
from typing import Any

import datasets
import numpy as np

from ftbench.task import Task, TaskDataError, load_split
from trex_ray.recipes.ops import DedupExactOp, DedupNearOp, Recipe, template_fields
from trex_ray.recipes.transforms import Result, column_values, need

log = logging.getLogger(__name__)

_NON_WORD = re.compile(r"[^\w]+", re.UNICODE)
BOILERPLATE_ROWS = 5  # an n-gram in this many evaluation rows (or in BOILERPLATE_SHARE of them) is
BOILERPLATE_SHARE = 0.02  # the task's instruction wording, not one item's content
WORDING_GRAM = 5  # instruction wording is found as runs of this many words


def normalise(text: str) -> list[str]:
    """Lower-cased words, punctuation and spacing dropped: what 'the same text' means here."""
    return _NON_WORD.sub(" ", text.lower()).split()


def _cell(v: Any) -> str:
    return "" if v is None else v if isinstance(v, str) else str(v)


def dedup_exact(ds: datasets.Dataset, step: DedupExactOp, where: str, num_proc: int | None) -> Result:
    cols = list(step.columns or [c for c in ds.column_names if c != "id"])
    need(ds, cols, where)

    def digest(batch: dict) -> dict:
        n = len(batch[cols[0]])
        keys = ["\x1f".join(" ".join(normalise(_cell(batch[c][i]))) for c in cols) for i in range(n)]
        return {"_key": [hashlib.blake2b(k.encode(), digest_size=16).hexdigest() for k in keys]}

    keys = column_values(ds.map(digest, batched=True, num_proc=num_proc, remove_columns=ds.column_names), "_key")
    seen: set[str] = set()
    keep = [i for i, k in enumerate(keys) if not (k in seen or seen.add(k))]  # type: ignore[func-returns-value]
    return ds.select(keep), {"duplicates": len(keys) - len(keep)}


def _shingles(text: str, k: int) -> list[bytes]:
    words = normalise(text)
    if len(words) <= k:
        return [" ".join(words).encode()]
    return [" ".join(words[i : i + k]).encode() for i in range(len(words) - k + 1)]


def dedup_near(ds: datasets.Dataset, step: DedupNearOp, where: str, num_proc: int | None) -> Result:
    """MinHash LSH (datasketch) proposes candidate pairs; a candidate counts as a duplicate only
    when the signatures' estimated Jaccard similarity reaches the threshold, which removes most
    of LSH's false positives."""
    from datasketch import LeanMinHash, MinHash, MinHashLSH

    need(ds, [step.column], where)
    col, k, perm, seed = step.column, step.shingle, step.num_perm, step.seed

    def signatures(batch: dict) -> dict:
        m = MinHash(num_perm=perm, seed=seed)  # one object per batch: permutations are costly to make
        out = []
        for v in batch[col]:
            m.clear()
            m.update_batch(_shingles(_cell(v), k))
            out.append(m.hashvalues.copy())
        return {"_sig": out}

    table = ds.map(signatures, batched=True, num_proc=num_proc, remove_columns=ds.column_names).with_format("arrow")[:]
    sigs = table.column("_sig").combine_chunks().flatten().to_numpy().reshape(len(table), perm)  # via Arrow: fast
    scheme = MinHash(num_perm=perm, seed=seed).scheme  # LeanMinHash must be told how values were made
    lsh = MinHashLSH(threshold=step.threshold, num_perm=perm)
    keep: list[int] = []
    for i, sig in enumerate(sigs):
        mh = LeanMinHash(seed=seed, hashvalues=sig, scheme=scheme)
        if any(np.mean(sigs[j] == sig) >= step.threshold for j in lsh.query(mh)):
            continue
        lsh.insert(i, mh, check_duplication=False)
        keep.append(i)
    return ds.select(keep), {"near_duplicates": len(sigs) - len(keep)}


class Decontaminator:
    """Flags training rows that overlap evaluation rows: the same normalised text, or a shared
    n-gram of ``n`` words. Only the values of the template's fields are compared, never the
    template's fixed wording, which every row shares. Some tasks carry their instruction inside
    a field (CS-Bench's and LawBench's ``prompt``): a run of ``WORDING_GRAM`` words found in many
    evaluation rows (``BOILERPLATE_ROWS``, or ``BOILERPLATE_SHARE`` of them if more) is such
    wording, not an item's content, and an n-gram most of whose words are such wording (the
    instruction itself, or where it meets an item's first or last words) matches nothing.
    ``boilerplate`` counts those frequent runs."""

    def __init__(self, eval_rows: list[dict], fields: list[str], n: int) -> None:
        self.n, self.fields = n, fields
        self.k = min(WORDING_GRAM, n)
        self.exact: set[str] = set()
        rows_with: Counter[tuple[str, ...]] = Counter()
        texts = []
        for r in eval_rows:
            words = self._words(r)
            texts.append(words)
            self.exact.add(" ".join(words))
            rows_with.update({tuple(words[i : i + self.k]) for i in range(len(words) - self.k + 1)})
        floor = max(BOILERPLATE_ROWS, BOILERPLATE_SHARE * len(eval_rows))
        self.wording = {g for g, c in rows_with.items() if c >= floor}
        self.boilerplate = len(self.wording)
        self.grams: set[tuple[str, ...]] = set()
        for words in texts:
            self.grams |= self._content(words)

    def _words(self, row: dict) -> list[str]:
        return normalise(" ".join(str(row.get(f, "")) for f in self.fields))

    def _content(self, words: list[str]) -> set[tuple[str, ...]]:
        """The n-grams of ``words`` at least half of whose words are not instruction wording."""
        n, k = self.n, self.k
        covered = [False] * len(words)
        for i in range(len(words) - k + 1):
            if tuple(words[i : i + k]) in self.wording:
                covered[i : i + k] = [True] * k
        return {tuple(words[i : i + n]) for i in range(len(words) - n + 1) if 2 * sum(covered[i : i + n]) <= n}

    def contaminated(self, row: dict) -> bool:
        words = self._words(row)
        return " ".join(words) in self.exact or not self.grams.isdisjoint(self._content(words))


def decontaminate(ds: datasets.Dataset, recipe: Recipe, task: Task, paths: dict,
                  num_proc: int | None) -> tuple[datasets.Dataset, int]:
    """Drop rows overlapping the task's dev or test rows (before formatting, on raw fields)."""
    fields = [f for f in template_fields(recipe.format.prompt) if f in ds.column_names]
    if not fields:  # a prompt with no fields: every row would "match" every eval row
        log.info("the prompt uses no column; nothing to decontaminate")
        return ds, 0
    eval_rows: list[dict] = []
    for split in ("dev", "test"):
        try:
            eval_rows += load_split(task, split, paths)
        except TaskDataError:
            log.info("no %s split to decontaminate against", split)
    checker = Decontaminator(eval_rows, fields, recipe.decontaminate_ngram)
    if checker.boilerplate:
        log.info("decontamination: %d n-gram(s) shared by many dev/test rows (instruction wording) match nothing",
                 checker.boilerplate)
    before = len(ds)

    def keep(batch: dict) -> list[bool]:
        n = len(next(iter(batch.values())))
        return [not checker.contaminated({f: batch[f][i] for f in fields}) for i in range(n)]

    ds = ds.filter(keep, batched=True, num_proc=num_proc)
    return ds, before - len(ds)
