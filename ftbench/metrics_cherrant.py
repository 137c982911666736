"""LawBench 2-1 (document proofreading): corpus F0.5 of character-level ChERRANT edits.

LawBench's ``wsjd.py`` writes (source sentence, prediction) and (source sentence, reference)
pairs, turns each into M2 edits with ChERRANT's ``parallel_to_m2.py -g char`` (alignment in
``ftbench.cherrant_align``; every cheapest alignment kept, edits merged into spans by
``merger.py``) and scores them with ``compare_m2_for_evaluation.py`` (span-level correction
TP/FP/FN summed over the corpus, F0.5 rounded to 4 places). This module follows that pipeline
step by step, including OpenCC's traditional-to-simplified conversion of both targets.

Not reproduced: the source's 10-second timeout per sentence pair (after which the target is
replaced by "无") depends on the machine; it is emulated by a cap on the number of cheapest
alignments (``MAX_ALIGNMENTS``). A carriage return in a prediction, which splits the source's
line-based files and makes its scorer fail, is treated as whitespace here. Sentence pairs over
~980 characters in all, where the source's recursive search hits Python's recursion limit (and
is treated as timed out), are aligned normally; LawBench's sentences are at most 452 characters.
"""

from __future__ import annotations

import re
import string
from collections import defaultdict
from functools import lru_cache
from itertools import groupby
from typing import Sequence

from ftbench.cherrant_align import Edit, align, cheapest_alignments, count_alignments, tokenize

# merger.py's punctuation string (not alignment.py's: no 〰〾〿﹏, an extra "."); ``in`` on it is a
# substring test, so a multi-character span such as "()" counts as punctuation, as in the source
MERGER_PUNCT = string.punctuation + (
    "！？｡＂＃＄％＆＇（）＊＋，－／：；＜＝＞＠［＼］＾＿｀｛｜｝～｟｠｢｣､、〃》「」『』【】〔〕〖〗〘〙〚〛〜〝〞〟–—‘'‛“”„‟…‧."
)
MAX_ALIGNMENTS = 20000  # stands in for the source's 10 s timeout per sentence pair


def _merge(seq: list[Edit], tag: str) -> list[Edit]:
    return [(tag, seq[0][1], seq[-1][2], seq[0][3], seq[-1][4])] if seq else seq


def _process_seq(seq: list[Edit]) -> list[Edit]:
    if len(seq) <= 1:
        return seq
    ops = {e[0] for e in seq}
    if ops in ({"D"}, {"I"}):
        return _merge(seq, ops.pop())
    if ops == {"D", "I"}:
        return seq
    if ops == {"M"}:
        return _merge(seq, "M")
    return _merge(seq, "S")  # all-S runs are merged at char level, as are mixed runs


def _levenshtein(a: str, b: str) -> int:
    prev = list(range(len(b) + 1))
    for i, ca in enumerate(a, 1):
        cur = [i]
        for j, cb in enumerate(b, 1):
            cur.append(min(prev[j] + 1, cur[j - 1] + 1, prev[j - 1] + (ca != cb)))
        prev = cur
    return prev[-1]


def _merger(alignment: list[Edit], src: list[str], tgt: list[str]) -> list[Edit]:
    edits: list[Edit] = []
    for op, group in groupby(alignment, lambda x: x[0][0] if x[0][0] in ("M", "T") else False):
        group = list(group)
        edits.extend(group if op == "T" else _process_seq(group))
    span = lambda toks, a, b: "".join(toks[a:b])  # noqa: E731
    filtered: list[Edit] = []
    i = 0
    while i < len(edits):
        e1 = edits[i][0][0]
        if i < len(edits) - 2:
            e2, e3 = edits[i + 1][0][0], edits[i + 2][0][0]
            if e1 == "S" and e2 == "M" and e3 == "S":
                w1, w2 = span(src, edits[i][1], edits[i][2]), span(tgt, edits[i][3], edits[i][4])
                w3, w4 = span(src, edits[i + 2][1], edits[i + 2][2]), span(tgt, edits[i + 2][3], edits[i + 2][4])
                if min(len(w1), len(w2), len(w3), len(w4)) == 1:
                    swap = w1 == w4 and w2 == w3
                else:
                    swap = _levenshtein(w1, w4) <= 1 and _levenshtein(w2, w3) <= 1
                if swap:
                    filtered += _merge(edits[i : i + 3], "T" + str(edits[i + 2][2] - edits[i][1]))
                    i += 3
                else:
                    filtered.append(edits[i])
                    i += 1
                continue
            if (e1 == "D" and (e2 == "M" or e2.startswith("T")) and e3 == "I") or (
                e1 == "I" and (e2 == "M" or e2.startswith("T")) and e3 == "D"
            ):
                if e1 == "D":
                    a, b = span(src, edits[i][1], edits[i][2]), span(tgt, edits[i + 2][3], edits[i + 2][4])
                else:
                    a, b = span(src, edits[i + 2][1], edits[i + 2][2]), span(tgt, edits[i][3], edits[i][4])
                if len(a) < len(b):
                    a, b = b, a
                swap = False
                if a not in MERGER_PUNCT and b not in MERGER_PUNCT and len(a) - len(b) <= 1:
                    if len(b) == 1:
                        swap = a == b
                    else:
                        swap = _levenshtein(a, b) <= 1 or (len(a) == len(b) and b in a + a)
                if swap:
                    filtered += _merge(edits[i : i + 3], "T" + str(edits[i + 2][2] - edits[i][1]))
                    i += 3
                else:
                    filtered.append(edits[i])
                    i += 1
                continue
        if e1 != "M":
            filtered.append(edits[i])
        i += 1
    return [e2 for e in filtered if (e2 := _trim(e, src, tgt)) is not None]


def _trim(e: Edit, src: list[str], tgt: list[str]) -> Edit | None:
    """ChERRANT's second filter: drop an edit whose two sides read the same; shrink an S edit whose
    sides share a head or tail (turning it into I or D when one side becomes empty)."""
    s1, s2 = "".join(src[e[1] : e[2]]), "".join(tgt[e[3] : e[4]])
    if s1 == s2:
        return None
    if e[0] != "S":
        return e
    unchanged = True
    common, tmp_start_1 = "", e[1]
    for k in range(e[1], e[2]):
        if not s2.startswith(common + src[k]):
            break
        common += src[k]
        tmp_start_1 = k + 1
    start_1, start_2 = e[1], e[3]
    if common:
        acc = ""
        for k in range(e[3], e[4]):
            acc += tgt[k]
            if acc == common:
                start_1, start_2, unchanged = tmp_start_1, k + 1, False
                break
            if len(acc) > len(common):
                break
    common, tmp_end_1 = "", e[2]
    end_1, end_2 = e[2], e[4]
    for k in reversed(range(start_1, e[2])):
        if not s2.endswith(src[k] + common):
            break
        common = src[k] + common
        tmp_end_1 = k
    if common:
        acc = ""
        for k in reversed(range(start_2, e[4])):
            acc = tgt[k] + acc
            if acc == common:
                end_1, end_2, unchanged = tmp_end_1, k, False
                break
            if len(acc) > len(common):
                break
    if unchanged:
        return e
    op = "I" if start_1 == end_1 else "D" if start_2 == end_2 else "S"
    return (op, start_1, end_1, start_2, end_2)


_CATEGORY = {"T": "W", "D": "R", "I": "M", "S": "S"}  # classifier.py at char level


def _edit_key(e: Edit, tgt: list[str]) -> tuple[tuple, str]:
    """(span-correction key, category) as compare_m2 reads back the M2 line the source writes,
    ``A start end|||cat|||tokens|||REQUIRED|||-NONE-|||0``: split on "|||", spaces removed from
    the tokens (so a "|" in the text is read back as the source reads it)."""
    op = e[0][0]
    toks = "-NONE-" if op == "D" else " ".join(tgt[e[3] : e[4]])
    fields = f"{e[1]} {e[2]}|||{_CATEGORY[op]}|||{toks}|||REQUIRED|||-NONE-|||0".split("|||")
    return (e[1], e[2], fields[2].replace(" ", "")), fields[1]


@lru_cache(maxsize=1)
def _to_simplified():
    from opencc import OpenCC

    return OpenCC("t2s").convert


@lru_cache(maxsize=4096)  # the reference side is the same in every evaluation of a model
def sentence_edits(source: str, target: str) -> dict[tuple, list[str]]:
    """Span-correction edits (key -> categories, with multiplicity) of one sentence pair; the
    returned dict is shared through the cache and must not be modified."""
    src = tokenize(source)
    tgt_str = _to_simplified()("".join(target.split()))  # parallel_to_m2 converts every target
    if not tgt_str:
        tgt_str = "无"  # the source cannot tokenize an empty target and falls back to "无"
    tgt = tokenize(tgt_str)
    if tgt_str == "没有错误" or "".join(src) == tgt_str:
        return {(-1, -1, "-NONE-"): ["noop"]}
    if tgt_str == "无法标注":
        return {(-1, -1, "-NONE-"): ["NA"]}
    oper = align(src, tgt)
    if count_alignments(oper, len(src), len(tgt)) > MAX_ALIGNMENTS:
        return sentence_edits(source, "无")  # where the source would have timed out
    out: dict[tuple, list[str]] = defaultdict(list)
    seen: set[tuple] = set()
    for al in cheapest_alignments(oper, len(src), len(tgt)):
        edits = _merger(al, src, tgt)
        if tuple(edits) in seen:  # each distinct edit list once, all written as annotator 0
            continue
        seen.add(tuple(edits))
        for e in edits:
            key, cat = _edit_key(e, tgt)
            out[key].append(cat)
    return dict(out) or {(-1, -1, "-NONE-"): ["noop"]}


def _counts(hyp: dict, ref: dict) -> tuple[int, int, int]:
    if len(ref) == 1 and next(iter(ref.values()))[0] == "NA":
        return 0, 0, 0
    tp = fp = fn = 0
    for key, cats in hyp.items():
        if cats[0] == "noop":
            continue
        if key in ref:
            tp += len(ref[key])
        else:
            fp += len(cats)
    for key, cats in ref.items():
        if cats[0] != "noop" and key not in hyp:
            fn += len(cats)
    return tp, fp, fn


def f_beta(tp: int, fp: int, fn: int, beta: float = 0.5) -> float:
    """compare_m2's F-score: P (R) is 1 when there are no FP (FN); rounded to 4 places."""
    p = tp / (tp + fp) if fp else 1.0
    r = tp / (tp + fn) if fn else 1.0
    f = (1 + beta**2) * p * r / ((beta**2) * p + r) if p + r else 0.0
    return round(f, 4)


def origin_sentence(prompt: str) -> str:
    """The sentence to correct: the first line after "句子：\\n" in the prompt (LawBench's rule)."""
    marker = "句子：\n"
    tail = prompt[prompt.index(marker) + len(marker) :] if marker in prompt else prompt.rsplit("\n", 1)[-1]
    return re.sub(r"\n|\t", "", tail.split("\n")[0])


def wsjd_f05(predictions: Sequence[str], references: Sequence[str], prompts: Sequence[str]) -> float:
    """Corpus F0.5 of LawBench 2-1. Predictions lose newlines and tabs, are cut to the reference
    length + 5 characters when longer than that, and an empty one becomes "无内容"."""
    tp = fp = fn = 0
    for pred, ref, prompt in zip(predictions, references, prompts):
        origin = origin_sentence(prompt)
        pred = re.sub(r"\n|\t", "", pred)
        if len(pred) - len(ref) > 5:
            pred = pred[: len(ref) + 5]
        pred = pred or "无内容"
        hyp_edits = sentence_edits(origin, pred)
        ref_edits = sentence_edits(origin, re.sub(r"\n|\t", "", ref))
        a, b, c = _counts(hyp_edits, ref_edits)
        tp, fp, fn = tp + a, fp + b, fn + c
    return f_beta(tp, fp, fn)
