"""Simulated human agents on the carrier: pbx calls to agent endpoints, answered by hand or by a script.

A call the pbx places to an agent endpoint (``PJSIP/agent1`` ...) crosses the trunk and enters the carrier's
app as a :class:`SimulatedAgent`. By default the test drives it by hand (``answer()``, ``hangup()``). A test
that needs a person who behaves on cue sets an :class:`AgentBehaviour` for the endpoint before the call
arrives (``carrier.behave("agent1", AgentBehaviour.answering(after_ms=300))``) and the agent then runs it:

- answer after a delay, ringing first (180, then 200);
- never answer: ring until the pbx gives up (its Dial timeout: NOANSWER);
- refuse: hang the unanswered channel up with a reason the pbx reads as a SIP status and a cause, ``busy``
  (486, cause 17, DIALSTATUS BUSY) or ``congestion`` (503, cause 34, DIALSTATUS CONGESTION);
- once answered: listen through its own externalMedia leg, say scripted lines in the simulated callers' voice,
  and hang up after a time or after its lines.

Everything goes through the carrier's ARI. The agent's media resources are written into its own ledger before
they are requested, and its one teardown (when either side hangs up, or ``Carrier.stop()``) releases them, so
no channel or bridge outlives the call.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import time
from collections.abc import Sequence
from dataclasses import dataclass, field
from enum import Enum

from asterisk_agent.ari import requests as ari
from asterisk_agent.ari.client import AriClient
from asterisk_agent.ari.errors import AriConflict, AriNotFound
from asterisk_agent.ari.events import ChannelDestroyed, ChannelHangupRequest, ChannelStateChange, Event
from asterisk_agent.calls.ledger import Ledger
from asterisk_agent.media.leg import MediaContext, MediaLeg, Samples
from asterisk_agent.pbx.carrier.party import CallParty, Ear, MediaHost, settle_failed
from asterisk_agent.speech.voice import Voice

log = logging.getLogger(__name__)


class AgentKind(Enum):
    """What an agent does with a call that rings it."""

    MANUAL = "manual"  # nothing: the test answers, refuses or hangs up by hand
    ANSWER = "answer"  # rings, then answers after a delay
    NEVER_ANSWER = "never_answer"  # rings until the pbx gives up
    REFUSE = "refuse"  # hangs the unanswered call up with a reason (busy, congestion, ...)


@dataclass(frozen=True)
class AgentBehaviour:
    """How a simulated agent treats the calls to its endpoint; plain data, set per endpoint on the carrier.

    Exactly one of ``answer_after_ms``, ``refuse`` and ``never_answer`` picks the kind (none of them: manual).
    Times are milliseconds. The classmethods read better than the fields: ``AgentBehaviour.answering(...)``,
    ``.never_answering()``, ``.busy()``, ``.congested()``, ``.refusing(reason)``."""

    answer_after_ms: int | None = None  # ring (180), then answer (200) after this long
    refuse: str | None = None  # hang the unanswered channel up with this ARI reason: "busy", "congestion", ...
    refuse_after_ms: int = 0  # ring this long before refusing (0: refuse at once, without ringing)
    never_answer: bool = False  # ring until the pbx gives up
    say: Sequence[str] = ()  # lines spoken once answered, one after the other (needs a voice and media)
    say_after_ms: int = 300  # from the answer to the first line
    pause_ms: int = 400  # between lines, and before hanging up after the last one
    hangup_after_ms: int | None = None  # hang up this long after answering (whatever is still being said)
    hangup_after_lines: bool = False  # hang up once the lines are said

    def __post_init__(self) -> None:
        object.__setattr__(self, "say", tuple(self.say))  # frozen and hashable, whatever sequence was given
        chosen = [self.answer_after_ms is not None, self.refuse is not None, self.never_answer]
        if sum(chosen) > 1:
            raise ValueError("an agent behaviour answers, refuses or never answers: pick one")
        if self.refuse is not None and self.refuse not in ari.HANGUP_REASONS:
            raise ValueError(f"unknown refusal reason {self.refuse!r}: one of {', '.join(ari.HANGUP_REASONS)}")
        answers = self.answer_after_ms is not None
        if not answers and (self.say or self.hangup_after_ms is not None or self.hangup_after_lines):
            raise ValueError("lines and hangup cues need an agent that answers (answer_after_ms)")
        if self.hangup_after_lines and not self.say:
            raise ValueError("hangup_after_lines needs lines to say")
        for name in ("answer_after_ms", "refuse_after_ms", "say_after_ms", "pause_ms", "hangup_after_ms"):
            value = getattr(self, name)
            if value is not None and value < 0:
                raise ValueError(f"{name} must not be negative")

    @property
    def kind(self) -> AgentKind:
        if self.answer_after_ms is not None:
            return AgentKind.ANSWER
        if self.refuse is not None:
            return AgentKind.REFUSE
        if self.never_answer:
            return AgentKind.NEVER_ANSWER
        return AgentKind.MANUAL

    @classmethod
    def answering(
        cls, after_ms: int = 0, *, say: Sequence[str] = (), say_after_ms: int = 300, pause_ms: int = 400,
        hangup_after_ms: int | None = None, hangup_after_lines: bool = False,
    ) -> AgentBehaviour:
        """Ring, answer after ``after_ms``, then say ``say`` and hang up on cue (or stay until hung up)."""
        return cls(answer_after_ms=after_ms, say=say, say_after_ms=say_after_ms, pause_ms=pause_ms,
                   hangup_after_ms=hangup_after_ms, hangup_after_lines=hangup_after_lines)

    @classmethod
    def never_answering(cls) -> AgentBehaviour:
        """Ring until the pbx gives up (its ring timeout: NOANSWER)."""
        return cls(never_answer=True)

    @classmethod
    def refusing(cls, reason: str, after_ms: int = 0) -> AgentBehaviour:
        """Refuse with an ARI hangup reason, ringing ``after_ms`` first (0: at once)."""
        return cls(refuse=reason, refuse_after_ms=after_ms)

    @classmethod
    def busy(cls, after_ms: int = 0) -> AgentBehaviour:
        """Busy: 486 Busy Here; the pbx sees cause 17 and DIALSTATUS BUSY."""
        return cls.refusing("busy", after_ms)

    @classmethod
    def congested(cls, after_ms: int = 0) -> AgentBehaviour:
        """Failure: 503; the pbx sees cause 34 and DIALSTATUS CONGESTION."""
        return cls.refusing("congestion", after_ms)


MANUAL = AgentBehaviour()


def _pending_future() -> asyncio.Future[int]:
    return asyncio.get_running_loop().create_future()


@dataclass
class SimulatedAgent(CallParty):
    """A pbx call that reached an agent endpoint (or the fallback operator) on the carrier.

    ``gone`` resolves with the cause of the first hangup event; ``hangup_cause`` ends as the cause Asterisk
    destroyed the channel with. ``answered``, ``listening`` (its media leg is bridged), ``said`` (every
    scripted line is out) and ``closed`` (every resource released) are futures a test can wait on, each with
    a ``wait_...`` method that takes a timeout."""

    client: AriClient
    channel_id: str
    endpoint: str
    caller_number: str
    behaviour: AgentBehaviour = MANUAL
    gone: asyncio.Future[int] = field(default_factory=_pending_future)
    arrived_at: float = field(default_factory=time.monotonic)
    rang_at: float | None = None
    answered_at: float | None = None
    hangup_cause: int | None = None
    hangup_reason: str | None = None  # the reason this agent hung up with; None when the pbx hung up first
    lines_said: list[str] = field(default_factory=list)
    script_error: BaseException | None = None  # what stopped a script early (a failed request), for tests
    media_leg: MediaLeg | None = None
    ledger: Ledger = field(default_factory=Ledger)
    ear: Ear = field(default_factory=Ear)
    voice: Voice | None = None

    def __post_init__(self) -> None:
        loop = asyncio.get_running_loop()
        self.answered: asyncio.Future[None] = loop.create_future()
        self.said: asyncio.Future[None] = loop.create_future()
        self.listening: asyncio.Future[None] = loop.create_future()
        self.closed: asyncio.Future[None] = loop.create_future()
        self._script: asyncio.Task[None] | None = None
        self._teardown: asyncio.Task[None] | None = None

    @property
    def media_label(self) -> str:
        return f"agent-{self.endpoint}"

    # --- events (from the carrier's app) ---------------------------------------------------------------

    def on_event(self, event: Event) -> None:
        if isinstance(event, ChannelStateChange) and event.channel.state == "Up":
            if not self.answered.done():
                self.answered_at = time.monotonic()
                self.answered.set_result(None)
        elif isinstance(event, ChannelHangupRequest | ChannelDestroyed):
            if self.hangup_cause is None or isinstance(event, ChannelDestroyed):
                self.hangup_cause = event.cause
            if not self.gone.done():
                self.gone.set_result(event.cause)
            settle_failed(self.answered, f"hung up before answer (cause {event.cause})")
            settle_failed(self.said, f"hung up before its lines were said (cause {event.cause})")

    # --- by hand ---------------------------------------------------------------------------------------

    async def ring(self) -> None:
        """180 Ringing to the pbx."""
        await self.client.send(ari.ring(self.channel_id))
        if self.rang_at is None:
            self.rang_at = time.monotonic()

    async def answer(self) -> None:
        await self.client.send(ari.answer(self.channel_id))

    async def attach_media(self, host: MediaHost, media: MediaContext) -> MediaLeg:
        """Give the agent its own ears and voice on the carrier (a script does this right after answering)."""
        leg = await super().attach_media(host, media)
        if not self.listening.done():
            self.listening.set_result(None)
        return leg

    async def say(self, text: str) -> tuple[int, int]:
        """Say ``text`` in the agent's voice (needs a voice and a media leg); see :meth:`speak`."""
        if self.voice is None:
            raise RuntimeError("this agent has no voice: give the carrier one with behave(..., voice=)")
        return await self.speak(await self.voice.prompt(text))

    async def hangup(self, reason: str = "normal") -> None:
        """Hang up with an ARI reason (``busy`` or ``congestion`` refuse an unanswered call) and release every
        resource. Idempotent: the first teardown wins, later calls wait for it."""
        if self.hangup_reason is None and not self.gone.done():
            self.hangup_reason = reason
        await self.close()

    async def wait_answered(self, timeout_s: float = 10.0) -> None:
        async with asyncio.timeout(timeout_s):
            await asyncio.shield(self.answered)

    async def wait_listening(self, timeout_s: float = 10.0) -> None:
        """Wait until the agent's media leg is bridged: from then on it records everything it hears."""
        async with asyncio.timeout(timeout_s):
            await asyncio.shield(self.listening)

    async def wait_said(self, timeout_s: float = 30.0) -> None:
        """Wait until every scripted line is out (raises CallFailed if the call ended first)."""
        async with asyncio.timeout(timeout_s):
            await asyncio.shield(self.said)

    async def wait_gone(self, timeout_s: float = 10.0) -> int:
        async with asyncio.timeout(timeout_s):
            return await asyncio.shield(self.gone)

    async def wait_closed(self, timeout_s: float = 10.0) -> None:
        async with asyncio.timeout(timeout_s):
            await asyncio.shield(self.closed)

    # --- the script ------------------------------------------------------------------------------------

    def start(self, host: MediaHost, media: MediaContext | None) -> None:
        """Run the behaviour (if it is not manual) as a task owned by this agent."""
        if self.behaviour.kind is AgentKind.MANUAL:
            return
        self._script = asyncio.create_task(self._run(host, media), name=f"agent-{self.endpoint}-script")

    async def _run(self, host: MediaHost, media: MediaContext | None) -> None:
        try:
            await self._perform(host, media)
        except (AriNotFound, AriConflict) as exc:
            if not self.gone.done():  # a request failed while the call was still there: worth a look
                self.script_error = exc
                log.warning("agent %s: script stopped: %s", self.endpoint, exc)
        except asyncio.CancelledError:
            raise
        except Exception as exc:
            self.script_error = exc
            log.exception("agent %s: script failed", self.endpoint)
            await self.hangup(reason="failure")

    async def _hold(self, ms: int) -> bool:
        """Wait ``ms``; False if the call went away meanwhile (a behaviour's own delay, not a sync point)."""
        if ms > 0 and not self.gone.done():
            hung_up = asyncio.shield(self.gone)
            try:
                await asyncio.wait([hung_up], timeout=ms / 1000)
            finally:
                hung_up.cancel()
        return not self.gone.done()

    async def _perform(self, host: MediaHost, media: MediaContext | None) -> None:
        behaviour = self.behaviour
        kind = behaviour.kind
        if kind is AgentKind.REFUSE:
            if behaviour.refuse_after_ms > 0:
                await self.ring()
                if not await self._hold(behaviour.refuse_after_ms):
                    return
            await self.hangup(reason=behaviour.refuse or "busy")
            return
        await self.ring()
        if kind is AgentKind.NEVER_ANSWER:
            return  # the pbx's ring timeout ends it; the teardown runs on the hangup
        lines = await self._render(behaviour.say)  # while ringing, so nothing waits for synthesis after the answer
        if not await self._hold(behaviour.answer_after_ms or 0):
            return
        await self.answer()
        answered = asyncio.get_running_loop().time()
        if media is not None:
            await self.attach_media(host, media)
        cue = None if behaviour.hangup_after_ms is None else behaviour.hangup_after_ms / 1000
        deadline = asyncio.timeout_at(None if cue is None else answered + cue)
        try:
            async with deadline:
                await self._say_lines(behaviour, lines)
                if behaviour.hangup_after_lines and await self._hold(behaviour.pause_ms):
                    await self.hangup()
                    return
                if cue is not None:
                    await asyncio.shield(self.gone)  # until the cue (or the pbx hangs up first)
        except TimeoutError:
            if not deadline.expired():
                raise
        if cue is not None:
            await self.hangup()  # on cue; after a hangup from the pbx this only releases the media

    async def _render(self, texts: Sequence[str]) -> list[Samples]:
        if not texts:
            return []
        if self.voice is None:
            raise RuntimeError(f"agent {self.endpoint} has lines to say but no voice")
        voice = self.voice
        return list(await asyncio.gather(*(voice.prompt(text) for text in texts)))

    async def _say_lines(self, behaviour: AgentBehaviour, lines: list[Samples]) -> None:
        for index, (text, samples) in enumerate(zip(behaviour.say, lines, strict=True)):
            if not await self._hold(behaviour.say_after_ms if index == 0 else behaviour.pause_ms):
                return
            await self.speak(samples)
            if self.gone.done():
                return
            self.lines_said.append(text)
        if not self.said.done():
            self.said.set_result(None)

    # --- teardown --------------------------------------------------------------------------------------

    async def close(self) -> None:
        """The agent's one teardown: stop the script, hang up its channel if it is still there, stop its media
        leg and release the ledger. Safe from any task, any number of times."""
        if self._teardown is None:
            self._teardown = asyncio.create_task(self._close(asyncio.current_task()),
                                                 name=f"agent-{self.endpoint}-teardown")
        await asyncio.shield(self._teardown)

    async def _close(self, requested_by: asyncio.Task[object] | None) -> None:
        script = self._script
        if script is not None and script is not requested_by and not script.done():
            # Stopped from outside (a hangup from the pbx, the test, Carrier.stop()); a script that hangs up
            # on its own cue is waiting for this teardown and ends by itself.
            script.cancel()
            await asyncio.wait([script])  # its end, without taking on its cancellation
        if not self.gone.done():
            with contextlib.suppress(AriNotFound, AriConflict):
                await self.client.send(ari.hangup(self.channel_id, reason=self.hangup_reason or "normal"))
        errors: list[str] = []
        try:
            await self.release_media()
        except Exception as exc:  # the agent's channel is gone either way; say what could not be removed
            errors.append(str(exc))
        settle_failed(self.said, "the agent hung up before its lines were said")
        settle_failed(self.listening, "the agent hung up without listening")
        settle_failed(self.answered, "the agent hung up before answering")
        if errors:
            log.warning("agent %s: teardown: %s", self.endpoint, "; ".join(errors))
        if not self.closed.done():
            self.closed.set_result(None)
