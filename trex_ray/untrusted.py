"""Untrusted text (dataset rows, LLM answers, hub and paper snippets) kept as data.

Whatever an LLM reads that did not come from this program goes between two markers that every
system prompt names as the bounds of data; the markers cannot be forged from inside the block.
"""

from __future__ import annotations

import json

OPEN, CLOSE = "<<<UNTRUSTED DATA", "UNTRUSTED DATA>>>"


def _neutralise(text: str) -> str:
    """Data may not close (or reopen) the untrusted block early."""
    return text.replace("<<<", "‹‹‹").replace(">>>", "›››")


def fence(text: str) -> str:
    """``text`` as one block of untrusted data between the markers the system prompts name."""
    return f"{OPEN}\n{_neutralise(text)}\n{CLOSE}"


def quote(text: str) -> str:
    """``text`` as one quoted JSON string that cannot open or close an untrusted block: the run's
    user's own words (steering notes), shown to the LLM as quoted user text."""
    return json.dumps(_neutralise(text), ensure_ascii=False)
