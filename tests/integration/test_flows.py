"""The shipped flows on real calls: callers dial the pbx, key or say their answers, the worker runs the
account's flow against the reference backends, and each caller checks by transcription what it heard; the
backends show what was stored."""

from __future__ import annotations

import asyncio
import datetime as dt
from pathlib import Path
from typing import Any

import pytest
import yaml

from asterisk_agent import demo_scenarios
from asterisk_agent.backends.runner import ReferenceBackends
from asterisk_agent.calls.session import EndReason
from asterisk_agent.demo_scenarios import said_time
from asterisk_agent.dialog.flow import shipped_flow
from asterisk_agent.media.frames import FRAME_SAMPLES
from asterisk_agent.media.leg import MediaContext
from asterisk_agent.pbx.carrier.callers import Carrier, SimulatedCaller
from asterisk_agent.speech.stt.whisper_engine import WhisperBatcher
from asterisk_agent.speech.voice import Voice
from asterisk_agent.worker import Worker
from tests.support.calls import dial, session_of

pytestmark = [pytest.mark.asterisk, pytest.mark.usefixtures("leak_audit")]

QUIET_MS = 1200  # a reply is over when the caller has heard this much silence (pieces pause 200 ms)


async def flow_worker(make_worker, stt_cache: Path, backends: ReferenceBackends,  # type: ignore[no-untyped-def]
                      account: str, flow: str | None = None, banking: dict[str, int] | None = None,
                      account_settings: dict[str, Any] | None = None, **overrides: Any) -> Worker:
    """A speaking worker whose account ``account`` (number 100) runs ``flow`` (a path; by default the shipped
    flow of the account's name) against the reference backends (``banking``: the bank endpoint's limits)."""
    return await make_worker(
        media={"enabled": True, "port_min": 45200, "port_max": 45399},
        speech={"stt": {"whisper": {"cache_dir": str(stt_cache)}}},
        accounts={account: {"numbers": ["100"], "flow": flow or account, **(account_settings or {})}},
        integrations={"scheduling": {"base_url": backends.urls["clinic"]},
                      "banking": {"base_url": backends.urls["bank"], **(banking or {})},
                      "crm": {"base_url": backends.urls["insurance"]}},
        **overrides,
    )


async def heard(ears: WhisperBatcher, caller: SimulatedCaller, since_frame: int, until_frame: int | None = None) -> str:
    audio = caller.heard()[since_frame * FRAME_SAMPLES:None if until_frame is None else until_frame * FRAME_SAMPLES]
    return (await ears.transcribe_8k(audio)).text


async def test_bank_by_keys_on_a_real_call_tells_the_balance(
    make_worker, stt_cache: Path, carrier: Carrier, caller_media: MediaContext, ears: WhisperBatcher,
    backends: ReferenceBackends,
) -> None:
    worker = await flow_worker(make_worker, stt_cache, backends, "bank")
    caller = await dial(carrier, caller_media, "15550301")
    _, last = await caller.wait_reply(0, quiet_ms=QUIET_MS)  # welcome, and the account number question
    await caller.send_digits("12345678")
    _, last = await caller.wait_reply(last + 1, quiet_ms=QUIET_MS)  # the PIN question
    await caller.send_digits("4321")
    first, last = await caller.wait_reply(last + 1, quiet_ms=QUIET_MS)  # thank you, Alice Martin; the menu
    greeting = await heard(ears, caller, first, last + 1)
    assert "alice martin" in greeting.lower(), greeting
    await caller.send_digits("1")
    first, last = await caller.wait_reply(last + 1, quiet_ms=QUIET_MS)  # the balance, then "anything else?"
    balance = await heard(ears, caller, first, last + 1)
    assert "1520" in balance.replace(",", "") and "40" in balance, balance
    session = session_of(worker, caller)
    assert session.dialog is not None and session.dialog.state == "anything_else"
    record = " ".join(f"{turn.text} {turn.value}" for turn in session.dialog.turns)
    assert "12345678" not in record and "4321" not in record  # sensitive slots masked in the record
    await caller.hangup()
    await worker.manager.wait_idle()
    assert session.end_reason is EndReason.CALLER_HANGUP


async def test_clinic_booking_by_voice_on_a_real_call(
    make_worker, stt_cache: Path, carrier: Carrier, caller_media: MediaContext, voices: Voice,
    ears: WhisperBatcher, backends: ReferenceBackends,
) -> None:
    worker = await flow_worker(make_worker, stt_cache, backends, "clinic")
    today = dt.date.today()
    wednesday = today + dt.timedelta(days=(2 - today.weekday()) % 7 or 7)
    first_free = backends.clinic.free_slots(wednesday)[0]
    time_line = f"At {said_time(first_free)}"
    caller = await dial(carrier, caller_media, "15550302")
    await caller.wait_reply(0, quiet_ms=QUIET_MS)
    for line in ("I would like to book an appointment.", "Wednesday, please.", f"{time_line}, please.",
                 "My name is Dana Lee."):
        _, said_last = await caller.speak(await voices.prompt(line))
        first, _ = await caller.wait_reply(said_last + 1, quiet_ms=QUIET_MS)
    await caller.wait_gone(timeout_s=20)  # the flow says goodbye and hangs up
    await caller.release_media()
    confirmation = await heard(ears, caller, first)
    await worker.manager.wait_idle()
    session = session_of(worker, caller)
    assert session.dialog is not None
    assert session.dialog.outcome == "booked", [(t.state, t.text, t.decision) for t in session.dialog.turns]
    [appointment] = [a for a in backends.clinic.appointments.values() if a.date == wednesday]
    assert appointment.time == first_free and "dana" in appointment.name.lower()
    assert "appointment" in confirmation.lower() and "wednesday" in confirmation.lower(), confirmation
    assert session.end_reason is EndReason.COMPLETED


async def test_insurance_claim_by_voice_on_a_real_call(
    make_worker, stt_cache: Path, carrier: Carrier, caller_media: MediaContext, voices: Voice,
    ears: WhisperBatcher, backends: ReferenceBackends,
) -> None:
    """The demo's insurance caller: policy number, what happened, when and where, by voice; the claim is in the
    CRM with a follow-up, and the caller hears its claim confirmed."""
    worker = await flow_worker(make_worker, stt_cache, backends, "insurance")
    caller = await dial(carrier, caller_media, "15550306")
    outcome = await demo_scenarios.insurance(caller, voices, ears, backends, 1)
    await caller.wait_gone(timeout_s=20)
    await caller.release_media()
    await worker.manager.wait_idle()
    assert outcome.verified, outcome.detail
    session = session_of(worker, caller)
    assert session.dialog is not None and session.dialog.outcome == "claim_filed", session.dialog.outcome
    [claim] = [c for c in backends.insurance.claims.values()
               if c["policy"] == "POL5678" and "roof" in c["what"].lower()]
    follow_up = dt.date.fromisoformat(claim["follow_up"]["date"])
    assert follow_up.strftime("%A").lower() in outcome.heard.lower(), outcome.heard  # the follow-up is told
    assert session.end_reason is EndReason.COMPLETED


async def test_a_caller_asking_for_a_person_is_escalated_and_told(
    make_worker, stt_cache: Path, carrier: Carrier, caller_media: MediaContext, voices: Voice,
    ears: WhisperBatcher, backends: ReferenceBackends,
) -> None:
    worker = await flow_worker(make_worker, stt_cache, backends, "insurance")
    caller = await dial(carrier, caller_media, "15550303")
    await caller.wait_reply(0, quiet_ms=QUIET_MS)
    _, said_last = await caller.speak(await voices.prompt("Can I talk to a person, please?"))
    await caller.wait_gone(timeout_s=20)
    await caller.release_media()
    told = await heard(ears, caller, said_last + 1)
    await worker.manager.wait_idle()
    session = session_of(worker, caller)
    assert session.dialog is not None and session.dialog.escalation is not None
    assert session.dialog.escalation.reason == "caller_asked"
    assert session.end_reason is EndReason.ESCALATED
    assert "someone who can help" in told.lower(), told
    assert any(event.what == "escalation" for event in session.history)


async def test_a_correction_on_a_real_call_then_low_confidence_escalates(
    make_worker, stt_cache: Path, carrier: Carrier, caller_media: MediaContext, voices: Voice,
    backends: ReferenceBackends, tmp_path: Path,
) -> None:
    """The clinic flow set to read back every answer and to give up after one re-prompt: the caller corrects a
    day in one go ("No, Wednesday."), confirms, then cannot name a time: the call is escalated for low
    confidence."""
    flow = shipped_flow("clinic").model_dump(by_alias=True, exclude_defaults=False)
    flow["thresholds"] = {"confirm": 1.0, "reprompt": 0.3, "reprompts": 1}
    path = tmp_path / "clinic_confirming.yaml"
    path.write_text(yaml.safe_dump(flow))
    worker = await flow_worker(make_worker, stt_cache, backends, "clinic", str(path))
    caller = await dial(carrier, caller_media, "15550304")
    await caller.wait_reply(0, quiet_ms=QUIET_MS)
    for line in ("I would like to book an appointment.", "On Tuesday, please.", "No, Wednesday please.",
                 "Yes, that's right.", "Hmm, I am not sure.", "I really don't know."):
        _, said_last = await caller.speak(await voices.prompt(line))
        if line.startswith("I really"):
            break
        await caller.wait_reply(said_last + 1, quiet_ms=QUIET_MS)
    await caller.wait_gone(timeout_s=30)
    await caller.release_media()
    await worker.manager.wait_idle()
    session = session_of(worker, caller)
    assert session.dialog is not None
    decisions = [(turn.state, turn.decision) for turn in session.dialog.turns]
    texts = [turn.text for turn in session.dialog.turns]
    assert ("ask_date", "confirm") in decisions and ("ask_date", "corrected, confirm") in decisions, (decisions,
                                                                                                     texts)
    assert ("ask_date", "confirmed") in decisions, decisions
    assert session.dialog.values["date"].weekday() == 2  # Wednesday, as corrected
    assert session.dialog.escalation is not None and session.dialog.escalation.reason == "low_confidence"
    assert session.end_reason is EndReason.ESCALATED


async def test_the_flows_call_limit_ends_a_silent_call_with_its_reason(
    make_worker, stt_cache: Path, carrier: Carrier, caller_media: MediaContext, backends: ReferenceBackends,
    tmp_path: Path,
) -> None:
    flow = shipped_flow("insurance").model_dump(by_alias=True)
    flow["limits"] = {**flow["limits"], "call_max_ms": 4000, "silence_ms": 60_000, "on_limit": "goodbye"}
    path = tmp_path / "insurance_short.yaml"
    path.write_text(yaml.safe_dump(flow))
    worker = await flow_worker(make_worker, stt_cache, backends, "insurance", str(path))
    caller = await dial(carrier, caller_media, "15550305")
    await caller.wait_gone(timeout_s=30)  # the caller never says anything
    await caller.release_media()
    await worker.manager.wait_idle()
    session = session_of(worker, caller)
    assert session.dialog is not None and session.dialog.outcome == "limit:call_max"
    assert ("limit", "call_max") in [(event.kind, event.reason) for event in session.dialog.events]
    assert session.end_reason is EndReason.COMPLETED
    assert any(turn.text.startswith("I am sorry, we have to end this call") for turn in session.transcript)


BALANCE_BY_KEYS = """\
name: balance_by_keys
integrations: [banking]
limits: {integration_wait_ms: 10000, silence_ms: 20000}  # longer than the endpoint's budget: the cache answers
slots:
  account: {type: digits, min_digits: 8, max_digits: 8, sensitive: true}
  customer: {type: digits, min_digits: 4, max_digits: 4}
start: ask_account
states:
  ask_account:
    ask: Your account number?
    slot: account
    next: ask_customer
  ask_customer:
    ask: Your customer number?
    slot: customer
    next: fetch
  fetch:
    call:
      integration: banking
      path: "/accounts/{account}/balance"
      headers: {X-Customer-Id: "CUST-{customer}"}
      save: balance
    on_ok: tell
    on_failed: sorry
  tell:
    say: "Your balance is {balance.balance|money}."
    end: told
  sorry:
    say: Sorry, the bank cannot answer.
    end: failed
"""
CUSTOMERS = {"12345678": "1001", "87654321": "1002", "11223344": "1003"}


async def test_thirty_real_callers_on_a_rate_limited_bank(
    make_worker, stt_cache: Path, carrier: Carrier, caller_media: MediaContext, ears: WhisperBatcher,
    backends: ReferenceBackends, tmp_path: Path,
) -> None:
    """30 callers key their account at once while the bank answers every third request with 429 and
    Retry-After: no call fails; calls within the queue bound hear the bank's answer, calls past it the cached
    one and are told so; the bank never has more requests in flight than the endpoint's limit."""
    path = tmp_path / "balance_by_keys.yaml"
    path.write_text(BALANCE_BY_KEYS)
    limits = {"max_in_flight": 3, "queue_max": 10, "queue_wait_ms": 3000, "total_budget_ms": 8000, "retries": 3}
    worker = await flow_worker(make_worker, stt_cache, backends, "bank", str(path), banking=limits)

    async def one(index: int) -> SimulatedCaller:
        account = list(CUSTOMERS)[index % 3]
        caller = await dial(carrier, caller_media, f"155504{index:02d}")
        _, last = await caller.wait_reply(0, quiet_ms=QUIET_MS)
        await caller.send_digits(account)
        await caller.wait_reply(last + 1, quiet_ms=QUIET_MS)
        await caller.send_digits(CUSTOMERS[account])
        await caller.wait_gone(timeout_s=60)  # the balance (or the apology), then the flow hangs up
        await caller.release_media()
        return caller

    warm = await asyncio.gather(*(one(index) for index in range(3)))  # each account's balance cached once
    backends.bank.stats.reset()
    backends.bank.faults.apply({"mode": "429", "retry_after_s": 1, "every": 3})
    callers = await asyncio.gather(*(one(index) for index in range(3, 33)))
    await worker.manager.wait_idle()
    runs = [session_of(worker, caller).dialog for caller in [*warm, *callers]]
    assert [run.outcome if run else None for run in runs] == ["told"] * 33  # nobody failed
    served_cached = [any(event.kind == "cached" for event in run.events) for run in runs[3:] if run]
    cached = [caller for caller, was in zip(callers, served_cached, strict=True) if was]
    live = [caller for caller, was in zip(callers, served_cached, strict=True) if not was]
    assert len(live) >= 3 and cached, (len(live), len(cached))  # answered live; the queue overflowed to the cache
    assert backends.bank.stats.faulted >= 1  # the 429s really happened
    assert backends.bank.stats.peak_in_flight <= 3
    stats = worker.manager.integrations.stats("banking")
    assert stats.peak_in_flight <= 3 and stats.peak_queued <= 10
    # By content: a cached answer says so; a live one does not; both tell the balance.
    told_cached = (await heard(ears, cached[0], 0)).lower()
    told_live = (await heard(ears, live[0], 0)).lower()
    assert "latest information" in told_cached and "balance is" in told_cached, told_cached
    assert "latest information" not in told_live and "balance is" in told_live, told_live
