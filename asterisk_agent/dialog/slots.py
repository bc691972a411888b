"""Slot values found in what a caller said (open recognition writes whole sentences: "Yeah, Wednesday at ten
thirty please") or keyed: pure functions over text, each match with a score.

Dates and times are read here rather than by a general date parser: callers say a small set of forms ("next
Wednesday", "the 3rd", "December 3rd", "half past ten", "2 p.m."), they must be found inside a sentence, and the
answer must be resolved against the call's own day, the same way every time.
"""

from __future__ import annotations

import calendar
import datetime as dt
import re
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

from asterisk_agent.dialog.flow import SlotDef
from asterisk_agent.speech.stt.grammars import (
    MONTHS,
    WEEKDAYS,
    digits_in,
    pronouncing_dictionary,
    words_of,
)


@dataclass(frozen=True)
class SlotMatch:
    value: Any  # str (digits, name, choice, free text), bool (yes/no), datetime.date, datetime.time
    score: float  # how sure the reading is, 0..1 (keys: 1)
    keyed: bool = False


_UNITS = ("one", "two", "three", "four", "five", "six", "seven", "eight", "nine")
_TEENS = ("ten", "eleven", "twelve", "thirteen", "fourteen", "fifteen", "sixteen", "seventeen", "eighteen",
          "nineteen")
_TENS = {"twenty": 20, "thirty": 30, "forty": 40, "fifty": 50}
_NUMBER_WORDS = {w: i + 1 for i, w in enumerate(_UNITS)} | {w: 10 + i for i, w in enumerate(_TEENS)}
_ORDINAL_WORDS = ({w: i + 1 for i, w in enumerate(("first", "second", "third", "fourth", "fifth", "sixth",
                                                    "seventh", "eighth", "ninth"))}
                  | {w: 10 + i for i, w in enumerate(("tenth", "eleventh", "twelfth", "thirteenth", "fourteenth",
                                                      "fifteenth", "sixteenth", "seventeenth", "eighteenth",
                                                      "nineteenth"))}
                  | {"twentieth": 20, "thirtieth": 30})
_ORDINAL_NUMERAL = re.compile(r"^(\d{1,2})(st|nd|rd|th)$")
_CLOCK = re.compile(r"^(\d{1,2})[:.](\d{2})(a\.?m\.?|p\.?m\.?)?$")
_HOUR_MERIDIEM = re.compile(r"^(\d{1,2})(a\.?m\.?|p\.?m\.?)$")
_RUN_TOGETHER = re.compile(r"^(\d{1,2})(\d{2})$")  # open recognition writes "9:30 a.m." as "930 am"
_ISO_DATE = re.compile(r"^\d{4}-\d{2}-\d{2}$")
_MONTH_SHORT = {name[:3]: index + 1 for index, name in enumerate(MONTHS)} | {"sept": 9}


# --- dates ------------------------------------------------------------------------------------------------------


def _day_number(words: Sequence[str], i: int) -> tuple[int, int] | None:
    """A day of the month at ``words[i]`` ("3rd", "3", "third", "twenty first") -> (day, words used)."""
    word = words[i]
    nxt = words[i + 1] if i + 1 < len(words) else ""
    match = _ORDINAL_NUMERAL.match(word)
    if match:
        return int(match.group(1)), 1
    if word.isdigit() and 1 <= int(word) <= 31 and len(word) <= 2:
        return int(word), 1
    if word in _ORDINAL_WORDS:
        return _ORDINAL_WORDS[word], 1
    if word in _TENS and nxt in _ORDINAL_WORDS and _ORDINAL_WORDS[nxt] < 10:
        return _TENS[word] + _ORDINAL_WORDS[nxt], 2
    return None


def _next_weekday(today: dt.date, weekday: int) -> dt.date:
    ahead = (weekday - today.weekday()) % 7
    return today + dt.timedelta(days=ahead or 7)


def _month_day(today: dt.date, month: int | None, day: int, past: bool = False) -> dt.date | None:
    """The nearest such day on or after today (on or before, for ``past``), this month or another, this year or
    the next (the last)."""
    candidates = []
    for year in (today.year - 1, today.year, today.year + 1):
        for m in [month] if month is not None else list(range(1, 13)):
            if day <= calendar.monthrange(year, m)[1]:
                candidates.append(dt.date(year, m, day))
    if past:
        before = sorted(c for c in candidates if c <= today)
        return before[-1] if before else None
    upcoming = sorted(c for c in candidates if c >= today)
    return upcoming[0] if upcoming else None


def find_date(text: str, today: dt.date, past: bool = False) -> dt.date | None:
    """The last day named in ``text`` (a correction names the right one last), resolved on or after ``today``
    (on or before it for ``past``: "when did it happen?")."""
    words = words_of(text)
    found: dt.date | None = None
    i = 0
    while i < len(words):
        word = words[i]
        used = 1
        value: dt.date | None = None
        if _ISO_DATE.match(word):  # as a language model or a keyed form writes it
            try:
                value = dt.date.fromisoformat(word)
            except ValueError:
                value = None
        elif word == "today":
            value = today
        elif word == "tomorrow" and not past:
            value = today + dt.timedelta(days=2 if words[max(0, i - 2):i] == ["day", "after"] else 1)
        elif word == "yesterday":
            value = today - dt.timedelta(days=2 if words[max(0, i - 2):i] == ["day", "before"] else 1)
        elif word in WEEKDAYS or word.rstrip("s") in WEEKDAYS:
            weekday = WEEKDAYS.index(word.rstrip("s") if word not in WEEKDAYS else word)
            if past:
                value = today - dt.timedelta(days=(today.weekday() - weekday) % 7 or 7)
            else:
                value = _next_weekday(today, weekday)
                if i >= 1 and words[i - 1] == "next" and "week" in words[i + 1:i + 3]:
                    value += dt.timedelta(days=7) if (value - today).days < 7 else dt.timedelta()
        elif word in MONTHS or word in _MONTH_SHORT:
            month = MONTHS.index(word) + 1 if word in MONTHS else _MONTH_SHORT[word]
            after = _day_number(words, i + 1) if i + 1 < len(words) else None
            if after is None and i + 2 < len(words) and words[i + 1] == "the":
                after = _day_number(words, i + 2)
                used += 1 if after else 0
            if after is not None:
                value = _month_day(today, month, after[0], past)
                used += after[1]
        else:
            day = _day_number(words, i)
            if day is not None and ((i > 0 and words[i - 1] in ("the", "on")) or not words[i].isdigit()):
                rest = words[i + day[1]:i + day[1] + 2]
                month = None
                if rest[:1] == ["of"] and rest[1:] and rest[1] in MONTHS:
                    month = MONTHS.index(rest[1]) + 1
                    used = day[1] + 2
                elif rest[:1] and rest[0] in MONTHS:
                    month = MONTHS.index(rest[0]) + 1
                    used = day[1] + 1
                else:
                    used = day[1]
                if month is not None or not words[i].isdigit():
                    value = _month_day(today, month, day[0], past)
        if value is not None:
            found = value
        i += used
    return found


# --- times ------------------------------------------------------------------------------------------------------


def _meridiem(words: Sequence[str], i: int) -> str | None:
    nxt = " ".join(words[i:i + 3])
    if nxt.startswith(("a.m.", "am ", "a.m", "in the morning")) or words[i:i + 1] == ["am"]:
        return "am"
    if nxt.startswith(("p.m.", "pm ", "p.m", "in the afternoon", "in the evening")) or words[i:i + 1] == ["pm"]:
        return "pm"
    return None


def _hour_24(hour: int, minute: int, meridiem: str | None) -> dt.time | None:
    if not 0 <= minute <= 59 or not 0 <= hour <= 23:
        return None
    if meridiem is not None:
        if not 1 <= hour <= 12:
            return None
        hour = hour % 12 + (12 if meridiem == "pm" else 0)
    elif 1 <= hour <= 6:
        hour += 12  # "at three": office hours, so the afternoon
    return dt.time(hour, minute)


def _hour_word(word: str) -> int | None:
    if word.isdigit() and len(word) <= 2:
        return int(word)
    number = _NUMBER_WORDS.get(word)
    return number if number is not None and number <= 12 else None


def find_time(text: str) -> dt.time | None:
    """The last time of day named in ``text``: "10:30", "10.30 a.m.", "2pm", "ten thirty", "half past ten",
    "quarter to three", "three o'clock", "noon". Without a.m./p.m. 1 to 6 o'clock is taken as the afternoon."""
    words = words_of(text.replace("o'clock", " oclock"))
    found: dt.time | None = None
    i = 0
    while i < len(words):
        word = words[i]
        used = 1
        value: dt.time | None = None
        together = _RUN_TOGETHER.match(word)
        clock = _CLOCK.match(word) or (together if together and 1 <= int(together.group(1)) <= 12 else None)
        short = _HOUR_MERIDIEM.match(word)
        if word in ("noon", "midday"):
            value = dt.time(12, 0)
        elif word == "midnight":
            value = dt.time(0, 0)
        elif clock:
            suffix = clock.group(3) if clock.re is _CLOCK else None
            meridiem = ("am" if suffix.startswith("a") else "pm") if suffix else _meridiem(words, i + 1)
            value = _hour_24(int(clock.group(1)), int(clock.group(2)), meridiem)
        elif short:
            value = _hour_24(int(short.group(1)), 0, "am" if short.group(2).startswith("a") else "pm")
        elif word in ("half", "quarter") and i + 2 < len(words) and words[i + 1] in ("past", "to", "after"):
            hour = _hour_word(words[i + 2])
            if hour is not None:
                minute = 30 if word == "half" else 15
                meridiem = _meridiem(words, i + 3)
                if words[i + 1] == "to":
                    hour, minute = (hour - 2) % 12 + 1, 60 - minute
                value = _hour_24(hour, minute, meridiem)
                used = 3
        else:
            hour = _hour_word(word)
            preceded = i > 0 and words[i - 1] in ("at", "around", "about", "by")
            nxt = words[i + 1] if i + 1 < len(words) else ""
            if hour is not None:
                minute = 0
                step = 1
                if nxt in _TENS:
                    minute = _TENS[nxt]
                    step = 2
                    after = words[i + 2] if i + 2 < len(words) else ""
                    if after in _NUMBER_WORDS and _NUMBER_WORDS[after] < 10:
                        minute += _NUMBER_WORDS[after]
                        step = 3
                elif nxt in _TEENS or nxt == "fifteen":
                    minute = _NUMBER_WORDS[nxt]
                    step = 2
                elif nxt == "oh" and i + 2 < len(words) and words[i + 2] in _NUMBER_WORDS:
                    minute = _NUMBER_WORDS[words[i + 2]]
                    step = 3
                elif nxt.isdigit() and len(nxt) == 2:
                    minute = int(nxt)
                    step = 2
                meridiem = _meridiem(words, i + step)
                said_clock = step > 1 or meridiem is not None or nxt == "oclock" or preceded
                if said_clock:
                    value = _hour_24(hour, minute, meridiem)
                    used = step
        if value is not None:
            found = value
        i += used
    return found


# --- yes / no ---------------------------------------------------------------------------------------------------

_YES = ("yes", "yeah", "yep", "yup", "correct", "right", "sure", "okay", "ok", "absolutely", "exactly", "definitely",
        "of course", "that's it", "sounds good", "go ahead", "please do", "affirmative", "yes please")
_NO = ("no", "nope", "nah", "incorrect", "wrong", "negative", "not right", "not correct", "that's not",
       "that is not", "isn't", "don't", "do not")


def _phrase_at(words: Sequence[str], phrases: Sequence[str]) -> list[int]:
    """Indexes where any of ``phrases`` starts in ``words``."""
    hits = []
    split = [phrase.split() for phrase in phrases]
    for i in range(len(words)):
        if any(words[i:i + len(p)] == p for p in split):
            hits.append(i)
    return hits


def find_yes_no(text: str) -> bool | None:
    """Yes or no, ``None`` when neither or both were said ("no, no, yes" is not an answer)."""
    words = words_of(text)
    no = _phrase_at(words, _NO)
    yes = [i for i in _phrase_at(words, _YES) if not (i > 0 and words[i - 1] in ("not", "isn't"))]
    if yes and not no:
        return True
    if no and not yes:
        return False
    if yes and no and min(no) < min(yes) and words[min(no)] == "no" and words[min(yes)] in ("right", "correct"):
        return False  # "no, that's not right"
    return None


# --- names and choices ------------------------------------------------------------------------------------------


def _sounds_like(heard: str, listed: str) -> bool:
    if heard == listed:
        return True
    dictionary = pronouncing_dictionary()
    if heard not in dictionary or listed not in dictionary:
        return False
    return bool(set(dictionary.pronunciations(heard)) & set(dictionary.pronunciations(listed)))


def find_name(text: str, names: Sequence[str]) -> str | None:
    """The listed name said in ``text`` (by pronunciation: "Stephen" for "Steven"); the longest wins."""
    words = words_of(text)
    best: tuple[int, str] | None = None
    for name in names:
        parts = words_of(name)
        for i in range(len(words) - len(parts) + 1):
            if all(_sounds_like(words[i + k], part) for k, part in enumerate(parts)):
                if best is None or len(parts) > best[0]:
                    best = (len(parts), name)
                break
    return best[1] if best else None


def choice_phrases(slot: SlotDef) -> dict[str, list[str]]:
    if isinstance(slot.choices, dict):
        return {value: [value, *phrases] for value, phrases in slot.choices.items()}
    return {value: [value] for value in slot.choices}


def find_choice(text: str, choices: dict[str, list[str]]) -> str | None:
    """The one value whose phrase was said (the longest phrase decides); ``None`` if two values were named."""
    words = words_of(text)
    hits: dict[str, int] = {}
    for value, phrases in choices.items():
        for phrase in phrases:
            parts = words_of(phrase)
            if parts and any(words[i:i + len(parts)] == parts for i in range(len(words))):
                hits[value] = max(hits.get(value, 0), len(parts))
    if not hits:
        return None
    longest = max(hits.values())
    winners = [value for value, length in hits.items() if length == longest]
    return winners[0] if len(winners) == 1 else None


FREE_TEXT_LEADS = ("my name is", "the name is", "it's", "it is", "this is", "i'm", "i am", "that's", "well,", "um,",
                   "uh,", "so,")


def free_text(text: str) -> str | None:
    """What the caller said in their own words, without a leading "my name is" or "well," and the final dot."""
    value = " ".join(text.split())
    lowered = value.lower()
    for lead in FREE_TEXT_LEADS:
        if lowered.startswith(lead + " ") or (lead.endswith(",") and lowered.startswith(lead)):
            value = value[len(lead):].strip(" ,")
            break
    value = value.rstrip(".!? ")
    return value or None


# --- one slot ---------------------------------------------------------------------------------------------------


def extract(slot: SlotDef, text: str, today: dt.date) -> SlotMatch | None:
    """The slot's value in what the caller said, or ``None``."""
    if not text.strip():
        return None
    value: Any
    if slot.type == "digits":
        value = digits_in(text)
        if not slot.min_digits <= len(value) <= slot.max_digits:
            return None
        return SlotMatch(value, 1.0)
    if slot.type == "date":
        value = find_date(text, today, past=slot.dates == "past")
    elif slot.type == "time":
        value = find_time(text)
    elif slot.type == "yes_no":
        value = find_yes_no(text)
    elif slot.type == "name":
        value = find_name(text, [str(name) for name in slot.choices])
    elif slot.type == "choice":
        value = find_choice(text, choice_phrases(slot))
    else:
        value = free_text(text)
    return None if value is None else SlotMatch(value, 1.0)


def from_keys(slot: SlotDef, keys: str, today: dt.date) -> SlotMatch | None:
    """The slot's value keyed on the phone: digits as keyed; 1 yes, 2 no; a choice or name by its position;
    a time as HHMM; a date as DDMM."""
    if not slot.keys or not keys or not keys.isdigit():
        return None
    value: Any = None
    if slot.type == "digits" and slot.min_digits <= len(keys) <= slot.max_digits:
        value = keys
    elif slot.type == "yes_no" and keys in ("1", "2"):
        value = keys == "1"
    elif slot.type in ("choice", "name"):
        options = list(slot.choices) if isinstance(slot.choices, dict) else slot.choices
        if 1 <= int(keys) <= len(options):
            value = options[int(keys) - 1]
    elif slot.type == "time" and len(keys) == 4:
        with_time = _hour_24(int(keys[:2]), int(keys[2:]), None) if int(keys[:2]) > 6 else None
        value = with_time or (dt.time(int(keys[:2]), int(keys[2:])) if int(keys[:2]) < 24 and int(keys[2:]) < 60
                              else None)
    elif slot.type == "date" and len(keys) == 4:
        day, month = int(keys[:2]), int(keys[2:])
        if 1 <= month <= 12:
            value = _month_day(today, month, day, slot.dates == "past")
    return None if value is None else SlotMatch(value, 1.0, keyed=True)


# --- saying and sending values --------------------------------------------------------------------------------


def spoken(value: Any, *, sensitive: bool = False) -> str:
    """A value as the agent says it. A sensitive value is never read back whole: its last two digits only."""
    if sensitive:
        text = str(value)
        return f"ending in {', '.join(text[-2:])}" if len(text) > 2 else "as you gave it"
    if isinstance(value, bool):
        return "yes" if value else "no"
    if isinstance(value, dt.date):
        return f"{WEEKDAYS[value.weekday()].capitalize()}, {MONTHS[value.month - 1].capitalize()} {value.day}"
    if isinstance(value, dt.time):
        hour = value.hour % 12 or 12
        suffix = "a.m." if value.hour < 12 else "p.m."
        if value == dt.time(12, 0):
            return "noon"
        return f"{hour} {suffix}" if value.minute == 0 else f"{hour}:{value.minute:02d} {suffix}"
    if isinstance(value, str) and value.isdigit():
        return ", ".join(value)
    return str(value)


def wire(value: Any) -> Any:
    """A value as an integration receives it: ISO dates, HH:MM times, everything else as it is."""
    if isinstance(value, dt.date):
        return value.isoformat()
    if isinstance(value, dt.time):
        return value.strftime("%H:%M")
    return value
