"""Handing escalated callers to people on real calls: the warm transfer through ARI bridges (checked by what
the caller and the agent each hear), busy and no answer told apart, the callback, and a caller hanging up on
hold."""

from __future__ import annotations

import asyncio
from collections.abc import Iterator
from pathlib import Path

import pytest

from asterisk_agent.backends.runner import ReferenceBackends
from asterisk_agent.handoff.transfer import AgentResult, TransferState
from asterisk_agent.media.leg import MediaContext
from asterisk_agent.pbx.carrier.agents import AgentBehaviour
from asterisk_agent.pbx.carrier.callers import Carrier, SimulatedCaller
from asterisk_agent.speech.stt.whisper_engine import WhisperBatcher
from asterisk_agent.speech.voice import Voice
from asterisk_agent.worker import Worker
from tests.integration.test_flows import QUIET_MS, flow_worker
from tests.integration.test_resync import until
from tests.support.calls import dial, session_of

pytestmark = [pytest.mark.asterisk, pytest.mark.usefixtures("leak_audit")]


@pytest.fixture(autouse=True)
def _agents_by_hand(carrier: Carrier) -> Iterator[None]:
    carrier.reset()
    yield
    carrier.reset()


async def handoff_worker(make_worker, stt_cache: Path, backends: ReferenceBackends,  # type: ignore[no-untyped-def]
                         targets: list[str], ring_ms: int = 8000) -> Worker:
    return await flow_worker(make_worker, stt_cache, backends, "insurance",
                             account_settings={"handoff": {"targets": targets, "ring_ms": ring_ms}})


async def ask_for_a_person(caller: SimulatedCaller, voices: Voice) -> None:
    await caller.wait_reply(0, quiet_ms=QUIET_MS)
    await caller.speak(await voices.prompt("Can I talk to a person, please?"))


async def test_the_agent_hears_the_whisper_then_the_caller_who_never_hears_it(
    make_worker, stt_cache: Path, carrier: Carrier, caller_media: MediaContext, voices: Voice,
    ears: WhisperBatcher, backends: ReferenceBackends,
) -> None:
    worker = await handoff_worker(make_worker, stt_cache, backends, ["PJSIP/agent1"])
    carrier.behave("agent1", AgentBehaviour.answering(after_ms=1500), media=caller_media, voice=voices)
    caller = await dial(carrier, caller_media, "15550701")
    await ask_for_a_person(caller, voices)
    async with asyncio.timeout(30):
        agent = await carrier.agent_calls.get()
    assert agent.endpoint == "agent1" and agent.caller_number == "15550701"  # the caller's number on the phone
    session = session_of(worker, caller)
    transfer = session.transfer
    assert transfer is not None
    await until(lambda: transfer.state is TransferState.BRIDGED, timeout_s=40, what="caller and agent bridged")
    assert caller.media_leg is not None and agent.media_leg is not None
    bridged_at = caller.media_leg.tap.frames
    _, said_last = await caller.speak(await voices.prompt("Hello, the storm damaged my roof."))
    await agent.wait_reply(agent.media_leg.tap.frames - 50, quiet_ms=800)
    await agent.say("Of course, I can help you with that.")
    await caller.wait_reply(said_last + 1, quiet_ms=800)
    await agent.hangup()
    await caller.wait_gone(timeout_s=10)
    await caller.release_media()
    await worker.manager.wait_idle()
    agent_heard = (await ears.transcribe_8k(agent.heard())).text.lower()
    assert "reason" in agent_heard and "person" in agent_heard, agent_heard  # the whisper...
    assert "roof" in agent_heard, agent_heard  # ...then the caller
    caller_heard = (await ears.transcribe_8k(caller.heard())).text.lower()
    assert "reason" not in caller_heard, caller_heard  # the caller never heard the whisper
    after = (await ears.transcribe_8k(caller.heard()[bridged_at * 160:])).text.lower()
    assert "help you" in after, after  # and hears the agent once bridged
    record = transfer.record
    assert record.answered_by == "PJSIP/agent1" and record.ended_by == "agent"
    assert [a.result for a in record.attempts] == [AgentResult.ANSWERED]
    assert record.whisper_ms and record.hold_ms and record.bridged_ms
    assert worker.store is not None
    detail = await worker.store.for_account("insurance").get_session(session.id)
    assert detail is not None and detail.outcome is not None and detail.outcome.data is not None
    assert detail.outcome.data["handoff"]["answered_by"] == "PJSIP/agent1"
    [recording] = detail.recordings
    recorded = (await ears.transcribe_8k(_first_channel(Path(recording.path)))).text.lower()
    assert "roof" in recorded and "help you" in recorded, recorded  # caller and agent after the transfer


def _first_channel(path: Path):  # type: ignore[no-untyped-def]
    import wave

    import numpy as np
    with wave.open(str(path), "rb") as wav:
        return np.frombuffer(wav.readframes(wav.getnframes()), dtype="<i2").reshape(-1, 2)[:, 0].copy()


@pytest.mark.parametrize(("behaviour", "result"), [
    (AgentBehaviour.busy(after_ms=300), AgentResult.BUSY),
    (AgentBehaviour.never_answering(), AgentResult.NO_ANSWER),
    (AgentBehaviour.congested(), AgentResult.FAILED),
])
async def test_busy_no_answer_and_failure_are_told_apart_and_lead_to_the_callback(
    make_worker, stt_cache: Path, carrier: Carrier, caller_media: MediaContext, voices: Voice,
    backends: ReferenceBackends, behaviour: AgentBehaviour, result: AgentResult,
) -> None:
    worker = await handoff_worker(make_worker, stt_cache, backends, ["PJSIP/agent2"], ring_ms=3000)
    carrier.behave("agent2", behaviour)
    number = f"155507{list(AgentResult).index(result):02d}"
    caller = await dial(carrier, caller_media, number)
    await ask_for_a_person(caller, voices)
    session = session_of(worker, caller)
    await until(lambda: session.transfer is not None and session.transfer.state is TransferState.RETURNED,
                timeout_s=40, what="the caller back from hold")
    assert caller.media_leg is not None
    _, last = await caller.wait_reply(caller.media_leg.tap.frames, quiet_ms=QUIET_MS)  # apology and offer
    for key in ("1", "1", "#"):  # yes; on this number; as soon as possible
        await caller.send_digits(key)
        if key != "#":
            _, last = await caller.wait_reply(last + 1, quiet_ms=QUIET_MS)
    await caller.wait_gone(timeout_s=30)
    await caller.release_media()
    await worker.manager.wait_idle()
    assert session.transfer is not None
    assert [a.result for a in session.transfer.record.attempts] == [result]
    assert session.callback is not None and session.callback.number == number
    assert worker.store is not None
    callbacks = await worker.store.for_account("insurance").list_callbacks()
    assert [c.number for c in callbacks] == [number]


async def test_a_caller_hanging_up_on_hold_cancels_the_ringing_agent(
    make_worker, stt_cache: Path, carrier: Carrier, caller_media: MediaContext, voices: Voice,
    backends: ReferenceBackends,
) -> None:
    worker = await handoff_worker(make_worker, stt_cache, backends, ["PJSIP/agent3"], ring_ms=20_000)
    carrier.behave("agent3", AgentBehaviour.never_answering())
    caller = await dial(carrier, caller_media, "15550709")
    await ask_for_a_person(caller, voices)
    async with asyncio.timeout(30):
        agent = await carrier.agent_calls.get()
    await caller.hangup()
    await agent.wait_gone(timeout_s=10)  # the agent's phone stops ringing
    await worker.manager.wait_idle()
    session = session_of(worker, caller)
    assert session.transfer is not None and session.transfer.state is TransferState.ENDED
    assert session.ledger.live() == []
