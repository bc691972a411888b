"""Turn-taking from speech probabilities: a pure state machine fed once per 20 ms frame.

:meth:`Endpointer.feed` takes the frame's speech probability (from a :class:`~asterisk_agent.speech.vad.
VoiceDetector`), whether the agent is speaking during this frame, and optionally the caller frame's level and the
agent's output level in dBFS (:func:`~asterisk_agent.speech.vad.frame_dbfs`), and returns the events of this
frame (usually none). Frames are numbered from 0 in the order fed.

The rules, every duration in :class:`EndpointerConfig` rounded up to whole frames:

- A frame is *speech* when its probability is at least ``threshold``. A turn starts when ``start_ms`` of
  consecutive speech frames have come: :class:`SpeechStarted`, whose ``start_index`` is the first frame of that
  run (keep audio from there for recognition).
- Hysteresis: inside a turn a frame still counts as speech down to ``stay_threshold`` (below ``threshold``), so a
  probability hovering around ``threshold`` does not chop the turn.
- The endpoint: ``end_ms`` of consecutive non-speech frames inside a turn end it: :class:`SpeechEnded` (frame
  index of the decision, ``start_index``, ``last_speech_index``). A turn shorter than ``min_utterance_ms`` (first
  to last speech frame) is a click or a cough: it ends with :class:`SpeechDiscarded` instead.
- Early look: ``pause_ms`` (0: off, else below ``end_ms``) of non-speech inside a turn gives :class:`SpeechPaused`
  once per pause: the owner may start recognising what was said so far, so the result is ready (or nearly) when
  the endpoint comes; if the caller goes on instead, that work is dropped.
- A turn reaching ``max_utterance_ms`` ends at once: :class:`SpeechEnded` with ``forced=True``; if the caller
  goes on, the next frames start a new turn by the same rules.
- Barge-in: a turn that starts on a frame where the agent is speaking also gives :class:`BargeIn` (stop the
  reply). Only a turn's start can barge in: no turn, no barge-in.

Echo guard: while the agent speaks and for ``echo_tail_ms`` after (its echo comes back late), the caller's side
carries the agent's own voice, attenuated by the echo return loss of the line. While the guard is on, a frame
counts as speech for *starting* a turn only if
  1. its probability is at least ``echo_threshold`` (higher than ``threshold``; ``None``: no probability rule),
  2. and, when the owner passes both levels, the caller frame is at most ``echo_margin_db`` below the loudest
     agent frame of the last ``echo_tail_ms`` (``None``: no level rule): echo, ``echo_margin_db`` or more below
     what the agent said, cannot start a turn; a caller talking over the agent at a normal level can.
Line noise never starts a turn as long as the detector keeps it under ``threshold`` for ``start_ms`` in a row
(silero does for stationary noise: its probability stays under 0.1).
"""

from __future__ import annotations

from collections import deque
from dataclasses import dataclass
from enum import Enum

from asterisk_agent.media.frames import FRAME_MS


def frames_for(ms: int) -> int:
    """Whole 20 ms frames covering ``ms`` (at least ``ms``)."""
    return -(-ms // FRAME_MS)


@dataclass(frozen=True, slots=True)
class EndpointerConfig:
    threshold: float = 0.5
    stay_threshold: float = 0.35
    start_ms: int = 100
    end_ms: int = 400  # voice-to-voice budget: p50 700 ms = this + VAD lag + STT final + first reply audio
    pause_ms: int = 0  # SpeechPaused after this much silence in a turn (0: never); below end_ms
    min_utterance_ms: int = 200
    max_utterance_ms: int = 15_000
    echo_threshold: float | None = 0.8
    echo_margin_db: float | None = 12.0
    echo_tail_ms: int = 300

    def __post_init__(self) -> None:
        if not 0.0 < self.stay_threshold <= self.threshold <= 1.0:
            raise ValueError("thresholds must satisfy 0 < stay_threshold <= threshold <= 1")
        if self.echo_threshold is not None and not self.threshold <= self.echo_threshold <= 1.0:
            raise ValueError("echo_threshold must be between threshold and 1")
        if self.start_ms < FRAME_MS or self.end_ms < FRAME_MS:
            raise ValueError(f"start_ms and end_ms must be at least one frame ({FRAME_MS} ms)")
        if self.min_utterance_ms < 0 or self.echo_tail_ms < 0:
            raise ValueError("min_utterance_ms and echo_tail_ms must be at least 0")
        if self.pause_ms and not FRAME_MS <= self.pause_ms < self.end_ms:
            raise ValueError("pause_ms must be 0 (off) or at least one frame and below end_ms")
        if self.max_utterance_ms < max(self.start_ms, self.min_utterance_ms):
            raise ValueError("max_utterance_ms must be at least start_ms and min_utterance_ms")
        if self.echo_margin_db is not None and self.echo_margin_db < 0:
            raise ValueError("echo_margin_db must be at least 0")


@dataclass(frozen=True, slots=True)
class SpeechStarted:
    frame_index: int  # the frame on which the turn was confirmed
    start_index: int  # its first speech frame


@dataclass(frozen=True, slots=True)
class SpeechEnded:
    frame_index: int  # the endpoint decision
    start_index: int
    last_speech_index: int
    forced: bool = False  # max_utterance_ms reached

    @property
    def frames(self) -> int:
        """Length of the utterance, first to last speech frame."""
        return self.last_speech_index - self.start_index + 1


@dataclass(frozen=True, slots=True)
class SpeechDiscarded:
    """A turn that ended shorter than ``min_utterance_ms``: drop what was collected for it."""

    frame_index: int
    start_index: int
    last_speech_index: int


@dataclass(frozen=True, slots=True)
class SpeechPaused:
    """``pause_ms`` of silence inside a turn: a :class:`SpeechEnded` with the same ``start_index`` and
    ``last_speech_index`` follows unless the caller speaks again first."""

    frame_index: int
    start_index: int
    last_speech_index: int


@dataclass(frozen=True, slots=True)
class BargeIn:
    """The caller started a turn while the agent was speaking: cut the reply (``MediaLeg.barge_in()``)."""

    frame_index: int
    start_index: int


Event = SpeechStarted | SpeechEnded | SpeechDiscarded | SpeechPaused | BargeIn
_NONE: tuple[Event, ...] = ()


class State(Enum):
    IDLE = "idle"
    SPEECH = "speech"


class Endpointer:
    """The rules of the module, for one call. Not thread-safe; pure (no clock, no I/O)."""

    def __init__(self, config: EndpointerConfig | None = None) -> None:
        self.config = config or EndpointerConfig()
        cfg = self.config
        self._start_frames = frames_for(cfg.start_ms)
        self._end_frames = frames_for(cfg.end_ms)
        self._pause_frames = frames_for(cfg.pause_ms) if cfg.pause_ms else 0
        self._min_frames = frames_for(cfg.min_utterance_ms)
        self._max_frames = frames_for(cfg.max_utterance_ms)
        self._tail_frames = frames_for(cfg.echo_tail_ms)
        self._agent_levels: deque[float] = deque(maxlen=max(1, self._tail_frames))
        self.reset()

    def reset(self) -> None:
        self.state = State.IDLE
        self.frame_index = -1  # the last frame fed
        self._run_start = -1  # first frame of the current run of speech frames (idle), -1 for none
        self._start_index = -1
        self._last_speech = -1
        self._agent_last = -1 - self._tail_frames  # last frame the agent spoke
        self._agent_levels.clear()

    def feed(
        self,
        probability: float,
        *,
        agent_speaking: bool = False,
        energy_db: float | None = None,
        agent_energy_db: float | None = None,
    ) -> tuple[Event, ...]:
        """The next frame: its speech probability, whether the agent is speaking during it, the caller frame's
        level and the agent frame's level (dBFS, both optional). Returns the frame's events, in order."""
        self.frame_index += 1
        index = self.frame_index
        if agent_speaking:
            self._agent_last = index
        self._agent_levels.append(agent_energy_db if agent_energy_db is not None and agent_speaking else -1e9)
        if self.state is State.IDLE:
            return self._idle(index, probability, agent_speaking, energy_db)
        return self._speech(index, probability)

    @property
    def echo_guarded(self) -> bool:
        """Whether the echo guard applies to the frame fed last."""
        return self.frame_index - self._agent_last <= self._tail_frames

    def _starts(self, probability: float, energy_db: float | None) -> bool:
        cfg = self.config
        if probability < cfg.threshold:
            return False
        if not self.echo_guarded:
            return True
        if cfg.echo_threshold is not None and probability < cfg.echo_threshold:
            return False
        agent = max(self._agent_levels)
        return cfg.echo_margin_db is None or energy_db is None or energy_db >= agent - cfg.echo_margin_db

    def _idle(self, index: int, probability: float, agent_speaking: bool, energy_db: float | None) -> tuple[Event, ...]:
        if not self._starts(probability, energy_db):
            self._run_start = -1
            return _NONE
        if self._run_start < 0:
            self._run_start = index
        if index - self._run_start + 1 < self._start_frames:
            return _NONE
        self.state = State.SPEECH
        self._start_index = self._run_start
        self._last_speech = index
        self._run_start = -1
        started = SpeechStarted(index, self._start_index)
        if agent_speaking:
            return (started, BargeIn(index, self._start_index))
        return (started,)

    def _speech(self, index: int, probability: float) -> tuple[Event, ...]:
        if probability >= self.config.stay_threshold:
            self._last_speech = index
        start, last = self._start_index, self._last_speech
        if index - last >= self._end_frames:
            self.state = State.IDLE
            if last - start + 1 < self._min_frames:
                return (SpeechDiscarded(index, start, last),)
            return (SpeechEnded(index, start, last),)
        if index - start + 1 >= self._max_frames:
            self.state = State.IDLE
            return (SpeechEnded(index, start, last, forced=True),)
        if self._pause_frames and index - last == self._pause_frames and last - start + 1 >= self._min_frames:
            return (SpeechPaused(index, start, last),)
        return _NONE
