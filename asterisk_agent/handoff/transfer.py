"""A warm transfer through ARI bridges, as an explicit state machine owned by the caller's session.

    HOLDING ──> RINGING (one target after another) ──> WHISPERING ──> BRIDGED ──> ENDED
                   │ busy / no answer / failed on every target                 (caller or agent hung up)
                   └──> RETURNED (the caller is back with the agent's voice: the callback offer follows)

- HOLDING: the caller leaves the session's media bridge for a holding bridge of its own with music on hold.
- RINGING: a channel to the target is created in our Stasis app (its id is ours, so it is never taken for a
  caller), with the caller's number as caller id, and dialled with a ring timer. What Asterisk reports tells the
  results apart: the channel comes up (answered), or it is destroyed with a cause (17 busy; 18, 19 or the ring
  timer: no answer; anything else: failed).
- WHISPERING: the answered agent joins the media bridge, where the session's voice tells them who is calling
  and why; the caller, still on hold, hears none of it.
- BRIDGED: the caller joins the agent in the media bridge (which also carries the session's media leg, so the
  call goes on being recorded); hold music stops and the holding bridge goes.

Every channel and bridge is written into the session's ledger before it is created, so whatever ends the call
(the caller hanging up on hold, the agent leaving mid-whisper, the worker stopping) the session's one
teardown removes it.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import time
from collections.abc import Awaitable, Callable
from dataclasses import dataclass, field
from enum import Enum
from typing import Any

from asterisk_agent.ari import requests as ari
from asterisk_agent.ari.client import AriClient
from asterisk_agent.ari.errors import AriConflict, AriNotFound
from asterisk_agent.ari.events import ChannelDestroyed, ChannelStateChange, Dial, Event
from asterisk_agent.ari.ids import IdFactory
from asterisk_agent.calls.ledger import Kind, Ledger
from asterisk_agent.config import HandoffConfig

log = logging.getLogger(__name__)

CAUSE_BUSY = 17
CAUSE_REJECTED = 21  # the agent's phone declined the call: as good as busy
NO_ANSWER_CAUSES = frozenset({0, 18, 19})  # unknown (cancelled), no user responding, no answer
BUSY_DIALSTATUS = frozenset({"BUSY"})
NO_ANSWER_DIALSTATUS = frozenset({"NOANSWER"})


class TransferState(Enum):
    IDLE = "idle"
    HOLDING = "holding"
    RINGING = "ringing"
    WHISPERING = "whispering"
    BRIDGED = "bridged"
    RETURNED = "returned"  # no agent: the caller is back with the session
    ENDED = "ended"


class AgentResult(Enum):
    ANSWERED = "answered"
    BUSY = "busy"
    NO_ANSWER = "no_answer"
    FAILED = "failed"
    SKIPPED = "skipped"  # known to be busy or paused: never rung


@dataclass
class Attempt:
    target: str
    result: AgentResult | None = None
    cause: int | None = None
    ring_ms: float | None = None


@dataclass
class TransferRecord:
    """The handoff's outcome for the session record: who answered and how long each part took."""

    reason: str
    attempts: list[Attempt] = field(default_factory=list)
    answered_by: str | None = None
    hold_ms: float | None = None  # from hold music to joining the agent (or back to the session)
    whisper_ms: float | None = None
    bridged_ms: float | None = None  # how long caller and agent talked
    ended_by: str | None = None  # caller, agent
    states: list[tuple[str, float]] = field(default_factory=list)  # (state, ms since the transfer began)

    @property
    def outcome(self) -> str:
        if self.answered_by is not None:
            return "bridged"
        results = {attempt.result for attempt in self.attempts}
        for result in (AgentResult.BUSY, AgentResult.NO_ANSWER, AgentResult.FAILED):
            if result in results:
                return str(result.value)
        return "no_agent"


class _AgentLeg:
    """One ringing agent channel: the events that decide how the attempt ended."""

    def __init__(self, channel_id: str) -> None:
        self.channel_id = channel_id
        loop = asyncio.get_running_loop()
        self.answered: asyncio.Future[None] = loop.create_future()
        self.ended: asyncio.Future[int] = loop.create_future()  # the hangup cause
        self.dialstatus: str | None = None

    def on_event(self, event: Event) -> None:
        if isinstance(event, ChannelStateChange) and event.channel.state == "Up":
            if not self.answered.done():
                self.answered.set_result(None)
        elif isinstance(event, Dial) and event.dialstatus:
            self.dialstatus = event.dialstatus
        elif isinstance(event, ChannelDestroyed) and not self.ended.done():
            # The destruction carries the cause that tells the outcome apart (a hangup request before it may
            # say 32 where the channel then ends with 19, no answer).
            self.ended.set_result(event.cause)


Whisper = Callable[[str], Awaitable[None]]
Available = Callable[[str], bool | None]  # False: busy or paused, never ring; None: unknown


class WarmTransfer:
    def __init__(self, *, client: AriClient, ids: IdFactory, ledger: Ledger, app: str, caller_channel: str,
                 caller_number: str, caller_name: str, media_bridge: str, config: HandoffConfig, reason: str,
                 summary: str, whisper: Whisper, stasis_started: Callable[[str], Awaitable[None]],
                 available: Available | None = None,
                 on_ringing: Callable[[str], None] | None = None,
                 on_answered: Callable[[str], None] | None = None) -> None:
        self.client, self.ids, self.ledger, self.app = client, ids, ledger, app
        self.caller_channel, self.caller_number, self.caller_name = caller_channel, caller_number, caller_name
        self.media_bridge = media_bridge
        self.config = config
        self.whisper = whisper
        self.summary = summary  # what the agent is told before the caller joins
        self.stasis_started = stasis_started
        self.available = available
        self.on_ringing = on_ringing
        self.on_answered = on_answered
        self.state = TransferState.IDLE
        self.record = TransferRecord(reason)
        self.holding_bridge: str | None = None
        self.agent: _AgentLeg | None = None
        self._began = time.monotonic()
        self._bridged_at = self._began

    # --- events from the session --------------------------------------------------------------------------

    def owns(self, channel_id: str | None) -> bool:
        return channel_id is not None and self.agent is not None and channel_id == self.agent.channel_id

    def deliver(self, event: Event) -> None:
        if self.agent is not None:
            self.agent.on_event(event)

    # --- the transfer ---------------------------------------------------------------------------------------

    def _enter(self, state: TransferState) -> None:
        self.state = state
        self.record.states.append((state.value, round((time.monotonic() - self._began) * 1000, 1)))
        log.info("handoff %s", state.value)

    async def run(self) -> TransferRecord:
        """Hold, ring each target in turn, whisper, bridge; returns when the caller is bridged (then
        :meth:`wait_ended`) or back with the session (no agent)."""
        await self._hold()
        held_at = time.monotonic()
        for target in self.config.targets:
            attempt = Attempt(target)
            self.record.attempts.append(attempt)
            if self.available is not None and self.available(target) is False:
                attempt.result = AgentResult.SKIPPED
                continue
            if await self._ring(attempt):
                if await self._whisper_to_agent():
                    await self._bridge()
                    self.record.hold_ms = round((time.monotonic() - held_at) * 1000, 1)
                    return self.record
                attempt.result = AgentResult.FAILED  # the agent left during the whisper
                self.record.answered_by = None
        await self._return_caller()
        self.record.hold_ms = round((time.monotonic() - held_at) * 1000, 1)
        return self.record

    async def _hold(self) -> None:
        self._enter(TransferState.HOLDING)
        self.holding_bridge = self.ids.new("hb")
        self.ledger.record(Kind.BRIDGE, self.holding_bridge, "holding-bridge")
        await self.client.send(ari.create_bridge(self.holding_bridge, bridge_type="holding"))
        await self.client.send(ari.remove_channel_from_bridge(self.media_bridge, self.caller_channel))
        await self.client.send(ari.add_channel_to_bridge(self.holding_bridge, self.caller_channel))
        await self.client.send(ari.start_bridge_moh(self.holding_bridge, self.config.moh_class))

    async def _ring(self, attempt: Attempt) -> bool:
        """Ring one target; True once it answered (the agent leg is then ``self.agent``)."""
        self._enter(TransferState.RINGING)
        channel_id = self.ids.new("ag")
        self.ledger.record(Kind.CHANNEL, channel_id, "agent")
        leg = _AgentLeg(channel_id)
        self.agent = leg
        started = self.stasis_started(channel_id)
        variables = {"CALLERID(num)": self.caller_number or "anonymous",
                     "CALLERID(name)": self.caller_name or self.caller_number or "anonymous"}
        began = time.monotonic()
        try:
            await self.client.send(ari.create_channel(attempt.target, channel_id=channel_id, app=self.app,
                                                      app_args="handoff", variables=variables))
            await asyncio.wait_for(started, 5)
            # ``caller``: the agent's phone shows the caller's number (Asterisk copies it to the connected line).
            await self.client.send(ari.dial(channel_id, caller=self.caller_channel,
                                            timeout_s=max(1, self.config.ring_ms // 1000)))
            if self.on_ringing is not None:
                self.on_ringing(attempt.target)
            waiting: list[asyncio.Future[Any]] = [leg.answered, leg.ended]
            done, _ = await asyncio.wait(waiting, timeout=self.config.ring_ms / 1000 + 2,
                                         return_when=asyncio.FIRST_COMPLETED)
        except (AriNotFound, AriConflict, TimeoutError) as exc:
            log.warning("handoff: the agent leg could not be placed: %s", type(exc).__name__)
            done = set()
            attempt.result = AgentResult.FAILED
        attempt.ring_ms = round((time.monotonic() - began) * 1000, 1)
        if leg.answered in done and not leg.ended.done():
            attempt.result = AgentResult.ANSWERED
            self.record.answered_by = attempt.target
            if self.on_answered is not None:
                self.on_answered(attempt.target)
            return True
        cause = leg.ended.result() if leg.ended.done() else None
        attempt.cause = cause
        if attempt.result is None:
            attempt.result = self._result_of(cause, leg.dialstatus)
        await self._drop_agent(leg)
        log.info("handoff: %s", attempt.result.value)
        return False

    @staticmethod
    def _result_of(cause: int | None, dialstatus: str | None) -> AgentResult:
        if dialstatus in BUSY_DIALSTATUS or cause in (CAUSE_BUSY, CAUSE_REJECTED):
            return AgentResult.BUSY
        if cause is None or dialstatus in NO_ANSWER_DIALSTATUS or cause in NO_ANSWER_CAUSES:
            return AgentResult.NO_ANSWER  # no cause: our ring timer ran out first
        return AgentResult.FAILED

    async def _drop_agent(self, leg: _AgentLeg) -> None:
        with contextlib.suppress(AriNotFound, AriConflict):
            await self.client.send(ari.hangup(leg.channel_id, reason="normal"))
        self.ledger.mark_released(leg.channel_id)
        self.agent = None

    async def _whisper_to_agent(self) -> bool:
        """The agent alone hears who is calling and why; False when the agent hung up meanwhile."""
        assert self.agent is not None
        leg = self.agent
        self._enter(TransferState.WHISPERING)
        began = time.monotonic()
        try:
            await self.client.send(ari.add_channel_to_bridge(self.media_bridge, leg.channel_id))
        except (AriNotFound, AriConflict):
            return False
        if self.config.whisper:
            whisper: asyncio.Future[Any] = asyncio.ensure_future(self.whisper(self.summary))
            waiting: list[asyncio.Future[Any]] = [whisper, leg.ended]
            done, _ = await asyncio.wait(waiting, return_when=asyncio.FIRST_COMPLETED)
            if whisper not in done:
                whisper.cancel()
                with contextlib.suppress(asyncio.CancelledError, Exception):
                    await whisper
            else:
                whisper.result()
        self.record.whisper_ms = round((time.monotonic() - began) * 1000, 1)
        if leg.ended.done():
            await self._drop_agent(leg)
            return False
        return True

    async def _bridge(self) -> None:
        assert self.holding_bridge is not None
        self._enter(TransferState.BRIDGED)
        await self._leave_hold()
        await self.client.send(ari.add_channel_to_bridge(self.media_bridge, self.caller_channel))
        self._bridged_at = time.monotonic()

    async def _leave_hold(self) -> None:
        bridge = self.holding_bridge
        if bridge is None:
            return
        with contextlib.suppress(AriNotFound, AriConflict):
            await self.client.send(ari.stop_bridge_moh(bridge))
        with contextlib.suppress(AriNotFound, AriConflict):
            await self.client.send(ari.remove_channel_from_bridge(bridge, self.caller_channel))
        with contextlib.suppress(AriNotFound):
            await self.client.send(ari.destroy_bridge(bridge))
        self.ledger.mark_released(bridge)
        self.holding_bridge = None

    async def _return_caller(self) -> None:
        self._enter(TransferState.RETURNED)
        await self._leave_hold()
        await self.client.send(ari.add_channel_to_bridge(self.media_bridge, self.caller_channel))

    async def wait_agent_gone(self) -> None:
        """While bridged: until the agent hangs up (the caller hanging up ends the session instead)."""
        assert self.agent is not None
        await asyncio.shield(self.agent.ended)
        self.record.ended_by = "agent"
        self.record.bridged_ms = round((time.monotonic() - self._bridged_at) * 1000, 1)
        self._enter(TransferState.ENDED)

    def caller_left(self) -> None:
        if self.state is TransferState.BRIDGED and self.record.ended_by is None:
            self.record.ended_by = "caller"
            self.record.bridged_ms = round((time.monotonic() - self._bridged_at) * 1000, 1)
        self._enter(TransferState.ENDED)
