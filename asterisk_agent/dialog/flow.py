"""Dialog flows: the YAML an administrator writes, validated into a :class:`Flow`.

A flow is a set of named states. Each state does one thing: asks (a slot, or a choice between intents), calls an
integration, branches on what it knows, says something and moves on, ends the call, or escalates to a human.
Loading checks the shape (pydantic) and the meaning (every target state, slot, intent and template variable
exists); every mistake is reported as ``file:line: where: why``.
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Literal

import yaml
from pydantic import BaseModel, ConfigDict, Field, ValidationError, field_validator

from asterisk_agent.textfile import UnreadableFile, read_text

_NAME = re.compile(r"^[a-z][a-z0-9_]{0,47}$")
TEMPLATE_FIELD = re.compile(r"\{([^{}]*)\}")
_FIELD_PATH = re.compile(r"^[a-z][a-z0-9_]*(\.[a-z0-9_]+)*$")
SLOT_TYPES = ("digits", "date", "time", "yes_no", "name", "choice", "free_text")
# Variables every template may use besides the flow's slots and saved integration results.
BUILTIN_VARIABLES = ("did", "caller", "today", "account")


class FlowError(Exception):
    """A flow that cannot be used; one line per mistake, each ``source:line: where: why``."""


class _Strict(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True, populate_by_name=True)


class SlotDef(_Strict):
    type: Literal["digits", "date", "time", "yes_no", "name", "choice", "free_text"]
    min_digits: int = Field(default=1, ge=1, le=32)
    max_digits: int = Field(default=16, ge=1, le=32)
    # name: the names callers may say; choice: each value with the phrases that mean it.
    choices: list[str] | dict[str, list[str]] = Field(default_factory=list)
    sensitive: bool = False  # masked in transcripts, records, webhooks and logs (PINs, card and account numbers)
    dates: Literal["future", "past"] = "future"  # a date slot: "Tuesday" is the next one, or the last one
    keys: bool = True  # callers may key it instead (digits; 1 yes / 2 no; a choice's position)
    confirm: str | None = None  # how to read it back: "You said {value}. Is that right?"


class IntentDef(_Strict):
    examples: list[str] = Field(min_length=2)
    threshold: float | None = Field(default=None, gt=0, le=1)  # this intent's own "too unsure" line


class CallDef(_Strict):
    integration: str
    method: Literal["GET", "POST", "PUT", "PATCH", "DELETE"] = "GET"
    path: str = Field(pattern=r"^/")
    params: dict[str, str] = Field(default_factory=dict)
    body: dict[str, str] = Field(default_factory=dict)
    headers: dict[str, str] = Field(default_factory=dict)  # e.g. a customer id the backend checks
    save: str | None = None  # the variable that holds the answer's JSON


class BranchDef(_Strict):
    if_: str | None = Field(default=None, alias="if")  # a variable path that must be present and not empty
    equals: str | None = None  # ... and equal to this (after templating) when given
    next: str


class Thresholds(_Strict):
    """Turn confidence (the recogniser's and the understanding's, combined) below ``confirm``: the agent reads
    back what it understood and asks; below ``reprompt``: it asks again; after ``reprompts`` re-prompts in one
    state it escalates."""

    confirm: float = Field(default=0.6, ge=0, le=1)
    reprompt: float = Field(default=0.3, ge=0, le=1)
    reprompts: int = Field(default=2, ge=0, le=10)


class Limits(_Strict):
    call_max_ms: int = Field(default=600_000, ge=1000)
    silence_ms: int = Field(default=8000, ge=100)  # no caller input this long while asked: re-prompt, then limit
    turns_max: int = Field(default=40, ge=1)
    integration_wait_ms: int = Field(default=5000, ge=50)
    on_limit: Literal["goodbye", "escalate"] = "goodbye"


class EscalationDef(_Strict):
    human_phrases: list[str] = Field(default_factory=list)  # on top of the built-in "agent", "operator", ...
    human_key: str | None = Field(default="0", pattern=r"^[0-9*#]$")
    sensitive_phrases: list[str] = Field(default_factory=list)
    sensitive_intents: list[str] = Field(default_factory=list)
    frustration_phrases: list[str] = Field(default_factory=list)
    no_match_max: int = Field(default=3, ge=1, le=20)  # not understood this many times in a row across states
    loudness_rise_db: float = Field(default=10.0, gt=0)  # louder than the caller's first turn, after a no-match


class Messages(_Strict):
    reprompt: str = "Sorry, I did not catch that."
    confirm: str = "I understood {value}. Is that right?"
    goodbye: str = "Thank you for calling. Goodbye."
    escalate: str = "Let me find someone who can help you. Please hold on, or call back if we get cut off."
    limit: str = "I am sorry, we have to end this call now. Please call again."
    unavailable: str = "I am sorry, I cannot reach our system right now."
    cached: str = "Our system is busy, so this is the latest information I have."
    hold: str = "One moment please."


class StateDef(_Strict):
    say: str | None = None  # spoken on entry
    ask: str | None = None  # a question, then the agent listens
    slot: str | None = None
    intents: dict[str, str] = Field(default_factory=dict)  # intent -> next state
    keys: dict[str, str] = Field(default_factory=dict)  # key -> next state (a menu's DTMF alternative)
    reprompt: str | None = None
    confirm: str | None = None  # overrides the slot's and the flow's read-back
    always_confirm: bool = False
    next: str | None = None
    call: CallDef | None = None
    on_ok: str | None = None
    on_cached: str | None = None  # default: on_ok after saying messages.cached
    on_failed: str | None = None
    on_status: dict[int, str] = Field(default_factory=dict)  # a definite 4xx answer -> state
    branch: list[BranchDef] = Field(default_factory=list)
    end: str | None = None  # the outcome recorded when the call ends here
    escalate: str | None = None  # the reason recorded when the caller is handed on here
    thresholds: Thresholds | None = None

    @property
    def kind(self) -> str:
        if self.ask is not None:
            return "ask"
        if self.call is not None:
            return "call"
        if self.branch:
            return "branch"
        if self.end is not None:
            return "end"
        if self.escalate is not None:
            return "escalate"
        return "say"


class Flow(_Strict):
    name: str
    description: str = ""
    start: str
    slots: dict[str, SlotDef] = Field(default_factory=dict)
    intents: dict[str, IntentDef] = Field(default_factory=dict)
    states: dict[str, StateDef] = Field(min_length=1)
    thresholds: Thresholds = Thresholds()
    limits: Limits = Limits()
    escalation: EscalationDef = EscalationDef()
    messages: Messages = Messages()
    integrations: list[str] = Field(default_factory=list)  # endpoint names the account's config must provide

    @field_validator("name")
    @classmethod
    def _flow_name(cls, value: str) -> str:
        if not _NAME.match(value):
            raise ValueError("must be lowercase letters, digits and '_', starting with a letter")
        return value

    def thresholds_for(self, state: StateDef) -> Thresholds:
        return state.thresholds or self.thresholds


# --- meaning -------------------------------------------------------------------------------------------------


@dataclass(frozen=True)
class Problem:
    path: tuple[str | int, ...]
    message: str


def _template_fields(text: str) -> list[str]:
    return TEMPLATE_FIELD.findall(text)


def check_flow(flow: Flow) -> list[Problem]:
    """Mistakes a schema cannot see: targets, references and template variables that do not exist."""
    problems: list[Problem] = []
    states = flow.states
    saves = {state.call.save for state in states.values() if state.call is not None and state.call.save}
    known_roots = set(flow.slots) | saves | set(BUILTIN_VARIABLES) | {"value"}

    def target(path: tuple[str | int, ...], name: str | None) -> None:
        if name is not None and name not in states:
            problems.append(Problem(path, f"no state named {name!r}"))

    def template(path: tuple[str | int, ...], text: str | None) -> None:
        if text is None:
            return
        for field in _template_fields(text):
            name = field.split("|")[0].strip()
            if not _FIELD_PATH.match(name):
                problems.append(Problem(path, f"{{{field}}} is not a variable (write {{slot}} or {{saved.key}})"))
            elif name.split(".")[0] not in known_roots:
                problems.append(Problem(path, f"{{{name}}} names no slot, saved result or built-in variable"))

    for name in (*flow.slots, *flow.intents, *flow.states):
        if not _NAME.match(name):
            problems.append(Problem((name,), f"{name!r} is not a name: lowercase letters, digits and '_'"))
    if flow.start not in states:
        problems.append(Problem(("start",), f"no state named {flow.start!r}"))
    for slot_name, slot in flow.slots.items():
        if slot.type in ("name", "choice") and not slot.choices:
            problems.append(Problem(("slots", slot_name), f"a {slot.type} slot needs choices"))
        if slot.min_digits > slot.max_digits:
            problems.append(Problem(("slots", slot_name), "min_digits is more than max_digits"))
        template(("slots", slot_name, "confirm"), slot.confirm)
    for intent in (*flow.escalation.sensitive_intents,):
        if intent not in flow.intents:
            problems.append(Problem(("escalation", "sensitive_intents"), f"no intent named {intent!r}"))
    for message_name, text in flow.messages.model_dump().items():
        template(("messages", message_name), text)
    for state_name, state in states.items():
        where: tuple[str | int, ...] = ("states", state_name)
        kinds = [kind for kind, present in (("ask", state.ask is not None), ("call", state.call is not None),
                                            ("branch", bool(state.branch)), ("end", state.end is not None),
                                            ("escalate", state.escalate is not None)) if present]
        if len(kinds) > 1:
            problems.append(Problem(where, f"a state does one thing: it has {' and '.join(kinds)}"))
        for key in ("say", "ask", "reprompt", "confirm"):
            template((*where, key), getattr(state, key))
        kind = state.kind
        if kind == "ask":
            if state.slot is None and not state.intents:
                problems.append(Problem(where, "an ask state needs a slot or intents"))
            if state.slot is not None and state.slot not in flow.slots:
                problems.append(Problem((*where, "slot"), f"no slot named {state.slot!r}"))
            for intent, then in state.intents.items():
                if intent not in flow.intents:
                    problems.append(Problem((*where, "intents", intent), f"no intent named {intent!r}"))
                target((*where, "intents", intent), then)
            for key, then in state.keys.items():
                if not re.fullmatch(r"[0-9*#]", key):
                    problems.append(Problem((*where, "keys", key), f"{key!r} is not a phone key"))
                target((*where, "keys", key), then)
            if state.slot is not None and state.next is None:
                problems.append(Problem(where, "an ask state with a slot needs next"))
        if kind == "call":
            assert state.call is not None
            if state.call.integration not in flow.integrations:
                problems.append(Problem((*where, "call", "integration"),
                                        f"{state.call.integration!r} is not listed in the flow's integrations"))
            for part in ("params", "body", "headers"):
                for key, value in getattr(state.call, part).items():
                    template((*where, "call", part, key), value)
            template((*where, "call", "path"), state.call.path)
            if state.on_ok is None:
                problems.append(Problem(where, "a call state needs on_ok"))
            if state.on_failed is None:
                problems.append(Problem(where, "a call state needs on_failed"))
        if kind == "branch":
            if not any(branch.if_ is None for branch in state.branch):
                problems.append(Problem((*where, "branch"), "the last branch needs no 'if' (what happens otherwise)"))
            for index, branch in enumerate(state.branch):
                target((*where, "branch", index, "next"), branch.next)
                if branch.if_ is not None:
                    template((*where, "branch", index, "if"), "{" + branch.if_ + "}")
        if kind == "say" and state.next is None:
            problems.append(Problem(where, "a state that only says something needs next"))
        for key in ("next", "on_ok", "on_cached", "on_failed"):
            target((*where, key), getattr(state, key))
        for status, then in state.on_status.items():
            target((*where, "on_status", status), then)
    reachable = _reachable(flow)
    for state_name in states:
        if state_name not in reachable and flow.start in states:
            problems.append(Problem(("states", state_name), "no state leads here"))
    return problems


def successors(state: StateDef) -> list[str]:
    names = [state.next, state.on_ok, state.on_cached, state.on_failed, *state.intents.values(),
             *state.keys.values(), *state.on_status.values(), *(branch.next for branch in state.branch)]
    return [name for name in names if name is not None]


def _reachable(flow: Flow) -> set[str]:
    seen: set[str] = set()
    todo = [flow.start]
    while todo:
        name = todo.pop()
        if name in seen or name not in flow.states:
            continue
        seen.add(name)
        todo.extend(successors(flow.states[name]))
    return seen


# --- loading, with lines -------------------------------------------------------------------------------------


def _line_of(node: yaml.Node | None, path: tuple[str | int, ...]) -> int | None:
    """The 1-based line of the YAML node at ``path`` (as far down as it exists)."""
    line = node.start_mark.line + 1 if node is not None else None
    for part in path:
        if isinstance(node, yaml.MappingNode):
            found = None
            for key, value in node.value:
                if str(key.value) == str(part):
                    found = (key, value)
                    break
            if found is None:
                return line
            line = found[0].start_mark.line + 1
            node = found[1]
        elif isinstance(node, yaml.SequenceNode) and isinstance(part, int) and part < len(node.value):
            node = node.value[part]
            line = node.start_mark.line + 1
        else:
            return line
    return line


def _where(path: tuple[str | int, ...]) -> str:
    return ".".join(str(part) for part in path) or "(top level)"


def parse_flow(text: str, source: str = "<flow>") -> Flow:
    """A flow from YAML text; :class:`FlowError` names the source, the line and the reason of each mistake."""
    try:
        node = yaml.compose(text, Loader=yaml.SafeLoader)
        data: Any = yaml.safe_load(text)
    except yaml.YAMLError as exc:
        mark = getattr(exc, "problem_mark", None)
        where = f"{mark.line + 1}" if mark is not None else "?"
        raise FlowError(f"{source}:{where}: not valid YAML: {getattr(exc, 'problem', exc)}") from None
    if not isinstance(data, dict):
        raise FlowError(f"{source}:1: a flow is a mapping with name, start and states")
    try:
        flow = Flow.model_validate(data)
    except ValidationError as exc:
        lines = []
        for item in exc.errors():
            path = tuple(part for part in item["loc"] if not (isinstance(part, str) and part.startswith("function-")))
            path = tuple(part for part in path if part not in ("str", "list[str]", "dict[str,list[str]]"))
            message = "unknown key" if item["type"] == "extra_forbidden" else item["msg"].removeprefix("Value error, ")
            if "[key]" in path:
                path = path[:path.index("[key]") - 1]  # the mapping that holds the key (its value is not text)
                message = "a name YAML reads as true/false or a number (yes, no, on, off, 1): quote it"
            lines.append(f"{source}:{_line_of(node, path) or '?'}: {_where(path)}: {message}")
        raise FlowError("\n".join(dict.fromkeys(lines))) from None
    problems = check_flow(flow)
    if problems:
        raise FlowError("\n".join(f"{source}:{_line_of(node, p.path) or '?'}: {_where(p.path)}: {p.message}"
                                  for p in problems))
    return flow


def load_flow(path: str | Path) -> Flow:
    try:
        text = read_text(path)
    except UnreadableFile as exc:
        raise FlowError(str(exc)) from exc
    return parse_flow(text, str(path))


SHIPPED_FLOWS = Path(__file__).resolve().parent.parent / "flows"


def shipped_flow(name: str) -> Flow:
    """One of the flows shipped in ``asterisk_agent/flows/`` by name (clinic, bank, insurance)."""
    return load_flow(SHIPPED_FLOWS / f"{name}.yaml")
