"""ChERRANT's character-level alignment, as LawBench's ``evaluation/utils/modules/alignment.py``.

Tokens are single characters (``[缺失成分]`` kept whole). The cost of replacing token ``a`` by
``b`` is, as in the source, ``semantic/6 + char + pos`` (added in that order, so that float ties
between operations come out as in the source):

* semantic: from the Cilin thesaurus class of each token (0 same class, 2*(3 - shared levels)
  otherwise, 4 when either token is not in Cilin);
* char: 0 when both tokens are Chinese (U+4E00..U+9FFF) and share a pinyin reading (pypinyin,
  every heteronym, tones dropped) or are in ChERRANT's confusion set, else 0.5;
* pos: 0 when both are punctuation, 0.25 when neither is, 0.499 otherwise.

Insertions and deletions cost 1, a transposition of k+1 tokens costs k. Every operation of
minimal cost is kept per cell, in the order T, S, I, D, and every cheapest alignment is
enumerated in the source's depth-first order (only the first one when the lengths differ by
more than 10).

The Cilin and confusion data are the parts of LawBench's ``evaluation/utils/data/cilin.txt`` and
``confusion_dict.txt`` that a character-level run can read (``data/cherrant/README.md`` says how
they were derived); pinyin comes from pypinyin, pinned to the source's version.
"""

from __future__ import annotations

import gzip
import string
from collections.abc import Iterator
from functools import lru_cache
from pathlib import Path

DATA = Path(__file__).parent / "data" / "cherrant"
# alignment.py's punctuation string; ``in`` on it is a substring test, as in the source
ALIGN_PUNCT = (
    "！？｡＂＃＄％＆＇（）＊＋，－／：；＜＝＞＠［＼］＾＿｀｛｜｝～｟｠｢｣､、〃》「」『』【】〔〕〖〗〘〙〚〛〜〝〞〟〰〾〿–—‘'‛“”„‟…‧﹏"
    + string.punctuation
)

Edit = tuple  # (op, src_start, src_end, tgt_start, tgt_end)


def tokenize(sentence: str) -> list[str]:
    """ChERRANT char tokens: whitespace removed, one token per character, "[缺失成分]" kept whole."""
    s = "".join(sentence.split())
    return " ".join(s).replace("[ 缺 失 成 分 ]", "[缺失成分]").split(" ")


@lru_cache(maxsize=1)
def _cilin() -> dict[str, tuple[str, str, str]]:
    """Single character -> its Cilin (high, mid, low) class; the last line naming it wins, as in
    the source's dict built line by line."""
    out = {}
    for line in (DATA / "cilin_chars.txt").read_text(encoding="utf-8").splitlines():
        ch, code = line.split(" ")
        out[ch] = (code[0], code[1], code[2:4])
    return out


@lru_cache(maxsize=1)
def _confusion() -> dict[str, str]:
    """Chinese character -> the characters the confusion set pairs it with, in either direction
    (the source checks both ``b in conf[a]`` and ``a in conf[b]``)."""
    parts: dict[str, list[str]] = {}
    with gzip.open(DATA / "confusion_pairs.txt.gz", "rt", encoding="utf-8") as f:
        for line in f:
            a, partners = line[0], line[1:].rstrip("\n")
            parts.setdefault(a, []).append(partners)
            for b in partners:
                parts.setdefault(b, []).append(a)
    return {k: "".join(v) for k, v in parts.items()}


@lru_cache(maxsize=65536)
def _pinyin(ch: str) -> frozenset[str]:
    from pypinyin import Style, pinyin

    return frozenset(pinyin(ch, style=Style.NORMAL, heteronym=True)[0])


def _is_chinese(w: str) -> bool:
    if len(w) == 1:
        return "\u4e00" <= w <= "\u9fff"
    return all("\u4e00" <= ch <= "\u9fff" for ch in w)


def _semantic_cost(a: str, b: str) -> int:
    cilin = _cilin()
    ca, cb = cilin.get(a), cilin.get(b)
    if ca is None or cb is None:
        return 4
    if ca == cb:
        return 0
    return 2 * (3 - sum(x == y for x, y in zip(ca, cb)))


def _char_cost(a: str, b: str) -> float:
    """0 for Chinese characters that sound alike or are confusable, else 0.5 (single-character
    tokens: the source's per-character loop reduces to this)."""
    if not (_is_chinese(a) and _is_chinese(b)):
        return 0.5
    if _pinyin(a) & _pinyin(b) or b in _confusion().get(a, ""):
        return 0.0
    return 0.5


@lru_cache(maxsize=1 << 18)  # character pairs recur across sentences; the DP asks millions of times
def sub_cost(a: str, b: str) -> float:
    if a == b:
        return 0.0
    semantic = _semantic_cost(a, b) / 6.0
    if a in ALIGN_PUNCT and b in ALIGN_PUNCT:
        pos = 0.0
    elif a not in ALIGN_PUNCT and b not in ALIGN_PUNCT:
        pos = 0.25
    else:
        pos = 0.499
    return semantic + _char_cost(a, b) + pos


def align(src: list[str], tgt: list[str]) -> list[list]:
    """The operation matrix: per cell, every operation of minimal cost (T<k>, S, I, D order)."""
    n, m = len(src), len(tgt)
    cost = [[0.0] * (m + 1) for _ in range(n + 1)]
    oper: list[list[list[str] | None]] = [[None] * (m + 1) for _ in range(n + 1)]
    for i in range(1, n + 1):
        cost[i][0], oper[i][0] = cost[i - 1][0] + 1, ["D"]
    for j in range(1, m + 1):
        cost[0][j], oper[0][j] = cost[0][j - 1] + 1, ["I"]
    inf = float("inf")
    for i in range(n):
        a, row, nxt, ops_row = src[i], cost[i], cost[i + 1], oper[i + 1]
        for j in range(m):
            b = tgt[j]
            if a == b:
                nxt[j + 1], ops_row[j + 1] = row[j], ["M"]
                continue
            dele, ins = row[j + 1] + 1, nxt[j] + 1
            sub = row[j] + sub_cost(a, b)
            trans, k = inf, 1
            while i - k >= 0 and j - k >= 0 and cost[i - k + 1][j - k + 1] != cost[i - k][j - k]:
                if sorted(src[i - k : i + 1]) == sorted(tgt[j - k : j + 1]):
                    trans = cost[i - k][j - k] + k
                    break
                k += 1
            best = min(trans, sub, ins, dele)
            nxt[j + 1] = best
            ops = ["T" + str(k + 1)] if trans == best else []
            if sub == best:
                ops.append("S")
            if ins == best:
                ops.append("I")
            if dele == best:
                ops.append("D")
            ops_row[j + 1] = ops
    return oper


def _prev(op: str, i: int, j: int) -> tuple[int, int]:
    if op in ("M", "S"):
        return i - 1, j - 1
    if op == "D":
        return i - 1, j
    if op == "I":
        return i, j - 1
    k = int(op[1:])
    return i - k, j - k


def count_alignments(oper: list[list], n: int, m: int) -> int:
    """How many cheapest alignments the source's depth-first search would visit (1 when the
    lengths differ by more than 10: it follows only the first operation of each cell)."""
    if abs(n - m) > 10:
        return 1
    paths = [[0] * (m + 1) for _ in range(n + 1)]
    paths[0][0] = 1
    for i in range(n + 1):
        for j in range(m + 1):
            if i + j:
                paths[i][j] = sum(paths[a][b] for a, b in (_prev(op, i, j) for op in oper[i][j]))
    return paths[n][m]


def cheapest_alignments(oper: list[list], n: int, m: int) -> Iterator[list[Edit]]:
    """Every cheapest alignment, one at a time, in the source's depth-first order (only the first
    when the lengths differ by more than 10); ``count_alignments`` says how many there are."""
    first_only = abs(n - m) > 10
    # the path so far is a linked list (edit, rest) shared between branches, not a copied list:
    # the search backtracks from the end, so walking a finished path gives it in forward order
    stack: list[tuple[int, int, tuple | None]] = [(n, m, None)]
    while stack:
        i, j, path = stack.pop()
        if i + j == 0:
            seq = []
            while path is not None:
                seq.append(path[0])
                path = path[1]
            yield seq
            continue
        ops = oper[i][j][:1] if first_only else oper[i][j]
        for op in reversed(ops):  # reversed so that the stack yields the source's DFS order
            a, b = _prev(op, i, j)
            stack.append((a, b, ((op, a, i, b, j), path)))
