"""Handing escalated callers to people on real calls: the warm transfer through ARI bridges, what happens when
nobody answers, and the callback."""

from __future__ import annotations

import asyncio
from pathlib import Path

import pytest

from asterisk_agent.backends.runner import ReferenceBackends
from asterisk_agent.handoff.transfer import TransferState
from asterisk_agent.media.leg import MediaContext
from asterisk_agent.pbx.carrier.callers import Carrier
from asterisk_agent.speech.stt.whisper_engine import WhisperBatcher
from asterisk_agent.speech.voice import Voice
from tests.integration.test_flows import QUIET_MS, flow_worker
from tests.integration.test_resync import until
from tests.support.calls import dial, session_of

pytestmark = [pytest.mark.asterisk, pytest.mark.usefixtures("leak_audit")]


async def test_a_caller_asking_for_a_person_is_bridged_to_an_agent(
    make_worker, stt_cache: Path, carrier: Carrier, caller_media: MediaContext, voices: Voice,
    ears: WhisperBatcher, backends: ReferenceBackends,
) -> None:
    worker = await flow_worker(make_worker, stt_cache, backends, "insurance",
                               account_settings={"handoff": {"targets": ["PJSIP/agent1"], "ring_ms": 10_000}})
    caller = await dial(carrier, caller_media, "15550701")
    await caller.wait_reply(0, quiet_ms=QUIET_MS)
    await caller.speak(await voices.prompt("Can I talk to a person, please?"))
    async with asyncio.timeout(30):
        agent = await carrier.agent_calls.get()
    assert agent.endpoint == "agent1" and agent.caller_number == "15550701"
    session = session_of(worker, caller)
    assert session.transfer is not None and session.transfer.state is TransferState.RINGING
    await agent.answer()
    transfer = session.transfer
    await until(lambda: transfer.state is TransferState.BRIDGED, timeout_s=30, what="the caller and agent bridged")
    await agent.hangup()
    await caller.wait_gone(timeout_s=10)
    await caller.release_media()
    await worker.manager.wait_idle()
    record = transfer.record
    assert record.answered_by == "PJSIP/agent1" and record.ended_by == "agent"
    assert [a.result.value for a in record.attempts if a.result] == ["answered"]
    assert record.whisper_ms is not None and record.hold_ms is not None
    heard = (await ears.transcribe_8k(caller.heard())).text.lower()
    assert "reason" not in heard, heard  # the caller never heard the whisper


async def test_a_busy_agent_leads_to_the_callback_offer(
    make_worker, stt_cache: Path, carrier: Carrier, caller_media: MediaContext, voices: Voice,
    backends: ReferenceBackends,
) -> None:
    worker = await flow_worker(make_worker, stt_cache, backends, "insurance",
                               account_settings={"handoff": {"targets": ["PJSIP/agent2"], "ring_ms": 10_000}})
    caller = await dial(carrier, caller_media, "15550702")
    await caller.wait_reply(0, quiet_ms=QUIET_MS)
    await caller.speak(await voices.prompt("Can I talk to a person, please?"))
    async with asyncio.timeout(30):
        agent = await carrier.agent_calls.get()
    assert caller.media_leg is not None
    refused_at = caller.media_leg.tap.frames
    await agent.hangup()  # the agent's phone rejects the call
    session = session_of(worker, caller)
    _, last = await caller.wait_reply(refused_at, quiet_ms=QUIET_MS)  # the apology and the callback offer
    await caller.send_digits("1")  # yes, call me back
    _, last = await caller.wait_reply(last + 1, quiet_ms=QUIET_MS)
    await caller.send_digits("1")  # on this number
    _, last = await caller.wait_reply(last + 1, quiet_ms=QUIET_MS)
    await caller.send_digits("#")  # as soon as possible
    await caller.wait_gone(timeout_s=30)
    await caller.release_media()
    await worker.manager.wait_idle()
    assert session.transfer is not None and session.transfer.record.answered_by is None
    assert session.callback is not None and session.callback.number == "15550702"
    assert worker.store is not None
    callbacks = await worker.store.for_account("insurance").list_callbacks()
    assert [c.number for c in callbacks] == ["15550702"]
