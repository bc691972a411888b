"""The CallManager: one Session per inbound caller channel, events routed by channel and resource id,
resync after every (re)connect of the event stream.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
from collections.abc import Coroutine, Iterable
from dataclasses import dataclass

from asterisk_agent.admission.limits import limits_for
from asterisk_agent.admission.slots import LocalAdmission, Slot
from asterisk_agent.ami.availability import AgentAvailability
from asterisk_agent.ari import requests as ari
from asterisk_agent.ari.client import AriClient
from asterisk_agent.ari.errors import AriError, AriNotFound
from asterisk_agent.ari.events import (
    Channel,
    Event,
    PlaybackFinished,
    PlaybackStarted,
    StasisStart,
    channel_id_of,
)
from asterisk_agent.ari.ids import IdFactory
from asterisk_agent.calls.records import CallRecords, session_id_for
from asterisk_agent.calls.session import EndReason, Session, SessionOptions, fixed_replies
from asterisk_agent.config import OverflowConfig, Settings
from asterisk_agent.dialog.driver import (
    REWORD_WAIT_MS,
    FlowSetup,
    IntegrationCall,
    ReplyRewording,
    SlotFiller,
    flow_scorer,
)
from asterisk_agent.dialog.engine import CallIntegration, IntegrationAnswer
from asterisk_agent.dialog.flow import Flow
from asterisk_agent.dialog.integration import integration_call
from asterisk_agent.dialog.intents import IntentScoring
from asterisk_agent.dialog.language_model import language_model_filler, language_model_rewording
from asterisk_agent.integrations.client import IntegrationClient
from asterisk_agent.media.leg import MediaContext
from asterisk_agent.media.pacer import PacingClock
from asterisk_agent.media.transport import PortPool
from asterisk_agent.speech.endpointer import EndpointerConfig
from asterisk_agent.speech.recognition import UtteranceRecognition, make_recognition
from asterisk_agent.speech.stt.grammars import GrammarSpec
from asterisk_agent.speech.vad import VadConfig
from asterisk_agent.speech.voice import Voice

log = logging.getLogger(__name__)


@dataclass(frozen=True)
class AgiAdmission:
    status: str  # admitted, refused, unavailable
    token: str = ""
    overflow: OverflowConfig | None = None

INBOUND = "inbound"


async def _no_backend(action: CallIntegration) -> IntegrationAnswer:
    """A flow without integrations never calls one (config validation sees to it)."""
    raise RuntimeError(f"no integration client for {action.integration!r}")


def stasis_args(channel: Channel, app: str) -> tuple[str, ...] | None:
    """The Stasis arguments of a channel sitting in ``app``, read from its dialplan location (for resync)."""
    location = channel.dialplan
    if location.app_name.lower() != "stasis":
        return None
    parts = [part.strip() for part in location.app_data.split(",")]
    if not parts or parts[0] != app:
        return None
    return tuple(parts[1:])


class CallManager:
    def __init__(self, client: AriClient, settings: Settings, *, ids: IdFactory | None = None) -> None:
        self.client = client
        self.settings = settings
        self.app = settings.ari.app
        self.ids = ids or IdFactory(settings.instance_id)
        self.sessions: dict[str, Session] = {}  # caller channel id -> session
        self.finished: list[Session] = []
        self.unroutable = 0
        self.resyncs = 0
        self._accepting = True
        self._tasks: set[asyncio.Task[None]] = set()
        self._idle = asyncio.Event()
        self._idle.set()
        self.media: MediaContext | None = None
        self.voice: Voice | None = None  # loaded by the worker before calls arrive (see load_speech)
        self.recognition: UtteranceRecognition | None = None
        self._prerender: asyncio.Task[None] | None = None
        # Admission: every live session's slot token, by caller channel id; leases renewed by one task.
        self.admission = LocalAdmission()
        self.slots: dict[str, str] = {}
        self.records: CallRecords | None = None  # set by the worker once the store is open
        self.availability: AgentAvailability | None = None  # set by the worker when AMI is on
        self._lease_keeper: asyncio.Task[None] | None = None
        # One client for every flow's backends (limits are per endpoint, shared by all calls); flows per account.
        self.integrations = IntegrationClient(settings.integrations) if settings.integrations else None
        self.flows: dict[str, FlowSetup] = {}  # filled by load_flows, before the first call
        self._flow_parts: dict[str, tuple[Flow, IntegrationCall, SlotFiller | None, ReplyRewording | None, int]] = {}
        for name, account in settings.accounts.items():
            flow = settings.flow_of(name)
            if flow is not None:
                call = integration_call(self.integrations, account.integrations) if self.integrations else _no_backend
                model = account.language_model
                filler, rewording, reword_wait_ms = None, None, REWORD_WAIT_MS
                if model is not None and self.integrations is not None:
                    if model.read_slots:
                        filler = language_model_filler(self.integrations, model.endpoint, model.model)
                    if model.reword_replies:
                        rewording = language_model_rewording(self.integrations, model.endpoint, model.model)
                    reword_wait_ms = model.reword_wait_ms
                self._flow_parts[name] = (flow, call, filler, rewording, reword_wait_ms)
        if settings.media.enabled:
            conf = settings.media
            self.media = MediaContext(
                pool=PortPool(conf.bind_address, conf.port_min, conf.port_max), clock=PacingClock(), app=self.app,
                advertised_address=conf.advertised_address, codec=conf.codec, jitter_depth=conf.jitter_depth_frames,
                vad=VadConfig(**settings.speech.vad.model_dump()),
                endpointer=EndpointerConfig(**settings.speech.endpointer.model_dump()),
            )

    async def load_flows(self) -> None:
        """Every account's flow with its intent scorer, before the first call: the sentence model loads once per
        process and each flow's examples are embedded, in a thread (the loop goes on); accounts running the same
        intents share one scorer."""
        scorers: dict[tuple[object, ...], IntentScoring] = {}
        for name, (flow, call, filler, rewording, reword_wait_ms) in self._flow_parts.items():
            if name in self.flows:
                continue
            key = (flow.thresholds.reprompt, *((intent, *spec.examples) for intent, spec in flow.intents.items()))
            if key not in scorers:
                scorers[key] = await asyncio.to_thread(flow_scorer, flow)
            self.flows[name] = FlowSetup.of(flow, call, filler, rewording, reword_wait_ms, scorer=scorers[key])

    async def load_speech(self) -> None:
        """With media on, load the agent's voice and ears off the loop before the first call; the pieces every
        call says are then rendered in the background (:meth:`wait_prerendered`)."""
        if self.media is None:
            return
        if self.voice is None:
            tts = self.settings.speech.tts
            self.voice = await Voice.load(tts.engine, threads=tts.threads, workers=tts.workers)
        if self.recognition is None and self.settings.speech.stt.engine != "none":
            recognition = make_recognition(self.settings.speech.stt)
            await recognition.start()
            self.recognition = recognition
        if self._prerender is None:
            names = sorted({name for account in self.settings.accounts.values() for name in account.names})
            texts = fixed_replies(names if self.recognition is not None else [])
            self._prerender = asyncio.get_running_loop().create_task(self._render(texts), name="prerender")

    async def wait_prerendered(self) -> None:
        if self._prerender is not None:
            await asyncio.shield(self._prerender)

    async def _render(self, texts: list[str]) -> None:
        """Fixed replies rendered in the background, so the first caller to need one does not wait for it."""
        assert self.voice is not None
        for text in texts:
            try:
                await self.voice.prompt(text)
            except Exception:  # a reply that fails here is rendered (or fails) when a call needs it
                log.exception("rendering a fixed reply failed")

    async def wait_idle(self, timeout_s: float = 10.0) -> None:
        """Until no session is live (every one has ended and torn down)."""
        async with asyncio.timeout(timeout_s):
            await self._idle.wait()

    # --- event stream hooks -----------------------------------------------------------------------------

    def handle(self, event: Event) -> None:
        log.debug("event %s for %s", event.type, channel_id_of(event))
        if isinstance(event, StasisStart):
            self._on_stasis_start(event)
            return
        session = self._owner(event)
        if session is not None:
            session.deliver(event)

    def disconnected(self) -> None:
        log.warning("event stream down: %d sessions wait for the resync", len(self.sessions))

    async def connected(self) -> None:
        try:
            await self.resync()
        except AriError as exc:
            log.error("resync failed: %s (next connect tries again)", exc)

    # --- routing ----------------------------------------------------------------------------------------

    def _owner(self, event: Event) -> Session | None:
        channel_id = channel_id_of(event)
        if channel_id is not None:
            session = self.sessions.get(channel_id)
            if session is not None:
                return session
            for session in self.sessions.values():
                if session.owns(channel_id):
                    return session
            return None
        if isinstance(event, PlaybackStarted | PlaybackFinished):
            for session in self.sessions.values():
                if session.owns(event.playback_id):
                    return session
        return None

    def _on_stasis_start(self, event: StasisStart) -> None:
        channel = event.channel
        if self.ids.owns(channel.id):
            session = self._owner(event)
            if session is not None:
                session.deliver(event)
            return  # one of ours (externalMedia, snoop, originated): never a caller
        if not event.args or event.args[0] != INBOUND:
            log.warning("StasisStart without 'inbound,<DID>' args (%s): ignored", ",".join(event.args))
            self.unroutable += 1
            return
        if channel.id in self.sessions:
            return  # already adopted during a resync
        did = event.args[1] if len(event.args) > 1 else channel.dialplan.exten
        token = event.args[2] if len(event.args) > 2 else ""  # a slot FastAGI admitted the call to
        self._start_session(channel, did, adopted=False, token=token)

    def _start_session(self, channel: Channel, did: str, *, adopted: bool, token: str = "") -> Session | None:
        if not self._accepting:
            self._spawn(self._send_on(channel.id, did), "send-on")
            return None
        account = self.settings.account_for(did)
        if account is None:
            log.warning("no account owns the dialled number; sent to the fallback")
            self._spawn(self._send_on(channel.id, did), "send-on")
            return None
        slot = self._admit(channel, did, account, token, adopted=adopted)
        if slot is None:
            return None
        conf = self.settings.accounts[account]
        timers = self.settings.timers
        options = SessionOptions(
            call_max_ms=timers.call_max_ms,
            answer_delay_ms=timers.answer_delay_ms,
            digit_timeout_ms=timers.digit_timeout_ms,
            teardown_timeout_ms=timers.teardown_timeout_ms,
            dtmf_duration_ms=timers.dtmf_duration_ms,
            dtmf_gap_ms=timers.dtmf_gap_ms,
            greeting=conf.greeting,
            digits_max=conf.digits_max,
            fallback_context=self.settings.fallback_context,
        )
        session = Session(
            client=self.client, ids=self.ids, options=options, caller=channel, did=did, account=account,
            adopted=adopted, on_end=self._on_session_end, media=self.media, voice=self.voice,
            recognition=self.recognition, introduction=GrammarSpec("introduction", (tuple(conf.names),
                                                                                    conf.number_digits)),
            flow=self.flows.get(account), records=self.records, consent_announcement=conf.consent_announcement,
            handoff_config=conf.handoff, availability=self.availability,
            id=session_id_for(channel.id),
        )
        if self.media is not None and not self.media.clock.running:
            self.media.clock.start()
        self.sessions[channel.id] = session
        self.slots[channel.id] = slot.token
        self._idle.clear()
        session.start()
        log.info("session %s started (account %s%s)", session.id, account, ", adopted" if adopted else "")
        return session

    def _on_session_end(self, session: Session) -> None:
        if self.recognition is not None:
            self.recognition.release(session.id)
        if self.sessions.get(session.caller.id) is session:
            del self.sessions[session.caller.id]
            self.admission.release(self.slots.pop(session.caller.id))
        self.finished.append(session)
        del self.finished[:-1000]
        if not self.sessions:
            self._idle.set()
            if self.media is not None:
                window = self.media.clock.stats.take_window()
                log.info("pacing since the last idle moment: %d intervals, deviation p50 %s ms p99 %s ms max %s ms, "
                         "%d stalls", window["intervals"], window["p50_ms"], window["p99_ms"], window["max_ms"],
                         window["stalls"])

    # --- admission ------------------------------------------------------------------------------------

    def _admit(self, channel: Channel, did: str, account: str, token: str, *, adopted: bool) -> Slot | None:
        """The call's slot, decided before anything answers: the slot FastAGI admitted it to (``token``), or
        a new one when every limit has room. A refused call gets its overflow policy; an adopted call (already
        answered, found after a restart) is counted even over its limits."""
        lease_ms = self.settings.admission.session_lease_ms
        if token:
            slot = self.admission.take_over(token, channel_id=channel.id, lease_ms=lease_ms)
            if slot is not None:
                self._keep_leases()
                return slot
            log.warning("slot token of an AGI admission unknown or expired: the call is admitted afresh")
        limits = limits_for(self.settings, account, did, channel.name)
        decision = self.admission.admit(limits, lease_ms=lease_ms, holder="session", channel_id=channel.id,
                                        force=adopted)
        if decision.slot is None:
            assert decision.refused_by is not None
            log.info("call refused by %s (%d at once): %s", decision.refused_by.key, decision.refused_by.maximum,
                     decision.refused_by.overflow.policy)
            self._spawn(self._overflow(channel.id, decision.refused_by.overflow), "overflow")
            return None
        self._keep_leases()
        return decision.slot

    def admit_before_stasis(self, did: str, channel_name: str, channel_id: str) -> AgiAdmission:
        """The FastAGI ``admit`` route's decision for a call still in the dialplan: a slot whose token the call
        carries into Stasis (counted once; its lease covers the way there), the overflow policy, or
        ``unavailable`` (stopping, or no account owns the number: the dialplan's fallback)."""
        account = self.settings.account_for(did) if self._accepting else None
        if account is None:
            return AgiAdmission("unavailable")
        limits = limits_for(self.settings, account, did, channel_name)
        decision = self.admission.admit(limits, lease_ms=self.settings.admission.agi_lease_ms, holder="agi",
                                        channel_id=channel_id)
        if decision.slot is None:
            assert decision.refused_by is not None
            log.info("call refused before Stasis by %s (%d at once): %s", decision.refused_by.key,
                     decision.refused_by.maximum, decision.refused_by.overflow.policy)
            return AgiAdmission("refused", overflow=decision.refused_by.overflow)
        return AgiAdmission("admitted", token=decision.slot.token)

    async def _overflow(self, channel_id: str, overflow: OverflowConfig) -> None:
        """A refused caller, still unanswered: busy, an announcement as early media, or sent to a human queue
        (the last two by the shipped ``agent-overflow`` context)."""
        with contextlib.suppress(AriNotFound):
            if overflow.policy == "busy":
                await self.client.send(ari.hangup(channel_id, reason="busy"))
                return
            if overflow.policy == "announce":
                await self.client.send(ari.set_channel_variable(channel_id, "AGENT_OVERFLOW_SOUND",
                                                                overflow.announcement))
            else:
                assert overflow.transfer_to is not None
                await self.client.send(ari.set_channel_variable(channel_id, "AGENT_OVERFLOW_DIAL",
                                                                overflow.transfer_to))
            await self.client.send(ari.continue_in_dialplan(channel_id, context=self.settings.overflow_context,
                                                            extension=overflow.policy, priority=1))

    def _keep_leases(self) -> None:
        """Live calls' slots are leases: renewed while the call lasts (one task, started with the first)."""
        if self._lease_keeper is None or self._lease_keeper.done():
            self._lease_keeper = asyncio.get_running_loop().create_task(self._renew_leases(), name="leases")

    async def _renew_leases(self) -> None:
        lease_ms = self.settings.admission.session_lease_ms
        while True:
            await asyncio.sleep(lease_ms / 3000)
            for token in list(self.slots.values()):
                self.admission.renew(token, lease_ms)

    async def _send_on(self, channel_id: str, did: str) -> None:
        with contextlib.suppress(AriNotFound):
            await self.client.send(
                ari.continue_in_dialplan(
                    channel_id, context=self.settings.fallback_context, extension=did, priority=1
                )
            )

    def _spawn(self, coro: Coroutine[object, object, None], name: str) -> None:
        task = asyncio.get_running_loop().create_task(coro, name=name)
        self._tasks.add(task)
        task.add_done_callback(self._tasks.discard)

    # --- resync -----------------------------------------------------------------------------------------

    async def resync(self) -> None:
        """Reconcile with what Asterisk has now: adopt callers without a session, end sessions whose caller
        is gone, remove resources of ours that no live session owns."""
        self.resyncs += 1
        channels = [Channel.from_json(raw) for raw in await self.client.channels()]
        present = {channel.id: channel for channel in channels}
        for caller_id, session in list(self.sessions.items()):
            if caller_id not in present:
                log.info("resync: session %s lost its caller while the stream was down", session.id)
                session.caller_left(EndReason.VANISHED)
        adopted = 0
        for channel in channels:
            if self.ids.owns(channel.id) or channel.id in self.sessions:
                continue
            args = stasis_args(channel, self.app)
            if args is None or not args or args[0] != INBOUND:
                continue
            did = args[1] if len(args) > 1 else channel.dialplan.exten
            if self._start_session(channel, did, adopted=True) is not None:
                adopted += 1
        owned = set().union(*(s.ledger.ids() for s in self.sessions.values())) if self.sessions else set()
        swept = await self._sweep(
            (c.id for c in channels if self.ids.owns(c.id) and c.id not in owned),
            (b["id"] for b in await self.client.bridges() if self.ids.owns(str(b.get("id", "")))
             and b["id"] not in owned),
        )
        log.info("resync: %d sessions live, %d adopted, %d leftovers removed", len(self.sessions), adopted, swept)

    async def _sweep(self, channel_ids: Iterable[str], bridge_ids: Iterable[str]) -> int:
        removed = 0
        for channel_id in list(channel_ids):
            removed += await self.client.delete_quietly(ari.hangup(channel_id, reason="normal"))
        for bridge_id in list(bridge_ids):
            removed += await self.client.delete_quietly(ari.destroy_bridge(bridge_id))
        return removed

    # --- shutdown ---------------------------------------------------------------------------------------

    async def shutdown(self, *, send_callers_on: bool = True) -> None:
        """End every session: callers go on to the dialplan's fallback (or are hung up), resources removed."""
        self._accepting = False
        if self._lease_keeper is not None:
            self._lease_keeper.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._lease_keeper
        sessions = list(self.sessions.values())
        await asyncio.gather(
            *(s.end(EndReason.WORKER_SHUTDOWN, continue_to_fallback=send_callers_on) for s in sessions),
            return_exceptions=True,
        )
        for task in list(self._tasks):
            with contextlib.suppress(asyncio.CancelledError, Exception):
                await task
        if self.media is not None:
            await self.media.clock.stop()
        if self._prerender is not None:
            self._prerender.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._prerender
        if self.voice is not None:
            self.voice.close()
        if self.recognition is not None:
            await self.recognition.close()
        if self.integrations is not None:
            await self.integrations.close()
