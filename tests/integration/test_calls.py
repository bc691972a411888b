"""Real SIP calls from the carrier into the pbx, each answered by its own session."""

from __future__ import annotations

import asyncio

import pytest

from asterisk_agent.calls.session import CallState, EndReason
from asterisk_agent.pbx.carrier.callers import Carrier
from asterisk_agent.worker import Worker

pytestmark = [pytest.mark.asterisk, pytest.mark.usefixtures("leak_audit")]


def only_session(worker: Worker):  # type: ignore[no-untyped-def]
    assert len(worker.manager.finished) == 1, [s.history for s in worker.manager.finished]
    return worker.manager.finished[0]


async def test_one_call_reads_back_its_digits(make_worker, carrier: Carrier) -> None:
    worker = await make_worker()
    caller = await carrier.call("100")
    await caller.wait_answered()
    await caller.send_digits("4271#")
    assert await caller.wait_digits(4) == "4271"
    await caller.hangup()
    await worker.manager.wait_idle()
    session = only_session(worker)
    assert session.did == "100"
    assert session.account == "demo"
    assert session.readbacks == ["4271"]
    assert session.end_reason is EndReason.CALLER_HANGUP
    assert session.ledger.live() == []


async def test_twenty_simultaneous_callers_each_hear_only_their_own_digits(make_worker, carrier: Carrier) -> None:
    worker = await make_worker()
    digits = [f"{i:02d}{(i * 7) % 10}" for i in range(10, 30)]  # 20 distinct 3-digit strings

    async def one(own: str) -> str:
        caller = await carrier.call("100", caller_number=f"1555{own}")
        await caller.wait_answered(timeout_s=15)
        await caller.send_digits(own + "#")
        heard = await caller.wait_digits(len(own), timeout_s=20)
        await caller.hangup()
        return heard

    heard = await asyncio.gather(*(one(d) for d in digits))
    assert heard == digits
    await worker.manager.wait_idle()
    sessions = worker.manager.finished
    assert len({s.id for s in sessions}) == 20
    assert sorted(s.readbacks[0] for s in sessions) == sorted(digits)
    assert all(s.ledger.live() == [] for s in sessions)


async def test_caller_hangs_up_before_answer(make_worker, carrier: Carrier) -> None:
    worker = await make_worker(timers={"answer_delay_ms": 5000})
    caller = await carrier.call("100")
    await caller.wait_ringing()
    await caller.hangup()
    await caller.wait_gone()
    await worker.manager.wait_idle()
    session = only_session(worker)
    assert session.end_reason is EndReason.CALLER_HANGUP
    assert [e.what for e in session.history][:1] == ["ringing"]
    assert "answered" not in [e.what for e in session.history]
    assert not caller.answered.done() or caller.answered.exception() is not None


async def test_caller_hangs_up_during_greeting(make_worker, carrier: Carrier) -> None:
    worker = await make_worker(accounts={"demo": {"numbers": ["_X."], "greeting": "hello-world"}})
    caller = await carrier.call("100")
    await caller.wait_answered()
    await caller.hangup()
    await worker.manager.wait_idle()
    session = only_session(worker)
    assert session.end_reason is EndReason.CALLER_HANGUP
    assert session.readbacks == []
    assert "caller_left" in [e.what for e in session.history]


async def test_caller_hangs_up_while_digits_are_read_back(make_worker, carrier: Carrier) -> None:
    worker = await make_worker()
    caller = await carrier.call("100")
    await caller.wait_answered()
    await caller.send_digits("13572468#")
    assert (await caller.wait_digits(1))[:1] == "1"
    states = [s.state for s in worker.manager.sessions.values()]
    await caller.hangup()
    await worker.manager.wait_idle()
    session = only_session(worker)
    assert states == [CallState.READING_BACK]
    assert session.readbacks == ["13572468"]
    assert session.end_reason is EndReason.CALLER_HANGUP


async def test_session_ends_after_call_max(make_worker, carrier: Carrier) -> None:
    worker = await make_worker(timers={"call_max_ms": 400})
    caller = await carrier.call("100")
    await caller.wait_answered()
    await caller.wait_gone()
    await worker.manager.wait_idle()
    assert only_session(worker).end_reason is EndReason.MAX_DURATION


async def test_keys_interrupt_the_greeting(make_worker, carrier: Carrier) -> None:
    worker = await make_worker(accounts={"demo": {"numbers": ["_X."], "greeting": "hello-world"}})
    caller = await carrier.call("100")
    await caller.wait_answered()
    await caller.send_digits("9#")
    assert await caller.wait_digits(1) == "9"
    await caller.hangup()
    await worker.manager.wait_idle()
    session = only_session(worker)
    assert session.readbacks == ["9"]
    barge_ins = [e.detail for e in session.history if e.what == "barge_in"]
    assert len(barge_ins) == 1 and barge_ins[0].startswith("sound:hello-world,digits:100,")
