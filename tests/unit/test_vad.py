"""Voice detectors on real speech-like audio made offline (espeak-ng, tests/support/speech_samples.py): silero
and webrtcvad say speech on speech and not on silence or moderate line noise, the cascade does not run silero
on silence, detectors never share a stream's state, and frames are validated."""

from __future__ import annotations

from collections.abc import Callable

import numpy as np
import numpy.typing as npt
import pytest

from asterisk_agent.media.frames import FRAME_SAMPLES
from asterisk_agent.speech.vad import (
    SILENCE_DBFS,
    CascadeVad,
    SileroModels,
    SileroVad,
    VadConfig,
    VoiceDetector,
    WebRtcVad,
    check_frame,
    frame_dbfs,
    make_detector,
)
from tests.support.speech_samples import (
    concat,
    frames,
    mix,
    noise_for,
    sentence,
    silence,
    white_noise,
)

Probabilities = npt.NDArray[np.float64]


def run(detector: VoiceDetector, audio: npt.NDArray[np.int16]) -> Probabilities:
    return np.array([detector.probability(frame) for frame in frames(audio)])


def speech() -> npt.NDArray[np.int16]:
    return concat(sentence(0), sentence(1), sentence(2))


@pytest.fixture
def models() -> SileroModels:
    """A private model cache, so counts do not depend on other tests."""
    return SileroModels()


DETECTORS: dict[str, Callable[[], VoiceDetector]] = {
    "silero": SileroVad,
    "webrtc": WebRtcVad,
    "cascade": make_detector,
}


# --- silero ---------------------------------------------------------------------------------------------------


def test_silero_says_speech_on_speech_and_not_on_silence_or_noise() -> None:
    vad = SileroVad()
    try:
        assert np.mean(run(vad, speech()) >= 0.5) > 0.9
        vad.reset()
        assert np.mean(run(vad, silence(3)) >= 0.5) == 0
        for level in (-45.0, -35.0, -25.0):  # stationary line noise, quiet to loud
            vad.reset()
            assert np.mean(run(vad, white_noise(5, level, seed=1)) >= 0.5) < 0.02, level
    finally:
        vad.close()


def test_silero_hears_speech_at_10_db_snr() -> None:
    audio = speech()
    vad = SileroVad()
    try:
        assert np.mean(run(vad, mix(audio, noise_for(audio, 10, seed=2))) >= 0.5) > 0.9
    finally:
        vad.close()


def test_silero_runs_one_window_per_256_samples_and_answers_every_frame() -> None:
    vad = SileroVad()
    try:
        probabilities = run(vad, speech()[: 8 * FRAME_SAMPLES * 10])  # 80 frames: 50 windows of 256 samples
        assert len(probabilities) == 80
        assert vad.windows == 50
        assert probabilities[0] == 0.0  # no complete window yet
        assert np.all((probabilities >= 0) & (probabilities <= 1))
    finally:
        vad.close()


def test_two_silero_detectors_fed_different_audio_do_not_influence_each_other(models: SileroModels) -> None:
    talk, quiet = speech()[: 200 * FRAME_SAMPLES], white_noise(4, -40, seed=3)
    alone_talk, alone_quiet = SileroVad(models), SileroVad(models)
    expected_talk, expected_quiet = run(alone_talk, talk), run(alone_quiet, quiet)
    alone_talk.close()
    alone_quiet.close()

    first, second = SileroVad(models), SileroVad(models)  # the two cached models again, now interleaved
    got_talk, got_quiet = [], []
    for a, b in zip(frames(talk), frames(quiet), strict=True):
        got_talk.append(first.probability(a))
        got_quiet.append(second.probability(b))
    np.testing.assert_array_equal(got_talk, expected_talk)
    np.testing.assert_array_equal(got_quiet, expected_quiet)
    assert models.loaded == 2  # reused, not loaded per detector
    first.close()
    second.close()


def test_a_cached_model_comes_back_reset(models: SileroModels) -> None:
    audio = speech()[: 100 * FRAME_SAMPLES]
    vad = SileroVad(models)
    fresh = run(vad, audio)
    run(vad, speech())  # leaves state behind
    vad.close()
    vad.close()  # idempotent
    again = SileroVad(models)
    np.testing.assert_array_equal(run(again, audio), fresh)
    assert models.loaded == 1
    again.close()
    with pytest.raises(RuntimeError, match="closed"):
        again.probability(np.zeros(FRAME_SAMPLES, dtype=np.int16))


def test_silero_reset_starts_an_independent_stream(models: SileroModels) -> None:
    audio = speech()[: 60 * FRAME_SAMPLES]
    vad = SileroVad(models)
    fresh = run(vad, audio)
    vad.reset()
    np.testing.assert_array_equal(run(vad, audio), fresh)
    vad.close()


def test_preload_loads_models_before_calls(models: SileroModels) -> None:
    models.preload(3)
    assert (models.loaded, models.idle) == (3, 3)
    vad = SileroVad(models)
    assert (models.loaded, models.idle) == (3, 2)
    vad.close()
    models.preload(2)
    assert models.loaded == 3


# --- webrtc ---------------------------------------------------------------------------------------------------


def test_webrtc_says_speech_on_clean_speech_and_not_on_silence() -> None:
    vad = WebRtcVad(1)
    assert np.mean(run(vad, speech())) > 0.9
    vad.reset()
    assert np.mean(run(vad, silence(3))) == 0
    vad.reset()
    assert np.mean(run(vad, white_noise(5, -45, seed=4))) < 0.05  # quiet line noise
    assert set(np.unique(run(vad, speech()))) <= {0.0, 1.0}


def test_webrtc_aggressiveness_is_validated() -> None:
    for bad in (-1, 4):
        with pytest.raises(ValueError, match="aggressiveness"):
            WebRtcVad(bad)


# --- cascade --------------------------------------------------------------------------------------------------


def test_cascade_does_not_run_silero_on_silence(models: SileroModels) -> None:
    cascade = CascadeVad(SileroVad(models), WebRtcVad(1), hangover=10)
    assert np.all(run(cascade, silence(5)) == 0)
    assert cascade.silero.windows == 0
    assert cascade.skipped == 250
    cascade.close()


def test_cascade_follows_silero_on_speech_and_skips_the_silence_between(models: SileroModels) -> None:
    talk = speech()
    silero, cascade = SileroVad(models), CascadeVad(SileroVad(models), WebRtcVad(1), hangover=10)
    alone = run(silero, talk)
    audio = concat(talk, silence(2), talk)
    got = run(cascade, audio)
    speech_frames = len(talk) // FRAME_SAMPLES
    np.testing.assert_array_equal(got[:speech_frames], alone[:speech_frames])  # webrtc voiced it all
    gap = got[speech_frames : speech_frames + 100]
    assert np.all(gap[30:] == 0)  # past webrtcvad's own hangover and ours, nothing run
    assert cascade.skipped >= 100 - 30
    assert np.mean(got[speech_frames + 100 :] >= 0.5) > 0.9  # silero resumes on the next speech
    silero.close()
    cascade.close()


def test_make_detector_follows_the_config() -> None:
    made = [make_detector(VadConfig(engine=engine)) for engine in ("silero", "webrtc", "cascade")]
    assert [type(detector) for detector in made] == [SileroVad, WebRtcVad, CascadeVad]
    cascade = make_detector(VadConfig(webrtc_aggressiveness=3, cascade_hangover_ms=150))
    assert isinstance(cascade, CascadeVad)
    assert (cascade.webrtc.aggressiveness, cascade.hangover) == (3, 8)
    for detector in [*made, cascade]:
        assert isinstance(detector, VoiceDetector)
        detector.close()


@pytest.mark.parametrize(
    "kwargs",
    [{"engine": "torch"}, {"webrtc_aggressiveness": 4}, {"cascade_hangover_ms": -20}],
)
def test_vad_config_is_validated(kwargs: dict[str, object]) -> None:
    with pytest.raises(ValueError):
        VadConfig(**kwargs)  # type: ignore[arg-type]


# --- frames ---------------------------------------------------------------------------------------------------

BAD_FRAMES = {
    "short": np.zeros(FRAME_SAMPLES - 1, dtype=np.int16),
    "wideband": np.zeros(2 * FRAME_SAMPLES, dtype=np.int16),
    "float": np.zeros(FRAME_SAMPLES, dtype=np.float32),
    "int32": np.zeros(FRAME_SAMPLES, dtype=np.int32),
    "2-d": np.zeros((1, FRAME_SAMPLES), dtype=np.int16),
    "list": [0] * FRAME_SAMPLES,
    "bytes": bytes(2 * FRAME_SAMPLES),
}


@pytest.mark.parametrize("engine", DETECTORS)
@pytest.mark.parametrize("bad", BAD_FRAMES)
def test_frames_are_validated(engine: str, bad: str) -> None:
    detector = DETECTORS[engine]()
    try:
        with pytest.raises(ValueError, match=r"int16\[160\]"):
            detector.probability(BAD_FRAMES[bad])  # type: ignore[arg-type]
        assert 0 <= detector.probability(np.zeros(FRAME_SAMPLES, dtype=np.int16)) <= 1  # still usable
    finally:
        detector.close()


def test_check_frame_and_frame_dbfs() -> None:
    frame = np.full(FRAME_SAMPLES, 16384, dtype=np.int16)
    assert check_frame(frame) is frame
    assert frame_dbfs(frame) == pytest.approx(-6.02, abs=0.01)
    assert frame_dbfs(np.zeros(FRAME_SAMPLES, dtype=np.int16)) == SILENCE_DBFS
    assert frame_dbfs(white_noise(1, -30, seed=5)) == pytest.approx(-30, abs=0.5)
