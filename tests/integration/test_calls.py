"""Real SIP calls from the carrier into the pbx, each answered by its own session."""

from __future__ import annotations

import asyncio

import pytest

from asterisk_agent.calls.session import EndReason
from asterisk_agent.pbx.carrier.callers import Carrier

pytestmark = [pytest.mark.asterisk, pytest.mark.usefixtures("leak_audit")]


async def test_one_call_reads_back_its_digits(make_worker, carrier: Carrier) -> None:
    worker = await make_worker()
    caller = await carrier.call("100")
    await caller.wait_answered()
    await caller.send_digits("4271#")
    assert await caller.wait_digits(4) == "4271"
    await caller.hangup()
    await caller.wait_gone()
    async with asyncio.timeout(5):
        while worker.manager.sessions:
            await asyncio.sleep(0.02)
    (session,) = worker.manager.finished
    assert session.did == "100"
    assert session.readbacks == ["4271"]
    assert session.end_reason is EndReason.CALLER_HANGUP
