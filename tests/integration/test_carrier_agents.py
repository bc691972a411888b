"""Simulated human agents on the carrier behave on cue, and the pbx sees what a real phone would make it see.

The pbx side is a small Stasis app of the test's own. It reaches the agents the two ways a deployment does:
through the shipped dialplan (``[agent-overflow]`` extension ``transfer``, a real ``Dial()`` of
``${AGENT_OVERFLOW_DIAL}``, reached through a Local channel), where Asterisk reports a DIALSTATUS; and with
ARI's own ``POST /channels/create`` + ``dial`` (what the worker's warm transfer does), where the agent leg's
hangup cause tells the outcome. Audio is checked by content: what the agent said, transcribed from the pbx's
recording of its channel; what the pbx played, transcribed from the agent's own recording.
"""

from __future__ import annotations

import asyncio
import contextlib
import io
import wave
from collections.abc import AsyncIterator, Iterator
from dataclasses import dataclass, field

import numpy as np
import pytest
import pytest_asyncio

from asterisk_agent.ari import requests as ari
from asterisk_agent.ari.client import AriClient
from asterisk_agent.ari.errors import AriNotFound
from asterisk_agent.ari.events import (
    Channel,
    ChannelDestroyed,
    ChannelStateChange,
    Dial,
    Event,
    PlaybackFinished,
    RecordingFailed,
    RecordingFinished,
    StasisStart,
)
from asterisk_agent.ari.ids import IdFactory
from asterisk_agent.ari.stream import EventStream
from asterisk_agent.media.leg import MediaContext, Samples
from asterisk_agent.pbx.carrier.agents import AgentBehaviour, AgentKind
from asterisk_agent.pbx.carrier.callers import Carrier, SimulatedAgent
from asterisk_agent.pbx.instances import AGENT_NAMES
from asterisk_agent.speech.stt.whisper_engine import WhisperBatcher
from asterisk_agent.speech.voice import Voice

pytestmark = [pytest.mark.asterisk, pytest.mark.usefixtures("leak_audit")]

APP = "carrier-agents-test"
NORMAL, BUSY, NO_ANSWER, CONGESTION = 16, 17, 19, 34  # Q.850 causes
PENDING_STATUSES = frozenset({"", "RINGING", "PROGRESS", "PROCEEDING"})  # Dial events before the outcome


def subscription(endpoint: str, *, remove: bool = False) -> ari.AriRequest:
    """Subscribe the test's app to every channel of a pbx endpoint, so it sees the Dial() of the dialplan."""
    return ari.AriRequest("DELETE" if remove else "POST", "/applications/{applicationName}/subscription",
                          {"applicationName": APP}, {"eventSource": f"endpoint:PJSIP/{endpoint}"})


@dataclass
class Seen:
    """What the pbx reported about one of its channels, stamped with the loop's clock."""

    channel_id: str
    name: str = ""
    statuses: list[tuple[float, str]] = field(default_factory=list)  # dialstatus of Dial events (this is the peer)
    states: list[tuple[float, str]] = field(default_factory=list)
    ended: asyncio.Future[tuple[int, str]] = field(
        default_factory=lambda: asyncio.get_running_loop().create_future())  # (cause, cause text)
    ended_at: float | None = None
    _waiting: dict[str, asyncio.Future[float]] = field(default_factory=dict)

    def reached(self, status: str) -> asyncio.Future[float]:
        """Done at the first Dial event with ``status`` (its time), or the first state change to it."""
        return self._waiting.setdefault(status, asyncio.get_running_loop().create_future())

    def mark(self, status: str, at: float) -> None:
        future = self.reached(status)
        if not future.done():
            future.set_result(at)

    @property
    def outcome(self) -> str | None:
        """The dial outcome Asterisk reported (ANSWER, BUSY, NOANSWER, CONGESTION, ...), if any yet."""
        final = [status for _, status in self.statuses if status not in PENDING_STATUSES]
        return final[-1] if final else None

    async def wait(self, status: str, timeout_s: float = 10.0) -> float:
        async with asyncio.timeout(timeout_s):
            return await asyncio.shield(self.reached(status))

    async def wait_ended(self, timeout_s: float = 10.0) -> tuple[int, str]:
        async with asyncio.timeout(timeout_s):
            return await asyncio.shield(self.ended)


class Switchboard:
    """The test's own Stasis app on the pbx: places calls to agent endpoints and keeps what the pbx reports
    about every channel it sees (its own, and the agent legs of the endpoints it subscribed to)."""

    def __init__(self, client: AriClient) -> None:
        self.client = client
        self.ids = IdFactory("sw")
        self.seen: dict[str, Seen] = {}
        self._legs: dict[str, asyncio.Future[Seen]] = {}
        self._done: dict[str, asyncio.Future[str]] = {}  # playback ids and recording names -> how they ended
        self._stream = EventStream(client, APP, self)
        self._task: asyncio.Task[None] | None = None

    async def start(self) -> None:
        self._task = asyncio.create_task(self._stream.run(), name="switchboard-events")
        async with asyncio.timeout(10):
            await self._stream.wait_connected()
        for endpoint in AGENT_NAMES:
            await self.client.send(subscription(endpoint))

    async def stop(self) -> None:
        for endpoint in AGENT_NAMES:
            with contextlib.suppress(AriNotFound):
                await self.client.send(subscription(endpoint, remove=True))
        if self._task is not None:
            self._task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._task

    # EventHandler protocol
    async def connected(self) -> None:
        return None

    def disconnected(self) -> None:
        return None

    def handle(self, event: Event) -> None:
        now = asyncio.get_running_loop().time()
        if isinstance(event, PlaybackFinished | RecordingFinished | RecordingFailed):
            if isinstance(event, PlaybackFinished):
                name, outcome = event.playback_id, event.state
            else:
                name = event.name
                outcome = "done" if isinstance(event, RecordingFinished) else f"failed: {event.cause}"
            if not self.finished(name).done():
                self.finished(name).set_result(outcome)
            return
        channel = event.peer if isinstance(event, Dial) else getattr(event, "channel", None)
        if not isinstance(channel, Channel):
            return
        seen = self.channel(channel.id, channel.name)
        if isinstance(event, Dial):
            seen.statuses.append((now, event.dialstatus))
            seen.mark(event.dialstatus, now)
        elif isinstance(event, ChannelStateChange):
            seen.states.append((now, channel.state))
            seen.mark(channel.state, now)
        elif isinstance(event, StasisStart):
            seen.mark("Stasis", now)
        elif isinstance(event, ChannelDestroyed) and not seen.ended.done():
            seen.ended_at = now
            seen.ended.set_result((event.cause, event.cause_txt))

    def channel(self, channel_id: str, name: str = "") -> Seen:
        """What was seen of ``channel_id`` so far (an empty record before its first event)."""
        seen = self.seen.get(channel_id)
        if seen is None:
            seen = self.seen[channel_id] = Seen(channel_id)
        if name and not seen.name:
            seen.name = name
            leg = self._legs.get(name.removeprefix("PJSIP/").rsplit("-", 1)[0])
            if name.startswith("PJSIP/") and leg is not None and not leg.done():
                leg.set_result(seen)
        return seen

    def finished(self, name: str) -> asyncio.Future[str]:
        return self._done.setdefault(name, asyncio.get_running_loop().create_future())

    def expect_leg(self, endpoint: str) -> asyncio.Future[Seen]:
        """The next pbx channel to ``PJSIP/<endpoint>`` (set before dialling)."""
        future: asyncio.Future[Seen] = asyncio.get_running_loop().create_future()
        self._legs[endpoint] = future
        return future

    async def dial_through_dialplan(self, endpoint: str, *, ring_s: int) -> tuple[str, str]:
        """Ring ``endpoint`` from the shipped ``[agent-overflow]`` context (a real Dial() with a ring timeout);
        the Local channel's first half enters our app once answered. Returns both halves' ids."""
        first, second = self.ids.new("local"), self.ids.new("local2")
        await self.client.send(ari.originate(
            "Local/transfer@agent-overflow", channel_id=first, other_channel_id=second, app=APP, app_args="local",
            variables={"AGENT_OVERFLOW_DIAL": f"PJSIP/{endpoint}", "AGENT_FALLBACK_RING": str(ring_s)},
        ))
        return first, second

    async def dial_by_ari(self, endpoint: str, *, ring_s: int) -> str:
        """Ring ``endpoint`` the way the worker's warm transfer does: a channel of our own, dialled by ARI."""
        channel_id = self.ids.new("agent")
        await self.client.send(ari.create_channel(f"PJSIP/{endpoint}", channel_id=channel_id, app=APP,
                                                  app_args="agent"))
        await self.channel(channel_id).wait("Stasis")  # dialling before StasisStart answers 409
        await self.client.send(ari.dial(channel_id, timeout_s=ring_s))
        return channel_id

    async def hangup(self, channel_id: str) -> None:
        await self.client.delete_quietly(ari.hangup(channel_id, reason="normal"))


@pytest_asyncio.fixture(loop_scope="session", scope="module")
async def board(pbx_ari: AriClient) -> AsyncIterator[Switchboard]:
    switchboard = Switchboard(pbx_ari)
    await switchboard.start()
    yield switchboard
    await switchboard.stop()


@pytest.fixture(autouse=True)
def clean_carrier(carrier: Carrier) -> Iterator[None]:
    """The carrier lives for the whole run: no behaviour and no untaken agent call leaks into the next test."""
    carrier.reset()
    yield
    carrier.reset()


async def next_agent(carrier: Carrier, endpoint: str) -> SimulatedAgent:
    async with asyncio.timeout(10):
        agent = await carrier.agent_calls.get()
    assert agent.endpoint == endpoint
    return agent


def wav_samples(data: bytes) -> Samples:
    with wave.open(io.BytesIO(data)) as wav:
        assert (wav.getframerate(), wav.getsampwidth(), wav.getnchannels()) == (8000, 2, 1)
        return np.frombuffer(wav.readframes(wav.getnframes()), dtype="<i2").astype(np.int16)


async def test_a_behaviour_is_one_kind_and_is_checked_when_set(carrier: Carrier) -> None:
    assert AgentBehaviour().kind is AgentKind.MANUAL
    assert AgentBehaviour(answer_after_ms=300).kind is AgentKind.ANSWER
    assert AgentBehaviour.busy().refuse == "busy" and AgentBehaviour.congested().kind is AgentKind.REFUSE
    assert AgentBehaviour.never_answering().kind is AgentKind.NEVER_ANSWER
    with pytest.raises(ValueError, match="pick one"):
        AgentBehaviour(answer_after_ms=0, never_answer=True)
    with pytest.raises(ValueError, match="unknown refusal"):
        AgentBehaviour.refusing("on holiday")
    with pytest.raises(ValueError, match="agent that answers"):
        AgentBehaviour(refuse="busy", say=["Hello"])
    with pytest.raises(ValueError, match="media and a voice"):  # lines need something to say them with
        carrier.behave("agent1", AgentBehaviour.answering(say=["Hello"]))
    assert carrier.behaviour("agent1") is None


# --- outcomes the pbx tells apart ---------------------------------------------------------------------------


async def test_an_agent_rings_answers_after_its_delay_and_hangs_up_on_cue(board: Switchboard,
                                                                         carrier: Carrier) -> None:
    carrier.behave("agent1", AgentBehaviour.answering(after_ms=600, hangup_after_ms=700))
    leg_future = board.expect_leg("agent1")
    local, _ = await board.dial_through_dialplan("agent1", ring_s=10)
    async with asyncio.timeout(10):
        leg = await leg_future
    agent = await next_agent(carrier, "agent1")
    rang = await leg.wait("RINGING")
    answered = await leg.wait("ANSWER")
    assert 0.55 <= answered - rang <= 1.6, answered - rang  # rang first, answered after its delay
    cause, _ = await leg.wait_ended()
    assert leg.ended_at is not None
    assert cause == NORMAL and 0.65 <= leg.ended_at - answered <= 1.7, (cause, leg.ended_at - answered)
    assert leg.outcome == "ANSWER"
    assert (await board.channel(local).wait_ended())[0] == NORMAL
    await agent.wait_closed()
    assert agent.behaviour.kind is AgentKind.ANSWER and agent.hangup_reason == "normal"
    assert agent.answered.done() and agent.ledger.live() == []


@pytest.mark.parametrize(("behaviour", "cause", "dialstatus"), [
    (AgentBehaviour.busy(), BUSY, "BUSY"),
    (AgentBehaviour.busy(after_ms=300), BUSY, "BUSY"),
    (AgentBehaviour.congested(), CONGESTION, "CONGESTION"),
], ids=["busy", "busy-after-ringing", "congestion"])
async def test_a_refusing_agent_gives_the_dialplan_its_dialstatus(
    board: Switchboard, carrier: Carrier, behaviour: AgentBehaviour, cause: int, dialstatus: str,
) -> None:
    carrier.behave("agent2", behaviour)
    leg_future = board.expect_leg("agent2")
    local, dialling = await board.dial_through_dialplan("agent2", ring_s=10)
    async with asyncio.timeout(10):
        leg = await leg_future
    agent = await next_agent(carrier, "agent2")
    await leg.wait(dialstatus)
    assert (await leg.wait_ended())[0] == cause
    assert leg.outcome == dialstatus
    assert not leg.reached("ANSWER").done() and not leg.reached("Up").done()
    rang = leg.reached("RINGING").done()
    assert rang is (behaviour.refuse_after_ms > 0)  # a busy phone refuses at once; an agent may decline ringing
    # Dial() set DIALSTATUS on the dialplan's half of the Local channel (it now plays the overflow message).
    variable = await board.client.send(ari.get_channel_variable(dialling, "DIALSTATUS"))
    assert variable == {"value": dialstatus}
    await board.hangup(local)
    await agent.wait_closed()
    assert agent.hangup_reason == behaviour.refuse and agent.answered_at is None


@pytest.mark.parametrize("behaviour", [AgentBehaviour.busy(after_ms=200), AgentBehaviour.congested()],
                         ids=["busy", "congestion"])
async def test_a_refusing_agent_ends_an_ari_dial_with_its_cause(
    board: Switchboard, carrier: Carrier, behaviour: AgentBehaviour,
) -> None:
    carrier.behave("agent2", behaviour)
    channel_id = await board.dial_by_ari("agent2", ring_s=10)
    agent = await next_agent(carrier, "agent2")
    cause, _ = await board.channel(channel_id).wait_ended()
    assert cause == (BUSY if behaviour.refuse == "busy" else CONGESTION)
    await agent.wait_closed()


async def test_an_agent_that_never_answers_rings_until_the_dial_gives_up(board: Switchboard,
                                                                        carrier: Carrier) -> None:
    carrier.behave("agent3", AgentBehaviour.never_answering())
    leg_future = board.expect_leg("agent3")
    local, dialling = await board.dial_through_dialplan("agent3", ring_s=1)
    async with asyncio.timeout(10):
        leg = await leg_future
    agent = await next_agent(carrier, "agent3")
    rang = await leg.wait("RINGING")
    gave_up = await leg.wait("NOANSWER", timeout_s=5)
    assert 0.9 <= gave_up - rang <= 2.0, gave_up - rang  # the Dial() ring timeout, not the agent
    assert (await board.client.send(ari.get_channel_variable(dialling, "DIALSTATUS"))) == {"value": "NOANSWER"}
    await board.hangup(local)
    assert await agent.wait_gone() > 0
    await agent.wait_closed()
    assert agent.hangup_reason is None  # the pbx hung up, not the agent

    # The same agent dialled by ARI: its ring timeout destroys the channel with cause 19 (no answer).
    channel_id = await board.dial_by_ari("agent3", ring_s=1)
    again = await next_agent(carrier, "agent3")
    assert (await board.channel(channel_id).wait_ended(timeout_s=5))[0] == NO_ANSWER
    assert not board.channel(channel_id).reached("Up").done()
    await again.wait_closed()


async def test_without_a_behaviour_the_test_answers_by_hand(board: Switchboard, carrier: Carrier) -> None:
    with carrier.behaving("agent4", AgentBehaviour.busy()):
        assert carrier.behaviour("agent4") == AgentBehaviour.busy()
    assert carrier.behaviour("agent4") is None
    channel_id = await board.dial_by_ari("agent4", ring_s=10)
    agent = await next_agent(carrier, "agent4")
    assert agent.behaviour.kind is AgentKind.MANUAL
    seen = board.channel(channel_id)
    assert not seen.reached("Ringing").done()  # nothing happens until the test acts
    await agent.ring()
    await seen.wait("Ringing")
    await agent.answer()
    await seen.wait("Up")
    await agent.hangup()
    assert (await seen.wait_ended())[0] == NORMAL
    await agent.wait_closed()


# --- what the agent says and hears, by content --------------------------------------------------------------

LINE = "Good morning, this is Morgan speaking. How can I help you today?"


async def test_an_answered_agent_says_its_line_to_the_pbx_and_hangs_up(
    board: Switchboard, carrier: Carrier, caller_media: MediaContext, voices: Voice, ears: WhisperBatcher,
    pbx_ari: AriClient,
) -> None:
    carrier.behave("agent1", AgentBehaviour.answering(after_ms=200, say=[LINE], say_after_ms=600,
                                                      hangup_after_lines=True), media=caller_media, voice=voices)
    channel_id = await board.dial_by_ari("agent1", ring_s=10)
    seen = board.channel(channel_id)
    await seen.wait("Up")
    # What reaches the pbx from the agent, recorded by the pbx itself (a dialled channel cannot be recorded on
    # its own: Asterisk counts it as bridged; so it goes into a mixing bridge of ours, recorded until we stop).
    bridge, name = board.ids.new("br"), board.ids.new("heard")
    finished = board.finished(name)
    await pbx_ari.send(ari.create_bridge(bridge, bridge_type="mixing"))
    try:
        await pbx_ari.send(ari.add_channel_to_bridge(bridge, channel_id))
        await pbx_ari.send(ari.record_bridge(bridge, name=name, max_duration_s=30))
        agent = await next_agent(carrier, "agent1")
        await agent.wait_said()
        assert (await seen.wait_ended())[0] == NORMAL  # hung up on cue after its line
        await pbx_ari.delete_quietly(ari.stop_live_recording(name))  # or it ended with the bridge's last channel
        async with asyncio.timeout(10):
            assert await finished == "done"
    finally:
        await pbx_ari.delete_quietly(ari.destroy_bridge(bridge))
    try:
        recording = wav_samples(await pbx_ari.send_raw(ari.get_stored_recording_file(name)))
    finally:
        await pbx_ari.delete_quietly(ari.delete_stored_recording(name))
    heard = (await ears.transcribe_8k(recording)).text.lower()
    assert all(word in heard for word in ("morning", "morgan", "help", "today")), heard
    await agent.wait_closed()
    assert agent.lines_said == [LINE] and agent.hangup_reason == "normal"
    assert agent.media_leg is not None and agent.ledger.live() == []


async def test_an_answered_agent_hears_what_the_pbx_plays_and_the_test_hangs_it_up(
    board: Switchboard, carrier: Carrier, caller_media: MediaContext, ears: WhisperBatcher, pbx_ari: AriClient,
) -> None:
    carrier.behave("agent4", AgentBehaviour.answering(), media=caller_media)
    channel_id = await board.dial_by_ari("agent4", ring_s=10)
    seen = board.channel(channel_id)
    await seen.wait("Up")
    agent = await next_agent(carrier, "agent4")
    await agent.wait_listening()
    playback = board.ids.new("play")
    await pbx_ari.send(ari.play_on_channel(channel_id, "sound:all-circuits-busy-now", playback_id=playback))
    async with asyncio.timeout(10):
        assert await board.finished(playback) == "done"
    await agent.wait_reply(0, quiet_ms=400)
    heard = (await ears.transcribe_8k(agent.heard())).text.lower()
    assert "circuits" in heard and "busy" in heard, heard  # "All circuits are busy now..."
    assert not seen.ended.done()  # the agent stays on the line until told
    assert sorted(r.kind.value for r in agent.ledger.live()) == ["bridge", "channel"]  # its externalMedia leg
    await agent.hangup()
    assert (await seen.wait_ended())[0] == NORMAL
    await agent.wait_closed()
    assert agent.ledger.live() == []
