"""Guardrails for a reply a language model reworded: what the caller hears must say the same thing as the flow's
own reply. A rewording is taken only when it keeps every fact (each template field as the agent says it), adds
or drops no number, stays one short spoken paragraph, and carries no formatting a voice cannot say; otherwise
the flow's own words are spoken. Pure functions, so the rules are tested without a model.
"""

from __future__ import annotations

import re
from collections import Counter
from dataclasses import dataclass

MAX_GROWTH = 2.0  # a rewording at most twice the reply's length...
MAX_EXTRA_CHARS = 80  # ...or this much longer, whichever allows more (short replies grow the most)
_UNSPEAKABLE = re.compile(r"[*#`_<>\[\]{}|\\]|https?://")


def _normalised(text: str) -> str:
    """Lowercase letters and digits only: "Friday, December 11" and "friday december 11" are the same fact."""
    return re.sub(r"[^a-z0-9]", "", text.lower())


def _digits(text: str) -> Counter[str]:
    return Counter(re.findall(r"\d", text))


@dataclass(frozen=True)
class Verdict:
    text: str  # what the caller hears: the rewording, or the flow's own reply
    reworded: bool
    reason: str  # why the rewording was refused ("" when taken)


def judge_rewording(reply: str, facts: tuple[str, ...], proposal: str | None) -> Verdict:
    """The rewording when it keeps to the reply, else the reply itself with the reason."""
    if proposal is None:
        return Verdict(reply, False, "no rewording")
    candidate = " ".join(proposal.split())
    if not candidate:
        return Verdict(reply, False, "empty")
    if "\n" in proposal.strip() or _UNSPEAKABLE.search(candidate):
        return Verdict(reply, False, "formatting a voice cannot say")
    if len(candidate) > max(len(reply) * MAX_GROWTH, len(reply) + MAX_EXTRA_CHARS):
        return Verdict(reply, False, f"too long ({len(candidate)} characters for {len(reply)})")
    said = _normalised(candidate)
    for fact in facts:
        if _normalised(fact) not in said:
            return Verdict(reply, False, "a fact left out or changed")
    if _digits(candidate) != _digits(reply):
        return Verdict(reply, False, "numbers added or dropped")
    return Verdict(candidate, True, "")
