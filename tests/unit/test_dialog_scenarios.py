"""The shipped flows end to end as text conversations against the real reference backends, through the real
integration client over local sockets: what the caller hears, what the backend stored, and how the client
protects a backend that rate-limits."""

from __future__ import annotations

import asyncio
import datetime as dt
import re
from collections.abc import AsyncIterator, Callable
from dataclasses import dataclass, field

import pytest

from asterisk_agent.backends.runner import ReferenceBackends
from asterisk_agent.dialog.driver import CallerInput, DialogDriver, FlowSetup, Keys, Silence, Utterance
from asterisk_agent.dialog.engine import DialogRun, Escalate, Listen
from asterisk_agent.dialog.flow import parse_flow, shipped_flow
from asterisk_agent.dialog.integration import integration_call
from asterisk_agent.integrations.client import IntegrationClient
from asterisk_agent.integrations.settings import EndpointSettings

FRIDAY = dt.date(2026, 11, 27)
SURE = 0.95

Line = str | Keys | None | Callable[[str], str]  # words, keys, silence, or words chosen from what was just said


@dataclass
class ScriptedCaller:
    """A caller as text: answers each question with the next line of its script."""

    script: list[Line]
    heard: list[str] = field(default_factory=list)
    escalations: list[Escalate] = field(default_factory=list)
    before_line: dict[int, Callable[[], None]] = field(default_factory=dict)  # run before answering line N
    _next: int = 0

    async def say(self, text: str, *, fixed: bool) -> None:
        self.heard.append(text)

    async def listen(self, listen: Listen) -> CallerInput:
        if self._next >= len(self.script):
            raise AssertionError(f"the script ran out; the agent last said {self.heard[-1:]}")
        hook = self.before_line.get(self._next)
        if hook is not None:
            hook()
        line = self.script[self._next]
        self._next += 1
        if line is None:
            return Silence()
        if isinstance(line, Keys):
            return line
        if callable(line):
            return Utterance(line(self.heard[-1]), SURE)
        return Utterance(line, SURE)

    def escalated(self, escalation: Escalate) -> None:
        self.escalations.append(escalation)

    @property
    def transcript(self) -> str:
        return " ".join(self.heard)


@pytest.fixture
async def backends() -> AsyncIterator[ReferenceBackends]:
    async with ReferenceBackends(today=FRIDAY) as running:
        yield running


def endpoints(backends: ReferenceBackends, **limits: int) -> dict[str, EndpointSettings]:
    small = {"backoff_base_ms": 10, "backoff_max_ms": 50, "timeout_ms": 1000, "total_budget_ms": 4000} | limits
    return {"scheduling": EndpointSettings(base_url=backends.urls["clinic"], **small),
            "banking": EndpointSettings(base_url=backends.urls["bank"], **small),
            "crm": EndpointSettings(base_url=backends.urls["insurance"], **small)}


async def converse(client: IntegrationClient, flow_name: str, caller: ScriptedCaller, run_id: str = "call-1",
                   caller_number: str = "5550100") -> tuple[str, DialogRun]:
    setup = await FlowSetup.load(shipped_flow(flow_name), integration_call(client, {}))
    run = DialogRun(setup.flow, setup.scorer, today=FRIDAY, run_id=run_id, variables={"caller": caller_number})
    outcome = await DialogDriver(run, caller, setup.integrations).drive()
    return outcome, run


def first_offered_time(said: str) -> str:
    match = re.search(r"offer (\d{1,2}(?::\d\d)? [ap]\.m\.)", said)
    assert match, said
    return f"{match.group(1)} please"


async def test_clinic_books_the_day_and_the_offered_time(backends: ReferenceBackends) -> None:
    caller = ScriptedCaller(["I'd like to book an appointment", "Wednesday please", first_offered_time,
                             "My name is Dana Lee."])
    async with IntegrationClient(endpoints(backends)) as client:
        outcome, _ = await converse(client, "clinic", caller)
    assert outcome == "booked"
    [appointment] = backends.clinic.appointments.values()
    assert appointment.date == dt.date(2026, 12, 2)
    assert appointment.name == "Dana Lee"
    assert f"at {appointment.time}" not in caller.transcript  # read as the caller hears it, not HH:MM
    assert "Your appointment is on Wednesday, December 2" in caller.transcript


async def test_clinic_a_full_day_offers_the_waiting_list(backends: ReferenceBackends) -> None:
    caller = ScriptedCaller(["book an appointment", "the 1st", "yes please", "Eve Park"])
    async with IntegrationClient(endpoints(backends)) as client:
        outcome, _ = await converse(client, "clinic", caller)
    assert outcome == "waitlisted"
    assert "Tuesday, December 1 is fully booked" in caller.transcript
    assert [entry.name for entry in backends.clinic.waitlist[dt.date(2026, 12, 1)]] == ["Eve Park"]
    assert "You are number 1 on the waiting list" in caller.transcript


async def test_clinic_a_correction_is_taken(backends: ReferenceBackends) -> None:
    caller = ScriptedCaller(["book an appointment", "Tuesday", "No, Wednesday.", first_offered_time, "Dana Lee"])
    async with IntegrationClient(endpoints(backends)) as client:
        setup = await FlowSetup.load(shipped_flow("clinic"), integration_call(client, {}))
        run = DialogRun(setup.flow, setup.scorer, today=FRIDAY, run_id="c", variables={"caller": "5550100"})
        # the recogniser was unsure of "Tuesday": the driver is given a low confidence for that one line
        unsure = UnsureOnce(caller, line=1, confidence=0.25)
        outcome = await DialogDriver(run, unsure, setup.integrations).drive()
    assert outcome == "booked"
    assert "That is Tuesday, December 1. Is that right?" in caller.transcript
    [appointment] = backends.clinic.appointments.values()
    assert appointment.date == dt.date(2026, 12, 2)


@dataclass
class UnsureOnce:
    """A caller whose ``line``-th answer the recogniser heard with a low confidence."""

    caller: ScriptedCaller
    line: int
    confidence: float

    async def say(self, text: str, *, fixed: bool) -> None:
        await self.caller.say(text, fixed=fixed)

    async def listen(self, listen: Listen) -> CallerInput:
        index = self.caller._next
        heard = await self.caller.listen(listen)
        if index == self.line and isinstance(heard, Utterance):
            return Utterance(heard.text, self.confidence)
        return heard

    def escalated(self, escalation: Escalate) -> None:
        self.caller.escalated(escalation)


async def test_bank_by_keys_tells_the_balance(backends: ReferenceBackends) -> None:
    caller = ScriptedCaller([Keys("12345678"), Keys("4321"), Keys("1"), "no thanks"])
    async with IntegrationClient(endpoints(backends)) as client:
        outcome, run = await converse(client, "bank", caller)
    assert outcome == "served"
    assert "Thank you, Alice Martin." in caller.transcript
    assert "Your balance is 1,520 dollars and 40 cents." in caller.transcript
    assert "12345678" not in str([turn.text for turn in run.turns]) and "4321" not in str(run.turns)


async def test_bank_outage_answers_from_cache_and_says_so(backends: ReferenceBackends) -> None:
    async with IntegrationClient(endpoints(backends)) as client:
        first = ScriptedCaller([Keys("87654321"), Keys("1111"), "my balance please", "no"])
        assert (await converse(client, "bank", first, run_id="a"))[0] == "served"
        # The second caller's identity check works; then the bank's balance service goes down.
        second = ScriptedCaller([Keys("87654321"), Keys("1111"), "balance", "no"])
        second.before_line[2] = lambda: backends.bank.faults.apply({"mode": "503"})
        outcome, run = await converse(client, "bank", second, run_id="b")
    assert outcome == "served"
    text = second.transcript
    assert "latest information" in text
    assert text.index("latest information") < text.index("Your balance is 20 dollars and 5 cents.")
    assert "cached" in [event.kind for event in run.events]


async def test_bank_wrong_pin_then_locked_escalates(backends: ReferenceBackends) -> None:
    caller = ScriptedCaller([Keys("12345678"), Keys("0000"), Keys("12345678"), Keys("0001"),
                             Keys("12345678"), Keys("0002"), Keys("12345678"), Keys("4321")])
    async with IntegrationClient(endpoints(backends)) as client:
        outcome, _ = await converse(client, "bank", caller)
    assert outcome == "escalated:flow"
    assert caller.transcript.count("do not match") == 3
    assert "this account is locked" in caller.transcript
    assert caller.escalations[0].detail == "account locked"


async def test_bank_fraud_words_escalate(backends: ReferenceBackends) -> None:
    caller = ScriptedCaller([Keys("12345678"), Keys("4321"), "I think someone used my card"])
    async with IntegrationClient(endpoints(backends)) as client:
        outcome, _ = await converse(client, "bank", caller)
    assert outcome == "escalated:sensitive_topic"
    assert caller.escalations[0].detail == "report_fraud"


async def test_insurance_claim_is_written_with_its_follow_up(backends: ReferenceBackends) -> None:
    caller = ScriptedCaller(["It's 1 2 3 4.", "A branch cracked the kitchen window.", "yesterday",
                             "At home."])
    async with IntegrationClient(endpoints(backends)) as client:
        outcome, _ = await converse(client, "insurance", caller)
    assert outcome == "claim_filed"
    [claim] = backends.insurance.claims.values()
    assert (claim["policy"], claim["when"], claim["risk"]) == ("POL1234", "2026-11-26", "low")
    assert "Thank you, Dana Lee." in caller.transcript
    assert "An adjuster will call you on Monday, November 30 at 10 a.m." in caller.transcript


async def test_insurance_high_risk_claim_is_filed_and_escalated(backends: ReferenceBackends) -> None:
    caller = ScriptedCaller(["5678", "There was a fire in the garage.", "last Tuesday", "12 Elm Street"])
    async with IntegrationClient(endpoints(backends)) as client:
        outcome, _ = await converse(client, "insurance", caller)
    assert outcome == "escalated:flow"
    [claim] = backends.insurance.claims.values()
    assert claim["risk"] == "high"
    assert caller.escalations[0].detail == "high risk claim"


async def test_a_backend_down_ends_in_the_flows_failure_path(backends: ReferenceBackends) -> None:
    await backends.stop_listening("insurance")
    caller = ScriptedCaller(["1234"])
    async with IntegrationClient(endpoints(backends, retries=1)) as client:
        outcome, run = await converse(client, "insurance", caller)
    assert outcome == "escalated:flow"
    assert "cannot reach our claims system" in caller.transcript
    assert any(event.kind == "integration" and "connection" in event.reason for event in run.events)


async def test_invalid_json_from_a_backend_is_a_failure_not_a_crash(backends: ReferenceBackends) -> None:
    backends.insurance.faults.apply({"mode": "invalid_json"})
    caller = ScriptedCaller(["1234"])
    async with IntegrationClient(endpoints(backends, retries=0)) as client:
        outcome, run = await converse(client, "insurance", caller)
    assert outcome == "escalated:flow"
    assert any("invalid_json" in event.reason for event in run.events)


async def test_a_backend_hanging_past_the_flows_wait_ends_by_its_limit(backends: ReferenceBackends) -> None:
    backends.clinic.faults.apply({"mode": "slow", "slow_ms": 60_000})
    flow = shipped_flow("clinic").model_copy(update={"limits": shipped_flow("clinic").limits.model_copy(
        update={"integration_wait_ms": 300})})
    caller = ScriptedCaller(["book an appointment", "Wednesday"])
    async with IntegrationClient(endpoints(backends)) as client:
        setup = await FlowSetup.load(flow, integration_call(client, {}))
        run = DialogRun(flow, setup.scorer, today=FRIDAY, run_id="slow", variables={"caller": "5550100"})
        outcome = await DialogDriver(run, caller, setup.integrations, hold_after_ms=100).drive()
        backends.clinic.faults.release_slow()
    assert outcome == "limit:integration_wait"
    assert "One moment please." in caller.heard  # the hold message while it waited
    assert ("limit", "integration_wait") in [(event.kind, event.reason) for event in run.events]


BALANCE_ONLY = """\
name: balance_only
start: ask
integrations: [banking]
limits: {integration_wait_ms: 10000}  # longer than the endpoint's budget, so the cache can answer
slots:
  account: {type: digits, min_digits: 8, max_digits: 8, sensitive: true}
  customer: {type: free_text}  # given by the test: the caller passed the identity check before
states:
  ask:
    ask: Your account number?
    slot: account
    next: fetch
  fetch:
    call:
      integration: banking
      path: "/accounts/{account}/balance"
      headers: {X-Customer-Id: "{customer}"}
      save: balance
    on_ok: tell
    on_failed: sorry
  tell:
    say: "Your balance is {balance.balance|money}."
    end: told
  sorry:
    say: Sorry.
    end: failed
"""


async def test_thirty_calls_on_a_rate_limited_backend(backends: ReferenceBackends) -> None:
    """30 callers ask for their balance at once while the bank answers every third request with 429 and
    Retry-After: no call fails, calls within the queue bound get the bank's answer, calls past it the cached
    one (and hear so), and the bank never has more requests in flight than the client's limit."""
    flow = parse_flow(BALANCE_ONLY, "balance_only.yaml")
    accounts = {"12345678": "CUST-1001", "87654321": "CUST-1002", "11223344": "CUST-1003"}
    limits = {"max_in_flight": 3, "queue_max": 10, "queue_wait_ms": 3000, "total_budget_ms": 8000, "retries": 3}
    async with IntegrationClient(endpoints(backends, **limits)) as client:
        setup = await FlowSetup.load(flow, integration_call(client, {}))

        async def one(index: int) -> tuple[str, ScriptedCaller]:
            account = list(accounts)[index % 3]
            caller = ScriptedCaller([Keys(account)])
            run = DialogRun(flow, setup.scorer, today=FRIDAY, run_id=f"r{index}",
                            variables={"caller": "5550100", "customer": accounts[account]})
            return await DialogDriver(run, caller, setup.integrations).drive(), caller

        warm = await asyncio.gather(*(one(index) for index in range(3)))  # every account's balance cached once
        assert [outcome for outcome, _ in warm] == ["told"] * 3
        backends.bank.stats.reset()
        backends.bank.faults.apply({"mode": "429", "retry_after_s": 1, "every": 3})
        results = await asyncio.gather(*(one(index) for index in range(30)))
    outcomes = [outcome for outcome, _ in results]
    assert outcomes.count("told") == 30, outcomes  # nobody failed
    live = [caller for _, caller in results if "latest information" not in caller.transcript]
    cached = [caller for _, caller in results if "latest information" in caller.transcript]
    assert len(live) >= 3 and cached  # some answered live; the queue overflowed into the cache
    assert backends.bank.stats.peak_in_flight <= 3
    assert backends.bank.stats.faulted >= 1  # the 429s really happened
    stats = client.stats("banking")
    assert stats.peak_in_flight <= 3 and stats.peak_queued <= 10
