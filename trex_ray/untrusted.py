"""Untrusted text (dataset rows, LLM answers, hub and paper snippets) kept as data.

Whatever an LLM reads that did not come from this program goes between two markers that every
system prompt names as the bounds of data; the markers cannot be forged from inside the block.
"""

from __future__ import annotations

OPEN, CLOSE = "<<<UNTRUSTED DATA", "UNTRUSTED DATA>>>"


def _neutralise(text: str) -> str:
    """Data may not close (or reopen) the untrusted block early."""
    return text.replace("<<<", "‹‹‹").replace(">>>", "›››")


def fence(text: str) -> str:
    """``text`` as one block of untrusted data between the markers the system prompts name."""
    return f"{OPEN}\n{_neutralise(text)}\n{CLOSE}"
