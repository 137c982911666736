"""LawBench 2-1 (document proofreading): corpus F0.5 of character-level ChERRANT edits.

LawBench's ``wsjd.py`` writes (source sentence, prediction) and (source sentence, reference)
pairs, turns each into M2 edits with ChERRANT's ``parallel_to_m2.py -g char`` (Levenshtein-style
alignment with transpositions, every cheapest alignment kept, edits merged into spans) and scores
them with ``compare_m2_for_evaluation.py`` (span-level correction TP/FP/FN summed over the corpus,
F0.5 rounded to 4 places). This module follows that pipeline step by step.

Deviations, because their inputs are not available here: the substitution cost ignores the
Cilin thesaurus, pinyin and the confusion set (every pair of different characters is treated as
semantically unrelated and not homophonous, cost 4/6 + 0.5 + punctuation cost), which can change
which of two near-equal alignments is cheapest; OpenCC traditional-to-simplified conversion of
targets is skipped; the 10-second per-sentence timeout (after which ChERRANT replaces the target
by "无") is emulated by a cap on the number of cheapest alignments.
"""

from __future__ import annotations

import re
import string
from collections import defaultdict
from functools import lru_cache
from itertools import groupby
from typing import Sequence

_CN_PUNCT = "！？｡＂＃＄％＆＇（）＊＋，－／：；＜＝＞＠［＼］＾＿｀｛｜｝～｟｠｢｣､、〃》「」『』【】〔〕〖〗〘〙〚〛〜〝〞〟〰〾〿–—‘'‛“”„‟…‧﹏\""
PUNCT = set(_CN_PUNCT + string.punctuation)
MAX_ALIGNMENTS = 20000  # stands in for the source's 10 s timeout per sentence

Edit = tuple  # (op, src_start, src_end, tgt_start, tgt_end)


def tokenize(sentence: str) -> list[str]:
    """ChERRANT char tokens: whitespace removed, one token per character, "[缺失成分]" kept whole."""
    s = "".join(sentence.split())
    return " ".join(s).replace("[ 缺 失 成 分 ]", "[缺失成分]").split(" ")


def _all_chinese(w: str) -> bool:
    return all("\u4e00" <= ch <= "\u9fff" for ch in w)


def _sub_cost(a: str, b: str) -> float:
    if a == b:
        return 0.0
    semantic = 4 / 6.0  # Cilin class unknown
    if a in PUNCT and b in PUNCT:
        pos = 0.0
    elif a not in PUNCT and b not in PUNCT:
        pos = 0.25
    else:
        pos = 0.499
    return semantic + 0.5 + pos  # char cost 0.5: not all-Chinese, or no shared pinyin/confusion


def _align(src: list[str], tgt: list[str]) -> list[list]:
    n, m = len(src), len(tgt)
    cost = [[0.0] * (m + 1) for _ in range(n + 1)]
    oper: list[list[list[str] | None]] = [[None] * (m + 1) for _ in range(n + 1)]
    for i in range(1, n + 1):
        cost[i][0], oper[i][0] = cost[i - 1][0] + 1, ["D"]
    for j in range(1, m + 1):
        cost[0][j], oper[0][j] = cost[0][j - 1] + 1, ["I"]
    for i in range(n):
        for j in range(m):
            if src[i] == tgt[j]:
                cost[i + 1][j + 1], oper[i + 1][j + 1] = cost[i][j], ["M"]
                continue
            dele, ins = cost[i][j + 1] + 1, cost[i + 1][j] + 1
            sub = cost[i][j] + _sub_cost(src[i], tgt[j])
            trans, k = float("inf"), 1
            while i - k >= 0 and j - k >= 0 and cost[i - k + 1][j - k + 1] != cost[i - k][j - k]:
                if sorted(src[i - k : i + 1]) == sorted(tgt[j - k : j + 1]):
                    trans = cost[i - k][j - k] + k
                    break
                k += 1
            costs = [trans, sub, ins, dele]
            best = min(costs)
            cost[i + 1][j + 1] = best
            oper[i + 1][j + 1] = [op for op, c in zip(("T" + str(k + 1), "S", "I", "D"), costs) if c == best]
    return oper


def _cheapest_alignments(oper, n: int, m: int) -> list[list[Edit]] | None:
    """Every cheapest alignment (only the first when the lengths differ by more than 10), or
    None when there are more than MAX_ALIGNMENTS (the source would time out)."""
    first_only = abs(n - m) > 10
    out: list[list[Edit]] = []
    stack: list[tuple[int, int, list[Edit]]] = [(n, m, [])]
    while stack:
        i, j, seq = stack.pop()
        if i + j == 0:
            out.append(seq[::-1])
            if len(out) > MAX_ALIGNMENTS:
                return None
            continue
        ops = oper[i][j][:1] if first_only else oper[i][j]
        for op in reversed(ops):  # reversed so that the stack yields the source's DFS order
            if op in ("M", "S"):
                stack.append((i - 1, j - 1, seq + [(op, i - 1, i, j - 1, j)]))
            elif op == "D":
                stack.append((i - 1, j, seq + [(op, i - 1, i, j, j)]))
            elif op == "I":
                stack.append((i, j - 1, seq + [(op, i, i, j - 1, j)]))
            else:
                k = int(op[1:])
                stack.append((i - k, j - k, seq + [(op, i - k, i, j - k, j)]))
    return out


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


def _merger(align: list[Edit], src: list[str], tgt: list[str]) -> list[Edit]:
    edits: list[Edit] = []
    for op, group in groupby(align, lambda x: x[0][0] if x[0][0] in ("M", "T") else False):
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
                if a not in PUNCT and b not in PUNCT and len(a) - len(b) <= 1:
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


def _edit_key(e: Edit, tgt: list[str]) -> tuple[tuple, str]:
    """(span-correction key, category) as the M2 line of this edit would read back."""
    op = e[0][0]
    cor = "".join(tgt[e[3] : e[4]])
    cat = {"T": "W", "D": "R", "I": "M", "S": "S"}[op]
    return (e[1], e[2], "-NONE-" if op == "D" else cor), cat


@lru_cache(maxsize=4096)  # the reference side is the same in every evaluation of a model
def sentence_edits(source: str, target: str) -> dict[tuple, list[str]]:
    """Span-correction edits (key -> categories, with multiplicity) of one sentence pair; the
    returned dict is shared through the cache and must not be modified."""
    src = tokenize(source)
    tgt_str = "".join(target.split())
    if not tgt_str:
        tgt_str = "无"  # the source cannot tokenize an empty target and falls back to "无"
    tgt = tokenize(tgt_str)
    if tgt_str == "没有错误" or "".join(src) == tgt_str:
        return {(-1, -1, "-NONE-"): ["noop"]}
    if tgt_str == "无法标注":
        return {(-1, -1, "-NONE-"): ["NA"]}
    aligns = _cheapest_alignments(_align(src, tgt), len(src), len(tgt))
    if aligns is None:
        return sentence_edits(source, "无")
    out: dict[tuple, list[str]] = defaultdict(list)
    seen: set[tuple] = set()
    for al in aligns:
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
