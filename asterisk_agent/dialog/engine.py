"""One call's run through a flow, as pure code: inputs (what the caller said with its confidence, keys, silence,
an integration's answer, a limit) go in; actions (say, listen, call an integration, escalate, hang up) come out.
The session performs the actions; this module never touches a socket or a clock, so every path is testable as
text. Nor does it wait on the intent model: the caller of :meth:`DialogRun.heard` scores the words off the event
loop when :meth:`DialogRun.scores_intents` says they will be needed, and hands the result in.
"""

from __future__ import annotations

import datetime as dt
from dataclasses import dataclass
from enum import Enum
from typing import Any
from urllib.parse import quote

from asterisk_agent.dialog.flow import TEMPLATE_FIELD, Flow, SlotDef, StateDef
from asterisk_agent.dialog.intents import IntentScoring, Nearest, combined_confidence
from asterisk_agent.dialog.slots import SlotMatch, extract, find_yes_no, from_keys, spoken, wire
from asterisk_agent.dialog.templates import (
    TemplateError,
    is_fixed,
    lookup,
    names_sensitive,
    render_spoken,
    render_wire,
    spoken_facts,
)
from asterisk_agent.speech.stt.grammars import HUMAN_TARGETS, words_of

MAX_STEPS = 64  # states entered without waiting for the caller: more is a loop in the flow


# --- actions ------------------------------------------------------------------------------------------------------


@dataclass(frozen=True)
class Say:
    text: str
    fixed: bool  # the same words on every call: the prompt cache may hold them
    # A state's reply the language model may reword (when the account allows it): the facts it must keep
    # word for word; never set for a reply that names a sensitive slot.
    rewordable: bool = False
    facts: tuple[str, ...] = ()


@dataclass(frozen=True)
class Listen:
    state: str
    slot_type: str | None  # what the state expects, for the recogniser's grammar or hint
    choices: tuple[str, ...] = ()
    keys_max: int = 1  # keys to collect before "#" (a slot's digits; 1 for menus and yes/no)
    silence_ms: int = 8000
    confirming: bool = False  # a read-back of ``slot_type``: yes, no, or a correction
    # The answer is a sensitive slot (a PIN, an account number): masked in the transcript, muted in the recording.
    sensitive: bool = False


@dataclass(frozen=True)
class CallIntegration:
    state: str
    integration: str
    method: str
    path: str
    params: dict[str, Any]
    body: dict[str, Any] | None
    headers: dict[str, str]
    idempotency_key: str
    wait_ms: int


@dataclass(frozen=True)
class FillSlot:
    """Ask the language model to read a slot's value from words the slot's own reader could not; its answer
    comes back through :meth:`DialogRun.filled` and is read by the same reader (the model never sets a value
    the flow would not accept from the caller)."""

    state: str
    slot: str
    slot_type: str
    text: str
    choices: tuple[str, ...] = ()


@dataclass(frozen=True)
class Escalate:
    reason: str  # caller_asked, low_confidence, sensitive_topic, frustration, flow, limit
    detail: str


@dataclass(frozen=True)
class Hangup:
    outcome: str


Action = Say | Listen | CallIntegration | FillSlot | Escalate | Hangup

LLM_SCORE = 0.8  # how sure a value read by the language model is (so an unsure recognition is read back)


class CallOutcome(Enum):
    OK = "ok"
    CACHED = "cached"
    FAILED = "failed"


@dataclass(frozen=True)
class IntegrationAnswer:
    outcome: CallOutcome
    status: int | None = None
    data: Any = None
    reason: str = ""


# --- records ------------------------------------------------------------------------------------------------------


@dataclass
class DialogTurn:
    """What the flow made of one caller input."""

    state: str
    text: str  # masked when the state collects a sensitive slot
    keyed: bool
    recognition_confidence: float | None
    understanding_confidence: float | None
    confidence: float | None
    intent: str | None = None
    slot: str | None = None
    value: str | None = None  # as spoken back, masked when sensitive
    decision: str = ""  # accepted, confirm, confirmed, corrected, reprompt, escalated, ...
    language_model: bool = False  # the slot was read by the language model


@dataclass
class DialogEvent:
    kind: str  # escalation, limit, integration, cached, confirm, reprompt, error
    reason: str
    state: str


@dataclass
class _Pending:
    """A value waiting for the caller's yes."""

    slot: str
    value: Any
    then: str


HUMAN_WORDS = (*tuple(target.split()[-1] for target in HUMAN_TARGETS), "person", "someone", "somebody")
HUMAN_VERBS = ("speak", "talk", "transfer", "connect", "put", "get", "give", "want", "need")


def asks_for_human(text: str, extra_phrases: tuple[str, ...] = ()) -> bool:
    """"Can I talk to a person", "agent please", "operator", "representative": a request for a human."""
    words = words_of(text)
    joined = " ".join(words)
    if any(" ".join(words_of(phrase)) in joined for phrase in extra_phrases if phrase.strip()):
        return True
    strong = {"operator", "representative", "human", "agent"}
    if any(word in strong for word in words) and (len(words) <= 4 or any(v in words for v in HUMAN_VERBS)):
        return True
    return any(word in HUMAN_WORDS for word in words) and any(verb in words for verb in ("speak", "talk"))


class DialogRun:
    """A caller's path through ``flow``. ``variables`` holds the built-ins (did, caller, today, account); slots
    and saved integration answers join them as the call goes on."""

    def __init__(self, flow: Flow, scorer: IntentScoring, *, today: dt.date, run_id: str,
                 variables: dict[str, Any] | None = None, language_model: bool = False) -> None:
        self.flow = flow
        self.scorer = scorer
        self.today = today
        self.run_id = run_id
        self.values: dict[str, Any] = {"today": today, **(variables or {})}
        self.state: str = flow.start
        self.turns: list[DialogTurn] = []
        self.events: list[DialogEvent] = []
        self.outcome: str | None = None
        self.escalation: Escalate | None = None
        self._pending: _Pending | None = None
        self._misses: dict[str, int] = {}
        self._no_match_run = 0
        self._first_loudness: float | None = None
        self._entries: dict[str, int] = {}
        self._input_turns = 0
        self.sensitive = frozenset(name for name, slot in flow.slots.items() if slot.sensitive)
        self.language_model = language_model  # a model may read slots the readers cannot
        self._filling: tuple[DialogTurn, float] | None = None  # the turn waiting for the model's reading

    def masked_values(self) -> dict[str, Any]:
        """The slots collected so far as a backend reads them (ISO dates, HH:MM), sensitive ones masked: what a
        record or a webhook may carry."""
        return {name: "(masked)" if name in self.sensitive else wire(value)
                for name, value in self.values.items() if name in self.flow.slots}

    @property
    def finished(self) -> bool:
        return self.outcome is not None

    # --- inputs -------------------------------------------------------------------------------------------

    def start(self) -> list[Action]:
        return self._enter(self.flow.start)

    def scores_intents(self) -> bool:
        """Whether the caller's next words are scored against the flow's intents (a menu state, or a flow with
        sensitive intents, which are listened for in every state): then the caller of :meth:`heard` computes
        ``self.scorer.nearest(text)`` off the event loop and passes it in."""
        if self.finished:
            return False
        state = self._current()
        return bool(self.flow.escalation.sensitive_intents) or (
            self._pending is None and state.kind == "ask" and bool(state.intents))

    def heard(self, text: str, recognition_confidence: float, loudness_db: float | None = None,
              nearest: Nearest | None = None) -> list[Action]:
        """The caller said ``text`` (recognised with that confidence; ``loudness_db`` of the utterance if
        known; ``nearest``: ``self.scorer.nearest(text)`` when :meth:`scores_intents`, else it is computed here,
        which blocks for a forward pass of the sentence model)."""
        if self.finished:
            return []
        if nearest is None and self.scores_intents():
            nearest = self.scorer.nearest(text)
        state = self._current()
        slot = self.flow.slots.get(state.slot) if state.slot else None
        masked = bool(slot and slot.sensitive) or (self._pending is not None and self._pending.slot in self.sensitive)
        turn = DialogTurn(self.state, "(masked)" if masked else text, False, recognition_confidence, None, None,
                          slot=state.slot)
        self.turns.append(turn)
        limited = self._count_turn()
        if limited:
            return limited
        louder = self._louder(loudness_db)
        escalation = self._escalation_in(text, nearest)
        if escalation is not None:
            turn.decision = "escalated"
            return self._escalate(*escalation)
        if self._pending is not None:
            return self._confirming(turn, text, recognition_confidence)
        if state.kind != "ask":
            turn.decision = "ignored"
            return []
        actions = self._understand(state, turn, text, recognition_confidence, nearest)
        if turn.decision == "reprompt" and louder:
            return self._escalate("frustration", "the caller is getting louder")
        return actions

    def keyed(self, keys: str) -> list[Action]:
        """The caller keyed ``keys`` (collected up to "#" or the state's maximum)."""
        if self.finished:
            return []
        state = self._current()
        slot = self.flow.slots.get(state.slot) if state.slot else None
        masked = bool(slot and slot.sensitive)
        turn = DialogTurn(self.state, "(masked)" if masked else keys, True, None, None, 1.0, slot=state.slot)
        self.turns.append(turn)
        limited = self._count_turn()
        if limited:
            return limited
        human_key = self.flow.escalation.human_key
        if human_key is not None and keys == human_key and not (slot and slot.type == "digits"):
            turn.decision = "escalated"
            return self._escalate("caller_asked", f"key {human_key}")
        if self._pending is not None:
            if keys in ("1", "2"):
                return self._confirmed(turn, keys == "1", None)
            return self._miss(turn, "not 1 or 2")
        if state.kind != "ask":
            turn.decision = "ignored"
            return []
        if keys in state.keys:
            turn.decision = "accepted"
            turn.intent = f"key {keys}"
            return self._go(state.keys[keys])
        if slot is not None:
            match = from_keys(slot, keys, self.today)
            if match is not None:
                return self._accept(state, slot, match.value, turn, confidence=1.0)
        return self._miss(turn, "keys not understood")

    def filled(self, answer: str | None) -> list[Action]:
        """The language model's reading of the slot (``None``: it had none, or failed, or was too slow)."""
        if self.finished or self._filling is None:
            return []
        turn, recognition = self._filling
        self._filling = None
        state = self._current()
        assert state.slot is not None
        slot = self.flow.slots[state.slot]
        match = extract(slot, answer, self.today) if answer else None
        if match is None:
            return self._miss(turn, "no match (language model too)" if answer is not None else "no match")
        turn.language_model = True
        return self._judge(state, slot, SlotMatch(match.value, LLM_SCORE), turn, recognition)

    def silence(self) -> list[Action]:
        """The caller said nothing for the state's silence limit."""
        if self.finished:
            return []
        self.events.append(DialogEvent("silence", "no input", self.state))
        misses = self._misses.get(self.state, 0) + 1
        self._misses[self.state] = misses
        if misses > self.flow.thresholds_for(self._current()).reprompts:
            return self.limit("silence")
        return self._reask(self._current(), self.flow.messages.reprompt)

    def answered(self, answer: IntegrationAnswer) -> list[Action]:
        """The integration the current state called has answered (or failed)."""
        state = self._current()
        if self.finished or state.call is None:
            return []
        self.events.append(DialogEvent("integration", f"{answer.outcome.value} {answer.reason}".strip(), self.state))
        if state.call.save and answer.data is not None:
            self.values[state.call.save] = answer.data
        if answer.outcome is CallOutcome.OK:
            assert state.on_ok is not None
            return self._go(state.on_ok)
        if answer.outcome is CallOutcome.CACHED:
            self.events.append(DialogEvent("cached", answer.reason, self.state))
            said = [Say(self.flow.messages.cached, True)]
            return said + self._go(state.on_cached or state.on_ok or "")
        if answer.status is not None and answer.status in state.on_status:
            return self._go(state.on_status[answer.status])
        assert state.on_failed is not None
        return self._go(state.on_failed)

    def limit(self, kind: str) -> list[Action]:
        """A per-flow limit was reached (call_max, silence, turns, integration_wait): the configured action."""
        if self.finished:
            return []
        self.events.append(DialogEvent("limit", kind, self.state))
        if self.flow.limits.on_limit == "escalate":
            return self._escalate("limit", kind)
        self.outcome = f"limit:{kind}"
        return [Say(self.flow.messages.limit, True), Hangup(self.outcome)]

    # --- understanding -------------------------------------------------------------------------------------

    def _current(self) -> StateDef:
        return self.flow.states[self.state]

    def _count_turn(self) -> list[Action]:
        self._input_turns += 1
        if self._input_turns > self.flow.limits.turns_max:
            return self.limit("turns")
        return []

    def _louder(self, loudness_db: float | None) -> bool:
        if loudness_db is None:
            return False
        if self._first_loudness is None:
            self._first_loudness = loudness_db
            return False
        return (self._no_match_run > 0
                and loudness_db >= self._first_loudness + self.flow.escalation.loudness_rise_db)

    def _escalation_in(self, text: str, nearest: Nearest | None) -> tuple[str, str] | None:
        escalation = self.flow.escalation
        if asks_for_human(text, tuple(escalation.human_phrases)):
            return "caller_asked", "asked for a person"
        joined = " ".join(words_of(text))
        for phrase in escalation.sensitive_phrases:
            if " ".join(words_of(phrase)) in joined:
                return "sensitive_topic", phrase
        for phrase in escalation.frustration_phrases:
            if " ".join(words_of(phrase)) in joined:
                return "frustration", phrase
        if escalation.sensitive_intents and nearest is not None:
            best = self.scorer.best_of(nearest)
            if best is not None and best.intent in escalation.sensitive_intents:
                threshold = self.flow.intents[best.intent].threshold or self.flow.thresholds.confirm
                if best.confidence >= threshold:
                    return "sensitive_topic", best.intent
        return None

    def _understand(self, state: StateDef, turn: DialogTurn, text: str, recognition: float,
                    nearest: Nearest | None) -> list[Action]:
        thresholds = self.flow.thresholds_for(state)
        if state.slot is not None:
            slot = self.flow.slots[state.slot]
            match = extract(slot, text, self.today)
            if match is not None:
                return self._judge(state, slot, match, turn, recognition)
            # Never a sensitive slot: a PIN or an account number does not leave the worker.
            if (self.language_model and slot.type != "free_text" and not slot.sensitive and not state.intents
                    and text.strip()):
                self._filling = (turn, recognition)
                choices = tuple(slot.choices) if slot.type in ("name", "choice") else ()
                return [FillSlot(self.state, state.slot, slot.type, text, choices)]
        if state.intents and nearest is not None:
            best = self.scorer.best_of(nearest, among=state.intents)
            if best is not None:
                confidence = combined_confidence(recognition, best.confidence)
                turn.intent, turn.understanding_confidence, turn.confidence = best.intent, best.confidence, confidence
                # The understanding itself must clear the line, not only its mean with a sure recognition
                # (sqrt(1.0 * 0.09) = 0.3 would let a faint likeness through).
                floor = self.flow.intents[best.intent].threshold or thresholds.reprompt
                if confidence >= floor and best.confidence >= floor:
                    turn.decision = "accepted"
                    self._no_match_run = 0
                    return self._go(state.intents[best.intent])
        return self._miss(turn, "no match")

    def _judge(self, state: StateDef, slot: SlotDef, match: SlotMatch, turn: DialogTurn,
               recognition: float) -> list[Action]:
        thresholds = self.flow.thresholds_for(state)
        confidence = combined_confidence(recognition, match.score)
        turn.understanding_confidence, turn.confidence = match.score, confidence
        turn.value = spoken(match.value, sensitive=slot.sensitive)
        if confidence < thresholds.reprompt:
            return self._miss(turn, f"confidence {confidence:.2f} below {thresholds.reprompt:.2f}")
        if confidence < thresholds.confirm or state.always_confirm:
            assert state.slot is not None and state.next is not None
            turn.decision = "confirm"
            self._pending = _Pending(state.slot, match.value, state.next)
            self.events.append(DialogEvent("confirm", f"confidence {confidence:.2f}", self.state))
            return [self._confirm_prompt(state, slot, match.value), self._listen(state, confirming=True)]
        return self._accept(state, slot, match.value, turn, confidence)

    def _confirm_prompt(self, state: StateDef, slot: SlotDef, value: Any) -> Say:
        template = state.confirm or slot.confirm or self.flow.messages.confirm
        values = {**self.values, "value": value}
        sensitive = self.sensitive | ({"value"} if slot.sensitive else set())
        return Say(render_spoken(template, values, frozenset(sensitive)), False)

    def _confirming(self, turn: DialogTurn, text: str, recognition: float) -> list[Action]:
        pending = self._pending
        assert pending is not None
        answer = find_yes_no(text)
        slot = self.flow.slots[pending.slot]
        correction = extract(slot, text, self.today) if answer is not True else None
        if correction is not None and correction.value == pending.value:
            correction = None
        if answer is None and correction is None:
            return self._miss(turn, "neither yes nor no")
        return self._confirmed(turn, answer is not False or correction is not None, correction, recognition)

    def _confirmed(self, turn: DialogTurn, yes: bool, correction: SlotMatch | None,
                   recognition: float = 1.0) -> list[Action]:
        pending = self._pending
        assert pending is not None
        state = self._current()
        slot = self.flow.slots[pending.slot]
        self._pending = None
        if correction is not None:  # "no, Wednesday": take the new value, and read it back if unsure
            turn.decision = "corrected"
            actions = self._judge(state, slot, correction, turn, recognition)
            if turn.decision != "corrected":
                turn.decision = f"corrected, {turn.decision}"  # e.g. read back again: "corrected, confirm"
            return actions
        if yes:
            turn.decision = "confirmed"
            return self._accept(state, slot, pending.value, turn, turn.confidence or 1.0)
        turn.decision = "denied"
        return self._reask(state, None)

    def _accept(self, state: StateDef, slot: SlotDef, value: Any, turn: DialogTurn, confidence: float) -> list[Action]:
        assert state.slot is not None and state.next is not None
        self.values[state.slot] = value
        turn.slot = state.slot
        turn.value = spoken(value, sensitive=slot.sensitive)
        turn.confidence = turn.confidence if turn.confidence is not None else confidence
        if turn.decision not in ("confirmed", "corrected"):
            turn.decision = "accepted"
        self._no_match_run = 0
        self._pending = None
        return self._go(state.next)

    def _miss(self, turn: DialogTurn, why: str) -> list[Action]:
        state = self._current()
        self._no_match_run += 1
        misses = self._misses.get(self.state, 0) + 1
        self._misses[self.state] = misses
        turn.decision = "reprompt"
        self.events.append(DialogEvent("reprompt", why, self.state))
        if self._no_match_run >= self.flow.escalation.no_match_max:
            turn.decision = "escalated"
            return self._escalate("frustration", f"not understood {self._no_match_run} times in a row")
        if misses > self.flow.thresholds_for(state).reprompts:
            turn.decision = "escalated"
            return self._escalate("low_confidence", f"{misses} tries at {self.state}")
        if self._pending is not None:
            slot = self.flow.slots[self._pending.slot]
            return [Say(self.flow.messages.reprompt, True), self._confirm_prompt(state, slot, self._pending.value),
                    self._listen(state, confirming=True)]
        return self._reask(state, self.flow.messages.reprompt)

    def _reask(self, state: StateDef, apology: str | None) -> list[Action]:
        said: list[Action] = [Say(apology, is_fixed(apology))] if apology else []
        question = state.reprompt or state.ask or ""
        said.append(Say(self._render(question), is_fixed(question)))
        return [*said, self._listen(state)]

    # --- moving ---------------------------------------------------------------------------------------------

    def _listen(self, state: StateDef, *, confirming: bool = False) -> Listen:
        slot = self.flow.slots.get(state.slot) if state.slot else None
        if confirming:
            pending = self.flow.slots[self._pending.slot] if self._pending is not None else slot
            return Listen(self.state, pending.type if pending is not None else "yes_no", keys_max=1,
                          silence_ms=self.flow.limits.silence_ms, confirming=True,
                          sensitive=pending is not None and pending.sensitive)
        if slot is None:
            return Listen(self.state, None, tuple(state.intents), keys_max=1, silence_ms=self.flow.limits.silence_ms)
        choices = tuple(slot.choices) if slot.type in ("name", "choice") else ()
        keys_max = slot.max_digits if slot.type == "digits" else 4 if slot.type in ("date", "time") else 1
        return Listen(self.state, slot.type, choices, keys_max=keys_max, silence_ms=self.flow.limits.silence_ms,
                      sensitive=slot.sensitive)

    def _render(self, template: str) -> str:
        return render_spoken(template, self.values, self.sensitive)

    def _reply(self, template: str) -> Say:
        """A state's ``say``: rewordable unless it names a sensitive slot, with the facts a rewording keeps."""
        text = self._render(template)
        private = names_sensitive(template, self.sensitive)
        facts = () if private else spoken_facts(template, self.values)
        return Say(text, is_fixed(template), rewordable=not private, facts=facts)

    def _go(self, name: str) -> list[Action]:
        return self._enter(name)

    def _enter(self, name: str) -> list[Action]:
        actions: list[Action] = []
        for _ in range(MAX_STEPS):
            self.state = name
            state = self._current()
            self._entries[name] = self._entries.get(name, 0) + 1
            try:
                if state.say is not None:
                    actions.append(self._reply(state.say))
                kind = state.kind
                if kind == "ask":
                    assert state.ask is not None
                    actions += [Say(self._render(state.ask), is_fixed(state.ask)), self._listen(state)]
                    return actions
                if kind == "call":
                    return [*actions, self._call(state)]
                if kind == "branch":
                    name = self._branch(state)
                    continue
                if kind == "end":
                    assert state.end is not None
                    if state.say is None:
                        actions.append(Say(self.flow.messages.goodbye, True))
                    self.outcome = state.end
                    return [*actions, Hangup(state.end)]
                if kind == "escalate":
                    assert state.escalate is not None
                    return actions + self._escalate("flow", state.escalate)
                assert state.next is not None
                name = state.next
            except TemplateError as exc:
                self.events.append(DialogEvent("error", str(exc), name))
                return actions + self._escalate("flow", f"template: {exc}")
        self.events.append(DialogEvent("error", "the flow went round without asking anything", name))
        return actions + self._escalate("flow", "loop")

    def _branch(self, state: StateDef) -> str:
        for branch in state.branch:
            if branch.if_ is None:
                return branch.next
            value = lookup(self.values, branch.if_)
            if branch.equals is not None:
                if value is not None and str(value).lower() == render_spoken(branch.equals, self.values).lower():
                    return branch.next
            elif value not in (None, "", [], {}, False):
                return branch.next
        raise TemplateError(f"no branch of {self.state!r} applies")

    def _call(self, state: StateDef) -> CallIntegration:
        call = state.call
        assert call is not None
        path = "".join(quote(str(part), safe="/") if index % 2 else part for index, part in
                       enumerate(_split_fields(call.path, self.values)))
        params = {key: render_wire(value, self.values) for key, value in call.params.items()}
        body = {key: render_wire(value, self.values) for key, value in call.body.items()} if call.body else None
        headers = {key: str(render_wire(value, self.values)) for key, value in call.headers.items()}
        entry = self._entries.get(self.state, 1)
        return CallIntegration(self.state, call.integration, call.method, path, params, body, headers,
                               idempotency_key=f"{self.run_id}-{self.state}-{entry}",
                               wait_ms=self.flow.limits.integration_wait_ms)

    def _escalate(self, reason: str, detail: str) -> list[Action]:
        self._pending = None
        escalation = Escalate(reason, detail)
        self.escalation = escalation
        self.events.append(DialogEvent("escalation", f"{reason}: {detail}", self.state))
        # Until a human can take the call (handoff), the caller hears why and the call ends, recorded.
        self.outcome = f"escalated:{reason}"
        return [escalation, Say(self.flow.messages.escalate, True), Hangup(self.outcome)]


def _split_fields(template: str, values: dict[str, Any]) -> list[str]:
    """A path template as [literal, value, literal, value, ...] so only the values are URL-quoted."""
    parts: list[str] = []
    last = 0
    for match in TEMPLATE_FIELD.finditer(template):
        parts.append(template[last:match.start()])
        parts.append(str(render_wire(match.group(0), values)))
        last = match.end()
    parts.append(template[last:])
    return parts

