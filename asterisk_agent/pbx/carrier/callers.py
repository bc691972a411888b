"""Simulated callers and human agents on the carrier instance, driven over the carrier's ARI.

A caller is created with ``POST /channels/create`` (so the carrier's app sees it from its first state) and
dialled into the pbx over the PJSIP trunk; it records every event on its channel: answer, DTMF it receives,
hangup and cause. An agent is a pbx call to an agent endpoint, arriving in the carrier's app.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import time
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
from asterisk_agent.media.leg import MediaContext, MediaLeg, Samples

log = logging.getLogger(__name__)


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
        return self.media_leg

    def heard(self) -> Samples:
        """Everything this caller heard so far, 8 kHz."""
        return self.media_leg.tap.caller() if self.media_leg is not None else np.zeros(0, dtype=np.int16)

    async def release_media(self) -> None:
        if self.media_leg is not None:
            self.media_leg.close()
        await self.ledger.release_all(self.client)


class CallFailed(Exception):
    pass


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
