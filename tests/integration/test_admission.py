"""Admission before answer on real calls: each account's and each trunk's limit holds, and a caller over it
gets the account's overflow policy (busy, an announcement as early media, or people) without anything
answering on the worker's side; other accounts go on."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator

import pytest
import pytest_asyncio

from asterisk_agent.ari import requests as ari
from asterisk_agent.ari.client import AriClient
from asterisk_agent.media.leg import MediaContext
from asterisk_agent.pbx.carrier.callers import CallFailed, Carrier, SimulatedCaller
from asterisk_agent.speech.stt.whisper_engine import WhisperBatcher
from asterisk_agent.worker import Worker
from tests.support.calls import session_of

pytestmark = [pytest.mark.asterisk, pytest.mark.usefixtures("leak_audit")]

BUSY = 17  # Q.850 user busy: what the carrier's channel reports for a 486


def two_accounts(limit: int, overflow: dict[str, str] | None = None) -> dict[str, object]:
    return {"clinic": {"numbers": ["201"], "max_concurrent_calls": limit, "overflow": overflow or {}},
            "bank": {"numbers": ["202"]}}


async def answered(carrier: Carrier, did: str, number: str) -> SimulatedCaller:
    caller = await carrier.call(did, caller_number=number)
    await caller.wait_answered()
    return caller


async def refused(caller: SimulatedCaller, timeout_s: float = 10) -> int:
    """The caller's call ended without ever being answered; its hangup cause."""
    cause = await caller.wait_gone(timeout_s=timeout_s)
    with pytest.raises(CallFailed):
        await caller.wait_answered(timeout_s=0.1)
    assert caller.answered_at is None
    return cause


async def test_over_the_account_limit_callers_hear_busy_and_other_accounts_go_on(make_worker,
                                                                                 carrier: Carrier) -> None:
    worker = await make_worker(accounts=two_accounts(2))
    held = [await answered(carrier, "201", f"1555060{index}") for index in range(2)]
    third = await carrier.call("201", caller_number="15550602")
    assert await refused(third) == BUSY
    other = await answered(carrier, "202", "15550603")  # the bank's callers are not limited by the clinic's
    assert worker.manager.admission.in_use("account:clinic") == 2
    await held[0].hangup()
    async with asyncio.timeout(5):
        await session_of(worker, held[0]).wait_ended()
    assert worker.manager.admission.in_use("account:clinic") == 1
    fourth = await answered(carrier, "201", "15550604")  # the freed slot is taken again
    for caller in (held[1], other, fourth):
        await caller.hangup()
    await worker.manager.wait_idle()
    assert worker.manager.admission.in_use("account:clinic") == 0
    stats = worker.manager.admission.stats
    assert stats.refused == {"account:clinic": 1} and stats.admitted["account:clinic"] == 3
    assert stats.released == 4 and stats.expired == 0  # every admitted call released its slot once
    numbers = {session.caller.caller_number for session in worker.manager.finished}
    assert "15550602" not in numbers  # the refused call never had a session


async def test_over_a_trunk_limit_calls_of_any_account_are_refused(make_worker, carrier: Carrier) -> None:
    worker = await make_worker(accounts=two_accounts(5), trunks={"carrier": {"endpoints": ["carrier"],
                                                                              "max_concurrent_calls": 1}})
    first = await answered(carrier, "202", "15550611")
    second = await carrier.call("201", caller_number="15550612")
    assert await refused(second) == BUSY
    await first.hangup()
    await worker.manager.wait_idle()
    assert worker.manager.admission.stats.refused == {"trunk:carrier": 1}


async def test_the_announcement_is_early_media_and_the_call_is_never_answered(
    make_worker, carrier: Carrier, caller_media: MediaContext, ears: WhisperBatcher,
) -> None:
    await make_worker(accounts=two_accounts(0, {"policy": "announce", "announcement": "all-circuits-busy-now"}))
    caller = await carrier.call("201", caller_number="15550621")
    await caller.attach_media(carrier, caller_media)  # listening before any answer: early media only
    assert await refused(caller, timeout_s=20) == BUSY
    await caller.release_media()
    heard = (await ears.transcribe_8k(caller.heard())).text.lower()
    assert "circuits" in heard and "busy" in heard, heard


async def test_the_transfer_policy_rings_people_and_the_worker_never_answers(make_worker, carrier: Carrier) -> None:
    worker = await make_worker(accounts=two_accounts(0, {"policy": "transfer", "transfer_to": "PJSIP/agent2"}))
    caller = await carrier.call("201", caller_number="15550631")
    async with asyncio.timeout(10):
        agent = await carrier.agent_calls.get()
    assert agent.endpoint == "agent2" and agent.caller_number == "15550631"
    assert caller.answered_at is None  # ringing people, not answered by the worker
    await agent.answer()
    await caller.wait_answered()
    await caller.hangup()
    await agent.gone
    assert worker.manager.finished == [] and worker.manager.admission.stats.refused == {"account:clinic": 1}


# --- admission by FastAGI, for AGI dialplans ------------------------------------------------------------------


@pytest_asyncio.fixture(loop_scope="session")
async def agi_worker(make_worker, pbx_ari: AriClient) -> AsyncIterator[Worker]:  # type: ignore[no-untyped-def]
    """A worker serving FastAGI admission, and the pbx's from-trunk sending calls through [from-trunk-agi]."""
    worker = await make_worker(accounts=two_accounts(1), admission={"agi_enabled": True, "agi_port": 0,
                                                                    "agi_lease_ms": 400})
    assert worker.agi is not None
    await pbx_ari.send(ari.set_global_variable("AGENT_AGI", f"127.0.0.1:{worker.agi.port}"))
    await pbx_ari.send(ari.set_global_variable("AGENT_ADMISSION_BY", "agi"))
    yield worker
    await pbx_ari.send(ari.set_global_variable("AGENT_ADMISSION_BY", "stasis"))


async def test_an_agi_admitted_call_is_counted_once_and_released_once(agi_worker: Worker, carrier: Carrier) -> None:
    admission = agi_worker.manager.admission
    first = await answered(carrier, "201", "15550641")  # admitted by FastAGI, then taken over in Stasis
    assert admission.stats.taken_over == 1 and admission.in_use("account:clinic") == 1
    second = await carrier.call("201", caller_number="15550642")
    assert await refused(second) == BUSY  # refused by FastAGI: the dialplan's [agent-overflow] busy
    await first.hangup()
    await agi_worker.manager.wait_idle()
    assert agi_worker.agi is not None
    async with asyncio.timeout(5):  # the h extension's release reaches the server after the hangup
        while agi_worker.agi.counters.by_route.get("release", 0) < 1:
            await asyncio.sleep(0.02)
    assert admission.in_use("account:clinic") == 0
    assert admission.stats.released == 1  # the session's release and the dialplan's: one slot freed once
    assert admission.stats.admitted == {"account:clinic": 1} and admission.stats.refused == {"account:clinic": 1}
    assert agi_worker.agi.counters.by_route.get("admit") == 2


async def admit_by_hand(port: int, did: str) -> dict[str, str]:
    """A dialplan's AGI(agi://.../admit) whose call then dies before Stasis and before its h extension (an
    Asterisk that crashed, say): the variables the server set."""
    reader, writer = await asyncio.open_connection("127.0.0.1", port)
    writer.write(f"agi_network_script: admit?did={did}\nagi_channel: PJSIP/carrier-0000beef\n"
                 "agi_uniqueid: 1700000000.99\nagi_extension: 201\n\n".encode())
    variables = {}
    while line := await reader.readline():
        if line.startswith(b"SET VARIABLE"):
            _, _, name, value = line.decode().strip().split(" ", 3)
            variables[name.strip('"')] = value.strip('"')
            writer.write(b"200 result=1\n")
    writer.close()
    await writer.wait_closed()
    return variables


async def test_an_agi_slot_whose_call_died_is_released_by_its_lease(agi_worker: Worker, carrier: Carrier) -> None:
    assert agi_worker.agi is not None
    admission = agi_worker.manager.admission
    variables = await admit_by_hand(agi_worker.agi.port, "201")
    assert variables["AGENT_ADMISSION"] == "admitted" and variables["AGENT_SLOT"]
    blocked = await carrier.call("201", caller_number="15550651")
    assert await refused(blocked) == BUSY  # the dead call's slot holds the account's only place...
    async with asyncio.timeout(5):
        while admission.in_use("account:clinic"):  # ...until its lease ends
            await asyncio.sleep(0.05)
    assert admission.stats.expired == 1
    caller = await answered(carrier, "201", "15550652")
    await caller.hangup()
    await agi_worker.manager.wait_idle()
