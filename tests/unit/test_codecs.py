"""G.711, 16-bit linear, resampling and tone analysis, checked against reference values and by content: the
real packets captured from Asterisk 22 (tests/data/rtp/) carry a 1 kHz tone played on the bridge, the same
moments in ulaw, alaw and slin16."""

from __future__ import annotations

import warnings
from collections.abc import Callable
from math import ceil
from pathlib import Path
from types import ModuleType

import numpy as np
import numpy.typing as npt
import pytest

from asterisk_agent.config import MediaConfig
from asterisk_agent.media.codecs import (
    CODECS,
    Resampler,
    alaw_decode,
    alaw_encode,
    dominant_frequency,
    get_codec,
    goertzel_power,
    resample,
    slin_be_decode,
    slin_be_encode,
    ulaw_decode,
    ulaw_encode,
)
from asterisk_agent.media.frames import FRAME_SAMPLES, PT_L16_8K, PT_PCMA, PT_PCMU, PT_SLIN16
from asterisk_agent.media.rtp import parse
from tests.support.capture_rtp import read_records

audioop: ModuleType | None
with warnings.catch_warnings():
    warnings.simplefilter("ignore", DeprecationWarning)
    try:
        import audioop  # CPython's own G.711 (Sun's reference code), until Python 3.13
    except ImportError:
        audioop = None

DATA = Path(__file__).resolve().parents[1] / "data" / "rtp"
ALL_BYTES = bytes(range(256))
ALL_INT16 = np.arange(-32768, 32768, dtype=np.int32).astype(np.int16)
TONE_HZ = 1000.0  # what capture_rtp.py plays on the bridge (tone:1000)


def sine(freq: float, rate: int, count: int, amplitude: float = 10000.0, phase: float = 0.0) -> npt.NDArray[np.int16]:
    return np.rint(amplitude * np.sin(2 * np.pi * freq * np.arange(count) / rate + phase)).astype(np.int16)


def rms(x: npt.ArrayLike) -> float:
    return float(np.sqrt(np.mean(np.asarray(x, dtype=np.float64) ** 2)))


def db(ratio: float) -> float:
    return 10 * float(np.log10(max(ratio, 1e-30)))


# --- G.711 reference values -------------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("code", "value"),
    [(0xFF, 0), (0x7F, 0), (0x00, -32124), (0x80, 32124), (0xFE, 8), (0x7E, -8), (0xEF, 132), (0xF0, 120),
     (0xCE, 988), (0x9F, 8316)],
)
def test_ulaw_reference_values(code: int, value: int) -> None:
    assert int(ulaw_decode(bytes([code]))[0]) == value


@pytest.mark.parametrize(
    ("code", "value"),
    [(0xD5, 8), (0x55, -8), (0xAA, 32256), (0x2A, -32256), (0xD4, 24), (0xC5, 264), (0xE5, 1056), (0x85, 4224)],
)
def test_alaw_reference_values(code: int, value: int) -> None:
    assert int(alaw_decode(bytes([code]))[0]) == value


def test_encoding_reference_values() -> None:
    # decision levels are symmetric about -0.5, so x and -x-1 mirror each other (100 -> +104, -101 -> -104)
    values = np.array([0, -1, 32767, -32768, 8, -8, 100, -101, -100], dtype=np.int16)
    assert ulaw_encode(values) == bytes([0xFF, 0x7F, 0x80, 0x00, 0xFE, 0x7E, 0xF2, 0x72, 0x73])
    assert alaw_encode(values) == bytes([0xD5, 0x55, 0xAA, 0x2A, 0xD5, 0x55, 0xD3, 0x53, 0x53])


def test_decoders_return_int16_per_byte() -> None:
    for decode in (ulaw_decode, alaw_decode):
        out = decode(ALL_BYTES)
        assert out.dtype == np.int16 and out.shape == (256,)
        assert decode(b"").shape == (0,)


def test_alaw_round_trips_every_code() -> None:
    assert alaw_encode(alaw_decode(ALL_BYTES)) == ALL_BYTES


def test_ulaw_round_trips_every_code_but_negative_zero() -> None:
    """mu-law has two zeros: 0x7F (-0) and 0xFF (+0) both decode to 0, which encodes as 0xFF."""
    back = ulaw_encode(ulaw_decode(ALL_BYTES))
    assert [code for code in range(256) if back[code] != code] == [0x7F]
    assert back[0x7F] == 0xFF


def test_ulaw_error_is_within_half_a_quantisation_step() -> None:
    codes = np.frombuffer(ulaw_encode(ALL_INT16), dtype=np.uint8).astype(np.int32)
    error = np.abs(ulaw_decode(codes.astype(np.uint8).tobytes()).astype(np.int32) - ALL_INT16)
    segment = ((~codes) >> 4) & 0x07
    inside = np.abs(ALL_INT16.astype(np.int32)) <= 32124
    assert np.all(error[inside] <= 4 << segment[inside])
    assert set(codes[~inside].tolist()) == {0x00, 0x80}  # saturated at the largest level


def test_alaw_error_is_within_half_a_quantisation_step() -> None:
    codes = np.frombuffer(alaw_encode(ALL_INT16), dtype=np.uint8).astype(np.int32)
    error = np.abs(alaw_decode(codes.astype(np.uint8).tobytes()).astype(np.int32) - ALL_INT16)
    segment = ((codes ^ 0x55) >> 4) & 0x07
    assert np.all(error <= 8 << np.maximum(segment - 1, 0))


@pytest.mark.parametrize(("encode", "decode"), [(ulaw_encode, ulaw_decode), (alaw_encode, alaw_decode)])
def test_quantisation_is_monotonic_and_symmetric(
    encode: Callable[[npt.ArrayLike], bytes], decode: Callable[[bytes], npt.NDArray[np.int16]]
) -> None:
    levels = decode(encode(ALL_INT16)).astype(np.int32)
    assert np.all(np.diff(levels) >= 0)
    # decision levels are symmetric about -0.5: x and its one's complement -x-1 quantise to opposite levels
    assert np.array_equal(levels[::-1], -levels)


@pytest.mark.skipif(audioop is None, reason="audioop is gone (Python 3.13+)")
def test_g711_matches_cpython_audioop() -> None:
    assert audioop is not None
    assert np.array_equal(ulaw_decode(ALL_BYTES), np.frombuffer(audioop.ulaw2lin(ALL_BYTES, 2), "<i2"))
    assert np.array_equal(alaw_decode(ALL_BYTES), np.frombuffer(audioop.alaw2lin(ALL_BYTES, 2), "<i2"))
    linear = ALL_INT16.astype("<i2").tobytes()
    assert alaw_encode(ALL_INT16) == audioop.lin2alaw(linear, 2)
    # audioop rounds negative mu-law samples away from zero (up to 7 off); ours is G.191's symmetric rule
    ours = np.frombuffer(ulaw_encode(ALL_INT16), dtype=np.uint8)
    theirs = np.frombuffer(audioop.lin2ulaw(linear, 2), dtype=np.uint8)
    assert np.array_equal(ours[ALL_INT16 >= 0], theirs[ALL_INT16 >= 0])
    our_error = np.abs(ulaw_decode(ours.tobytes()).astype(np.int32) - ALL_INT16)
    their_error = np.abs(ulaw_decode(theirs.tobytes()).astype(np.int32) - ALL_INT16)
    assert our_error.max() <= their_error.max()
    assert our_error[ALL_INT16 < 0].mean() <= their_error[ALL_INT16 < 0].mean()


def test_encoders_take_any_numbers_and_saturate() -> None:
    assert ulaw_encode([0, 1000]) == ulaw_encode(np.array([0, 1000], dtype=np.int16))
    assert ulaw_encode(np.array([40000, -40000], dtype=np.int32)) == bytes([0x80, 0x00])
    assert alaw_encode(np.array([1e9, -1e9, 7.6])) == alaw_encode(np.array([32767, -32768, 8], dtype=np.int16))
    assert alaw_encode(np.array([], dtype=np.int16)) == b""
    with pytest.raises(TypeError):
        ulaw_encode(np.array(["a"]))


# --- 16-bit linear, big-endian ----------------------------------------------------------------------------------


def test_slin_is_big_endian() -> None:
    assert slin_be_decode(b"\x00\x01\xff\xfe\x80\x00\x7f\xff").tolist() == [1, -2, -32768, 32767]
    assert slin_be_encode(np.array([1, -2, -32768, 32767], dtype=np.int16)) == b"\x00\x01\xff\xfe\x80\x00\x7f\xff"
    assert slin_be_decode(b"").dtype == np.int16
    assert slin_be_encode(ALL_INT16) == ALL_INT16.astype(">i2").tobytes()
    assert np.array_equal(slin_be_decode(slin_be_encode(ALL_INT16)), ALL_INT16)


def test_slin_refuses_an_odd_byte_count() -> None:
    with pytest.raises(ValueError, match="even number of bytes, got 3"):
        slin_be_decode(b"\x00\x01\x02")


# --- the codec registry -----------------------------------------------------------------------------------------


def test_codec_registry() -> None:
    ulaw, alaw, slin16 = get_codec("ulaw"), get_codec("alaw"), get_codec("slin16")
    assert (ulaw.payload_type, ulaw.sample_rate, ulaw.frame_bytes, ulaw.send_payload_type) == (PT_PCMU, 8000, 160, 0)
    assert (alaw.payload_type, alaw.sample_rate, alaw.frame_bytes, alaw.send_payload_type) == (PT_PCMA, 8000, 160, 8)
    assert (slin16.payload_type, slin16.sample_rate, slin16.frame_bytes) == (PT_SLIN16, 16000, 640)
    assert (slin16.send_payload_type, slin16.send_rate, slin16.send_frame_bytes) == (PT_L16_8K, 8000, 320)
    assert (slin16.frame_samples, slin16.send_frame_samples, ulaw.frame_samples) == (320, 160, 160)
    for codec in CODECS.values():
        assert codec.send_payload_type < 96  # Asterisk drops dynamic payload types we send
        assert len(codec.encode(np.zeros(codec.send_frame_samples, dtype=np.int16))) == codec.send_frame_bytes
        assert len(codec.decode(bytes(codec.frame_bytes))) == codec.frame_samples


def test_registry_covers_exactly_the_configurable_codecs() -> None:
    for name in CODECS:
        assert MediaConfig(codec=name).codec == name
    with pytest.raises(ValueError, match="unknown codec 'opus'; known: ulaw, alaw, slin16"):
        get_codec("opus")


# --- the captured audio, by content -----------------------------------------------------------------------------


def captured_audio(name: str) -> npt.NDArray[np.int16]:
    """The decoded payloads of a capture, the steady tone only: from the packet after the first non-silent one.

    The bridge starts silent (two packets of digital silence), and the tone's onset differs between the legs:
    on ulaw and alaw it comes 5 ms earlier than on slin16 (40 samples at 8 kHz, five periods of 1 kHz),
    after a few samples of growing ringing at the Nyquist frequency (Asterisk's resampling in the bridge)."""
    codec = get_codec(name)
    frames = [codec.decode(parse(data).payload) for data in read_records(DATA / f"{name}.rtp")]
    first = next(i for i, frame in enumerate(frames) if np.abs(frame.astype(np.int32)).max() > 64)
    return np.concatenate(frames[first + 1 :])


@pytest.mark.parametrize("name", CODECS)
def test_captured_streams_carry_the_1khz_tone(name: str) -> None:
    codec = get_codec(name)
    audio = captured_audio(name)
    assert len(audio) >= 40 * codec.frame_samples
    assert dominant_frequency(audio, codec.sample_rate) == pytest.approx(TONE_HZ, abs=2)
    total = float(np.mean(audio.astype(np.float64) ** 2))
    assert goertzel_power(audio, codec.sample_rate, TONE_HZ) > 0.98 * total  # a pure tone
    assert 3000 < rms(audio) < 8000  # Asterisk's playtones level, about -16 dBFS
    for start in range(0, len(audio) - codec.frame_samples + 1, codec.frame_samples):  # every packet alone
        frame = audio[start : start + codec.frame_samples]
        assert dominant_frequency(frame, codec.sample_rate) == pytest.approx(TONE_HZ, abs=25)


def test_captured_streams_agree_sample_by_sample() -> None:
    """ulaw, alaw and slin16 (resampled to 8 kHz) of the same moments are the same waveform, up to G.711
    quantisation noise: the three legs hear one bridge."""
    ulaw, alaw = captured_audio("ulaw"), captured_audio("alaw")
    wide = resample(captured_audio("slin16"), 16000, 8000)
    count = min(len(ulaw), len(alaw), len(wide)) - 2 * FRAME_SAMPLES  # leave the resampler's ends out
    u, a, w = (x[:count].astype(np.float64) for x in (ulaw, alaw, wide))
    signal = rms(w)
    assert db(signal**2 / rms(u - w) ** 2) > 30
    assert db(signal**2 / rms(a - w) ** 2) > 30
    assert db(signal**2 / rms(u - a) ** 2) > 25


def test_reencoding_captured_audio_is_lossless() -> None:
    for name, encode in (("ulaw", ulaw_encode), ("alaw", alaw_encode)):
        for data in read_records(DATA / f"{name}.rtp"):
            payload = parse(data).payload
            expected = payload.replace(b"\x7f", b"\xff") if name == "ulaw" else payload  # Asterisk sends -0 too
            assert encode(get_codec(name).decode(payload)) == expected


# --- resampling -------------------------------------------------------------------------------------------------


@pytest.mark.parametrize(("from_rate", "to_rate"), [(8000, 16000), (16000, 8000), (22050, 8000), (8000, 22050),
                                                    (44100, 16000), (16000, 22050)])
def test_resampled_tone_is_the_same_tone_sample_by_sample(from_rate: int, to_rate: int) -> None:
    for freq, phase in ((1000.0, 0.0), (310.0, 1.0), (2900.0, 2.0)):
        out = resample(sine(freq, from_rate, from_rate, phase=phase), from_rate, to_rate)
        assert out.dtype == np.int16 and len(out) == to_rate
        ideal = sine(freq, to_rate, to_rate, phase=phase)
        core = slice(to_rate // 50, -to_rate // 50)  # leave out the 20 ms at each end (silence around the input)
        error = max(rms(out[core] - ideal[core].astype(np.int32)), 0.5)  # 0.5: below rounding to int16
        assert db(rms(ideal[core]) ** 2 / error**2) > 50
        assert dominant_frequency(out, to_rate) == pytest.approx(freq, abs=1)


def test_downsampling_blocks_what_would_fold_back() -> None:
    """Tones above the new Nyquist are removed before decimating, not folded into the band."""
    for from_rate, freq in ((16000, 6000.0), (16000, 4500.0), (22050, 5000.0), (22050, 9000.0)):
        x = sine(freq, from_rate, from_rate)
        out = resample(x, from_rate, 8000)[160:-160]  # the abrupt start and end of the input are broadband
        alias = abs(8000 - freq) if freq < 8000 else freq - 8000
        assert db(rms(x) ** 2 / max(rms(out), 0.5) ** 2) > 60
        assert goertzel_power(out, 8000, alias) < 1e-6 * rms(x) ** 2


def test_upsampling_leaves_no_image() -> None:
    out = resample(sine(1000.0, 8000, 8000), 8000, 16000)
    assert db(goertzel_power(out, 16000, 1000.0) / goertzel_power(out, 16000, 7000.0)) > 70


@pytest.mark.parametrize(("from_rate", "to_rate"), [(8000, 16000), (16000, 8000), (22050, 8000)])
def test_telephone_band_is_flat(from_rate: int, to_rate: int) -> None:
    for freq in (300.0, 1000.0, 2000.0, 3000.0, 3300.0):
        x = sine(freq, from_rate, from_rate)
        out = resample(x, from_rate, to_rate)
        core = slice(to_rate // 50, -to_rate // 50)
        assert abs(db(rms(out[core]) ** 2 / rms(x) ** 2)) < 0.2, freq


def test_streaming_in_frames_equals_one_shot() -> None:
    rng = np.random.default_rng(7)
    for from_rate, to_rate, frame in ((8000, 16000, 160), (16000, 8000, 320), (22050, 8000, 441), (22050, 8000, 100)):
        x = rng.integers(-20000, 20000, size=from_rate).astype(np.int16)
        resampler = Resampler(from_rate, to_rate)
        pieces = [resampler.process(x[i : i + frame]) for i in range(0, len(x), frame)]
        pieces.append(resampler.flush())
        assert np.array_equal(np.concatenate(pieces), resample(x, from_rate, to_rate))
        # after the first frame (the filter's look-ahead), each frame gives its own duration back
        steady = [len(p) for p in pieces[2:-2]]
        assert all(abs(n - frame * to_rate / from_rate) < 1 for n in steady)


def test_resampler_is_reusable_after_flush() -> None:
    resampler = Resampler(16000, 8000)
    x = sine(1000.0, 16000, 3200)
    first = np.concatenate((resampler.process(x), resampler.flush()))
    second = np.concatenate((resampler.process(x), resampler.flush()))
    assert np.array_equal(first, second)


def test_resample_lengths_and_edges() -> None:
    for count in (0, 1, 7, 160, 441):
        assert len(resample(np.ones(count, dtype=np.int16), 22050, 8000)) == ceil(count * 8000 / 22050)
        assert len(resample(np.ones(count, dtype=np.int16), 8000, 16000)) == 2 * count
    same = sine(1000.0, 8000, 160)
    out = resample(same, 8000, 8000)
    assert np.array_equal(out, same) and out is not same
    streaming = Resampler(8000, 8000)
    assert np.array_equal(streaming.process(same), same) and len(streaming.flush()) == 0
    loud = np.tile(np.array([32767] * 20 + [-32768] * 20, dtype=np.int16), 50)  # overshoot saturates, no wrap
    up = resample(loud, 8000, 16000)
    assert up.dtype == np.int16
    assert np.all(up[40:-40][np.repeat(loud, 2)[40:-40] == 32767][::8] > 0)


def test_resample_refuses_nonsense() -> None:
    with pytest.raises(ValueError, match="positive"):
        Resampler(0, 8000)
    with pytest.raises(ValueError, match="mono"):
        resample(np.zeros((2, 160), dtype=np.int16), 8000, 16000)


# --- tone analysis ----------------------------------------------------------------------------------------------


def test_goertzel_power_measures_one_tone() -> None:
    x = sine(1000.0, 8000, 1600, amplitude=8000.0)
    assert goertzel_power(x, 8000, 1000.0) == pytest.approx(8000.0**2 / 2, rel=1e-3)
    assert goertzel_power(x, 8000, 1500.0) < 1e-6 * 8000.0**2
    dtmf = sine(697.0, 8000, 800) // 2 + sine(1209.0, 8000, 800) // 2  # the digit 1
    powers = {f: goertzel_power(dtmf, 8000, f) for f in (697.0, 770.0, 852.0, 941.0, 1209.0, 1336.0, 1477.0)}
    assert sorted(powers, key=powers.__getitem__)[-2:] in ([697.0, 1209.0], [1209.0, 697.0])
    assert goertzel_power(np.zeros(0, dtype=np.int16), 8000, 1000.0) == 0.0


def test_dominant_frequency_finds_the_tone() -> None:
    rng = np.random.default_rng(11)
    for freq in rng.uniform(200, 3800, size=20):
        noisy = sine(float(freq), 8000, 800) + rng.normal(0, 300, 800)
        assert dominant_frequency(noisy, 8000) == pytest.approx(freq, abs=3)
    assert dominant_frequency(np.zeros(160, dtype=np.int16), 8000) == 0.0
    assert dominant_frequency(np.full(160, 500, dtype=np.int16), 8000) == 0.0  # DC is not a tone
