"""Slot values found in what callers say (as open recognition writes it) and in what they key."""

from __future__ import annotations

import datetime as dt

import pytest

from asterisk_agent.dialog.flow import SlotDef
from asterisk_agent.dialog.slots import (
    extract,
    find_date,
    find_name,
    find_time,
    find_yes_no,
    free_text,
    from_keys,
    spoken,
)
from asterisk_agent.dialog.templates import TemplateError, render_spoken, render_wire

FRIDAY = dt.date(2026, 11, 27)  # a Friday


@pytest.mark.parametrize(("text", "expected"), [
    ("Wednesday please.", dt.date(2026, 12, 2)),
    ("Can I come in on Friday?", dt.date(2026, 12, 4)),  # today is Friday: the next one
    ("Tomorrow.", dt.date(2026, 11, 28)),
    ("the day after tomorrow", dt.date(2026, 11, 29)),
    ("today if possible", FRIDAY),
    ("December 3rd", dt.date(2026, 12, 3)),
    ("on the 3rd of December", dt.date(2026, 12, 3)),
    ("the third", dt.date(2026, 12, 3)),  # this month's third has passed: next month's
    ("the twenty first", dt.date(2026, 12, 21)),
    ("January 5", dt.date(2027, 1, 5)),
    ("No, Wednesday.", dt.date(2026, 12, 2)),
    ("not Tuesday, Wednesday", dt.date(2026, 12, 2)),  # a correction names the right day last
    ("Wednesday next week", dt.date(2026, 12, 2)),
])
def test_dates_said_inside_sentences(text: str, expected: dt.date) -> None:
    assert find_date(text, FRIDAY) == expected


@pytest.mark.parametrize("text", ["I would like an appointment", "at 10", "", "31 people"])
def test_no_date_where_none_was_said(text: str) -> None:
    assert find_date(text, FRIDAY) is None


@pytest.mark.parametrize(("text", "expected"), [
    ("yesterday", dt.date(2026, 11, 26)),
    ("last Tuesday", dt.date(2026, 11, 24)),
    ("on Friday", dt.date(2026, 11, 20)),  # the last Friday before today
    ("November 20th", dt.date(2026, 11, 20)),
    ("December 3rd", dt.date(2025, 12, 3)),
])
def test_past_dates_for_when_something_happened(text: str, expected: dt.date) -> None:
    assert find_date(text, FRIDAY, past=True) == expected


@pytest.mark.parametrize(("text", "expected"), [
    ("10:30", dt.time(10, 30)),
    ("10.30 a.m.", dt.time(10, 30)),
    ("2pm", dt.time(14, 0)),
    ("at 2 p.m. please", dt.time(14, 0)),
    ("half past nine", dt.time(9, 30)),
    ("quarter to three", dt.time(14, 45)),
    ("ten thirty", dt.time(10, 30)),
    ("three o'clock", dt.time(15, 0)),
    ("at three", dt.time(15, 0)),
    ("noon", dt.time(12, 0)),
    ("9 in the morning", dt.time(9, 0)),
    ("no, 11 a.m.", dt.time(11, 0)),
    ("930 am please", dt.time(9, 30)),  # as open recognition wrote "9:30 a.m." on a real call
    ("1030", dt.time(10, 30)),
    ("at 230", dt.time(14, 30)),
])
def test_times(text: str, expected: dt.time) -> None:
    assert find_time(text) == expected


@pytest.mark.parametrize("text", ["I have three children", "Wednesday", "25:00", "1290", "2026"])
def test_no_time_where_none_was_said(text: str) -> None:
    assert find_time(text) is None


@pytest.mark.parametrize(("text", "expected"), [
    ("Yes.", True), ("Yeah, that's right.", True), ("correct", True), ("Sure, go ahead.", True),
    ("No.", False), ("Nope, that's wrong.", False), ("no, that's not right", False), ("That is not correct.", False),
    ("Maybe.", None), ("yes no", None), ("", None),
])
def test_yes_and_no(text: str, expected: bool | None) -> None:
    assert find_yes_no(text) is expected


def test_names_by_pronunciation_and_longest_first() -> None:
    names = ["Steven", "Anna", "Anna Smith"]
    assert find_name("This is Stephen.", names) == "Steven"
    assert find_name("my name is anna smith", names) == "Anna Smith"
    assert find_name("Anna here", names) == "Anna"
    assert find_name("Robert", names) is None


def test_choices_need_one_clear_value() -> None:
    slot = SlotDef(type="choice", choices={"home": ["house", "flat"], "auto": ["car", "vehicle"]})
    assert extract(slot, "It's about my car.", FRIDAY) is not None
    assert extract(slot, "It's about my car.", FRIDAY).value == "auto"  # type: ignore[union-attr]
    assert extract(slot, "my house and my car", FRIDAY) is None


def test_digits_respect_their_length() -> None:
    slot = SlotDef(type="digits", min_digits=8, max_digits=8)
    assert extract(slot, "It's 1234 5678.", FRIDAY).value == "12345678"  # type: ignore[union-attr]
    assert extract(slot, "one two three four five six seven eight", FRIDAY).value == "12345678"  # type: ignore[union-attr]
    assert extract(slot, "1234", FRIDAY) is None


def test_free_text_drops_a_leading_phrase() -> None:
    assert free_text("My name is Alice Martin.") == "Alice Martin"
    assert free_text("Well, a tree fell on the garage.") == "a tree fell on the garage"
    assert free_text("  ") is None


@pytest.mark.parametrize(("slot", "keys", "expected"), [
    (SlotDef(type="digits", min_digits=4, max_digits=4), "4321", "4321"),
    (SlotDef(type="digits", min_digits=4, max_digits=4), "43", None),
    (SlotDef(type="yes_no"), "1", True),
    (SlotDef(type="yes_no"), "2", False),
    (SlotDef(type="yes_no"), "3", None),
    (SlotDef(type="choice", choices=["home", "auto"]), "2", "auto"),
    (SlotDef(type="choice", choices=["home", "auto"]), "3", None),
    (SlotDef(type="time"), "1030", dt.time(10, 30)),
    (SlotDef(type="time"), "0300", dt.time(3, 0)),
    (SlotDef(type="date"), "0312", dt.date(2026, 12, 3)),
    (SlotDef(type="date"), "0313", None),
    (SlotDef(type="digits", keys=False), "1234", None),
])
def test_keys(slot: SlotDef, keys: str, expected: object) -> None:
    match = from_keys(slot, keys, FRIDAY)
    assert (match.value if match else None) == expected
    if match:
        assert match.keyed


def test_values_as_spoken_and_sensitive_ones_never_whole() -> None:
    assert spoken(dt.date(2026, 12, 2)) == "Wednesday, December 2"
    assert spoken(dt.time(14, 0)) == "2 p.m."
    assert spoken(dt.time(9, 30)) == "9:30 a.m."
    assert spoken("4271") == "4, 2, 7, 1"
    assert spoken("12345678", sensitive=True) == "ending in 7, 8"
    assert "1234" not in spoken("12345678", sensitive=True)


def test_templates_render_values_filters_and_masks() -> None:
    values = {"date": dt.date(2026, 12, 2), "slots": {"times": ["09:00", "09:30", "11:00", "14:00"]},
              "balance": {"amount": "1520.40"}, "pin": "4321"}
    text = render_spoken("On {date} I have {slots.times|first3|times|or}.", values)
    assert text == "On Wednesday, December 2 I have 9 a.m., 9:30 a.m. or 11 a.m."
    assert render_spoken("{balance.amount|money}", values) == "1,520 dollars and 40 cents"
    assert render_spoken("{pin}", values, frozenset({"pin"})) == "ending in 2, 1"
    assert render_wire("{date}", values) == "2026-12-02"
    assert render_wire("POL{pin}", values) == "POL4321"
    with pytest.raises(TemplateError, match="no value"):
        render_spoken("{missing}", values)
    with pytest.raises(TemplateError, match="unknown filter"):
        render_spoken("{date|shout}", values)
