"""Untrusted text (dataset rows and column names, LLM answers and the plans it wrote, hub and
paper snippets) kept as data.

Whatever an LLM reads that did not come from this program goes between two markers that every
system prompt names as the bounds of data (``fence``); the markers cannot be forged from inside
the block, not even with lookalikes: each character is folded by NFKC and an explicit table of
confusables (full-width, small-form, single guillemets, mathematical and CJK angle brackets...)
to find runs of angle brackets, and every such run of three or more becomes square brackets.
Invisible characters that can smuggle text past a reader (Unicode tag characters, bidirectional
overrides) are dropped.

(Text bound for a terminal is made safe by ``redact.terminal_safe``.)
"""

from __future__ import annotations

import json
import re
import unicodedata

OPEN, CLOSE = "<<<UNTRUSTED DATA", "UNTRUSTED DATA>>>"

# characters that read as "<" or ">" (or two of them), beyond what NFKC folds (full-width and
# small-form brackets it does fold)
CONFUSABLES = {
    "\u2039": "<", "\u203a": ">",  # single guillemets ‹ ›
    "\u00ab": "<<", "\u00bb": ">>",  # guillemets « »
    "\u2329": "<", "\u232a": ">",  # angle brackets 〈 〉 (NFKC: CJK ones)
    "\u3008": "<", "\u3009": ">", "\u300a": "<<", "\u300b": ">>",  # CJK angle brackets 〈 〉 《 》
    "\u27e8": "<", "\u27e9": ">", "\u27ea": "<<", "\u27eb": ">>",  # mathematical angle brackets
    "\u276e": "<", "\u276f": ">", "\u2770": "<", "\u2771": ">",  # heavy angle quotation marks
    "\u226a": "<<", "\u226b": ">>", "\u22d8": "<<<", "\u22d9": ">>>",  # much less/greater than
    "\u02c2": "<", "\u02c3": ">",  # modifier letter arrowheads
    "\u1438": "<", "\u1433": ">",  # Canadian syllabics
    "\u2a7d": "<", "\u2a7e": ">",
}
# invisible characters that carry or reorder text a reader does not see
_INVISIBLE = re.compile("[\U000e0000-\U000e007f\u202a-\u202e\u2066-\u2069\u200b-\u200f\u2060\ufeff]")
_RUN = 3  # OPEN and CLOSE are delimited by runs of three brackets


def _bracket(ch: str) -> str:
    """The ASCII angle brackets ``ch`` reads as ('' for anything else)."""
    if ch in "<>":
        return ch
    folded = CONFUSABLES.get(ch) or unicodedata.normalize("NFKC", ch)
    return folded if folded and set(folded) <= {"<", ">"} else ""


def normalise(text: str) -> str:
    """``text`` with invisible smuggling characters dropped and every run of three or more
    angle brackets (ASCII or lookalike) replaced by as many square ones: data can then neither
    close its block early nor open a new one. Everything else is kept as it was (no NFKC of the
    whole text: full-width punctuation is part of many tasks' data)."""
    text = _INVISIBLE.sub("", text)
    out: list[str] = []
    run: list[str] = []  # (char, brackets it reads as) of the current run of bracket-likes

    def flush() -> None:
        units = "".join(_bracket(c) for c in run)
        out.append(units.replace("<", "[").replace(">", "]") if len(units) >= _RUN else "".join(run))
        run.clear()

    for ch in text:
        if _bracket(ch):
            run.append(ch)
            continue
        if run:
            flush()
        out.append(ch)
    if run:
        flush()
    return "".join(out)


def fence(text: str) -> str:
    """``text`` as one block of untrusted data between the markers the system prompts name."""
    return f"{OPEN}\n{normalise(text)}\n{CLOSE}"


def quote(text: str) -> str:
    """``text`` as one quoted JSON string that cannot open or close an untrusted block: the run's
    user's own words (steering notes), shown to the LLM as quoted user text."""
    return json.dumps(normalise(text), ensure_ascii=False)
