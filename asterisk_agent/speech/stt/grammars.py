"""Per-state recognition grammars as JSGF text, built by pure functions, each with the phrases it expects and a
``normalize`` that maps the recognised words to a slot value.

Every builder returns a :class:`Grammar` whose JSGF has one public rule, ``<utterance>`` (:data:`ROOT_RULE`):
engines may wrap it (the pocketsphinx engine adds a garbage alternative around it to reject speech outside the
grammar). Words are lower case, separated by spaces, and every word must be in the pronouncing dictionary that
ships inside the pocketsphinx wheel (``cmudict-en-us.dict``): a missing word raises :class:`UnknownWordError`
when the grammar is built, not when a caller speaks.

- :func:`digits`: "four two seven one" -> ``"4271"`` ("oh" and "zero" are 0).
- :func:`yes_no`: yes / yeah / correct ... -> ``True``; no / nope / wrong ... -> ``False``.
- :func:`menu`: ``{value: [phrases]}`` -> value.
- :func:`names`: a list of names -> the name as given.
- :func:`dates_and_times`: "tomorrow at three pm", "monday", "the fifth of june", "ten thirty" ->
  :class:`DateTimeValue` (what was said, not resolved against a calendar).
- :func:`human_request`: "operator", "an agent", "I want to speak to a human" -> ``True``.
- :func:`introduction`: "my name is Anna Smith and my number is four two seven one" -> :class:`Introduction`.

:class:`GrammarSpec` describes a grammar by builder and arguments, so a process pool worker can build the same
one (a :class:`Grammar` holds its normalizer, which does not pickle).

``normalize`` returns ``None`` for text the grammar does not produce (empty text, a truncated digit string).
"""

from __future__ import annotations

import re
import threading
from collections.abc import Callable, Iterable, Mapping, Sequence
from dataclasses import dataclass, field, replace
from importlib import import_module
from pathlib import Path
from typing import Any

ROOT_RULE = "utterance"  # the one public rule of every grammar built here

_NAME_RE = re.compile(r"^[A-Za-z][A-Za-z0-9_]*$")
_PUNCTUATION = ",!?;:\"()"


class UnknownWordError(ValueError):
    """A grammar uses words the pronouncing dictionary does not have."""

    def __init__(self, grammar: str, words: Iterable[str]) -> None:
        self.grammar = grammar
        self.words = tuple(sorted(set(words)))
        super().__init__(
            f"grammar {grammar!r}: not in the pocketsphinx dictionary: {', '.join(self.words)} "
            "(spell them as dictionary words, e.g. split or respell names)"
        )


# --- the pronouncing dictionary ----------------------------------------------------------------------------------


class PronouncingDictionary:
    """The CMU dictionary inside the pocketsphinx wheel, read once per process: word -> pronunciations
    (ARPABET phones separated by spaces; alternates of ``word(2)`` listed after the main one)."""

    def __init__(self, path: Path) -> None:
        self.path = path
        entries: dict[str, str] = {}
        with path.open(encoding="utf-8") as lines:
            for line in lines:
                head, _, phones = line.strip().partition(" ")
                if not phones:
                    continue
                word = head.split("(", 1)[0]
                known = entries.get(word)
                # One string per word (alternates joined by "|"): about half the memory of a list per word.
                entries[word] = phones.strip() if known is None else f"{known}|{phones.strip()}"
        self._entries = entries

    def __contains__(self, word: object) -> bool:
        return word in self._entries

    def __len__(self) -> int:
        return len(self._entries)

    def pronunciations(self, word: str) -> tuple[str, ...]:
        """Every pronunciation of ``word``, the main one first; KeyError when the word is unknown."""
        return tuple(self._entries[word].split("|"))

    def missing(self, words: Iterable[str]) -> list[str]:
        return sorted({word for word in words if word not in self._entries})


_DICTIONARY: PronouncingDictionary | None = None
_DICTIONARY_LOCK = threading.Lock()


def dictionary_path() -> Path:
    pocketsphinx: Any = import_module("pocketsphinx")  # ships no type information
    return Path(str(pocketsphinx.get_model_path("en-us/cmudict-en-us.dict")))  # inside the wheel


def pronouncing_dictionary() -> PronouncingDictionary:
    """The dictionary, loaded at most once per process (about 0.2 s)."""
    global _DICTIONARY  # noqa: PLW0603 - one copy per process
    with _DICTIONARY_LOCK:
        if _DICTIONARY is None:
            _DICTIONARY = PronouncingDictionary(dictionary_path())
        return _DICTIONARY


# --- the grammar ----------------------------------------------------------------------------------------------


def words_of(text: str) -> list[str]:
    """``text`` as lower-case words, punctuation around words dropped (apostrophes kept, and the dots inside
    "a.m." / "p.m.": a final dot is dropped only from words without one inside)."""
    words = []
    for token in text.lower().replace(",", " ").split():
        word = token.strip(_PUNCTUATION)
        if word.endswith(".") and "." not in word[:-1]:
            word = word.rstrip(".")
        if word:
            words.append(word)
    return words


@dataclass(frozen=True, slots=True)
class Grammar:
    """A recognition grammar: ``jsgf`` (public rule ``<utterance>``), the ``phrases`` it expects (all of them for
    phrase lists, examples for the generative ones), the ``words`` it uses, and how recognised text becomes a
    slot value (:meth:`normalize`)."""

    name: str
    jsgf: str
    phrases: tuple[str, ...]
    words: frozenset[str]
    normalizer: Callable[[Sequence[str]], Any] = field(repr=False, compare=False)
    hint: str = ""  # for open recognition: words this state's answers are likely to contain (names, terms)

    def normalize(self, text: str) -> Any:
        """The slot value for recognised ``text``; ``None`` when the text is empty or not a sentence of this
        grammar."""
        words = words_of(text)
        return self.normalizer(words) if words else None


def _check_name(name: str) -> None:
    if not _NAME_RE.match(name):
        raise ValueError(f"grammar names are letters, digits and underscores starting with a letter, got {name!r}")


def _alternatives(items: Iterable[str]) -> str:
    return " | ".join(items)


def _build(name: str, rules: Mapping[str, str], phrases: Iterable[str],
           normalizer: Callable[[Sequence[str]], Any]) -> Grammar:
    """A grammar from its rules (``rules[ROOT_RULE]`` is public); every word checked against the dictionary."""
    _check_name(name)
    if ROOT_RULE not in rules:
        raise ValueError(f"grammar {name!r} has no <{ROOT_RULE}> rule")
    lines = ["#JSGF V1.0;", f"grammar {name};"]
    for rule, body in rules.items():
        lines.append(f"{'public ' if rule == ROOT_RULE else ''}<{rule}> = {body};")
    jsgf = "\n".join(lines) + "\n"
    words = frozenset(
        token
        for body in rules.values()
        for token in re.sub(r"<[^>]*>|/[^/]*/", " ", body).replace("(", " ").replace(")", " ")
        .replace("[", " ").replace("]", " ").replace("|", " ").replace("+", " ").replace("*", " ").split()
    )
    missing = pronouncing_dictionary().missing(words)
    if missing:
        raise UnknownWordError(name, missing)
    return Grammar(name, jsgf, tuple(phrases), words, normalizer)


def _phrase_table(name: str, table: Mapping[str, Any]) -> Grammar:
    """A grammar that is exactly a list of phrases, each mapped to a value."""
    if not table:
        raise ValueError(f"grammar {name!r} needs at least one phrase")
    lookup = dict(table)

    def normalize(words: Sequence[str]) -> Any:
        return lookup.get(" ".join(words))

    return _build(name, {ROOT_RULE: _alternatives(f"( {phrase} )" for phrase in lookup)}, lookup, normalize)


def _table_from(name: str, choices: Mapping[Any, Iterable[str]]) -> dict[str, Any]:
    table: dict[str, Any] = {}
    for value, phrases in choices.items():
        for phrase in phrases:
            key = " ".join(words_of(phrase))
            if not key:
                raise ValueError(f"grammar {name!r}: an empty phrase for {value!r}")
            if key in table and table[key] != value:
                raise ValueError(f"grammar {name!r}: {key!r} is a phrase of both {table[key]!r} and {value!r}")
            table[key] = value
    return table


# --- digits ----------------------------------------------------------------------------------------------------

DIGIT_WORDS: dict[str, str] = {
    "zero": "0", "oh": "0", "one": "1", "two": "2", "three": "3", "four": "4",
    "five": "5", "six": "6", "seven": "7", "eight": "8", "nine": "9",
}


def spoken_digits(words: Sequence[str]) -> list[str]:
    """Numerals as open recognition writes them ("4271", "42-71") spelled out as digit words, one per digit."""
    out: list[str] = []
    for word in words:
        compact = word.replace("-", "")
        if compact.isdigit() and compact.isascii():
            out.extend(_DIGIT_NAMES[int(char)] for char in compact)
        elif "-" in word and _spelled_group(word.split("-")):
            # "4-1-a-1": inside a group of digits spelled with hyphens, Whisper writes "eight" as the letter A
            # and zero as the letter O (they sound alike); outside such a group the letters stay letters.
            for part in word.split("-"):
                if part.isdigit():
                    out.extend(_DIGIT_NAMES[int(char)] for char in part)
                else:
                    out.append(_LETTER_DIGITS[part])
        elif "-" in word and any(part.isdigit() for part in word.split("-")):
            out.extend(spoken_digits([part for part in word.split("-") if part]))  # "9-1-5-free"
        else:
            out.append(word)
    return out


_LETTER_DIGITS = {"a": "eight", "o": "zero", "oh": "zero"}


def _spelled_group(parts: Sequence[str]) -> bool:
    digits = [part for part in parts if part.isdigit() and part.isascii()]
    return len(parts) >= 3 and len(digits) >= len(parts) - 1 and all(
        (part.isdigit() and part.isascii()) or part in _LETTER_DIGITS for part in parts)


def digits_in(text: str) -> str:
    """Every digit said or written in ``text``, in order, as a digit string ("Your number is 4-2, seven one."
    -> "4271")."""
    return "".join(DIGIT_WORDS[word] for word in spoken_digits(words_of(text)) if word in DIGIT_WORDS)


_DIGIT_NAMES = ("zero", "one", "two", "three", "four", "five", "six", "seven", "eight", "nine")


def digits(min_len: int = 1, max_len: int = 16, name: str | None = None) -> Grammar:
    """``min_len`` to ``max_len`` spoken digits -> the digit string ("four two seven one" -> "4271"). A fixed
    length (``min_len == max_len``) recognises far better than an open one: use it whenever the state knows."""
    if not 1 <= min_len <= max_len <= 32:
        raise ValueError(f"digits needs 1 <= min_len <= max_len <= 32, got {min_len}..{max_len}")
    name = name or (f"digits_{min_len}" if min_len == max_len else f"digits_{min_len}_{max_len}")
    body = " ".join(["<digit>"] * min_len + ["[<digit>"] * (max_len - min_len) + ["]"] * (max_len - min_len))
    body = body.replace(" ]", "]")

    def normalize(words: Sequence[str]) -> str | None:
        words = spoken_digits(words)
        if not min_len <= len(words) <= max_len or any(word not in DIGIT_WORDS for word in words):
            return None
        return "".join(DIGIT_WORDS[word] for word in words)

    examples = ("four two seven one", "oh one two three", "nine eight seven")
    return _build(name, {ROOT_RULE: body, "digit": _alternatives(DIGIT_WORDS)}, examples, normalize)


# --- yes / no --------------------------------------------------------------------------------------------------

YES_PHRASES = ("yes", "yeah", "yep", "yup", "correct", "right", "that's right", "that is right", "sure",
               "okay", "yes please", "yes it is", "of course", "absolutely")
NO_PHRASES = ("no", "nope", "nah", "no thanks", "no thank you", "not really", "incorrect", "wrong",
              "that's wrong", "that is wrong", "no it isn't", "no it is not")


def yes_no(name: str = "yes_no", hint: str = "") -> Grammar:
    """Yes or no in their common forms -> ``True`` / ``False``. ``hint``: words open recognition should expect
    besides (a read-back may be corrected in one go: "No, Wednesday")."""
    return replace(_phrase_table(name, _table_from(name, {True: YES_PHRASES, False: NO_PHRASES})), hint=hint)


# --- menus and names --------------------------------------------------------------------------------------------


def menu(choices: Mapping[Any, Iterable[str]], name: str = "menu") -> Grammar:
    """One phrase of ``choices`` ({value: [phrases]}) -> its value; a phrase may not name two values."""
    return _phrase_table(name, _table_from(name, choices))


def names(people: Iterable[str], name: str = "names") -> Grammar:
    """One of ``people`` (each a name of one or more dictionary words, e.g. "Anna Smith") -> the name as given."""
    return _phrase_table(name, _table_from(name, {person: [person] for person in people}))


# --- a human ----------------------------------------------------------------------------------------------------

HUMAN_LEADS = ("i want", "i want to speak to", "i want to talk to", "i'd like to speak to", "i would like to speak to",
               "let me speak to", "let me talk to", "can i speak to", "can i talk to", "put me through to",
               "speak to", "talk to", "give me", "get me", "transfer me to")
HUMAN_TARGETS = ("operator", "an operator", "the operator", "agent", "an agent", "a human", "human",
                 "a person", "a real person", "somebody", "someone", "representative", "a representative",
                 "a human being", "a live agent")


def human_request(name: str = "human_request") -> Grammar:
    """Asking for a human (operator, agent, a human, representative, optionally after "I want to speak to" and
    before "please") -> ``True``."""
    rules = {
        ROOT_RULE: "[<lead>] <target> [please]",
        "lead": _alternatives(f"( {lead} )" for lead in HUMAN_LEADS),
        "target": _alternatives(f"( {target} )" for target in HUMAN_TARGETS),
    }
    targets = {tuple(target.split()) for target in HUMAN_TARGETS}

    def normalize(words: Sequence[str]) -> bool | None:
        body = list(words[:-1] if words and words[-1] == "please" else words)
        return True if any(tuple(body[-len(t):]) == t for t in targets) else None

    examples = ("operator", "i want to speak to a human", "an agent please", "representative")
    return _build(name, rules, examples, normalize)


# --- dates and times --------------------------------------------------------------------------------------------

WEEKDAYS = ("monday", "tuesday", "wednesday", "thursday", "friday", "saturday", "sunday")
MONTHS = ("january", "february", "march", "april", "may", "june", "july", "august", "september", "october",
          "november", "december")
_UNITS = ("one", "two", "three", "four", "five", "six", "seven", "eight", "nine")
_TEENS = ("ten", "eleven", "twelve", "thirteen", "fourteen", "fifteen", "sixteen", "seventeen", "eighteen",
          "nineteen")
_TENS = {"twenty": 20, "thirty": 30, "forty": 40, "fifty": 50}
_NUMBERS = {word: index + 1 for index, word in enumerate(_UNITS)} | {w: 10 + i for i, w in enumerate(_TEENS)}
_ORDINAL_UNITS = ("first", "second", "third", "fourth", "fifth", "sixth", "seventh", "eighth", "ninth")
_ORDINAL_TEENS = ("tenth", "eleventh", "twelfth", "thirteenth", "fourteenth", "fifteenth", "sixteenth",
                  "seventeenth", "eighteenth", "nineteenth")
_ORDINALS = ({w: i + 1 for i, w in enumerate(_ORDINAL_UNITS)} | {w: 10 + i for i, w in enumerate(_ORDINAL_TEENS)}
             | {"twentieth": 20, "thirtieth": 30})
_RELATIVE = {"today": 0, "tomorrow": 1}


@dataclass(frozen=True, slots=True)
class DateTimeValue:
    """What the caller said, unresolved: a relative day (0 today, 1 tomorrow, 2 the day after tomorrow), a
    weekday, a day of the month and month (1-12), an hour (as said, 1-12, or 0 for midnight, 12 for noon), a
    minute and "am"/"pm". Fields not said are ``None``."""

    relative_days: int | None = None
    weekday: str | None = None
    day: int | None = None
    month: int | None = None
    hour: int | None = None
    minute: int | None = None
    meridiem: str | None = None

    def hour_24(self) -> int | None:
        """The hour on a 24-hour clock when the meridiem says which, else the hour as said."""
        if self.hour is None or self.meridiem is None:
            return self.hour
        return self.hour % 12 + (12 if self.meridiem == "pm" else 0)


# Open recognition's hint for dates and times: the day names (a pitched "Tuesday" alone was written "first date").
DATES_HINT = "Monday, Tuesday, Wednesday, Thursday, Friday, Saturday, Sunday, today, tomorrow, at ten thirty."


def dates_and_times(name: str = "dates_and_times") -> Grammar:
    """A day, a time, or both: "tomorrow at three pm", "monday", "on friday at ten", "the fifth of june",
    "june fifth", "ten thirty", "half past two", "noon" -> :class:`DateTimeValue`."""
    rules = {
        ROOT_RULE: "<date> | <time> | <date> [at] <time> | <time> [on] <date>",
        "date": "<relday> | [on] [next | this] <weekday> | [on] the <ordinal> [of <month>]"
        " | [on] <month> [the] <ordinal>",
        "relday": "today | tomorrow | the day after tomorrow",
        "weekday": _alternatives(WEEKDAYS),
        "month": _alternatives(MONTHS),
        "ordinal": _alternatives((*_ORDINAL_UNITS, *_ORDINAL_TEENS, "twentieth", "thirtieth"))
        + " | twenty <ordunit> | thirty first",
        "ordunit": _alternatives(_ORDINAL_UNITS),
        "time": "<hour> [<minutes>] [<meridiem>] | <hour> o'clock [<meridiem>] | noon | midday | midnight"
        " | half past <hour> [<meridiem>] | quarter past <hour> [<meridiem>] | quarter to <hour> [<meridiem>]",
        "hour": _alternatives((*_UNITS, "ten", "eleven", "twelve")),
        "minutes": "oh <unit> | " + _alternatives(_TEENS) + " | (" + _alternatives(_TENS) + ") [<unit>]",
        "unit": _alternatives(_UNITS),
        "meridiem": "a.m. | p.m. | in the morning | in the afternoon | in the evening",
    }
    examples = ("tomorrow at three p.m.", "monday", "the fifth of june", "ten thirty", "half past two")
    return replace(_build(name, rules, examples, _parse_date_time), hint=DATES_HINT)


def _parse_date_time(words: Sequence[str]) -> DateTimeValue | None:
    fields: dict[str, Any] = {}
    rest = [word for word in words if word not in ("on", "at", "next", "this", "of")]
    text = " ".join(rest)
    if "the day after tomorrow" in text:
        fields["relative_days"] = 2
        text = text.replace("the day after tomorrow", " ")
    rest = text.split()
    i = 0
    while i < len(rest):
        word = rest[i]
        nxt = rest[i + 1] if i + 1 < len(rest) else ""
        if word in _RELATIVE:
            fields["relative_days"] = _RELATIVE[word]
        elif word in WEEKDAYS:
            fields["weekday"] = word
        elif word in MONTHS:
            fields["month"] = MONTHS.index(word) + 1
        elif word in _ORDINALS:
            fields["day"] = _ORDINALS[word]
        elif word in _TENS and nxt in _ORDINALS and "hour" not in fields:  # twenty first
            fields["day"] = _TENS[word] + _ORDINALS[nxt]
            i += 1
        elif word in ("noon", "midday"):
            fields["hour"], fields["minute"] = 12, 0
        elif word == "midnight":
            fields["hour"], fields["minute"] = 0, 0
        elif word in ("half", "quarter") and nxt in ("past", "to") and i + 2 < len(rest):
            hour = _NUMBERS.get(rest[i + 2])
            if hour is None:
                return None
            minutes = 30 if word == "half" else 15
            fields["hour"], fields["minute"] = (hour, minutes) if nxt == "past" else ((hour - 2) % 12 + 1, 45)
            i += 2
        elif word in _NUMBERS or word in _TENS:
            if "hour" not in fields:
                if word not in _NUMBERS or _NUMBERS[word] > 12:
                    return None
                fields["hour"], fields["minute"] = _NUMBERS[word], 0
            elif word == "oh" or word in _TENS or word in _NUMBERS:
                minute = _TENS.get(word, _NUMBERS.get(word, 0))
                if word in _TENS and nxt in _NUMBERS and _NUMBERS[nxt] < 10:
                    minute += _NUMBERS[nxt]
                    i += 1
                fields["minute"] = minute
        elif word == "oh" and "hour" in fields and nxt in _NUMBERS:
            fields["minute"] = _NUMBERS[nxt]
            i += 1
        elif word in ("a.m.", "morning"):
            fields["meridiem"] = "am"
        elif word in ("p.m.", "afternoon", "evening"):
            fields["meridiem"] = "pm"
        elif word in ("o'clock", "the", "in", "day", "after"):
            pass
        else:
            return None
        i += 1
    return DateTimeValue(**fields) if fields else None


# --- a caller introducing themselves --------------------------------------------------------------------------

NAME_LEADS = ("my name is", "this is", "i am", "i'm", "it's", "it is")
NUMBER_LEADS = ("my number is", "the number is", "number", "my number", "the number", "number is")


@dataclass(frozen=True, slots=True)
class Introduction:
    """A caller's name (as listed) and the number they gave (a digit string)."""

    name: str
    number: str


def introduction(people: Iterable[str], number_digits: int = 4, name: str = "introduction") -> Grammar:
    """A name from ``people`` and a number of exactly ``number_digits`` digits, in the usual phrasings: "my
    name is Anna Smith and my number is four two seven one", "Anna Smith, four two seven one" ->
    :class:`Introduction`."""
    if not 1 <= number_digits <= 16:
        raise ValueError(f"introduction needs 1..16 number digits, got {number_digits}")
    listed = {" ".join(words_of(person)): person for person in people}
    if not listed or "" in listed:
        raise ValueError(f"grammar {name!r} needs at least one non-empty name")
    rules = {
        ROOT_RULE: "[<name_lead>] <person> [and] [<number_lead>] " + " ".join(["<digit>"] * number_digits),
        "name_lead": _alternatives(f"( {lead} )" for lead in NAME_LEADS),
        "person": _alternatives(f"( {person} )" for person in listed),
        "number_lead": _alternatives(f"( {lead} )" for lead in NUMBER_LEADS),
        "digit": _alternatives(DIGIT_WORDS),
    }
    by_length = sorted(listed, key=lambda person: -len(person.split()))
    dictionary = pronouncing_dictionary()
    sounds = {word: set(dictionary.pronunciations(word)) for person in listed for word in person.split()}

    def sounds_like(heard: str, listed_word: str) -> bool:
        """Open recognition spells a name as it likes ("stephen" for "steven"): the same word, or one with a
        pronunciation in common."""
        if heard == listed_word:
            return True
        return heard in dictionary and bool(sounds[listed_word] & set(dictionary.pronunciations(heard)))

    def normalize(words: Sequence[str]) -> Introduction | None:
        text = " ".join(spoken_digits(words))
        for lead in NAME_LEADS:
            if text.startswith(lead + " "):
                text = text[len(lead) + 1:]
                break
        tokens = text.split()
        person = next((p for p in by_length if len(tokens) >= len(p.split())
                       and all(sounds_like(h, w) for h, w in zip(tokens, p.split(), strict=False))), None)
        if person is None:
            return None
        rest = tokens[len(person.split()):]
        tail = rest[-number_digits:]
        if len(tail) != number_digits or any(word not in DIGIT_WORDS for word in tail):
            return None
        lead = " ".join(rest[:-number_digits])
        if lead not in ("", "and") and lead.removeprefix("and ") not in NUMBER_LEADS:
            return None
        return Introduction(listed[person], "".join(DIGIT_WORDS[word] for word in tail))

    first = next(iter(listed))
    examples = (f"my name is {first} and my number is four two seven one", f"{first} one two three four")
    grammar = _build(name, rules, examples, normalize)
    return replace(grammar, hint="My name is " + ", ".join(listed.values()) + ".")


# --- grammars by description: what a process pool worker rebuilds ------------------------------------------------

def _menu_from_pairs(choices: Iterable[tuple[Any, Iterable[str]]], name: str = "menu") -> Grammar:
    return menu(dict(choices), name)


_FACTORIES: dict[str, Callable[..., Grammar]] = {
    "digits": digits, "yes_no": yes_no, "menu": _menu_from_pairs, "names": names, "dates_and_times": dates_and_times,
    "human_request": human_request, "introduction": introduction,
}


@dataclass(frozen=True, slots=True)
class GrammarSpec:
    """A grammar described by its builder and arguments (hashable, picklable), so another process can build the
    same grammar (normalizer included) without pickling code. ``args`` are positional arguments of the builder
    named ``kind``; lists are given as tuples (a menu's choices as ``((value, (phrase, ...)), ...)``)."""

    kind: str
    args: tuple[Any, ...] = ()

    def __post_init__(self) -> None:
        if self.kind not in _FACTORIES:
            raise ValueError(f"unknown grammar kind {self.kind!r}: one of {', '.join(sorted(_FACTORIES))}")

    def build(self) -> Grammar:
        return _build_cached(self)


_BUILT: dict[GrammarSpec, Grammar] = {}
_BUILT_LOCK = threading.Lock()


def _build_cached(spec: GrammarSpec) -> Grammar:
    with _BUILT_LOCK:
        grammar = _BUILT.get(spec)
    if grammar is None:
        grammar = _FACTORIES[spec.kind](*spec.args)
        with _BUILT_LOCK:
            grammar = _BUILT.setdefault(spec, grammar)
    return grammar
