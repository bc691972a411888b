"""What every speech recogniser offers: the interface shared by the grammar engine (pocketsphinx) and the open
recognition engine (faster-whisper), so a dialog state can use either without knowing which.

- :class:`RecognizerEngine` (a factory, one per process, holding the models): ``open(grammar)`` gives a
  :class:`StreamingRecognizer` for one caller; ``grammar=None`` asks for open recognition (an engine that
  cannot do it raises ``ValueError``; one that only does open recognition may ignore the grammar's JSGF but
  should still name it in its results and may use :meth:`Grammar.normalize` on its text).
- :class:`StreamingRecognizer`, one utterance at a time: feed 8 kHz int16 frames (the phone path's
  :data:`~asterisk_agent.media.frames.SAMPLE_RATE`, any length, usually 20 ms) to :meth:`accept`, which may
  return a partial :class:`Recognition`; :meth:`finish` ends the utterance and returns the final one;
  :meth:`reset` drops the utterance. After either, the same recogniser takes the next utterance.
- :class:`Recognition`: the text, a confidence in 0..1, whether it is final, alternatives, which engine and
  grammar, how much audio, how long the final took.

"Nothing recognised" is not an error: :meth:`StreamingRecognizer.finish` returns ``text=""`` and
``confidence=0.0`` (silence, noise, speech outside the grammar).

Threads: a recogniser is used by one thread at a time (its owner serialises the calls; they do CPU work, so the
owner runs them off the event loop, in an executor). Different recognisers of one engine may be used from
different threads at once. ``open`` is thread-safe.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Protocol, runtime_checkable

from asterisk_agent.media.codecs import Samples
from asterisk_agent.speech.stt.grammars import Grammar


@dataclass(frozen=True, slots=True)
class Alternative:
    """A competing transcription, with its own confidence (0..1)."""

    text: str
    confidence: float


@dataclass(frozen=True, slots=True)
class Recognition:
    """One recognition result.

    ``text``: lower-case words, "" when nothing was recognised. ``confidence``: 0..1, how sure the engine is
    of ``text`` (each engine documents how it computes it; 0.0 with empty text; partials may carry 0.0 when the
    engine only scores final results). ``is_final``: from :meth:`StreamingRecognizer.finish`, else a partial.
    ``alternatives``: other candidates, best first, without ``text`` itself (may be empty). ``engine``: e.g.
    "pocketsphinx", "faster-whisper". ``grammar``: the :attr:`Grammar.name` used, ``None`` for open
    recognition. ``audio_seconds``: audio of the utterance so far (8 kHz samples / 8000). ``latency_ms``: for a
    final, the wall time :meth:`StreamingRecognizer.finish` took (what the caller waits for after the audio
    ends); for a partial, the wall time of the :meth:`StreamingRecognizer.accept` call that produced it."""

    text: str
    confidence: float
    is_final: bool
    engine: str
    grammar: str | None
    audio_seconds: float
    latency_ms: float
    alternatives: tuple[Alternative, ...] = field(default=())

    @property
    def matched(self) -> bool:
        """Whether anything was recognised."""
        return bool(self.text)


@runtime_checkable
class StreamingRecognizer(Protocol):
    """One caller's recogniser, one utterance at a time (see the module's notes on threads)."""

    @property
    def grammar(self) -> Grammar | None:
        """The grammar it recognises with; ``None`` for open recognition."""
        ...

    def accept(self, frame: Samples) -> Recognition | None:
        """Takes the next 8 kHz int16 samples of the utterance (the first call starts it); returns a partial
        result when the engine has a new hypothesis (text differing from the last partial), else ``None``."""
        ...

    def finish(self) -> Recognition:
        """Ends the utterance and returns its final result (``text=""``, ``confidence=0.0`` when nothing
        matched, also when no audio came). The recogniser is then ready for the next utterance."""
        ...

    def reset(self) -> None:
        """Drops the current utterance, if any, without a result; ready for the next one."""
        ...


@runtime_checkable
class RecognizerEngine(Protocol):
    """A speech recognition engine: models loaded once per process and shared by every recogniser it opens."""

    name: str

    def open(self, grammar: Grammar | None = None) -> StreamingRecognizer:
        """A new recogniser for one caller, constrained to ``grammar`` (``None``: open recognition)."""
        ...


RecognizerFactory = RecognizerEngine  # the same protocol, by the name a dialog's wiring may use
