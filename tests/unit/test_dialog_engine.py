"""A call's path through the shipped flows as text: what the agent says, asks, calls, and when it escalates."""

from __future__ import annotations

import datetime as dt
import functools

import pytest

from asterisk_agent.dialog.driver import flow_scorer
from asterisk_agent.dialog.engine import (
    Action,
    CallIntegration,
    CallOutcome,
    DialogRun,
    Escalate,
    Hangup,
    IntegrationAnswer,
    Listen,
    Say,
    asks_for_human,
)
from asterisk_agent.dialog.flow import Flow, parse_flow, shipped_flow
from asterisk_agent.dialog.intents import IntentScorer, IntentScoring

FRIDAY = dt.date(2026, 11, 27)
SURE = 0.95  # a clear recognition
UNSURE = 0.25  # sqrt(0.25) = 0.5: under the clinic's confirm line (0.55), over its re-prompt line (0.3)


@functools.cache
def shipped_scorer(name: str) -> IntentScoring:
    """The scorer a worker gives the shipped flow (MiniLM embeddings when the model is installed), built once."""
    return flow_scorer(shipped_flow(name))


def run(name: str) -> DialogRun:
    return DialogRun(shipped_flow(name), shipped_scorer(name), today=FRIDAY, run_id="call-1",
                     variables={"caller": "5550100", "did": "200"})


def said(actions: list[Action]) -> str:
    return " ".join(action.text for action in actions if isinstance(action, Say))


def only(actions: list[Action], kind: type) -> object:
    found = [action for action in actions if isinstance(action, kind)]
    assert len(found) == 1, actions
    return found[0]


def test_clinic_happy_path_books_the_day_and_time_said() -> None:
    dialog = run("clinic")
    actions = dialog.start()
    assert "booking line" in said(actions)
    assert only(actions, Listen).state == "ask_purpose"  # type: ignore[attr-defined]
    assert only(dialog.heard("I'd like to book an appointment please", SURE), Listen).slot_type == "date"  # type: ignore[attr-defined]
    call = only(dialog.heard("Wednesday", SURE), CallIntegration)
    assert isinstance(call, CallIntegration)
    assert (call.method, call.path, call.params) == ("GET", "/availability", {"date": "2026-12-02"})
    actions = dialog.answered(IntegrationAnswer(CallOutcome.OK, 200, {"times": ["09:00", "10:30", "14:00"]}))
    assert "9 a.m., 10:30 a.m. or 2 p.m." in said(actions)
    dialog.heard("10:30 please", SURE)
    book = only(dialog.heard("My name is Dana Lee.", SURE), CallIntegration)
    assert isinstance(book, CallIntegration)
    assert book.body == {"date": "2026-12-02", "time": "10:30", "name": "Dana Lee", "phone": "5550100"}
    assert book.idempotency_key == "call-1-book-1"
    actions = dialog.answered(IntegrationAnswer(CallOutcome.OK, 201, {"id": "A-000007"}))
    assert "Your appointment is on Wednesday, December 2 at 10:30 a.m." in said(actions)
    assert only(actions, Hangup).outcome == "booked"  # type: ignore[attr-defined]
    assert dialog.outcome == "booked"
    assert [turn.decision for turn in dialog.turns] == ["accepted"] * 4


def test_an_unsure_answer_is_read_back_and_a_correction_taken() -> None:
    dialog = run("clinic")
    dialog.start()
    dialog.heard("book an appointment", SURE)
    actions = dialog.heard("Tuesday", UNSURE)
    assert said(actions) == "That is Tuesday, December 1. Is that right?"
    listen = only(actions, Listen)
    assert isinstance(listen, Listen) and listen.confirming and listen.slot_type == "date"
    call = only(dialog.heard("No, Wednesday.", SURE), CallIntegration)
    assert call.params == {"date": "2026-12-02"}  # type: ignore[attr-defined]
    assert [turn.decision for turn in dialog.turns][-2:] == ["confirm", "corrected"]


def test_a_confirmation_answered_yes_keeps_the_value_and_no_asks_again() -> None:
    dialog = run("clinic")
    dialog.start()
    dialog.heard("book an appointment", SURE)
    dialog.heard("Tuesday", UNSURE)
    assert only(dialog.heard("Yes, that's right.", SURE), CallIntegration).params == {"date": "2026-12-01"}  # type: ignore[attr-defined]
    dialog = run("clinic")
    dialog.start()
    dialog.heard("book an appointment", SURE)
    dialog.heard("Tuesday", UNSURE)
    actions = dialog.heard("No.", SURE)
    assert "Which day" in said(actions) or "Please tell me a day" in said(actions)
    assert "ask_date" not in dialog.values


def test_low_confidence_confirms_then_re_prompts_then_escalates() -> None:
    dialog = run("clinic")
    dialog.start()
    dialog.heard("book an appointment", SURE)
    first = dialog.heard("mumble", 0.2)
    assert "Sorry" in said(first)
    second = dialog.heard("hmm", 0.2)
    assert "Sorry" in said(second)
    third = dialog.heard("uh", 0.2)
    escalation = only(third, Escalate)
    assert escalation.reason in ("low_confidence", "frustration")  # type: ignore[attr-defined]
    assert only(third, Hangup).outcome.startswith("escalated:")  # type: ignore[attr-defined]
    assert [event.kind for event in dialog.events].count("reprompt") == 3


def test_keys_work_for_menus_digits_and_yes_no() -> None:
    dialog = run("bank")
    dialog.start()
    assert only(dialog.keyed("12345678"), Listen).state == "ask_pin"  # type: ignore[attr-defined]
    call = only(dialog.keyed("4321"), CallIntegration)
    assert call.body == {"account": "12345678", "pin": "4321"}  # type: ignore[attr-defined]
    actions = dialog.answered(IntegrationAnswer(CallOutcome.OK, 200, {"customer_id": "C1", "name": "Alice Martin"}))
    assert "Thank you, Alice Martin." in said(actions)
    balance = only(dialog.keyed("1"), CallIntegration)
    assert balance.path == "/accounts/12345678/balance"  # type: ignore[attr-defined]
    assert balance.headers == {"X-Customer-Id": "C1"}  # type: ignore[attr-defined]
    actions = dialog.answered(IntegrationAnswer(CallOutcome.OK, 200, {"balance": "1520.40", "currency": "USD"}))
    assert "Your balance is 1,520 dollars and 40 cents." in said(actions)
    assert only(dialog.keyed("2"), Hangup).outcome == "served"  # type: ignore[attr-defined]


def test_sensitive_slots_are_masked_in_the_record() -> None:
    dialog = run("bank")
    dialog.start()
    dialog.heard("my account number is 1234 5678", SURE)
    dialog.keyed("4321")
    texts = " ".join(f"{turn.text} {turn.value}" for turn in dialog.turns)
    assert "1234" not in texts and "4321" not in texts
    assert "(masked)" in texts


def test_the_bank_answers_from_cache_during_an_outage_and_says_so() -> None:
    dialog = run("bank")
    dialog.start()
    dialog.keyed("12345678")
    dialog.keyed("4321")
    dialog.answered(IntegrationAnswer(CallOutcome.OK, 200, {"customer_id": "C1", "name": "Alice Martin"}))
    dialog.heard("what's my balance", SURE)
    actions = dialog.answered(IntegrationAnswer(CallOutcome.CACHED, 503, {"balance": "20.05"}, "server_error"))
    text = said(actions)
    assert text.index("latest information") < text.index("20 dollars and 5 cents")
    assert "cached" in [event.kind for event in dialog.events]


def test_a_definite_answer_takes_its_own_path() -> None:
    dialog = run("bank")
    dialog.start()
    dialog.keyed("12345678")
    dialog.keyed("0000")
    actions = dialog.answered(IntegrationAnswer(CallOutcome.FAILED, 401, {"error": "mismatch"}, "client_error"))
    assert "do not match" in said(actions)
    assert only(actions, Listen).state == "ask_account"  # type: ignore[attr-defined]


def test_a_failed_integration_escalates_with_its_reason() -> None:
    dialog = run("insurance")
    dialog.start()
    dialog.heard("1234", SURE)
    actions = dialog.answered(IntegrationAnswer(CallOutcome.FAILED, None, None, "connection"))
    assert only(actions, Escalate).detail == "claims system unavailable"  # type: ignore[attr-defined]


@pytest.mark.parametrize("words", ["Can I talk to a person?", "agent please", "operator", "I want a representative"])
def test_asking_for_a_human_escalates_from_any_state(words: str) -> None:
    dialog = run("clinic")
    dialog.start()
    dialog.heard("book an appointment", SURE)
    escalation = only(dialog.heard(words, SURE), Escalate)
    assert escalation.reason == "caller_asked"  # type: ignore[attr-defined]
    assert dialog.outcome == "escalated:caller_asked"


def test_the_human_key_escalates_but_not_inside_a_number() -> None:
    dialog = run("clinic")
    dialog.start()
    assert only(dialog.keyed("0"), Escalate).reason == "caller_asked"  # type: ignore[attr-defined]
    bank = run("bank")
    bank.start()
    assert not any(isinstance(action, Escalate) for action in bank.keyed("01234567"))


def test_a_sensitive_phrase_or_intent_escalates() -> None:
    dialog = run("clinic")
    dialog.start()
    assert only(dialog.heard("I have chest pain", SURE), Escalate).reason == "sensitive_topic"  # type: ignore[attr-defined]
    bank = run("bank")
    bank.start()
    bank.keyed("12345678")
    bank.keyed("4321")
    bank.answered(IntegrationAnswer(CallOutcome.OK, 200, {"customer_id": "C1", "name": "Alice"}))
    escalation = only(bank.heard("someone used my card", SURE), Escalate)
    assert escalation.reason == "sensitive_topic"  # type: ignore[attr-defined]
    assert escalation.detail == "report_fraud"  # type: ignore[attr-defined]


def test_frustration_from_phrases_and_from_a_louder_caller() -> None:
    dialog = run("clinic")
    dialog.start()
    assert only(dialog.heard("this is ridiculous", SURE), Escalate).reason == "frustration"  # type: ignore[attr-defined]
    dialog = run("clinic")
    dialog.start()
    dialog.heard("hello?", SURE, loudness_db=-30.0)  # not understood: a re-prompt
    actions = dialog.heard("HELLO?", SURE, loudness_db=-15.0)  # not understood again, much louder
    assert only(actions, Escalate).reason == "frustration"  # type: ignore[attr-defined]


def test_silence_re_prompts_then_ends_by_the_flow_limit() -> None:
    dialog = run("clinic")
    dialog.start()
    assert "Sorry" in said(dialog.silence())
    assert "Sorry" in said(dialog.silence())
    actions = dialog.silence()
    assert only(actions, Hangup).outcome == "limit:silence"  # type: ignore[attr-defined]
    assert ("limit", "silence") in [(event.kind, event.reason) for event in dialog.events]


def test_the_turn_limit_is_recorded_with_its_reason() -> None:
    flow = parse_flow("""\
name: loop
start: ask
limits: {turns_max: 2}
intents:
  agree: {examples: [yes please, sure]}
states:
  ask:
    ask: Say yes.
    intents: {agree: ask}
""")
    dialog = DialogRun(flow, IntentScorer({"agree": ["yes please", "sure"]}), today=FRIDAY, run_id="x")
    dialog.start()
    dialog.heard("yes please", SURE)
    dialog.heard("yes please", SURE)
    actions = dialog.heard("yes please", SURE)
    assert only(actions, Hangup).outcome == "limit:turns"  # type: ignore[attr-defined]


def test_insurance_claim_with_a_past_date_and_a_high_risk_answer() -> None:
    dialog = run("insurance")
    dialog.start()
    find = only(dialog.heard("It's 1 2 3 4.", SURE), CallIntegration)
    assert find.path == "/policies/POL1234"  # type: ignore[attr-defined]
    dialog.answered(IntegrationAnswer(CallOutcome.OK, 200, {"holder": "Dana Lee", "active": True}))
    dialog.heard("A pipe burst and flooded the kitchen.", SURE)
    dialog.heard("Last Tuesday.", SURE)
    claim = only(dialog.heard("At home, 12 Elm Street.", SURE), CallIntegration)
    assert claim.body == {"policy": "POL1234", "what": "A pipe burst and flooded the kitchen",  # type: ignore[attr-defined]
                          "when": "2026-11-24", "where": "At home, 12 Elm Street"}
    actions = dialog.answered(IntegrationAnswer(CallOutcome.OK, 201, {
        "claim_id": "C-000003", "risk": "high", "follow_up": {"date": "2026-11-30", "time": "10:00"}}))
    assert "C-000003" in said(actions)
    assert only(actions, Escalate).detail == "high risk claim"  # type: ignore[attr-defined]


def test_insurance_low_risk_claim_gets_its_follow_up_read() -> None:
    dialog = run("insurance")
    dialog.start()
    dialog.heard("1234", SURE)
    dialog.answered(IntegrationAnswer(CallOutcome.OK, 200, {"holder": "Dana Lee", "active": True}))
    dialog.heard("A tree branch cracked a window.", SURE)
    dialog.heard("yesterday", SURE)
    dialog.heard("At my house.", SURE)
    actions = dialog.answered(IntegrationAnswer(CallOutcome.OK, 201, {
        "claim_id": "C-000004", "risk": "low", "follow_up": {"date": "2026-11-30", "time": "10:00"}}))
    assert "call you on Monday, November 30 at 10 a.m." in said(actions)
    assert dialog.outcome == "claim_filed"


def test_a_template_without_its_value_escalates_instead_of_crashing() -> None:
    flow: Flow = parse_flow("""\
name: broken
start: ask
integrations: [api]
states:
  ask:
    call: {integration: api, path: /x, save: answer}
    on_ok: tell
    on_failed: tell
  tell:
    say: "It is {answer.value}."
    end: done
""")
    dialog = DialogRun(flow, IntentScorer({}), today=FRIDAY, run_id="x")
    dialog.start()
    actions = dialog.answered(IntegrationAnswer(CallOutcome.OK, 200, {"other": 1}))
    assert only(actions, Escalate).reason == "flow"  # type: ignore[attr-defined]
    assert any(event.kind == "error" for event in dialog.events)


def test_human_requests_are_told_apart_from_ordinary_words() -> None:
    assert asks_for_human("Could I speak to someone please")
    assert not asks_for_human("My insurance agent told me to call about the claim for the car and the garage")
    assert not asks_for_human("Wednesday at ten")
