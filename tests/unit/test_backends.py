"""The reference backends over real sockets: every route, idempotency, each fault mode, capacity and counters.

Every test starts its own three services on free ports with a fixed ``today`` (Wednesday 12 March 2025), so
the clinic's calendar and the insurer's follow-up dates are known in advance.
"""

from __future__ import annotations

import asyncio
import json
import signal
import socket
import sys
from collections.abc import AsyncIterator
from datetime import date, datetime
from typing import Any

import aiohttp
import pytest
import pytest_asyncio

from asterisk_agent.backends import SEED_ACCOUNTS, SEED_POLICIES, FaultState, ReferenceBackends
from asterisk_agent.backends.insurance import next_working_day

TODAY = date(2025, 3, 12)  # a Wednesday, day 71 of the year
WEDNESDAY_FREE = ["09:00", "10:00", "10:30", "11:30", "12:00", "13:00", "13:30", "14:30", "15:00", "16:00", "16:30"]
ALICE, BOB, CAROL = SEED_ACCOUNTS


@pytest_asyncio.fixture
async def backends() -> AsyncIterator[ReferenceBackends]:
    async with ReferenceBackends(today=TODAY) as running:
        yield running


@pytest_asyncio.fixture
async def http() -> AsyncIterator[aiohttp.ClientSession]:
    async with aiohttp.ClientSession(timeout=aiohttp.ClientTimeout(total=20)) as session:
        yield session


async def call(http: aiohttp.ClientSession, method: str, url: str, body: Any = None,
               headers: dict[str, str] | None = None) -> tuple[int, Any, dict[str, str]]:
    """Status, decoded JSON body (checked to be labelled JSON) and headers of one request."""
    async with http.request(method, url, json=body, headers=headers) as response:
        assert response.content_type == "application/json"
        return response.status, await response.json(), dict(response.headers)


def booking(time: str = "09:00", day: str = "2025-03-12", **changes: Any) -> dict[str, Any]:
    return {"date": day, "time": time, "name": "Grace Hopper", "phone": "+1 555-0100", **changes}


# --- clinic ---------------------------------------------------------------------------------------------


@pytest.mark.parametrize(("day", "times"), [
    ("2025-03-12", WEDNESDAY_FREE),  # weekday: 16 slots less those with (71 + i) % 3 == 0
    ("2025-03-15", ["09:00", "10:00", "10:30", "11:30"]),  # Saturday morning only
    ("2025-03-16", []),  # Sunday: closed
    ("2025-04-01", []),  # 1st of the month: fully booked
    ("2025-06-10", None),  # today + 90: the last day in range
])
async def test_availability_follows_the_seeded_calendar(backends: ReferenceBackends, http: aiohttp.ClientSession,
                                                        day: str, times: list[str] | None) -> None:
    status, body, _ = await call(http, "GET", f"{backends.urls['clinic']}/availability?date={day}")
    assert status == 200
    assert body["date"] == day
    if times is not None:
        assert body["times"] == times
    else:
        assert body["times"]


@pytest.mark.parametrize(("query", "status", "error"), [
    ("date=2025-03-11", 422, "date_out_of_range"),  # yesterday
    ("date=2025-06-11", 422, "date_out_of_range"),  # today + 91
    ("date=2025-3-12", 400, "bad_date"),
    ("date=2025-02-30", 400, "bad_date"),
    ("date=tomorrow", 400, "bad_date"),
    ("", 400, "bad_date"),
])
async def test_availability_refuses_bad_and_out_of_range_dates(backends: ReferenceBackends,
                                                                http: aiohttp.ClientSession,
                                                                query: str, status: int, error: str) -> None:
    got, body, _ = await call(http, "GET", f"{backends.urls['clinic']}/availability?{query}")
    assert (got, body) == (status, {"error": error})


async def test_a_booking_takes_the_slot(backends: ReferenceBackends, http: aiohttp.ClientSession) -> None:
    clinic = backends.urls["clinic"]
    status, body, _ = await call(http, "POST", f"{clinic}/appointments", booking("09:00"))
    assert (status, body) == (201, {"id": "A-000001", "date": "2025-03-12", "time": "09:00"})
    _, free, _ = await call(http, "GET", f"{clinic}/availability?date=2025-03-12")
    assert free["times"] == WEDNESDAY_FREE[1:]
    status, body, _ = await call(http, "POST", f"{clinic}/appointments", booking("09:00", name="Someone Else"))
    assert (status, body) == (409, {"error": "taken"})
    status, body, _ = await call(http, "POST", f"{clinic}/appointments", booking("10:00"))
    assert (status, body["id"]) == (201, "A-000002")
    assert backends.clinic.appointments["A-000001"].name == "Grace Hopper"


@pytest.mark.parametrize(("body", "status", "error"), [
    (booking("09:30"), 409, {"error": "taken"}),  # pre-booked in the seed
    (booking("09:00", day="2025-04-01"), 409, {"error": "taken"}),  # the fully booked 1st
    (booking("09:15"), 422, {"error": "no_such_slot"}),
    (booking("12:00", day="2025-03-15"), 422, {"error": "no_such_slot"}),  # Saturday afternoon
    (booking("09:00", day="2025-03-16"), 422, {"error": "no_such_slot"}),  # Sunday
    (booking("09:00", day="2025-03-01"), 422, {"error": "date_out_of_range"}),
    (booking("09:00", day="12/03/2025"), 400, {"error": "bad_date"}),
    (booking("9am"), 400, {"error": "bad_field", "field": "time"}),
    (booking(name="  "), 400, {"error": "missing_field", "field": "name"}),
    (booking(phone="call me"), 400, {"error": "bad_field", "field": "phone"}),
    ({"time": "09:00", "name": "A", "phone": "5550100"}, 400, {"error": "missing_field", "field": "date"}),
    ([1, 2], 400, {"error": "bad_json", "detail": "the body must be a JSON object"}),
])
async def test_bookings_are_refused_with_a_reason(backends: ReferenceBackends, http: aiohttp.ClientSession,
                                                  body: Any, status: int, error: dict[str, str]) -> None:
    got, answer, _ = await call(http, "POST", f"{backends.urls['clinic']}/appointments", body)
    assert (got, answer) == (status, error)
    assert backends.clinic.appointments == {}


async def test_a_body_that_is_not_json_is_refused(backends: ReferenceBackends, http: aiohttp.ClientSession) -> None:
    async with http.post(f"{backends.urls['clinic']}/appointments", data=b"{date: 1") as response:
        assert (response.status, await response.json()) == (400, {"error": "bad_json"})


async def test_the_same_idempotency_key_books_once(backends: ReferenceBackends, http: aiohttp.ClientSession) -> None:
    url = f"{backends.urls['clinic']}/appointments"
    key = {"Idempotency-Key": "call-7-turn-3"}
    first = await call(http, "POST", url, booking("09:00"), key)
    again = await call(http, "POST", url, booking("09:00"), key)
    assert first[:2] == again[:2] == (201, {"id": "A-000001", "date": "2025-03-12", "time": "09:00"})
    assert again[2].get("Idempotent-Replayed") == "true"
    assert "Idempotent-Replayed" not in first[2]
    assert list(backends.clinic.appointments) == ["A-000001"]
    other = await call(http, "POST", url, booking("09:00"), {"Idempotency-Key": "another"})
    assert other[:2] == (409, {"error": "taken"})  # a new key is a new request


async def test_concurrent_retries_with_one_key_book_once(backends: ReferenceBackends,
                                                         http: aiohttp.ClientSession) -> None:
    url = f"{backends.urls['clinic']}/appointments"
    answers = await asyncio.gather(*(call(http, "POST", url, booking("10:00"), {"Idempotency-Key": "k"})
                                     for _ in range(10)))
    assert {(status, body["id"]) for status, body, _ in answers} == {(201, "A-000001")}
    assert len(backends.clinic.appointments) == 1


async def test_an_error_is_not_replayed_for_its_key(backends: ReferenceBackends, http: aiohttp.ClientSession) -> None:
    url = f"{backends.urls['clinic']}/appointments"
    key = {"Idempotency-Key": "fix-and-retry"}
    assert (await call(http, "POST", url, booking(name=""), key))[0] == 400
    assert (await call(http, "POST", url, booking(), key))[:2] == (201, {"id": "A-000001", "date": "2025-03-12",
                                                                         "time": "09:00"})


async def test_the_waiting_list_gives_positions_and_is_idempotent(backends: ReferenceBackends,
                                                                  http: aiohttp.ClientSession) -> None:
    url = f"{backends.urls['clinic']}/waitlist"
    entry = {"date": "2025-04-01", "name": "Grace Hopper", "phone": "5550100"}
    first = await call(http, "POST", url, entry, {"Idempotency-Key": "w1"})
    assert first[:2] == (202, {"id": "W-000001", "position": 1})
    assert (await call(http, "POST", url, entry, {"Idempotency-Key": "w1"}))[:2] == first[:2]
    second = await call(http, "POST", url, {**entry, "name": "Ada"}, {"Idempotency-Key": "w2"})
    assert second[:2] == (202, {"id": "W-000002", "position": 2})
    other_day = await call(http, "POST", url, {**entry, "date": "2025-03-16"})
    assert other_day[:2] == (202, {"id": "W-000003", "position": 1})
    assert (await call(http, "POST", url, {**entry, "date": "2025-12-01"}))[:2] == (
        422, {"error": "date_out_of_range"})
    assert (await call(http, "POST", url, {"date": "2025-04-01"}))[:2] == (
        400, {"error": "missing_field", "field": "name"})
    assert [e.name for e in backends.clinic.waitlist[date(2025, 4, 1)]] == ["Grace Hopper", "Ada"]


# --- bank ------------------------------------------------------------------------------------------------


async def test_identity_balance_and_access_control(backends: ReferenceBackends, http: aiohttp.ClientSession) -> None:
    bank = backends.urls["bank"]
    status, who, _ = await call(http, "POST", f"{bank}/identity", {"account": ALICE.number, "pin": ALICE.pin})
    assert (status, who) == (200, {"customer_id": ALICE.customer_id, "name": "Alice Martin"})
    status, balance, _ = await call(http, "GET", f"{bank}/accounts/{ALICE.number}/balance",
                                    headers={"X-Customer-Id": who["customer_id"]})
    assert status == 200
    assert {k: balance[k] for k in ("account", "balance", "currency")} == {
        "account": "12345678", "balance": "1520.40", "currency": "USD"}
    assert datetime.fromisoformat(balance["as_of"]).tzinfo is not None
    _, overdrawn, _ = await call(http, "GET", f"{bank}/accounts/{CAROL.number}/balance",
                                 headers={"X-Customer-Id": CAROL.customer_id})
    assert overdrawn["balance"] == "-45.00"
    for headers in ({"X-Customer-Id": BOB.customer_id}, {}):
        assert (await call(http, "GET", f"{bank}/accounts/{ALICE.number}/balance", headers=headers))[:2] == (
            403, {"error": "forbidden"})
    assert (await call(http, "GET", f"{bank}/accounts/99999999/balance",
                       headers={"X-Customer-Id": ALICE.customer_id}))[0] == 403


async def test_three_wrong_pins_lock_the_account(backends: ReferenceBackends, http: aiohttp.ClientSession) -> None:
    url = f"{backends.urls['bank']}/identity"
    wrong = {"account": BOB.number, "pin": "0000"}
    assert [(await call(http, "POST", url, wrong))[:2] for _ in range(3)] == [(401, {"error": "mismatch"})] * 3
    assert (await call(http, "POST", url, {"account": BOB.number, "pin": BOB.pin}))[:2] == (423, {"error": "locked"})
    assert (await call(http, "POST", url, wrong))[0] == 423
    backends.bank.unlock(BOB.number)
    assert (await call(http, "POST", url, {"account": BOB.number, "pin": BOB.pin}))[0] == 200


async def test_a_success_resets_the_pin_count_and_unknown_accounts_look_like_wrong_pins(
        backends: ReferenceBackends, http: aiohttp.ClientSession) -> None:
    url = f"{backends.urls['bank']}/identity"
    wrong, right = {"account": ALICE.number, "pin": "1"}, {"account": ALICE.number, "pin": ALICE.pin}
    for attempt in (wrong, wrong, right, wrong, wrong):
        await call(http, "POST", url, attempt)
    assert (await call(http, "POST", url, right))[0] == 200  # two failures since the success: not locked
    assert (await call(http, "POST", url, {"account": "00000000", "pin": "1234"}))[:2] == (
        401, {"error": "mismatch"})
    assert (await call(http, "POST", url, {"account": ALICE.number}))[:2] == (
        400, {"error": "missing_field", "field": "pin"})


async def test_fraud_reports_are_filed_once_per_key(backends: ReferenceBackends, http: aiohttp.ClientSession) -> None:
    url = f"{backends.urls['bank']}/fraud-reports"
    report = {"account": ALICE.number, "reason": "card stolen in Lisbon"}
    first = await call(http, "POST", url, report, {"Idempotency-Key": "f"})
    assert first[:2] == (201, {"id": "F-000001"})
    assert (await call(http, "POST", url, report, {"Idempotency-Key": "f"}))[:2] == first[:2]
    assert (await call(http, "POST", url, report))[:2] == (201, {"id": "F-000002"})
    assert list(backends.bank.fraud_reports) == ["F-000001", "F-000002"]
    assert (await call(http, "POST", url, {"account": "99999999", "reason": "x"}))[:2] == (
        404, {"error": "not_found"})
    assert (await call(http, "POST", url, {"account": ALICE.number}))[:2] == (
        400, {"error": "missing_field", "field": "reason"})


# --- insurance -------------------------------------------------------------------------------------------


async def test_policies_are_looked_up(backends: ReferenceBackends, http: aiohttp.ClientSession) -> None:
    crm = backends.urls["insurance"]
    assert (await call(http, "GET", f"{crm}/policies/POL1234"))[:2] == (
        200, {"number": "POL1234", "holder": "Dana Lee", "type": "home", "active": True})
    assert (await call(http, "GET", f"{crm}/policies/pol5678"))[1]["holder"] == "Eve Park"
    assert (await call(http, "GET", f"{crm}/policies/POL9999"))[1]["active"] is False
    assert (await call(http, "GET", f"{crm}/policies/POL0000"))[:2] == (404, {"error": "not_found"})
    assert {p.number for p in SEED_POLICIES} == {"POL1234", "POL5678", "POL9999"}


@pytest.mark.parametrize(("policy", "what", "risk"), [
    ("POL1234", "a window broke in a storm", "low"),
    ("POL1234", "Kitchen FIRE last night", "high"),
    ("POL1234", "the basement flooded", "high"),
    ("POL5678", "my passenger was injured", "high"),
    ("POL5678", "car stolen from the driveway", "high"),
    ("POL5678", "a theft of the radio", "high"),
    ("POL9999", "a window broke", "high"),  # lapsed policy
])
async def test_claims_are_rated_and_get_a_follow_up(backends: ReferenceBackends, http: aiohttp.ClientSession,
                                                    policy: str, what: str, risk: str) -> None:
    crm = backends.urls["insurance"]
    claim = {"policy": policy, "what": what, "when": "2025-03-10", "where": "12 Elm Street"}
    status, body, _ = await call(http, "POST", f"{crm}/claims", claim)
    assert (status, body) == (201, {"claim_id": "C-000001", "risk": risk,
                                    "follow_up": {"date": "2025-03-13", "time": "10:00"}})
    status, stored, _ = await call(http, "GET", f"{crm}/claims/C-000001")
    assert status == 200
    assert stored == {"claim_id": "C-000001", "policy": policy, "what": what, "when": "2025-03-10",
                      "where": "12 Elm Street", "risk": risk, "follow_up": body["follow_up"], "status": "open"}


def test_the_follow_up_skips_the_weekend() -> None:
    assert next_working_day(date(2025, 3, 14)) == date(2025, 3, 17)  # Friday -> Monday
    assert next_working_day(date(2025, 3, 15)) == date(2025, 3, 17)  # Saturday -> Monday
    assert next_working_day(date(2025, 3, 16)) == date(2025, 3, 17)  # Sunday -> Monday
    assert next_working_day(date(2025, 3, 12)) == date(2025, 3, 13)


async def test_a_friday_claim_is_followed_up_on_monday(http: aiohttp.ClientSession) -> None:
    async with ReferenceBackends(today=date(2025, 3, 14)) as friday:
        claim = {"policy": "POL1234", "what": "hail", "when": "2025-03-14", "where": "roof"}
        _, body, _ = await call(http, "POST", f"{friday.urls['insurance']}/claims", claim)
    assert body["follow_up"] == {"date": "2025-03-17", "time": "10:00"}


async def test_bad_claims_are_refused_and_claims_are_idempotent(backends: ReferenceBackends,
                                                                http: aiohttp.ClientSession) -> None:
    url = f"{backends.urls['insurance']}/claims"
    claim = {"policy": "POL1234", "what": "broken window", "when": "2025-03-10", "where": "home"}
    assert (await call(http, "POST", url, {**claim, "where": ""}))[:2] == (
        400, {"error": "missing_field", "field": "where"})
    assert (await call(http, "POST", url, {**claim, "when": "last Tuesday"}))[:2] == (
        400, {"error": "bad_field", "field": "when"})
    assert (await call(http, "POST", url, {**claim, "when": "2025-03-13"}))[:2] == (
        422, {"error": "when_in_future"})
    assert (await call(http, "POST", url, {**claim, "policy": "POL0000"}))[:2] == (404, {"error": "not_found"})
    first = await call(http, "POST", url, claim, {"Idempotency-Key": "claim"})
    assert (await call(http, "POST", url, claim, {"Idempotency-Key": "claim"}))[:2] == first[:2]
    assert list(backends.insurance.claims) == ["C-000001"]
    assert (await call(http, "GET", f"{backends.urls['insurance']}/claims/C-000002"))[:2] == (
        404, {"error": "not_found"})


# --- faults ----------------------------------------------------------------------------------------------


async def set_faults(http: aiohttp.ClientSession, url: str, **settings: Any) -> dict[str, Any]:
    status, body, _ = await call(http, "POST", f"{url}/_control/faults", settings)
    assert status == 200
    return body  # type: ignore[no-any-return]


async def stats(http: aiohttp.ClientSession, url: str) -> dict[str, Any]:
    return (await call(http, "GET", f"{url}/_control/stats"))[1]  # type: ignore[no-any-return]


@pytest.mark.parametrize(("mode", "error"), [("429", "rate_limited"), ("503", "unavailable")])
async def test_refusals_carry_retry_after_and_change_nothing(backends: ReferenceBackends,
                                                             http: aiohttp.ClientSession,
                                                             mode: str, error: str) -> None:
    clinic = backends.urls["clinic"]
    assert await set_faults(http, clinic, mode=mode, retry_after_s=2) == {
        "mode": mode, "retry_after_s": 2, "slow_ms": 3000, "every": 1, "capacity": None}
    status, body, headers = await call(http, "POST", f"{clinic}/appointments", booking())
    assert (status, body, headers["Retry-After"]) == (int(mode), {"error": error}, "2")
    assert backends.clinic.appointments == {}
    await set_faults(http, clinic, mode="none")
    assert (await call(http, "POST", f"{clinic}/appointments", booking()))[0] == 201
    counted = await stats(http, clinic)
    assert (counted["faulted"], counted["by_status"]) == (1, {mode: 1, "201": 1})


async def test_slow_delays_the_answer(backends: ReferenceBackends, http: aiohttp.ClientSession) -> None:
    bank = backends.urls["bank"]
    await set_faults(http, bank, mode="slow", slow_ms=300)
    loop = asyncio.get_running_loop()
    started = loop.time()
    status, body, _ = await call(http, "POST", f"{bank}/identity", {"account": ALICE.number, "pin": ALICE.pin})
    assert loop.time() - started >= 0.29
    assert (status, body["name"]) == (200, "Alice Martin")  # late, but a real answer
    await set_faults(http, bank, mode="none")
    started = loop.time()
    await call(http, "POST", f"{bank}/identity", {"account": ALICE.number, "pin": ALICE.pin})
    assert loop.time() - started < 0.29


async def test_down_drops_the_connection_without_an_answer(backends: ReferenceBackends,
                                                           http: aiohttp.ClientSession,
                                                           caplog: pytest.LogCaptureFixture) -> None:
    crm = backends.urls["insurance"]
    await set_faults(http, crm, mode="down")
    claim = {"policy": "POL1234", "what": "hail", "when": "2025-03-10", "where": "roof"}
    with pytest.raises(aiohttp.ServerDisconnectedError):
        async with http.post(f"{crm}/claims", json=claim) as response:
            await response.read()
    assert backends.insurance.claims == {}
    counted = await stats(http, crm)  # control routes still answer
    assert (counted["requests"], counted["faulted"], counted["by_status"]) == (1, 1, {})
    assert not [r for r in caplog.records if r.levelname in ("ERROR", "CRITICAL")]


async def test_invalid_json_answers_200_with_a_body_that_is_not_json(backends: ReferenceBackends,
                                                                     http: aiohttp.ClientSession) -> None:
    clinic = backends.urls["clinic"]
    await set_faults(http, clinic, mode="invalid_json")
    async with http.post(f"{clinic}/appointments", json=booking(), headers={"Idempotency-Key": "j"}) as response:
        assert (response.status, response.content_type) == (200, "application/json")
        raw = await response.text()
    with pytest.raises(json.JSONDecodeError):
        json.loads(raw)
    await set_faults(http, clinic, mode="none")
    # The booking was made under the garbled answer: the retry with the same key gets it back.
    assert (await call(http, "POST", f"{clinic}/appointments", booking(), {"Idempotency-Key": "j"}))[:2] == (
        201, {"id": "A-000001", "date": "2025-03-12", "time": "09:00"})


async def test_every_applies_the_fault_to_every_nth_request(backends: ReferenceBackends,
                                                            http: aiohttp.ClientSession) -> None:
    crm = backends.urls["insurance"]
    await set_faults(http, crm, mode="503", every=3)
    statuses = [(await call(http, "GET", f"{crm}/policies/POL1234"))[0] for _ in range(7)]
    assert statuses == [200, 200, 503, 200, 200, 503, 200]
    await set_faults(http, crm, mode="429", every=2)  # a new fault counts afresh
    statuses = [(await call(http, "GET", f"{crm}/policies/POL1234"))[0] for _ in range(4)]
    assert statuses == [200, 429, 200, 429]


async def test_control_routes_are_never_faulted(backends: ReferenceBackends, http: aiohttp.ClientSession) -> None:
    bank = backends.urls["bank"]
    await set_faults(http, bank, mode="503")
    for _ in range(3):
        assert (await call(http, "GET", f"{bank}/_control/faults"))[1]["mode"] == "503"
    assert (await stats(http, bank))["requests"] == 0
    assert (await set_faults(http, bank, mode="none"))["mode"] == "none"


@pytest.mark.parametrize("settings", [{"mode": "explode"}, {"every": 0}, {"slow_ms": "fast"}, {"capacity": 0},
                                      {"retry_after_s": True}, {"colour": "red"}])
async def test_bad_fault_settings_are_refused_and_change_nothing(backends: ReferenceBackends,
                                                                 http: aiohttp.ClientSession,
                                                                 settings: dict[str, Any]) -> None:
    bank = backends.urls["bank"]
    await set_faults(http, bank, mode="slow", slow_ms=10, capacity=4)
    status, body, _ = await call(http, "POST", f"{bank}/_control/faults", settings)
    assert (status, body["error"]) == (400, "bad_fault")
    assert backends.bank.faults.to_dict() == {"mode": "slow", "retry_after_s": 1, "slow_ms": 10, "every": 1,
                                              "capacity": 4}


async def test_faults_set_at_construction_and_in_process(http: aiohttp.ClientSession) -> None:
    async with ReferenceBackends(today=TODAY, faults={"bank": FaultState(mode="503", retry_after_s=5)}) as running:
        status, _, headers = await call(http, "POST", f"{running.urls['bank']}/identity", {})
        assert (status, headers["Retry-After"]) == (503, "5")
        assert (await call(http, "GET", f"{running.urls['insurance']}/policies/POL1234"))[0] == 200
        running.insurance.faults.apply({"mode": "429"})
        assert (await call(http, "GET", f"{running.urls['insurance']}/policies/POL1234"))[0] == 429
        running.clear_faults()
        assert (await call(http, "POST", f"{running.urls['bank']}/identity", {}))[0] == 400
    with pytest.raises(ValueError, match="unknown backends: crm"):
        ReferenceBackends(ports={"crm": 1})


async def test_peak_in_flight_counts_twenty_concurrent_slow_requests(backends: ReferenceBackends,
                                                                     http: aiohttp.ClientSession) -> None:
    clinic = backends.clinic
    clinic.faults.apply({"mode": "slow", "slow_ms": 30_000})  # held until released below
    url = f"{backends.urls['clinic']}/availability?date=2025-03-12"
    requests = [asyncio.create_task(call(http, "GET", url)) for _ in range(20)]
    await asyncio.wait_for(clinic.stats.wait_until(lambda s: s.in_flight == 20), 10)
    assert (await stats(http, backends.urls["clinic"]))["in_flight"] == 20
    clinic.faults.release_slow()
    answers = await asyncio.gather(*requests)
    assert {status for status, _, _ in answers} == {200}
    assert clinic.stats.to_dict() == {"requests": 20, "in_flight": 0, "peak_in_flight": 20,
                                      "by_status": {"200": 20}, "faulted": 20, "over_capacity": 0}


async def test_peak_in_flight_shows_a_client_side_limit(backends: ReferenceBackends) -> None:
    backends.bank.faults.apply({"mode": "slow", "slow_ms": 200})
    url = f"{backends.urls['bank']}/accounts/{ALICE.number}/balance"
    async with aiohttp.ClientSession(connector=aiohttp.TCPConnector(limit=4)) as limited:
        answers = await asyncio.gather(*(call(limited, "GET", url, headers={"X-Customer-Id": ALICE.customer_id})
                                         for _ in range(20)))
    assert [status for status, _, _ in answers] == [200] * 20
    assert backends.bank.stats.peak_in_flight == 4


async def test_capacity_refuses_the_excess_with_429(backends: ReferenceBackends, http: aiohttp.ClientSession) -> None:
    crm = backends.urls["insurance"]
    await set_faults(http, crm, mode="slow", slow_ms=30_000, capacity=5, retry_after_s=3)
    requests = [asyncio.create_task(call(http, "GET", f"{crm}/policies/POL1234")) for _ in range(20)]
    pending: set[asyncio.Task[tuple[int, Any, dict[str, str]]]] = set(requests)
    async with asyncio.timeout(10):
        while len(pending) > 5:  # the 5 admitted are held: the others come back first
            _, pending = await asyncio.wait(pending, return_when=asyncio.FIRST_COMPLETED)
    refused = [task.result() for task in requests if task not in pending]
    assert {(status, body["error"], headers["Retry-After"]) for status, body, headers in refused} == {
        (429, "over_capacity", "3")}
    counted = await stats(http, crm)
    # A refused request is counted in flight while it is refused: a peak above capacity shows the overrun.
    assert (counted["in_flight"], counted["peak_in_flight"], counted["over_capacity"]) == (5, 6, 15)
    backends.insurance.faults.release_slow()
    admitted = await asyncio.gather(*requests)
    assert sorted(status for status, _, _ in admitted) == [200] * 5 + [429] * 15
    assert (await stats(http, crm))["by_status"] == {"200": 5, "429": 15}


async def test_reset_stats_zeroes_the_counters(backends: ReferenceBackends, http: aiohttp.ClientSession) -> None:
    clinic = backends.urls["clinic"]
    await call(http, "GET", f"{clinic}/availability?date=2025-03-12")
    await call(http, "GET", f"{clinic}/availability?date=bad")
    await call(http, "GET", f"{clinic}/nowhere")
    before = await stats(http, clinic)
    assert (before["requests"], before["peak_in_flight"], before["by_status"]) == (
        3, 1, {"200": 1, "400": 1, "404": 1})
    status, after, _ = await call(http, "POST", f"{clinic}/_control/reset-stats")
    assert status == 200
    assert after == {"requests": 0, "in_flight": 0, "peak_in_flight": 0, "by_status": {}, "faulted": 0,
                     "over_capacity": 0}
    assert await stats(http, clinic) == after


async def test_unknown_routes_and_methods_answer_json(backends: ReferenceBackends,
                                                      http: aiohttp.ClientSession) -> None:
    bank = backends.urls["bank"]
    assert (await call(http, "GET", f"{bank}/vault"))[:2] == (404, {"error": "not_found"})
    status, body, headers = await call(http, "DELETE", f"{bank}/identity")
    assert (status, body, headers["Allow"]) == (405, {"error": "method_not_allowed"}, "POST")


async def test_a_backend_can_stop_and_start_listening(backends: ReferenceBackends,
                                                      http: aiohttp.ClientSession) -> None:
    clinic = backends.urls["clinic"]
    assert (await call(http, "POST", f"{clinic}/appointments", booking()))[0] == 201  # keeps a connection open
    await backends.stop_listening("clinic")
    with pytest.raises(aiohttp.ClientConnectionError):
        await call(http, "GET", f"{clinic}/availability?date=2025-03-12")
    with pytest.raises(aiohttp.ClientConnectorError):  # a fresh connection is refused
        await call(http, "GET", f"{clinic}/availability?date=2025-03-12")
    await backends.start_listening("clinic")
    assert backends.urls["clinic"] == clinic
    status, free, _ = await call(http, "GET", f"{clinic}/availability?date=2025-03-12")
    assert (status, free["times"]) == (200, WEDNESDAY_FREE[1:])  # state kept across the outage


# --- running standalone ----------------------------------------------------------------------------------


def _free_port_base() -> int:
    """A base whose next three ports are free now (the OS's pick, checked)."""
    for _ in range(50):
        with socket.socket() as probe:
            probe.bind(("127.0.0.1", 0))
            base = int(probe.getsockname()[1]) - 1
        sockets = [socket.socket() for _ in range(3)]
        try:
            for offset, sock in enumerate(sockets, start=1):
                sock.bind(("127.0.0.1", base + offset))
            return base
        except OSError:
            continue
        finally:
            for sock in sockets:
                sock.close()
    raise RuntimeError("no three consecutive free ports")


async def test_the_module_runs_all_three_until_interrupted(http: aiohttp.ClientSession) -> None:
    base = _free_port_base()
    process = await asyncio.create_subprocess_exec(
        sys.executable, "-m", "asterisk_agent.backends", "--port-base", str(base), "--today", "2025-03-12",
        stdout=asyncio.subprocess.PIPE, stderr=asyncio.subprocess.PIPE)
    try:
        assert process.stdout is not None
        lines = [(await asyncio.wait_for(process.stdout.readline(), 30)).decode().strip() for _ in range(3)]
        assert lines == [f"clinic: http://127.0.0.1:{base + 1}", f"bank: http://127.0.0.1:{base + 2}",
                         f"insurance: http://127.0.0.1:{base + 3}"]
        _, free, _ = await call(http, "GET", f"http://127.0.0.1:{base + 1}/availability?date=2025-03-12")
        assert free["times"] == WEDNESDAY_FREE
        process.send_signal(signal.SIGINT)  # as Ctrl-C
        assert await asyncio.wait_for(process.wait(), 30) == 0
    finally:
        if process.returncode is None:
            process.kill()
            await process.wait()


def test_the_command_line_refuses_a_bad_date() -> None:
    from asterisk_agent.backends.runner import main

    with pytest.raises(SystemExit) as stopped:
        main(["--today", "12/03/2025"])
    assert stopped.value.code == 2
