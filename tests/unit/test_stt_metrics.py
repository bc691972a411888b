from __future__ import annotations

import pytest

from asterisk_agent.speech.stt.metrics import edit_distance, word_error_rate


def test_edit_distance_counts_insertions_deletions_and_substitutions() -> None:
    assert edit_distance("6477", "64777") == 1
    assert edit_distance("1234", "4321") == 4
    assert edit_distance("", "12") == 2
    assert edit_distance(["my", "name"], ["my", "game", "is"]) == 2


def test_word_error_rate_over_utterances() -> None:
    assert word_error_rate(["yes please", "no"], ["yes please", "no"]) == 0
    assert word_error_rate(["transfer me to billing", "no"], ["transfer me to billings", ""]) == pytest.approx(2 / 5)
    with pytest.raises(ValueError, match="reference word"):
        word_error_rate([""], ["anything"])
