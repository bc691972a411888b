"""One caller's session: its state, its tasks and a ledger of every Asterisk resource it creates.

At this stage a session answers, greets the caller with a prompt built from its own state (the dialled number
and a per-call token), collects DTMF digits, reads them back (as speech and as DTMF the caller's side can
check), and ends after ``call_max_ms`` or when the caller hangs up. Every exit reaches :meth:`Session.end`,
which is idempotent.

With speech (a media leg, a voice and a recognition service) the caller may also talk: every utterance the
endpointer cuts is recognised off the loop, read with the account's introduction grammar ("my name is Alice and
my number is 4 2 7 1") and answered with the caller's own name and number; anything else gets a re-prompt. Each
turn lands in :attr:`Session.transcript` with its offsets into the recording tap, its confidence and timings.
"""

from __future__ import annotations

import asyncio
import contextlib
import datetime as dt
import logging
import math
import secrets
import time
import uuid
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from enum import Enum

import numpy as np

from asterisk_agent.ami.availability import AgentAvailability
from asterisk_agent.ari import requests as ari
from asterisk_agent.ari.client import AriClient
from asterisk_agent.ari.errors import AriConflict, AriError, AriNotFound
from asterisk_agent.ari.events import (
    Channel,
    ChannelDestroyed,
    ChannelDtmfReceived,
    ChannelHangupRequest,
    Event,
    PlaybackFinished,
    StasisEnd,
    StasisStart,
    channel_id_of,
)
from asterisk_agent.ari.ids import IdFactory
from asterisk_agent.calls.ledger import Kind, Ledger
from asterisk_agent.calls.records import CallRecords
from asterisk_agent.calls.turns import TurnDetector
from asterisk_agent.config import HandoffConfig
from asterisk_agent.dialog.driver import CallerInput, DialogDriver, FlowSetup, Keys, Silence, Utterance
from asterisk_agent.dialog.engine import DialogRun, Escalate, Listen
from asterisk_agent.handoff.callback import CallbackRequest, offer_callback
from asterisk_agent.handoff.summary import agent_summary
from asterisk_agent.handoff.transfer import WarmTransfer
from asterisk_agent.media.frames import FRAME_MS, SAMPLE_RATE
from asterisk_agent.media.leg import MediaContext, MediaLeg, Samples
from asterisk_agent.media.recorder import CallRecorder
from asterisk_agent.speech.endpointer import BargeIn, SpeechDiscarded, SpeechEnded, SpeechPaused, SpeechStarted
from asterisk_agent.speech.recognition import UtteranceRecognition
from asterisk_agent.speech.stt.base import Recognition
from asterisk_agent.speech.stt.grammars import DATES_HINT, GrammarSpec, Introduction
from asterisk_agent.speech.voice import Voice

log = logging.getLogger(__name__)


def _spaced(digits: str) -> str:
    """Digits read one by one with a short pause between them, as people read numbers on the phone (and so
    a repeated digit is not heard as one long one): "4271" -> "4, 2, 7, 1"."""
    return ", ".join(digits)


class CallState(Enum):
    NEW = "new"
    ANSWERING = "answering"
    GREETING = "greeting"
    COLLECTING = "collecting"  # waiting for the caller: keys or speech
    READING_BACK = "reading_back"
    RECOGNIZING = "recognizing"
    REPLYING = "replying"
    HANDING_OFF = "handing_off"
    ENDING = "ending"
    ENDED = "ended"


class EndReason(Enum):
    CALLER_HANGUP = "caller_hangup"
    MAX_DURATION = "max_duration"
    WORKER_SHUTDOWN = "worker_shutdown"
    VANISHED = "vanished"  # the channel was gone when the worker resynced
    COMPLETED = "completed"  # the flow ended the call (its outcome is in the dialog record)
    ESCALATED = "escalated"  # the flow handed the caller on (until handoff exists: said so and hung up)
    ERROR = "error"


@dataclass(frozen=True)
class SessionOptions:
    call_max_ms: int
    answer_delay_ms: int
    digit_timeout_ms: int
    teardown_timeout_ms: int
    dtmf_duration_ms: int
    dtmf_gap_ms: int
    greeting: str
    digits_max: int
    fallback_context: str


@dataclass
class SessionEvent:
    at: float  # seconds since the session started
    what: str
    detail: str = ""


class _CallerGone(Exception):
    pass


SORRY_NO_MATCH = "Sorry, I did not catch that. Please say your name and your number."
SORRY_FAILED = "Sorry, I could not make that out just now. Please say your name and your number again."


GREETING = "Hello, this is the voice agent."
ASK_INTRODUCTION = "Please say your name and your number."
PIECE_PAUSE = np.zeros(SAMPLE_RATE * 200 // 1000, dtype=np.int16)  # between cached pieces, as between sentences


_DIGIT_WORDS = ("zero", "one", "two", "three", "four", "five", "six", "seven", "eight", "nine")


def _digit_pieces(digits: str) -> list[str]:
    """A number read digit by digit, each digit its own cached piece, spelled as a word with a comma (piper's
    "2." alone was heard as "tune")."""
    return [f"{_DIGIT_WORDS[int(digit)]}," for digit in digits if digit.isdigit()]


def fixed_replies(names: list[str]) -> list[str]:
    """Every piece the agent says that recurs across calls, to render once before callers need them."""
    return [GREETING, ASK_INTRODUCTION, "Your call number is", "You entered",
            *_digit_pieces("0123456789"), SORRY_NO_MATCH, SORRY_FAILED, *(f"Thank you {name}." for name in names)]


def grammar_for(listen: Listen) -> GrammarSpec | None:
    """The grammar a state's expected answer has where one exists (a grammar engine decodes with it; open
    recognition takes its hint); ``None`` for open answers and intents."""
    if listen.confirming:  # yes or no; open recognition also hears a corrected day or time ("No, Wednesday")
        return GrammarSpec("yes_no", ("yes_no", DATES_HINT if listen.slot_type in ("date", "time") else ""))
    if listen.slot_type == "yes_no":
        return GrammarSpec("yes_no")
    if listen.slot_type in ("date", "time"):
        return GrammarSpec("dates_and_times")
    if listen.slot_type == "digits":
        return GrammarSpec("digits", (1, max(1, listen.keys_max)))
    if listen.slot_type == "name" and listen.choices:
        return GrammarSpec("names", (listen.choices,))
    return None


@dataclass
class _SessionSide:
    """The session as a flow's call side."""

    session: Session

    async def say(self, text: str, *, fixed: bool) -> None:
        await self.session._flow_say(text, fixed=fixed)

    async def listen(self, listen: Listen) -> CallerInput:
        return await self.session._flow_listen(listen)

    def escalated(self, escalation: Escalate) -> None:
        self.session._flow_escalated(escalation)


def _retrieve(task: asyncio.Task[Recognition]) -> None:
    """An early recognition nobody awaits (dropped, or the call ended) must not log "never retrieved"."""
    if not task.cancelled():
        task.exception()


PREROLL_FRAMES = 10  # audio kept before the endpointer's first speech frame (200 ms): soft word onsets
TAIL_FRAMES = 10  # and after its last speech frame


@dataclass(frozen=True)
class HeardUtterance:
    """The endpointer ended a caller's turn (put on the session's queue from the media tick)."""

    start_frame: int
    last_frame: int
    decided_frame: int
    decided_at: float  # time.monotonic() of the endpoint decision
    forced: bool = False
    early: asyncio.Task[Recognition] | None = None  # recognition started at the pause before the endpoint


@dataclass
class Turn:
    """One turn of the conversation. ``start_ms``/``end_ms`` are offsets into the recording tap. A caller's
    turn carries what was recognised; an agent's what it said and, answering a caller, how long it took from
    the endpoint decision to recognition (``recognize_ms``) and to its first reply audio (``reply_ms``)."""

    speaker: str  # "caller" or "agent"
    text: str
    start_ms: int
    end_ms: int | None = None
    confidence: float | None = None
    engine: str | None = None
    recognize_ms: float | None = None
    reply_ms: float | None = None
    cut: bool = False  # an agent turn the caller talked over
    error: str | None = None  # the recogniser failed on this caller turn
    early: bool = False  # recognition of this caller turn started at a pause, before the endpoint


@dataclass
class Session:
    client: AriClient
    ids: IdFactory
    options: SessionOptions
    caller: Channel
    did: str
    account: str
    adopted: bool = False
    on_end: Callable[[Session], None] | None = None
    media: MediaContext | None = None
    voice: Voice | None = None  # with media: prompts and replies spoken by our TTS through the media leg
    recognition: UtteranceRecognition | None = None  # with media and voice: the caller may talk
    introduction: GrammarSpec | None = None  # how this account's callers say who they are
    flow: FlowSetup | None = None  # the account's dialog flow: with it the call runs the flow
    records: CallRecords | None = None  # where the call's record and recording go
    consent_announcement: str | None = None  # said before the recording starts
    handoff_config: HandoffConfig | None = None  # where an escalated caller goes (None: told so, then hung up)
    availability: AgentAvailability | None = None  # which agents are free (AMI); None: ring without asking

    id: str = field(default_factory=lambda: uuid.uuid4().hex)
    token: str = field(default_factory=lambda: f"{secrets.randbelow(10_000):04d}")
    state: CallState = CallState.NEW
    digits: str = ""
    readbacks: list[str] = field(default_factory=list)
    history: list[SessionEvent] = field(default_factory=list)
    end_reason: EndReason | None = None
    setup_ms: float | None = None
    ledger: Ledger = field(default_factory=Ledger)
    media_leg: MediaLeg | None = None
    turns: TurnDetector | None = None
    utterances: list[tuple[int, int]] = field(default_factory=list)  # (first, last) speech frame of each turn
    barge_ins: list[tuple[int, int]] = field(default_factory=list)  # (frame, reply frames cut)
    transcript: list[Turn] = field(default_factory=list)
    dialog: DialogRun | None = None  # the flow's record of this call: turns, events, outcome
    started_at: dt.datetime = field(default_factory=lambda: dt.datetime.now(dt.UTC))
    recorder: CallRecorder | None = None  # the call's two-channel recording, fed on the media tick
    transfer: WarmTransfer | None = None  # a warm transfer under way (or done)
    callback: CallbackRequest | None = None  # what the caller asked for when nobody was free

    def __post_init__(self) -> None:
        self._started = time.monotonic()
        self._events: asyncio.Queue[Event | HeardUtterance] = asyncio.Queue()
        self._keys_waiting = 0  # caller keys in the queue, unread
        self._playbacks: dict[str, asyncio.Future[object]] = {}
        self._key = asyncio.Event()  # set while a caller's key waits in the queue unread
        self._stasis_waiters: dict[str, asyncio.Future[None]] = {}
        self._barged = asyncio.Event()  # the caller talked over the reply (set from the media tick)
        self._early: tuple[tuple[int, int], asyncio.Task[Recognition]] | None = None
        self._grammar: GrammarSpec | None = self.introduction  # what the caller is expected to say now
        self._caller_speaking = False
        self._handing_off = False
        self._claims: set[str] = set()  # agents claimed for ringing (released once the transfer decided)
        self._task: asyncio.Task[None] | None = None
        self._ended = asyncio.Event()
        self._ending = False
        self._caller_gone = False
        self._caller_resource = self.ledger.record(Kind.CHANNEL, self.caller.id, "caller")

    # --- ownership --------------------------------------------------------------------------------------

    def start(self) -> asyncio.Task[None]:
        if self._task is None:
            if self.records is not None:
                self.records.begin(self)
            self._task = asyncio.create_task(self._run(), name=f"session-{self.id}")
        return self._task

    async def wait_ended(self) -> None:
        await self._ended.wait()

    @property
    def ended(self) -> bool:
        return self._ended.is_set()

    def owns(self, resource_id: str) -> bool:
        return self.ledger.holds(resource_id)

    def note(self, what: str, detail: str = "") -> None:
        self.history.append(SessionEvent(round(time.monotonic() - self._started, 4), what, detail))

    # --- events -----------------------------------------------------------------------------------------

    def deliver(self, event: Event) -> None:
        """Called by the CallManager for every event about this session's channels or playbacks."""
        if isinstance(event, StasisStart):
            started = self._stasis_future(event.channel.id)
            if not started.done():
                started.set_result(None)
            return
        if self.transfer is not None and self.transfer.owns(channel_id_of(event)):
            self.transfer.deliver(event)  # the agent leg: ringing, answered, busy, gone
            return
        if isinstance(event, PlaybackFinished):
            waiter = self._playbacks.pop(event.playback_id, None)
            self.ledger.mark_released(event.playback_id)
            if waiter is not None and not waiter.done():
                waiter.set_result(event.state)
            return
        if isinstance(event, ChannelHangupRequest | StasisEnd | ChannelDestroyed):
            if event.channel.id == self.caller.id:
                self.caller_left()
            return
        if isinstance(event, ChannelDtmfReceived) and event.channel.id == self.caller.id:
            self._keys_waiting += 1
            self._key.set()
        self._events.put_nowait(event)

    async def _next_input(self) -> Event | HeardUtterance:
        event = await self._events.get()
        if isinstance(event, ChannelDtmfReceived) and event.channel.id == self.caller.id:
            self._keys_waiting -= 1
            if not self._keys_waiting:
                self._key.clear()
        return event

    def caller_left(self, reason: EndReason = EndReason.CALLER_HANGUP) -> None:
        """The caller's channel is gone (hangup, or not found at resync): end the session."""
        if self._caller_gone:
            return
        self._caller_gone = True
        if self.transfer is not None:
            self.transfer.caller_left()
        self.ledger.mark_released(self.caller.id)
        self.note("caller_left", reason.value)
        if self.end_reason is None:
            self.end_reason = reason
        if self._task is not None and not self._task.done():
            self._task.cancel()
        elif self._task is None:
            asyncio.get_running_loop().create_task(self.end(reason), name=f"session-end-{self.id}")

    # --- the call ---------------------------------------------------------------------------------------

    async def _run(self) -> None:
        reason = EndReason.MAX_DURATION
        try:
            async with asyncio.timeout(self.options.call_max_ms / 1000):
                await self._converse()
            reason = self.end_reason or EndReason.COMPLETED
        except TimeoutError:
            reason = EndReason.MAX_DURATION
        except _CallerGone:
            reason = EndReason.CALLER_HANGUP
        except asyncio.CancelledError:
            reason = self.end_reason or EndReason.WORKER_SHUTDOWN
        except AriError as exc:
            log.warning("session %s: ARI error: %s", self.id, exc)
            self.note("error", str(exc))
            reason = EndReason.ERROR
        except Exception:
            log.exception("session %s failed", self.id)
            reason = EndReason.ERROR
        finally:
            if not self._ending:  # otherwise end() is already running and waits for this task
                await asyncio.shield(self.end(reason))

    async def _converse(self) -> None:
        self.state = CallState.ANSWERING
        if self.caller.state != "Up":
            if self.options.answer_delay_ms:
                await self._call(ari.ring(self.caller.id))
                self.note("ringing")
                await asyncio.sleep(self.options.answer_delay_ms / 1000)
            await self._call(ari.answer(self.caller.id))
            self.setup_ms = round((time.monotonic() - self._started) * 1000, 2)
            self.note("answered", f"{self.setup_ms} ms")
        else:
            self.note("adopted_up")
        if self.media is not None:
            await self._start_media(self.media)
            await self._start_recording()
        self.state = CallState.GREETING
        if self.flow is not None and self.media_leg is not None and self.voice is not None:
            await self._run_flow(self.flow)
            return
        if self.media_leg is not None and self.voice is not None:
            if self.adopted and self.caller.state == "Up":
                await self._say("", fixed=["One moment please."], interruptible=True)
            else:
                # Every piece comes from the prompt cache (digits one by one): no synthesis per call.
                ask = [ASK_INTRODUCTION] if self._listening else []
                await self._say(
                    "", fixed=[GREETING, f"You called {_spaced(self.did)}.", "Your call number is",
                               *_digit_pieces(self.token), *ask],
                    interruptible=True,
                )
        elif self.adopted and self.caller.state == "Up":
            await self._play(["sound:one-moment-please"], interruptible=True)
        else:
            greeting = [f"sound:{self.options.greeting}", f"digits:{self.did}", f"digits:{self.token}"]
            await self._play(greeting, interruptible=True)
        while True:
            self.state = CallState.COLLECTING
            event = await self._next_input()
            if isinstance(event, HeardUtterance):
                await self._answer(event)
                continue
            if not isinstance(event, ChannelDtmfReceived) or event.channel.id != self.caller.id:
                continue
            digits = await self._collect_digits(event.digit)
            if not digits:
                continue
            self.state = CallState.READING_BACK
            self.digits = digits
            self.readbacks.append(digits)
            self.note("digits", digits)
            await self._read_back(digits)

    def _stasis_future(self, channel_id: str) -> asyncio.Future[None]:
        if channel_id not in self._stasis_waiters:
            self._stasis_waiters[channel_id] = asyncio.get_running_loop().create_future()
        return self._stasis_waiters[channel_id]

    async def _start_media(self, media: MediaContext) -> None:
        self.media_leg = MediaLeg(
            client=self.client, ids=self.ids, ledger=self.ledger, pool=media.pool, clock=media.clock, app=media.app,
            advertised_address=media.advertised_address, codec=media.codec, jitter_depth=media.jitter_depth,
            label=self.id[:12],
        )
        try:
            await self.media_leg.start(self.caller.id, self._stasis_future)
        except (AriNotFound, AriConflict) as exc:
            if self._caller_gone or exc.path.startswith((f"/channels/{self.caller.id}", "/bridges/")):
                raise _CallerGone from exc
            raise
        self.note("media", f"{media.codec} via {self.media_leg.channel_id}")
        self.turns = TurnDetector(media.vad, media.endpointer)
        self.media_leg.on_frame = self._on_frame

    async def _start_recording(self) -> None:
        """The call's recording, after the account's consent announcement when it has one."""
        if self.records is None or self.media_leg is None:
            return
        if self.consent_announcement and self.voice is not None:
            await self._say("", fixed=[self.consent_announcement], interruptible=False)
            self.note("consent_announced")
        self.recorder = await self.records.start_recording(self, self._tap_ms)
        if self.recorder is not None:
            self.note("recording", f"from {self._tap_ms()} ms")

    def _on_frame(self, heard: Samples, said: Samples) -> None:
        """Every 20 ms tick of the media leg (on the pacing clock: keep it cheap)."""
        assert self.turns is not None and self.media_leg is not None
        if self.recorder is not None:
            self.recorder.add(heard, said)
        if self._handing_off:
            return  # on hold, then people talking: nothing for the session to hear
        for event in self.turns.feed(heard, said):
            if isinstance(event, BargeIn):
                cut = self.media_leg.barge_in()
                self._barged.set()
                self.barge_ins.append((event.frame_index, cut))
                self.note("barge_in", f"frame {event.frame_index}, {cut} reply frames cut")
            elif isinstance(event, SpeechStarted):
                self._caller_speaking = True
                self.note("speech_started", f"frame {event.frame_index}")
            elif isinstance(event, SpeechPaused):
                if self._listening:
                    self._look_early(event)
            elif isinstance(event, SpeechEnded):
                self._caller_speaking = False
                self.utterances.append((event.start_index, event.last_speech_index))
                self.note("utterance", f"frames {event.start_index}-{event.last_speech_index}")
                if self._listening:
                    self._events.put_nowait(HeardUtterance(event.start_index, event.last_speech_index,
                                                           event.frame_index, time.monotonic(), event.forced,
                                                           self._take_early(event)))
            elif isinstance(event, SpeechDiscarded):
                self._caller_speaking = False
                self.note("speech_discarded", f"frame {event.frame_index}")

    async def _collect_digits(self, first: str, most: int | None = None) -> str:
        """Keys from ``first`` on, until "#", ``most`` (default ``digits_max``) or the inter-digit timeout ("*"
        starts over)."""
        collected = ""
        digit: str | None = first
        while True:
            if digit == "#":
                break
            if digit == "*":
                collected = ""
            elif digit is not None:
                collected += digit
                if len(collected) >= (most or self.options.digits_max):
                    break
            try:
                async with asyncio.timeout(self.options.digit_timeout_ms / 1000):
                    event = await self._next_input()
            except TimeoutError:
                break
            is_key = isinstance(event, ChannelDtmfReceived) and event.channel.id == self.caller.id
            digit = event.digit if isinstance(event, ChannelDtmfReceived) and is_key else None
        return collected

    # --- speech turns -----------------------------------------------------------------------------------

    @property
    def _listening(self) -> bool:
        return self.media is not None and self.voice is not None and self.recognition is not None

    def _look_early(self, paused: SpeechPaused) -> None:
        """Start recognising the turn so far: if the endpoint follows this pause, the result is (nearly) there.
        Only while the recogniser is idle: under load, work on pauses the caller talks through would be wasted
        exactly when the CPU is short."""
        self._drop_early()
        leg, recognition = self.media_leg, self.recognition
        assert leg is not None and recognition is not None
        if recognition.in_flight:
            return
        audio = leg.tap.caller_frames(max(0, paused.start_index - PREROLL_FRAMES),
                                      paused.last_speech_index + TAIL_FRAMES)
        task = asyncio.get_running_loop().create_task(recognition.recognize(self.id, audio, self._grammar),
                                                      name=f"early-stt-{self.id[:12]}")
        task.add_done_callback(_retrieve)
        self._early = ((paused.start_index, paused.last_speech_index), task)

    def _take_early(self, ended: SpeechEnded) -> asyncio.Task[Recognition] | None:
        """The early recognition if it covers exactly this turn (the caller did not speak again after it)."""
        if self._early is not None and self._early[0] == (ended.start_index, ended.last_speech_index):
            task = self._early[1]
            self._early = None
            return task
        self._drop_early()
        return None

    def _drop_early(self) -> None:
        if self._early is not None:
            self._early[1].cancel()
            self._early = None

    async def _recognize_turn(self, heard: HeardUtterance) -> Turn:
        """Recognise one caller utterance (or take the early recognition of it) into a caller turn of the
        transcript. A failing engine leaves the turn empty with its error: the call goes on."""
        leg, recognition = self.media_leg, self.recognition
        assert leg is not None and recognition is not None
        turn = Turn("caller", "", start_ms=heard.start_frame * FRAME_MS, end_ms=(heard.last_frame + 1) * FRAME_MS,
                    early=heard.early is not None)
        self.transcript.append(turn)
        self.state = CallState.RECOGNIZING
        try:
            if heard.early is not None:
                result = await heard.early
            else:
                audio = leg.tap.caller_frames(max(0, heard.start_frame - PREROLL_FRAMES),
                                              heard.last_frame + TAIL_FRAMES)
                result = await recognition.recognize(self.id, audio, self._grammar)
        except Exception as exc:  # a failing engine must not end the call: say so and listen again
            turn.error = f"{type(exc).__name__}: {exc}"[:200]
            log.warning("session %s: recognition failed: %s", self.id, type(exc).__name__)
            self.note("stt_error", type(exc).__name__)
        else:
            turn.text, turn.confidence, turn.engine = result.text, result.confidence, result.engine
            self.note("heard", f"{len(result.text.split())} words, confidence {result.confidence:.2f}")
        return turn

    async def _answer(self, heard: HeardUtterance) -> None:
        """Recognise one caller utterance and answer it: their own name and number, or a re-prompt."""
        leg = self.media_leg
        if leg is None or self.recognition is None or self.voice is None:
            return
        turn = await self._recognize_turn(heard)
        value: object = None
        if self.introduction is not None and turn.text:
            value = self.introduction.build().normalize(turn.text)
        recognized_at = time.monotonic()
        # What recurs across calls comes from the prompt cache; the caller's own number is spoken as one sentence
        # (digits pieced together from the cache are understood less well: measured with the callers' ears).
        streamed = ""
        if isinstance(value, Introduction):
            fixed = [f"Thank you {value.name}."]  # no comma: piper says the name more clearly
            streamed = f"Your number is {_spaced(value.number)}."
        elif turn.error is not None:
            fixed = [SORRY_FAILED]
        else:
            fixed = [SORRY_NO_MATCH]
        reply = " ".join([*fixed, streamed]).strip()
        self.state = CallState.REPLYING
        said = Turn("agent", reply, start_ms=leg.tap.frames * FRAME_MS,
                    recognize_ms=round((recognized_at - heard.decided_at) * 1000, 1))
        self.transcript.append(said)
        first_audio = await self._say(streamed, interruptible=True, fixed=fixed)
        if first_audio is not None:
            said.reply_ms = round((first_audio - heard.decided_at) * 1000, 1)
        log.info("session %s turn: endpoint %d ms after the last speech, recognised %s ms and first reply audio %s "
                 "ms after the endpoint", self.id, (heard.decided_frame - heard.last_frame) * FRAME_MS,
                 said.recognize_ms, said.reply_ms)
        said.end_ms = leg.tap.frames * FRAME_MS
        said.cut = bool(self._barged.is_set())

    # --- a dialog flow ----------------------------------------------------------------------------------------

    async def _run_flow(self, setup: FlowSetup) -> None:
        """The account's flow from its first prompt to its end; the call ends after it."""
        run = DialogRun(setup.flow, setup.scorer, today=dt.date.today(), run_id=self.id,
                        variables={"did": self.did, "caller": self.caller.caller_number, "account": self.account},
                        language_model=setup.filler is not None)
        self.dialog = run
        driver = DialogDriver(run, _SessionSide(self), setup.integrations, filler=setup.filler,
                              rewording=setup.rewording, reword_wait_ms=setup.reword_wait_ms)
        self.note("flow", setup.flow.name)
        try:
            async with asyncio.timeout(setup.flow.limits.call_max_ms / 1000):
                outcome = await driver.drive()
        except TimeoutError:
            outcome = await driver.stop_at_limit("call_max")
        self.note("flow_outcome", outcome)
        log.info("session %s flow %s ended: %s", self.id, setup.flow.name, outcome)
        self.end_reason = EndReason.ESCALATED if outcome.startswith("escalated") else EndReason.COMPLETED
        if outcome.startswith("escalated") and self.handoff_config is not None:
            await self._hand_off(self.handoff_config, outcome.removeprefix("escalated:"))

    # --- handing the caller to a person -----------------------------------------------------------------

    async def _hand_off(self, config: HandoffConfig, reason: str) -> None:
        """A warm transfer; when nobody answers, the callback offer. The call ends after either."""
        leg, media = self.media_leg, self.media
        assert leg is not None and leg.bridge_id is not None and media is not None
        self.transfer = transfer = WarmTransfer(
            client=self.client, ids=self.ids, ledger=self.ledger, app=media.app, caller_channel=self.caller.id,
            caller_number=self.caller.caller_number, caller_name=self.caller.caller_name,
            media_bridge=leg.bridge_id, config=config, reason=reason, summary=agent_summary(self, reason),
            whisper=self._whisper, stasis_started=self._stasis_future, available=self._agent_free,
            on_ringing=lambda target: self._screen_pop("handoff.ringing", target),
            on_answered=lambda target: self._screen_pop("handoff.answered", target))
        self._handing_off = True
        self.state = CallState.HANDING_OFF
        self.note("handoff", reason)
        try:
            record = await transfer.run()
        finally:
            self._release_claims()
        if record.answered_by is not None:
            self.note("handoff_bridged", record.answered_by)
            await transfer.wait_agent_gone()  # the caller hanging up ends the session (and this task) instead
            self.note("agent_left")
            return
        self._handing_off = False
        self.note("handoff_failed", record.outcome)
        if config.callback:
            self.callback = await offer_callback(_SessionSide(self), self, config.no_agent_message, reason)
            if self.callback is not None and self.records is not None:
                await self.records.request_callback(self, self.callback)
        else:
            await self._flow_say(config.no_agent_message, fixed=True)

    def _agent_free(self, target: str) -> bool | None:
        """Whether a target may be rung: an agent endpoint busy, ringing or paused is skipped; one that is free
        is claimed, so a simultaneous transfer does not ring it too. Unknown (no AMI, a stale view, a queue
        target): rung."""
        availability = self.availability
        if availability is None or not target.startswith(("PJSIP/", "SIP/", "IAX2/")):
            return None
        if availability.can_ring_endpoint(target) is None:
            return None
        if availability.claim(target):
            self._claims.add(target)
            return True
        return False

    def _release_claims(self) -> None:
        if self.availability is not None:
            for target in self._claims:
                self.availability.release(target)
        self._claims.clear()

    async def _whisper(self, text: str) -> None:
        """Said to the agent alone (the caller is on hold), never barged in on."""
        self.transcript.append(Turn("agent", f"(to the agent) {text}", start_ms=self._tap_ms()))
        await self._say(text, interruptible=False)

    def _screen_pop(self, kind: str, target: str) -> None:
        if self.records is not None:
            self.records.screen_pop(self, kind, target)

    async def _flow_say(self, text: str, *, fixed: bool) -> None:
        leg = self.media_leg
        assert leg is not None
        said = Turn("agent", text, start_ms=leg.tap.frames * FRAME_MS)
        self.transcript.append(said)
        self.state = CallState.REPLYING
        await self._say("" if fixed else text, fixed=[text] if fixed else [], interruptible=True)
        said.end_ms = leg.tap.frames * FRAME_MS
        said.cut = bool(self._barged.is_set())

    async def _flow_listen(self, listen: Listen) -> CallerInput:
        """The caller's next input: an utterance (recognised), keys (up to ``keys_max`` or "#"), or silence for
        ``silence_ms`` (never while the caller is still speaking)."""
        self.state = CallState.COLLECTING
        self._grammar = grammar_for(listen)
        if not listen.sensitive:
            return await self._flow_input(listen)
        # A PIN or an account number: silence in the recording, masked in the transcript.
        if self.recorder is not None:
            self.recorder.mute(f"sensitive: {listen.state}")
        kept = len(self.transcript)
        try:
            return await self._flow_input(listen)
        finally:
            if self.recorder is not None:
                self.recorder.unmute()
            for turn in self.transcript[kept:]:
                if turn.speaker == "caller" and not turn.text.startswith("keys:"):
                    turn.text = "(masked)"

    async def _flow_input(self, listen: Listen) -> CallerInput:
        loop = asyncio.get_running_loop()
        deadline = loop.time() + listen.silence_ms / 1000
        while True:
            try:
                async with asyncio.timeout_at(deadline):
                    event = await self._next_input()
            except TimeoutError:
                if self._caller_speaking:  # mid-sentence: the endpointer will end the turn
                    deadline = loop.time() + listen.silence_ms / 1000
                    continue
                return Silence()
            if isinstance(event, HeardUtterance):
                if self.recognition is None:
                    continue
                turn = await self._recognize_turn(event)
                if turn.error is not None:
                    return Utterance("", 0.0)
                return Utterance(turn.text, turn.confidence or 0.0, self._loudness(event))
            if isinstance(event, ChannelDtmfReceived) and event.channel.id == self.caller.id:
                keys = await self._collect_digits(event.digit, most=listen.keys_max)
                if keys:
                    self.transcript.append(Turn("caller", f"keys:{len(keys)}", start_ms=self._tap_ms()))
                    return Keys(keys)

    def _tap_ms(self) -> int:
        return self.media_leg.tap.frames * FRAME_MS if self.media_leg is not None else 0

    def _loudness(self, heard: HeardUtterance) -> float | None:
        """The utterance's level in dBFS (rising loudness is one sign of a frustrated caller)."""
        if self.media_leg is None:
            return None
        audio = self.media_leg.tap.caller_frames(heard.start_frame, heard.last_frame + 1)
        if not len(audio):
            return None
        rms = float(np.sqrt(np.mean(np.square(audio.astype(np.float64)))))
        return round(20 * math.log10(max(rms, 1.0) / 32768), 1)

    def _flow_escalated(self, escalation: Escalate) -> None:
        self.note("escalation", f"{escalation.reason}: {escalation.detail}")
        log.info("session %s escalation: %s", self.id, escalation.reason)

    async def _read_back(self, digits: str) -> None:
        # Digit by digit: a channel sending a digit string cannot be hung up until the string is out.
        for index, digit in enumerate(digits):
            # A gap before each digit after the first, or a far end may merge two equal digits into one.
            gap = self.options.dtmf_gap_ms if index else None
            await self._call(
                ari.send_dtmf(self.caller.id, digit, duration_ms=self.options.dtmf_duration_ms, before_ms=gap)
            )
        if self.media_leg is not None and self.voice is not None:
            # Asterisk plays the digits to the bridged caller after our requests return, and DTMF into a
            # mixing bridge drops bridge audio while it plays: let the digits finish before speaking.
            # Our requests return when the digits are queued, not played: allow one more digit's time.
            digit_ms = self.options.dtmf_duration_ms + self.options.dtmf_gap_ms
            await asyncio.sleep((len(digits) + 1) * digit_ms / 1000)
            await self._say("", fixed=["You entered", *_digit_pieces(digits)], interruptible=False)
        else:
            await self._play([f"digits:{digits}"], interruptible=False)

    async def _say(self, text: str, *, interruptible: bool, fixed: Sequence[str] = ()) -> float | None:
        """Speak through the media leg: the ``fixed`` pieces from the prompt cache (each rendered once per
        process, a short pause after each), then ``text`` streamed sentence by sentence. The caller's voice
        (VAD barge-in) always stops it; with ``interruptible`` a key does too. Returns when the first audio was
        queued (``time.monotonic()``), ``None`` if nothing was."""
        leg, voice = self.media_leg, self.voice
        assert leg is not None and voice is not None
        self._barged.clear()
        first_audio: float | None = None
        stream = voice.stream(text)
        try:
            for piece in fixed:
                audio = await voice.prompt(piece)
                if self._barged.is_set() or (interruptible and self._key.is_set()):
                    break
                leg.play(audio)
                leg.play(PIECE_PAUSE)
                if first_audio is None:
                    first_audio = time.monotonic()
            async for chunk in stream:
                if self._barged.is_set() or (interruptible and self._key.is_set()):
                    break
                leg.play(chunk)
                if first_audio is None:
                    first_audio = time.monotonic()
            waits = [leg.drained.wait(), self._barged.wait()] + ([self._key.wait()] if interruptible else [])
            tasks = [asyncio.ensure_future(w) for w in waits]
            try:
                await asyncio.wait(tasks, return_when=asyncio.FIRST_COMPLETED)
            finally:
                for task in tasks:
                    task.cancel()
        finally:
            await stream.aclose()
        if interruptible and self._key.is_set() and len(leg.outbound):
            cut = leg.barge_in()
            self.barge_ins.append((leg.tap.frames, cut))
            self.note("barge_in", f"key at frame {leg.tap.frames}, {cut} reply frames cut")
        return first_audio

    async def _play(self, media: list[str], *, interruptible: bool) -> None:
        """Play prompts as one playback (one request); with ``interruptible`` a caller's key stops it."""
        if interruptible and self._key.is_set():
            return
        playback_id = self.ids.new("pb")
        self.ledger.record(Kind.PLAYBACK, playback_id, "prompt")
        finished: asyncio.Future[object] = asyncio.get_running_loop().create_future()
        self._playbacks[playback_id] = finished
        await self._call(ari.play_on_channel(self.caller.id, media, playback_id=playback_id))
        if not interruptible:
            await finished
            return
        key: asyncio.Future[object] = asyncio.ensure_future(self._key.wait())
        try:
            await asyncio.wait([finished, key], return_when=asyncio.FIRST_COMPLETED)
        finally:
            key.cancel()
        if not finished.done():
            self.note("barge_in", ",".join(media))
            await self._stop_playback(playback_id)

    async def _stop_playback(self, playback_id: str) -> None:
        self._playbacks.pop(playback_id, None)
        try:
            await self.client.send(ari.stop_playback(playback_id))
        except AriError as exc:
            # 404: already finished. 500 "Could not stop playback": it ended while we asked. Either way gone.
            if exc.status not in (404, 500):
                raise
        self.ledger.mark_released(playback_id)

    async def _call(self, request: ari.AriRequest) -> object:
        if self._caller_gone:
            raise _CallerGone
        try:
            return await self.client.send(request)
        except (AriNotFound, AriConflict) as exc:
            # The caller's channel vanished under us (hangup racing our request).
            if self._caller_gone or exc.path.startswith(f"/channels/{self.caller.id}"):
                raise _CallerGone from exc
            raise

    # --- the end ----------------------------------------------------------------------------------------

    def _log_media(self, leg: MediaLeg) -> None:
        endpoint = leg.endpoint
        if endpoint is None:
            return
        jitter = leg.jitter.stats
        log.info("session %s media: received %d of %d expected, sent %d, concealed %d, dropped late %d, wrong source "
                 "%d, wrong payload type %d, malformed %d", self.id, endpoint.stats.received, endpoint.stats.expected,
                 endpoint.stats.sent,
                 jitter.concealed, jitter.dropped_late, endpoint.stats.wrong_source, leg.wrong_payload_type,
                 endpoint.stats.malformed)

    async def end(self, reason: EndReason, *, continue_to_fallback: bool = False) -> None:
        """Idempotent teardown: stop tasks, remove every resource in the ledger, tell the manager."""
        if self._ending:
            await self._ended.wait()
            return
        self._ending = True
        if self.end_reason is None:
            self.end_reason = reason
        if self.end_reason is EndReason.ERROR and self.setup_ms is None and self.caller.state != "Up":
            # Never answered: tell the network we could not take the call (503), so it may route elsewhere.
            self._caller_resource.hangup_reason = "congestion"
        self.state = CallState.ENDING
        current = asyncio.current_task()
        if self._task is not None and self._task is not current and not self._task.done():
            self._task.cancel()
            with contextlib.suppress(asyncio.CancelledError, Exception):
                await self._task
        for waiter in self._playbacks.values():
            waiter.cancel()
        self._playbacks.clear()
        self._drop_early()
        if self.media_leg is not None:
            self.media_leg.close()
            self._log_media(self.media_leg)
        if self.turns is not None:
            self.turns.close()
        try:
            async with asyncio.timeout(self.options.teardown_timeout_ms / 1000):
                if continue_to_fallback and not self._caller_gone:
                    with contextlib.suppress(AriNotFound, AriConflict):
                        await self.client.send(
                            ari.continue_in_dialplan(
                                self.caller.id, context=self.options.fallback_context, extension=self.did,
                                priority=1,
                            )
                        )
                    self.ledger.mark_released(self.caller.id)
                    self.note("sent_to_fallback", self.options.fallback_context)
                errors = await self.ledger.release_all(self.client)
                for error in errors:
                    self.note("teardown_error", error)
        except TimeoutError:
            log.error("session %s: teardown timed out; resources left: %s", self.id, self.ledger.ids())
            self.note("teardown_timeout")
        self.state = CallState.ENDED
        self.note("ended", self.end_reason.value if self.end_reason else reason.value)
        log.info("session %s ended: %s", self.id, self.end_reason.value if self.end_reason else reason.value)
        if self.records is not None:
            await self.records.finish(self)
        self._ended.set()
        if self.on_end is not None:
            self.on_end(self)
