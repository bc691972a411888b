"""Prompt templates: ``{slot}``, ``{saved.key}``, ``{value}`` with filters (``{availability.times|first3|times|or}``).

Spoken text renders values as the agent says them (dates with their weekday, digits one by one, sensitive values
never whole); integration parameters render them as the backend reads them (ISO dates, HH:MM).
"""

from __future__ import annotations

import datetime as dt
import re
from collections.abc import Callable, Mapping
from typing import Any

from asterisk_agent.dialog.flow import TEMPLATE_FIELD
from asterisk_agent.dialog.slots import spoken, wire

_DOUBLE_DOT = re.compile(r"(?<=\.)\.(?!\.)")


class TemplateError(ValueError):
    """A template that names a variable the call does not have (yet)."""


def lookup(values: Mapping[str, Any], path: str) -> Any:
    """``a.b.c`` through nested mappings (and list indexes); ``None`` when any step is missing."""
    current: Any = values
    for part in path.split("."):
        if isinstance(current, Mapping) and part in current:
            current = current[part]
        elif isinstance(current, list) and part.isdigit() and int(part) < len(current):
            current = current[int(part)]
        else:
            return None
    return current


def _times(value: Any) -> Any:
    if isinstance(value, list):
        return [_times(item) for item in value]
    if isinstance(value, str) and len(value) == 5 and value[2] == ":":
        try:
            return dt.time.fromisoformat(value)
        except ValueError:
            return value
    return value


def _joined(word: str) -> Callable[[Any], Any]:
    def join(value: Any) -> Any:
        if not isinstance(value, list):
            return value
        items = [spoken(item) for item in value]
        if len(items) <= 1:
            return "".join(items)
        return f"{', '.join(items[:-1])} {word} {items[-1]}"
    return join


def _money(value: Any) -> Any:
    """"1520.40" -> "1,520 dollars and 40 cents" (a minus: "minus ...")."""
    try:
        cents = round(float(value) * 100)
    except (TypeError, ValueError):
        return value
    sign = "minus " if cents < 0 else ""
    dollars, rest = divmod(abs(cents), 100)
    text = f"{sign}{dollars:,} dollar{'s' if dollars != 1 else ''}"
    return f"{text} and {rest} cent{'s' if rest != 1 else ''}" if rest else text


FILTERS: dict[str, Callable[[Any], Any]] = {
    "first3": lambda value: value[:3] if isinstance(value, list) else value,
    "count": lambda value: len(value) if isinstance(value, list | dict | str) else value,
    "times": _times,
    "date": lambda value: dt.date.fromisoformat(value) if isinstance(value, str) else value,
    "money": _money,
    "or": _joined("or"),
    "and": _joined("and"),
}


def _evaluate(field: str, values: Mapping[str, Any], sensitive: frozenset[str]) -> tuple[Any, bool]:
    name, *filters = (part.strip() for part in field.split("|"))
    value = lookup(values, name)
    if value is None:
        raise TemplateError(f"{{{name}}} has no value at this point of the call")
    for filter_name in filters:
        if filter_name not in FILTERS:
            raise TemplateError(f"unknown filter {filter_name!r} (one of {', '.join(FILTERS)})")
        value = FILTERS[filter_name](value)
    return value, name.split(".")[0] in sensitive


def render_spoken(template: str, values: Mapping[str, Any], sensitive: frozenset[str] = frozenset()) -> str:
    def replace(match: Any) -> str:
        value, masked = _evaluate(match.group(1), values, sensitive)
        return spoken(value, sensitive=masked)
    # "at 9 a.m.." -> "at 9 a.m.": a value ending in a dot before the template's own full stop.
    return _DOUBLE_DOT.sub("", TEMPLATE_FIELD.sub(replace, template))


def spoken_facts(template: str, values: Mapping[str, Any]) -> tuple[str, ...]:
    """Each field of ``template`` as :func:`render_spoken` says it: what a reworded reply must still say."""
    return tuple(spoken(_evaluate(field, values, frozenset())[0]) for field in TEMPLATE_FIELD.findall(template))


def names_sensitive(template: str, sensitive: frozenset[str]) -> bool:
    """Whether ``template`` names a sensitive slot (even masked, such a reply is never sent to a model)."""
    return any(field.split("|")[0].strip().split(".")[0] in sensitive for field in TEMPLATE_FIELD.findall(template))


def render_wire(template: str, values: Mapping[str, Any]) -> Any:
    """A parameter for an integration: a template that is exactly one field keeps the value's type."""
    whole = TEMPLATE_FIELD.fullmatch(template)
    if whole:
        return wire(_evaluate(whole.group(1), values, frozenset())[0])

    def replace(match: Any) -> str:
        return str(wire(_evaluate(match.group(1), values, frozenset())[0]))
    return TEMPLATE_FIELD.sub(replace, template)


def is_fixed(template: str) -> bool:
    """A template without fields says the same on every call: it can come from the prompt cache."""
    return TEMPLATE_FIELD.search(template) is None
