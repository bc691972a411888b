"""Audio codecs, resampling and tone analysis in numpy, vectorised over whole frames (no per-sample Python).

- G.711 (ITU-T G.711, as in the ITU-T G.191 reference implementation): :func:`ulaw_decode`,
  :func:`ulaw_encode`, :func:`alaw_decode`, :func:`alaw_encode`, by lookup tables built once at import
  (256 entries to decode, 65536 to encode).
- Big-endian 16-bit linear (Asterisk's slin16 on RTP, and L16 PT 11): :func:`slin_be_decode`,
  :func:`slin_be_encode`.
- :func:`resample` / :class:`Resampler`: rational-ratio polyphase resampling with a Kaiser-windowed sinc
  low-pass (anti-alias when going down, anti-image when going up); the class keeps state across frames.
- :data:`CODECS`: the configured ``media.codec`` names and what travels on the wire each way.
- :func:`goertzel_power`, :func:`dominant_frequency`: which tone is in a signal (tests check audio by content).

Samples are ``numpy.int16`` arrays at the boundaries; encoders accept any integer or float array and saturate.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from functools import lru_cache
from math import ceil, gcd

import numpy as np
import numpy.typing as npt

from asterisk_agent.media.frames import (
    FRAME_SAMPLES,
    PT_L16_8K,
    PT_PCMA,
    PT_PCMU,
    PT_SLIN16,
    SAMPLE_RATE,
    WIDEBAND_FRAME_SAMPLES,
    WIDEBAND_RATE,
)

Samples = npt.NDArray[np.int16]

INT16_MIN = -32768
INT16_MAX = 32767

# --- G.711 ----------------------------------------------------------------------------------------------------


def _build_ulaw_decode() -> Samples:
    code = ~np.arange(256, dtype=np.int32) & 0xFF
    exponent = (code >> 4) & 0x07
    magnitude = (((code & 0x0F) << 3) + 0x84) << exponent
    return np.where(code & 0x80, 0x84 - magnitude, magnitude - 0x84).astype(np.int16)


def _build_alaw_decode() -> Samples:
    code = np.arange(256, dtype=np.int32) ^ 0x55
    segment = (code >> 4) & 0x07
    mantissa = (code & 0x0F) << 4
    magnitude = np.where(segment == 0, mantissa + 8, (mantissa + 0x108) << np.maximum(segment - 1, 0))
    return np.where(code & 0x80, magnitude, -magnitude).astype(np.int16)


def _encoder_inputs() -> tuple[npt.NDArray[np.int32], npt.NDArray[np.int32]]:
    """Every int16 value in the order of its 16 bits read as unsigned (the encode tables' index), and its
    magnitude as both encoders quantise it: the one's complement of negative samples (G.191), so the decision
    levels are symmetric about -0.5 and the error never exceeds half a quantisation step (ulaw saturates
    above 32124, alaw above 32256)."""
    value = np.arange(1 << 16, dtype=np.uint16).view(np.int16).astype(np.int32)
    return value, np.where(value < 0, ~value, value)


def _build_ulaw_encode() -> npt.NDArray[np.uint8]:
    value, magnitude = _encoder_inputs()
    biased = np.minimum((magnitude >> 2) + 33, 0x1FFF)  # 14-bit magnitude plus the mu-law bias
    segment = np.searchsorted(np.array([0x3F, 0x7F, 0xFF, 0x1FF, 0x3FF, 0x7FF, 0xFFF, 0x1FFF]), biased)
    mantissa = (biased >> (segment + 1)) & 0x0F
    code = (segment << 4) | mantissa
    return np.asarray(code ^ np.where(value >= 0, 0xFF, 0x7F), dtype=np.uint8)


def _build_alaw_encode() -> npt.NDArray[np.uint8]:
    value, magnitude = _encoder_inputs()
    magnitude = magnitude >> 3  # 12-bit magnitude
    segment = np.searchsorted(np.array([0x1F, 0x3F, 0x7F, 0xFF, 0x1FF, 0x3FF, 0x7FF, 0xFFF]), magnitude)
    mantissa = np.where(segment < 2, magnitude >> 1, magnitude >> segment) & 0x0F
    code = (segment << 4) | mantissa
    return np.asarray(code ^ np.where(value >= 0, 0xD5, 0x55), dtype=np.uint8)


ULAW_DECODE = _build_ulaw_decode()
ALAW_DECODE = _build_alaw_decode()
# Indexed by the sample's 16 bits read as unsigned: table[samples.view(np.uint16)].
ULAW_ENCODE = _build_ulaw_encode()
ALAW_ENCODE = _build_alaw_encode()
for _table in (ULAW_DECODE, ALAW_DECODE, ULAW_ENCODE, ALAW_ENCODE):
    _table.flags.writeable = False

ULAW_SILENCE = 0xFF  # decodes to 0
ALAW_SILENCE = 0xD5  # decodes to +8, the smallest A-law level


def to_int16(samples: npt.ArrayLike) -> Samples:
    """``samples`` as int16, saturated (floats rounded); an int16 array is returned as it is."""
    array = np.asarray(samples)
    if array.dtype == np.int16:
        return array.astype(np.int16, copy=False)
    if array.dtype.kind == "f":
        wide = np.rint(array.astype(np.float64))
    elif array.dtype.kind in "iub":
        wide = array.astype(np.int64)
    else:
        raise TypeError(f"audio samples must be numbers, not {array.dtype}")
    return np.asarray(np.clip(wide, INT16_MIN, INT16_MAX), dtype=np.int16)


def ulaw_decode(data: bytes) -> Samples:
    return ULAW_DECODE[np.frombuffer(data, dtype=np.uint8)]


def ulaw_encode(samples: npt.ArrayLike) -> bytes:
    return ULAW_ENCODE[to_int16(samples).view(np.uint16)].tobytes()


def alaw_decode(data: bytes) -> Samples:
    return ALAW_DECODE[np.frombuffer(data, dtype=np.uint8)]


def alaw_encode(samples: npt.ArrayLike) -> bytes:
    return ALAW_ENCODE[to_int16(samples).view(np.uint16)].tobytes()


# --- 16-bit linear, big-endian ----------------------------------------------------------------------------------


def slin_be_decode(data: bytes) -> Samples:
    """Big-endian signed 16-bit samples (network order: slin16 from Asterisk, L16 PT 11) as native int16."""
    if len(data) % 2:
        raise ValueError(f"16-bit linear audio needs an even number of bytes, got {len(data)}")
    return np.frombuffer(data, dtype=">i2").astype(np.int16)


def slin_be_encode(samples: npt.ArrayLike) -> bytes:
    return to_int16(samples).astype(">i2").tobytes()


# --- resampling -------------------------------------------------------------------------------------------------

# The low-pass, relative to the lower of the two Nyquist frequencies: -6 dB at 0.9 of it; the Kaiser window
# (beta 8, about 80 dB of stop band) over 32 zero crossings each side puts the stop band's start just below the
# lower Nyquist, so nothing folds back audibly (for 8 kHz: flat to about 3.3 kHz, stop band from 3.9 kHz).
RESAMPLE_CUTOFF = 0.9
RESAMPLE_ZERO_CROSSINGS = 32
RESAMPLE_KAISER_BETA = 8.0
_BLOCK = 4096  # outputs computed per vectorised step (bounds the temporary arrays)


@dataclass(frozen=True, slots=True)
class _FilterBank:
    up: int
    down: int
    half: int  # taps at input offsets -half..half around each output's position
    taps: npt.NDArray[np.float64]  # (up, 2 * half + 1): one row per output phase


@lru_cache(maxsize=32)
def _filter_bank(from_rate: int, to_rate: int) -> _FilterBank:
    common = gcd(from_rate, to_rate)
    up, down = to_rate // common, from_rate // common
    cutoff = RESAMPLE_CUTOFF * min(1.0, up / down)  # in units of the input's Nyquist
    support = RESAMPLE_ZERO_CROSSINGS / cutoff  # half-length of the kernel, in input samples
    half = ceil(support) + 1
    offsets = np.arange(-half, half + 1, dtype=np.float64)
    phases = np.arange(up, dtype=np.float64)[:, None] / up
    distance = phases - offsets[None, :]  # output position minus input position, in input samples
    inside = np.clip(1.0 - (distance / support) ** 2, 0.0, None)
    window = np.where(np.abs(distance) <= support, np.i0(RESAMPLE_KAISER_BETA * np.sqrt(inside)), 0.0)
    taps = cutoff * np.sinc(cutoff * distance) * window
    taps /= taps.sum(axis=1, keepdims=True)  # unity gain at DC for every phase
    taps.flags.writeable = False
    return _FilterBank(up, down, half, taps)


class Resampler:
    """Streaming resampler from ``from_rate`` to ``to_rate`` (any integer rates): feed frames to
    :meth:`process`, which returns every output sample whose inputs have all arrived (the filter looks
    ``half`` input samples ahead, a few milliseconds); :meth:`flush` returns the rest at the end of the stream.
    Output sample ``n`` is at the input time ``n * from_rate / to_rate`` (no delay is added). Equal rates pass
    the samples through untouched."""

    def __init__(self, from_rate: int, to_rate: int) -> None:
        if from_rate <= 0 or to_rate <= 0:
            raise ValueError(f"sample rates must be positive, got {from_rate} -> {to_rate}")
        self.from_rate = from_rate
        self.to_rate = to_rate
        self._bank = _filter_bank(from_rate, to_rate)
        self._reset()

    def _reset(self) -> None:
        self._start = -self._bank.half  # absolute input index of _buffer[0]; zeros before the stream's start
        self._buffer = np.zeros(self._bank.half, dtype=np.float64)
        self._received = 0  # input samples so far
        self._next = 0  # index of the next output sample

    @property
    def latency_samples(self) -> int:
        """Input samples that must follow an instant before the output at that instant is produced."""
        return self._bank.half

    def process(self, samples: npt.ArrayLike) -> Samples:
        frame = to_int16(samples)
        if frame.ndim != 1:
            raise ValueError(f"resample takes mono audio (one dimension), got shape {frame.shape}")
        if self.from_rate == self.to_rate:
            return frame.copy()
        self._buffer = np.concatenate((self._buffer, frame.astype(np.float64)))
        self._received += len(frame)
        # Output n needs input up to floor(n * down / up) + half.
        last_input = self._start + len(self._buffer) - 1 - self._bank.half
        return self._emit(-((-(last_input + 1) * self._bank.up) // self._bank.down))

    def flush(self) -> Samples:
        """The outputs still owed for the input so far (the stream's end padded with silence); then reset."""
        bank = self._bank
        self._buffer = np.concatenate((self._buffer, np.zeros(bank.half + 1)))
        out = self._emit(-((-self._received * bank.up) // bank.down))
        self._reset()
        return out

    def _emit(self, end: int) -> Samples:
        bank = self._bank
        if end <= self._next:
            return np.zeros(0, dtype=np.int16)
        pieces = []
        offsets = np.arange(-bank.half, bank.half + 1)
        for first in range(self._next, end, _BLOCK):
            n = np.arange(first, min(first + _BLOCK, end), dtype=np.int64)
            position = n * bank.down
            index = position // bank.up - self._start
            window = self._buffer[index[:, None] + offsets[None, :]]
            pieces.append(np.einsum("ij,ij->i", bank.taps[position % bank.up], window))
        self._next = end
        keep_from = (end * bank.down) // bank.up - bank.half  # absolute index still needed by later outputs
        if keep_from > self._start:
            self._buffer = self._buffer[keep_from - self._start :]
            self._start = keep_from
        return to_int16(np.concatenate(pieces))


def resample(samples: npt.ArrayLike, from_rate: int, to_rate: int) -> Samples:
    """All of ``samples`` (int16, mono) resampled from ``from_rate`` to ``to_rate``:
    ``ceil(len * to_rate / from_rate)`` samples, aligned with the input (no delay)."""
    resampler = Resampler(from_rate, to_rate)
    head = resampler.process(samples)
    return np.concatenate((head, resampler.flush()))


# --- what travels on the wire -----------------------------------------------------------------------------------


@dataclass(frozen=True, slots=True)
class Codec:
    """A ``media.codec`` name: what Asterisk sends us on externalMedia, and what we send back to it.

    Asterisk drops every dynamic payload type we send (96-127), so slin16's PT 118 only ever comes in:
    we answer slin16 with 8 kHz L16 (PT 11; Asterisk maps it to slin and resamples).
    """

    name: str  # the config name, also the externalMedia ``format``
    payload_type: int  # what Asterisk sends
    sample_rate: int
    frame_bytes: int  # payload bytes of one 20 ms frame from Asterisk
    decode: Callable[[bytes], Samples]
    send_payload_type: int  # what we send back
    send_rate: int
    send_frame_bytes: int
    encode: Callable[[npt.ArrayLike], bytes]

    @property
    def frame_samples(self) -> int:
        return self.sample_rate * FRAME_SAMPLES // SAMPLE_RATE

    @property
    def send_frame_samples(self) -> int:
        return self.send_rate * FRAME_SAMPLES // SAMPLE_RATE


CODECS: dict[str, Codec] = {
    "ulaw": Codec("ulaw", PT_PCMU, SAMPLE_RATE, FRAME_SAMPLES, ulaw_decode,
                  PT_PCMU, SAMPLE_RATE, FRAME_SAMPLES, ulaw_encode),
    "alaw": Codec("alaw", PT_PCMA, SAMPLE_RATE, FRAME_SAMPLES, alaw_decode,
                  PT_PCMA, SAMPLE_RATE, FRAME_SAMPLES, alaw_encode),
    "slin16": Codec("slin16", PT_SLIN16, WIDEBAND_RATE, 2 * WIDEBAND_FRAME_SAMPLES, slin_be_decode,
                    PT_L16_8K, SAMPLE_RATE, 2 * FRAME_SAMPLES, slin_be_encode),
}


def get_codec(name: str) -> Codec:
    try:
        return CODECS[name]
    except KeyError:
        raise ValueError(f"unknown codec {name!r}; known: {', '.join(CODECS)}") from None


# --- which tone -------------------------------------------------------------------------------------------------


def goertzel_power(samples: npt.ArrayLike, rate: int, freq: float) -> float:
    """The mean power of the ``freq`` component of ``samples`` (what Goertzel's filter measures, computed as a
    single DFT term): a sine of amplitude A at ``freq`` gives about A**2 / 2, comparable with ``mean(x**2)``."""
    x = np.asarray(samples, dtype=np.float64)
    if x.size == 0:
        return 0.0
    phase = np.exp(-2j * np.pi * freq / rate * np.arange(x.size))
    term = complex(np.dot(x, phase))
    return 2.0 * abs(term) ** 2 / x.size**2


def dominant_frequency(samples: npt.ArrayLike, rate: int) -> float:
    """The frequency (Hz) of the strongest spectral peak, DC excluded: Hann-windowed FFT, with parabolic
    interpolation between bins. 0.0 for silence."""
    x = np.asarray(samples, dtype=np.float64)
    if x.size < 4:
        return 0.0
    x = x - x.mean()
    spectrum = np.abs(np.fft.rfft(x * np.hanning(x.size)))
    spectrum[0] = 0.0
    peak = int(np.argmax(spectrum))
    if spectrum[peak] == 0.0:
        return 0.0
    shift = 0.0
    if 0 < peak < spectrum.size - 1:
        left, centre, right = np.log(spectrum[peak - 1 : peak + 2] + 1e-12)
        denominator = left - 2 * centre + right
        if denominator < 0:
            shift = 0.5 * (left - right) / denominator
    return float((peak + shift) * rate / x.size)
