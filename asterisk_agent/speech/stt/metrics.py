"""How right a recognition is: edit distance, and word error rate over a set of utterances."""

from __future__ import annotations

from collections.abc import Callable, Hashable, Sequence


def edit_distance(reference: Sequence[Hashable], hypothesis: Sequence[Hashable]) -> int:
    """Levenshtein distance: insertions, deletions and substitutions turning one sequence into the other
    (characters of a string, or words of a list)."""
    row = list(range(len(hypothesis) + 1))
    for i, ref in enumerate(reference, 1):
        previous, row[0] = row[0], i
        for j, hyp in enumerate(hypothesis, 1):
            previous, row[j] = row[j], min(row[j] + 1, row[j - 1] + 1, previous + (ref != hyp))
    return row[-1]


def word_error_rate(
    references: Sequence[str], hypotheses: Sequence[str], words: Callable[[str], list[str]] = str.split
) -> float:
    """Word errors over reference words, across utterances; ``words`` normalises and splits a text."""
    errors = sum(edit_distance(words(r), words(h)) for r, h in zip(references, hypotheses, strict=True))
    total = sum(len(words(r)) for r in references)
    if total == 0:
        raise ValueError("word error rate needs at least one reference word")
    return errors / total
