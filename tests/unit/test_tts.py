"""Text to speech: sentence splitting, piper and libespeak-ng in process, 8 kHz conversion, the prompt cache and
streaming synthesis off the event loop. Piper is loaded once for the session (a fixture)."""

from __future__ import annotations

import asyncio
import itertools
import multiprocessing
import pickle
import threading
import time
from collections.abc import AsyncIterator, Iterator
from concurrent.futures import ProcessPoolExecutor, ThreadPoolExecutor
from pathlib import Path
from typing import BinaryIO

import numpy as np
import pytest

from asterisk_agent.media.codecs import Samples, resample
from asterisk_agent.media.frames import FRAME_SAMPLES, SAMPLE_RATE
from asterisk_agent.speech.tts import (
    EspeakSynthesizer,
    PiperSynthesizer,
    PromptCache,
    SpeechSynthesizer,
    iter_phone_rate,
    render_phone,
    render_sentence,
    sentence_to_phone,
    split_sentences,
    synthesize_async,
    to_phone_rate,
)
from asterisk_agent.speech.tts.base import phone_padding
from asterisk_agent.speech.tts.piper_engine import loaded_voices

CLINIC = "Hello, this is the clinic."
THREE = "Hello, this is the clinic. Your appointment is on Tuesday at ten. Do you want to change it?"


# --- helpers ------------------------------------------------------------------------------------------------------


def dbfs(samples: Samples) -> float:
    rms = float(np.sqrt(np.mean(samples.astype(np.float64) ** 2))) if len(samples) else 0.0
    return 20 * float(np.log10(rms / 32768.0)) if rms > 0 else -120.0


def band_fraction(samples: Samples, rate: int, low: float, high: float) -> float:
    spectrum = np.abs(np.fft.rfft(samples.astype(np.float64))) ** 2
    freqs = np.fft.rfftfreq(len(samples), 1 / rate)
    return float(spectrum[(freqs >= low) & (freqs <= high)].sum() / spectrum.sum())


def tone(seconds: float, rate: int, freq: float = 440.0) -> Samples:
    t = np.arange(round(seconds * rate)) / rate
    return np.asarray(np.rint(8000 * np.sin(2 * np.pi * freq * t)), dtype=np.int16)


class ToneSynth:
    """A fake engine: a tone per sentence, as long as 10 ms per character; counts and can gate its renders."""

    sample_rate = 22050

    def __init__(self, delay_s: float = 0.0) -> None:
        self.cache_key = "tone:440"
        self.delay_s = delay_s
        self.renders = 0
        self.started: list[str] = []
        self.finished: list[tuple[str, float]] = []
        self.gates: dict[str, threading.Event] = {}
        self.fail = False
        self._lock = threading.Lock()

    def synthesize(self, text: str) -> Iterator[Samples]:
        for sentence in split_sentences(text):
            with self._lock:
                self.renders += 1
                self.started.append(sentence)
            gate = self.gates.get(sentence)
            if gate is not None:
                assert gate.wait(5), f"gate for {sentence!r} never opened"
            time.sleep(self.delay_s)
            if self.fail:
                raise RuntimeError("engine down")
            with self._lock:
                self.finished.append((sentence, time.monotonic()))
            yield tone(0.01 * len(sentence), self.sample_rate)


@pytest.fixture(scope="session")
def piper() -> PiperSynthesizer:
    return PiperSynthesizer()


@pytest.fixture(scope="session")
def piper_steady() -> PiperSynthesizer:
    """Deterministic durations (no phoneme-width noise); shares the session with ``piper``."""
    return PiperSynthesizer(noise_w_scale=0.0)


@pytest.fixture(scope="session")
def espeak() -> EspeakSynthesizer:
    return EspeakSynthesizer()


@pytest.fixture(params=["piper", "espeak"])
def engine(request: pytest.FixtureRequest) -> SpeechSynthesizer:
    synth: SpeechSynthesizer = request.getfixturevalue(request.param)
    return synth


async def collect(chunks: AsyncIterator[Samples]) -> list[Samples]:
    return [chunk async for chunk in chunks]


# --- split_sentences ----------------------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("text", "expected"),
    [
        ("Hello. How are you? Fine!", ["Hello.", "How are you?", "Fine!"]),
        ("Dr. Smith will see you. Mrs. Jones too.", ["Dr. Smith will see you.", "Mrs. Jones too."]),
        ("It costs 3.5 dollars. Pay at 12.30 please.", ["It costs 3.5 dollars.", "Pay at 12.30 please."]),
        ("Well... I see. Hmm… Right.", ["Well...", "I see.", "Hmm…", "Right."]),
        ("Wait... let me check.", ["Wait... let me check."]),
        ("Really?! Yes!!", ["Really?!", "Yes!!"]),
        ("Bring e.g. your card. Room No. 5 is free.", ["Bring e.g. your card.", "Room No. 5 is free."]),
        ("No. I do not.", ["No.", "I do not."]),
        ("J. R. Smith called.", ["J. R. Smith called."]),
        ('He said "Hello." Then he left.', ['He said "Hello."', "Then he left."]),
        ("See you at 10 a.m. Tomorrow works.", ["See you at 10 a.m.", "Tomorrow works."]),
        ("first line\nsecond line", ["first line", "second line"]),
        ("  lots   of\tspace .  ", ["lots of space ."]),
        ("no final punctuation", ["no final punctuation"]),
        ("", []),
        ("   ", []),
        ("...", []),
        ("?! ... !", []),
        ("Hi. ... . Bye.", ["Hi.", "Bye."]),
    ],
)
def test_split_sentences(text: str, expected: list[str]) -> None:
    assert split_sentences(text) == expected


def test_long_sentences_are_cut_at_commas_then_spaces() -> None:
    clauses = ", ".join(f"then we check item number {i}" for i in range(20)) + "."
    pieces = split_sentences(clauses, max_chars=100)
    assert len(pieces) > 3
    assert all(len(piece) <= 100 for piece in pieces)
    assert all(piece.endswith((",", ".")) for piece in pieces)  # cut at clause breaks
    assert " ".join(pieces).split() == clauses.split()  # nothing lost or reordered

    words = " ".join(["word"] * 100)
    pieces = split_sentences(words, max_chars=60)
    assert all(len(piece) <= 60 for piece in pieces)
    assert " ".join(pieces).split() == words.split()

    blob = "x" * 250  # nowhere to cut: cut anyway
    assert [len(piece) for piece in split_sentences(blob, max_chars=100)] == [100, 100, 50]


# --- the engines ----------------------------------------------------------------------------------------------------


def test_engines_speak_a_sentence(engine: SpeechSynthesizer) -> None:
    chunks = list(engine.synthesize(CLINIC))
    assert len(chunks) == 1
    audio = chunks[0]
    assert audio.dtype == np.int16 and audio.ndim == 1
    assert engine.sample_rate == 22050
    assert 0.5 <= len(audio) / engine.sample_rate <= 4.0
    assert dbfs(audio) > -35.0  # speech, not silence

    phone = to_phone_rate(chunks, engine.sample_rate)
    assert len(phone) == -(-len(audio) * SAMPLE_RATE // engine.sample_rate)
    assert band_fraction(phone, SAMPLE_RATE, 100, 3400) > 0.9  # voice band
    assert band_fraction(audio, engine.sample_rate, 100, 3400) > 0.6


def test_engines_yield_sentence_by_sentence(engine: SpeechSynthesizer) -> None:
    chunks = list(engine.synthesize(THREE))
    assert len(chunks) == 3
    assert all(dbfs(chunk) > -35.0 for chunk in chunks)


def test_same_text_same_length(piper_steady: PiperSynthesizer, espeak: EspeakSynthesizer) -> None:
    first, second = (np.concatenate(list(piper_steady.synthesize(CLINIC))) for _ in range(2))
    assert len(first) == len(second)
    # libespeak-ng carries a little state from one text to the next: a few samples either way.
    lengths = [len(np.concatenate(list(espeak.synthesize(CLINIC)))) for _ in range(3)]
    assert max(lengths) - min(lengths) <= 0.005 * lengths[0]


def test_nothing_to_say_gives_no_chunks(engine: SpeechSynthesizer) -> None:
    assert list(engine.synthesize("")) == []
    assert list(engine.synthesize(" ?! ... ")) == []
    assert len(render_phone(engine, "...")) == 0


def test_piper_options(piper_steady: PiperSynthesizer) -> None:
    slow = PiperSynthesizer(noise_w_scale=0.0, length_scale=1.5)
    high = PiperSynthesizer(noise_w_scale=0.0, pitch_semitones=4.0)
    assert loaded_voices() == 1  # every option shares the one session
    base = len(np.concatenate(list(piper_steady.synthesize(CLINIC)))) / piper_steady.sample_rate
    assert len(np.concatenate(list(slow.synthesize(CLINIC)))) / slow.sample_rate == pytest.approx(1.5 * base, 0.1)
    # Pitch: the samples are declared at a higher rate, the duration stays.
    assert high.sample_rate == 27800  # 22,050 * 2 ** (4 / 12), to 50 Hz
    assert len(np.concatenate(list(high.synthesize(CLINIC)))) / high.sample_rate == pytest.approx(base, 0.1)
    assert high.cache_key != piper_steady.cache_key != slow.cache_key
    with pytest.raises(ValueError, match="pitch"):
        PiperSynthesizer(pitch_semitones=20)
    with pytest.raises(ValueError, match="threads"):
        PiperSynthesizer(intra_op_threads=0)


def test_synthesizers_pickle_as_their_options(piper: PiperSynthesizer, espeak: EspeakSynthesizer) -> None:
    clone = pickle.loads(pickle.dumps(piper))
    assert clone.options == piper.options and clone.cache_key == piper.cache_key
    assert len(pickle.dumps(piper)) < 2000  # not the model
    assert pickle.loads(pickle.dumps(espeak)).cache_key == espeak.cache_key
    assert isinstance(piper, SpeechSynthesizer) and isinstance(espeak, SpeechSynthesizer)


def test_espeak_options_and_errors() -> None:
    fast = EspeakSynthesizer(rate=300)
    slow = EspeakSynthesizer(rate=120)
    assert len(next(fast.synthesize(CLINIC))) < 0.7 * len(next(slow.synthesize(CLINIC)))
    with pytest.raises(ValueError, match="no voice"):
        EspeakSynthesizer("xx-nowhere")
    with pytest.raises(ValueError, match="rate"):
        EspeakSynthesizer(rate=10)


def test_espeak_is_independent_of_other_ctypes_users(espeak: EspeakSynthesizer) -> None:
    """The test helpers drive libespeak-ng through ctypes with a callback of their own: both keep working
    whatever order they are used in."""
    from tests.support import speech_samples

    assert len(speech_samples.speak("A helper sentence for the independence check.")) > SAMPLE_RATE // 2
    assert len(next(espeak.synthesize(CLINIC))) > 22050 // 2
    assert len(speech_samples.speak("Another helper sentence, after ours.")) > SAMPLE_RATE // 2


# --- 8 kHz ----------------------------------------------------------------------------------------------------------


def test_streaming_to_phone_rate_matches_one_pass() -> None:
    """Chunks resampled as a stream are the whole signal resampled at once: nothing happens at the seams."""
    signal = tone(0.5, 22050, 700)
    cuts = [0, 1, 441, 5000, 5003, 9000, len(signal)]
    chunks = [signal[a:b] for a, b in itertools.pairwise(cuts)]
    streamed = to_phone_rate(chunks, 22050)
    assert np.array_equal(streamed, resample(signal, 22050, SAMPLE_RATE))
    assert sum(len(c) for c in iter_phone_rate(iter(chunks), 22050)) == len(streamed)
    assert len(to_phone_rate([], 22050)) == 0


def test_sentences_rendered_apart_equal_one_stream() -> None:
    """Each sentence rendered on its own (as a worker does) gives exactly what one streaming resampler gives over
    the same padded reply, in whole 20 ms frames."""
    rate = 22050
    first, second = tone(0.31, rate, 500), tone(0.27, rate, 900)
    apart = np.concatenate([sentence_to_phone(first, rate, pause_ms=200), sentence_to_phone(second, rate)])
    assert len(apart) % FRAME_SAMPLES == 0
    pieces = []
    for sentence, pause_ms in ((first, 200), (second, 0)):
        lead, tail = phone_padding(len(sentence), rate)
        pieces += [np.zeros(lead, dtype=np.int16), sentence, np.zeros(tail + rate * pause_ms // 1000, dtype=np.int16)]
    assert np.array_equal(apart, to_phone_rate(pieces, rate))
    assert phone_padding(len(first), rate)[0] == 441  # one 20 ms frame of lead-in


def test_render_sentence_trims_and_frames(piper: PiperSynthesizer) -> None:
    phone = render_sentence(piper, CLINIC, pause_ms=200)
    assert len(phone) % FRAME_SAMPLES == 0
    assert np.all(phone[-200 * SAMPLE_RATE // 1000 :] == 0)
    assert np.abs(phone[: SAMPLE_RATE * 40 // 1000]).max() > 100  # speech within 40 ms: the lead-in is trimmed


# --- the prompt cache -----------------------------------------------------------------------------------------------


def test_prompt_cache_renders_once_across_threads() -> None:
    synth = ToneSynth(delay_s=0.05)
    cache = PromptCache()
    barrier = threading.Barrier(8)

    def ask() -> Samples:
        barrier.wait()
        return cache.get(synth, "Welcome to the clinic.")

    with ThreadPoolExecutor(8) as pool:
        results = list(pool.map(lambda _: ask(), range(8)))
    assert synth.renders == 1 and cache.renders == 1
    assert all(result is results[0] for result in results)
    assert not results[0].flags.writeable
    assert len(results[0]) % FRAME_SAMPLES == 0
    cache.get(synth, "Something else.")
    assert synth.renders == 2 and len(cache) == 2


async def test_prompt_cache_renders_once_across_tasks() -> None:
    synth = ToneSynth(delay_s=0.05)
    cache = PromptCache()
    with ThreadPoolExecutor(4) as pool:
        results = await asyncio.gather(*(cache.get_async(synth, "Please hold.", pool) for _ in range(10)))
        # A waiter cancelled meanwhile does not cancel the render the others wait for.
        waiter = asyncio.ensure_future(cache.get_async(synth, "One moment.", pool))
        await asyncio.sleep(0.01)
        waiter.cancel()
        again = await cache.get_async(synth, "One moment.", pool)
    assert synth.renders == 2 and cache.renders == 2
    assert all(result is results[0] for result in results)
    assert len(again) > 0


async def test_prompt_cache_failure_reaches_every_waiter_then_retries() -> None:
    synth = ToneSynth(delay_s=0.02)
    synth.fail = True
    cache = PromptCache()
    outcomes = await asyncio.gather(*(cache.get_async(synth, "Broken.") for _ in range(3)), return_exceptions=True)
    assert all(isinstance(outcome, RuntimeError) for outcome in outcomes)
    assert synth.renders == 1
    synth.fail = False
    assert len(cache.get(synth, "Broken.")) > 0
    assert synth.renders == 2


def test_prompt_cache_disk_round_trip(tmp_path: Path, espeak: EspeakSynthesizer) -> None:
    first = PromptCache(tmp_path / "prompts")
    audio = first.get(espeak, "Thank you for calling.")
    files = list((tmp_path / "prompts").iterdir())
    assert [f.suffix for f in files] == [".npy"] and files[0].name.startswith("espeak-")
    assert first.renders == 1

    second = PromptCache(tmp_path / "prompts")
    assert np.array_equal(second.get(espeak, "Thank you for calling."), audio)
    assert second.renders == 0 and second.disk_reads == 1
    # Another voice or pause is another prompt.
    assert first.key(espeak, "x") != first.key(EspeakSynthesizer(pitch=70), "x")
    assert first.key(espeak, "x") != PromptCache(pause_ms=300).key(espeak, "x")


def test_prompt_cache_writes_atomically(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    synth = ToneSynth()
    real_save = np.save

    def crash_midway(file: BinaryIO, array: Samples, allow_pickle: bool = False) -> None:
        real_save(file, array[: len(array) // 2], allow_pickle=allow_pickle)  # half written...
        raise OSError("disk full")  # ...then the disk fills

    monkeypatch.setattr(np, "save", crash_midway)
    audio = PromptCache(tmp_path).get(synth, "Goodbye.")
    assert len(audio) > 0  # the caller still gets the prompt
    assert list(tmp_path.iterdir()) == []  # no truncated file, no temporary left behind
    monkeypatch.setattr(np, "save", real_save)

    cache = PromptCache(tmp_path)
    assert np.array_equal(cache.get(synth, "Goodbye."), audio)
    assert cache.renders == 1
    # A damaged file is rendered again and replaced.
    path = cache.path(cache.key(synth, "Goodbye."))
    assert path is not None
    path.write_bytes(b"not a numpy file")
    fresh = PromptCache(tmp_path)
    assert np.array_equal(fresh.get(synth, "Goodbye."), audio)
    assert fresh.renders == 1 and np.array_equal(np.load(path), audio)


# --- streaming off the loop ----------------------------------------------------------------------------------------


async def test_first_chunk_arrives_before_the_last_sentence_is_rendered() -> None:
    synth = ToneSynth()
    sentences = split_sentences(THREE)
    gate = synth.gates[sentences[2]] = threading.Event()  # the last sentence renders only after we say so
    with ThreadPoolExecutor(2) as pool:
        stream = synthesize_async(synth, THREE, pool)
        first = await asyncio.wait_for(anext(stream), 5)
        assert sentences[2] not in [s for s, _ in synth.finished]  # the last one is not rendered yet
        gate.set()
        rest = await collect(stream)
    assert len(first) > 0 and len(rest) == 2
    # Two workers may finish the first two sentences in either order; the chunks still come out in order.
    assert sorted(s for s, _ in synth.finished) == sorted(sentences)
    assert synth.finished[-1][0] == sentences[2]  # the gated one last
    assert all(len(chunk) % FRAME_SAMPLES == 0 for chunk in [first, *rest])
    # 200 ms of pause after each sentence but the last.
    assert np.all(first[-1600:] == 0) and np.any(rest[-1][-1600:] != 0)


async def test_piper_streams_a_reply(piper: PiperSynthesizer) -> None:
    arrivals: list[float] = []
    with ThreadPoolExecutor(1) as pool:
        async for _chunk in synthesize_async(piper, THREE, pool):
            arrivals.append(time.monotonic())
    assert len(arrivals) == 3
    assert arrivals[0] < arrivals[-1]


async def test_synthesize_async_edges(espeak: EspeakSynthesizer) -> None:
    with ThreadPoolExecutor(2) as pool:
        assert await collect(synthesize_async(espeak, "", pool)) == []
        assert await collect(synthesize_async(espeak, "?! ...", pool)) == []
        long_text = ", ".join(["please hold the line while we find your file"] * 12) + "."
        chunks = await collect(synthesize_async(espeak, long_text, pool))
        assert len(chunks) == len(split_sentences(long_text)) > 1

        # Closing early (barge-in) cancels what has not started.
        synth = ToneSynth(delay_s=0.02)
        many = " ".join(f"Sentence {i} is here." for i in range(10))
        stream = synthesize_async(synth, many, pool)
        await anext(stream)
        await stream.aclose()
        await asyncio.sleep(0.1)
        assert len(synth.started) < 10


async def test_synthesize_async_in_a_process_pool(espeak: EspeakSynthesizer) -> None:
    context = multiprocessing.get_context("spawn")
    with ProcessPoolExecutor(1, mp_context=context) as pool:
        chunks = await collect(synthesize_async(espeak, "One. Two. Three.", pool))
    assert len(chunks) == 3 and all(dbfs(chunk) > -45 for chunk in chunks)
