"""Speech-like test audio made offline: espeak-ng speech synthesised in process, silence, white noise at a
given level or signal-to-noise ratio, and mixes, all as 8 kHz int16 (what a media leg hands the VAD).

The speech comes from the package's own :class:`EspeakSynthesizer` (libespeak-ng in process), resampled to
8 kHz with :func:`asterisk_agent.media.codecs.resample`; :func:`speak` caches what it made for the rest of the
process (the test session), as read-only arrays.
"""

from __future__ import annotations

from collections.abc import Iterator
from functools import cache

import numpy as np
import numpy.typing as npt

from asterisk_agent.media.codecs import resample, to_int16
from asterisk_agent.media.frames import FRAME_SAMPLES, SAMPLE_RATE
from asterisk_agent.speech.tts import EspeakSynthesizer

Samples = npt.NDArray[np.int16]

FULL_SCALE = 32768.0

SENTENCES = (
    "Hello, I would like to check the balance of my savings account please.",
    "Yes, my date of birth is the fourth of July, nineteen eighty two.",
    "Could you move my appointment to next Tuesday afternoon?",
)


def _frozen(samples: Samples) -> Samples:
    samples.flags.writeable = False
    return samples


def trim(samples: Samples, level_dbfs: float = -45.0) -> Samples:
    """``samples`` without the near-silent lead-in and tail (below ``level_dbfs`` in every 5 ms)."""
    block = SAMPLE_RATE // 200
    usable = len(samples) // block * block
    blocks = samples[:usable].astype(np.float64).reshape(-1, block)
    loud = np.flatnonzero(np.sqrt(np.mean(blocks**2, axis=1)) >= FULL_SCALE * 10 ** (level_dbfs / 20))
    if len(loud) == 0:
        return samples[:0]
    return samples[loud[0] * block : (loud[-1] + 1) * block]


@cache
def speak(text: str, *, voice: str = "en-us", words_per_minute: int = 165, pitch: int = 50) -> Samples:
    """``text`` spoken by espeak-ng, 8 kHz int16, silent lead-in and tail trimmed (the speech starts at sample
    0 and ends at the last one). Cached for the process; the array is read-only."""
    synth = EspeakSynthesizer(voice, rate=words_per_minute, pitch=pitch)
    native = np.concatenate(list(synth.synthesize(text)))
    return _frozen(trim(resample(native, synth.sample_rate, SAMPLE_RATE)))


def sentence(index: int = 0) -> Samples:
    """One of :data:`SENTENCES`, spoken (cached)."""
    return speak(SENTENCES[index % len(SENTENCES)])


def seconds(samples: Samples) -> float:
    return len(samples) / SAMPLE_RATE


def silence(duration_s: float) -> Samples:
    return np.zeros(round(duration_s * SAMPLE_RATE), dtype=np.int16)


def rms_dbfs(samples: npt.ArrayLike) -> float:
    """Root-mean-square level relative to full scale (a full-scale square wave is 0 dBFS); -120 for silence."""
    array = np.asarray(samples, dtype=np.float64)
    rms = float(np.sqrt(np.mean(array**2))) if array.size else 0.0
    return 20 * float(np.log10(rms / FULL_SCALE)) if rms > 0 else -120.0


def white_noise(duration_s: float, level_dbfs: float, seed: int = 0) -> Samples:
    """Gaussian white noise with an RMS level of ``level_dbfs`` (stationary line noise)."""
    rng = np.random.default_rng(seed)
    noise = rng.standard_normal(round(duration_s * SAMPLE_RATE)) * FULL_SCALE * 10 ** (level_dbfs / 20)
    return to_int16(noise)


def noise_for(signal: Samples, snr_db: float, seed: int = 0) -> Samples:
    """White noise as long as ``signal``, ``snr_db`` below the signal's RMS level."""
    return white_noise(seconds(signal), rms_dbfs(signal) - snr_db, seed)


def gain(samples: Samples, db: float) -> Samples:
    """``samples`` scaled by ``db`` (saturating)."""
    return to_int16(samples.astype(np.float64) * 10 ** (db / 20))


def mix(*parts: Samples) -> Samples:
    """The sum of ``parts`` (each starting at sample 0; the shorter ones padded with silence), saturated."""
    total = np.zeros(max(len(part) for part in parts), dtype=np.int64)
    for part in parts:
        total[: len(part)] += part
    return to_int16(total)


def concat(*parts: Samples) -> Samples:
    return np.concatenate([np.asarray(part, dtype=np.int16) for part in parts])


def delay(samples: Samples, delay_s: float) -> Samples:
    """``samples`` preceded by ``delay_s`` of silence (same dtype)."""
    return concat(silence(delay_s), samples)


def frames(samples: Samples) -> Iterator[Samples]:
    """20 ms frames of 160 samples (the last one padded with silence), each a fresh writable array."""
    for start in range(0, len(samples), FRAME_SAMPLES):
        frame = np.array(samples[start : start + FRAME_SAMPLES], dtype=np.int16)
        if len(frame) < FRAME_SAMPLES:
            frame = np.concatenate([frame, np.zeros(FRAME_SAMPLES - len(frame), dtype=np.int16)])
        yield frame


def frame_count(duration_s: float) -> int:
    return round(duration_s * SAMPLE_RATE) // FRAME_SAMPLES
