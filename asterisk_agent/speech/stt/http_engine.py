"""Speech recognition through any OpenAI-compatible transcription endpoint (OpenAI, a self-hosted
faster-whisper-server, vLLM, LocalAI, ...): ``POST {base_url}/v1/audio/transcriptions``, multipart with the
utterance as a WAV file (8 kHz, mono, 16-bit PCM: what the call carries, nothing invented), a ``model`` field,
``language`` and ``response_format``, and ``Authorization: Bearer <api_key>`` when a key is configured.

The answer is JSON with at least ``{"text": ...}``. Confidence, in this order: a numeric top-level
``confidence`` in 0..1 if the server sends one; else, for ``verbose_json`` answers with ``segments``, the
duration-weighted mean over segments of ``exp(avg_logprob) * (1 - no_speech_prob)`` (the same formula as the
local whisper engine); else ``default_confidence`` from the options. Empty text has confidence 0.

Failures are :class:`SttHttpError` with a ``kind``:

- ``"rate_limited"``: HTTP 429 (``retry_after`` in seconds from ``Retry-After`` when given);
- ``"server"``: HTTP 5xx; ``"client"``: any other 4xx (a bad key, a bad model name, a rejected file);
- ``"timeout"``: no complete answer within ``timeout_ms`` (or no connection within ``connect_timeout_ms``);
- ``"connection"``: the server cannot be reached;
- ``"invalid_response"``: a 2xx answer that is not JSON, or JSON without a string ``text``.

``retryable`` is true for rate_limited, server, timeout and connection. The engine does not retry by itself: the
dialog decides (re-prompt, fall back to a grammar), since a caller is waiting.
"""

from __future__ import annotations

import asyncio
import io
import json
import math
import time
import wave
from dataclasses import dataclass
from typing import Any

import aiohttp
import numpy as np

from asterisk_agent.media.codecs import Samples, to_int16
from asterisk_agent.media.frames import SAMPLE_RATE
from asterisk_agent.speech.stt.base import Recognition
from asterisk_agent.speech.stt.grammars import Grammar, words_of

ENGINE_NAME = "http"
TRANSCRIPTIONS_PATH = "/v1/audio/transcriptions"
RETRYABLE_KINDS = frozenset({"rate_limited", "server", "timeout", "connection"})
_BODY_EXCERPT = 200


@dataclass(frozen=True, slots=True)
class HttpSttOptions:
    base_url: str  # e.g. "http://127.0.0.1:8000" (the /v1/audio/transcriptions path is appended)
    model: str = "whisper-1"
    api_key: str = ""  # empty: no Authorization header
    language: str = "en"
    response_format: str = "json"  # "verbose_json" asks for segments (and so a measured confidence)
    timeout_ms: int = 5000  # the whole request, upload to parsed answer
    connect_timeout_ms: int = 2000
    default_confidence: float = 0.8  # when the answer says nothing about it

    def __post_init__(self) -> None:
        if not self.base_url.startswith(("http://", "https://")):
            raise ValueError(f"base_url must be an http(s) URL, got {self.base_url!r}")
        if self.timeout_ms <= 0 or self.connect_timeout_ms <= 0:
            raise ValueError("timeouts must be positive")
        if not 0.0 <= self.default_confidence <= 1.0:
            raise ValueError(f"default_confidence must be within 0..1, got {self.default_confidence}")

    @property
    def url(self) -> str:
        base = self.base_url.rstrip("/")
        if base.endswith("/v1"):
            base = base[: -len("/v1")]
        return base + TRANSCRIPTIONS_PATH


class SttHttpError(RuntimeError):
    """The endpoint failed to transcribe; ``kind`` says how (see the module's documentation)."""

    def __init__(self, kind: str, message: str, *, status: int | None = None,
                 retry_after: float | None = None) -> None:
        super().__init__(message)
        self.kind = kind
        self.status = status
        self.retry_after = retry_after

    @property
    def retryable(self) -> bool:
        return self.kind in RETRYABLE_KINDS


def wav_bytes(samples: Samples, rate: int = SAMPLE_RATE) -> bytes:
    """``samples`` (int16 mono) as a RIFF/WAVE file, 16-bit PCM."""
    buffer = io.BytesIO()
    with wave.open(buffer, "wb") as out:
        out.setnchannels(1)
        out.setsampwidth(2)
        out.setframerate(rate)
        out.writeframes(to_int16(samples).astype("<i2").tobytes())
    return buffer.getvalue()


def _segment_confidence(segments: list[Any]) -> float | None:
    weights: list[float] = []
    values: list[float] = []
    for segment in segments:
        if not isinstance(segment, dict):
            return None
        avg = segment.get("avg_logprob")
        if not isinstance(avg, int | float) or isinstance(avg, bool):
            return None
        no_speech = segment.get("no_speech_prob", 0.0)
        no_speech = float(no_speech) if isinstance(no_speech, int | float) else 0.0
        start, end = segment.get("start"), segment.get("end")
        duration = float(end) - float(start) if isinstance(start, int | float) and isinstance(end, int | float) \
            else 1.0
        weights.append(max(duration, 1e-3))
        values.append(math.exp(min(0.0, float(avg))) * (1.0 - min(1.0, max(0.0, no_speech))))
    if not values:
        return None
    return float(np.average(values, weights=weights))


def parse_answer(body: bytes, default_confidence: float) -> tuple[str, float]:
    """The text and confidence in a 2xx answer; :class:`SttHttpError` ``invalid_response`` otherwise."""
    try:
        data = json.loads(body)
    except (UnicodeDecodeError, json.JSONDecodeError) as error:
        raise SttHttpError("invalid_response", f"the transcription answer is not JSON ({error}): "
                           f"{body[:_BODY_EXCERPT]!r}") from None
    if not isinstance(data, dict) or not isinstance(data.get("text"), str):
        raise SttHttpError("invalid_response", f"the transcription answer has no text: {body[:_BODY_EXCERPT]!r}")
    text = data["text"].strip()
    if not text:
        return "", 0.0
    confidence: float | None = None
    given = data.get("confidence")
    if isinstance(given, int | float) and not isinstance(given, bool) and 0.0 <= given <= 1.0:
        confidence = float(given)
    elif isinstance(data.get("segments"), list):
        confidence = _segment_confidence(data["segments"])
    return text, default_confidence if confidence is None else min(1.0, max(0.0, confidence))


def _retry_after(value: str | None) -> float | None:
    if value is None:
        return None
    try:
        return max(0.0, float(value))
    except ValueError:
        return None  # an HTTP date: not worth parsing for a caller who is waiting


class HttpTranscriber:
    """The client: one ``aiohttp.ClientSession`` (made on first use, in the running loop) for every call."""

    def __init__(self, options: HttpSttOptions) -> None:
        self.options = options
        self._session: aiohttp.ClientSession | None = None
        self._loop: asyncio.AbstractEventLoop | None = None

    @property
    def loop(self) -> asyncio.AbstractEventLoop | None:
        """The event loop its session lives on (``None`` before the first request or after :meth:`close`)."""
        return self._loop if self._session is not None and not self._session.closed else None

    def _client(self) -> aiohttp.ClientSession:
        if self._session is None or self._session.closed:
            self._session = aiohttp.ClientSession()
            self._loop = asyncio.get_running_loop()
        return self._session

    async def transcribe(self, samples: Samples) -> tuple[str, float]:
        """The text and confidence for one utterance (8 kHz int16); :class:`SttHttpError` on any failure."""
        options = self.options
        form = aiohttp.FormData()
        form.add_field("file", wav_bytes(samples), filename="utterance.wav", content_type="audio/wav")
        form.add_field("model", options.model)
        if options.language:
            form.add_field("language", options.language)
        form.add_field("response_format", options.response_format)
        headers = {"Accept": "application/json"}
        if options.api_key:
            headers["Authorization"] = f"Bearer {options.api_key}"
        timeout = aiohttp.ClientTimeout(total=options.timeout_ms / 1000, sock_connect=options.connect_timeout_ms / 1000)
        try:
            async with self._client().post(options.url, data=form, headers=headers, timeout=timeout) as response:
                body = await response.read()
                status = response.status
                retry_after = _retry_after(response.headers.get("Retry-After"))
        except TimeoutError:
            raise SttHttpError("timeout", f"no answer from {options.url} within {options.timeout_ms} ms") from None
        except aiohttp.ClientError as error:
            raise SttHttpError("connection", f"cannot reach {options.url}: {error}") from error
        excerpt = body[:_BODY_EXCERPT].decode("utf-8", "replace")
        if status == 429:
            raise SttHttpError("rate_limited", f"{options.url} is rate limiting (429): {excerpt}", status=status,
                               retry_after=retry_after)
        if status >= 500:
            raise SttHttpError("server", f"{options.url} failed ({status}): {excerpt}", status=status,
                               retry_after=retry_after)
        if status >= 400:
            raise SttHttpError("client", f"{options.url} refused the request ({status}): {excerpt}", status=status)
        if not 200 <= status < 300:
            raise SttHttpError("invalid_response", f"{options.url} answered {status}: {excerpt}", status=status)
        return parse_answer(body, options.default_confidence)

    async def close(self) -> None:
        if self._session is not None:
            await self._session.close()
            self._session = None


class HttpRecognizer:
    """One utterance: frames buffered, no partials, sent at :meth:`finish` / :meth:`finish_async`. The text is
    :func:`~.grammars.words_of` the endpoint's (lower case, no punctuation between words)."""

    def __init__(self, engine: HttpEngine, grammar: Grammar | None) -> None:
        self._engine = engine
        self._grammar = grammar
        self._frames: list[Samples] = []

    @property
    def grammar(self) -> Grammar | None:
        return self._grammar

    def accept(self, frame: Samples) -> Recognition | None:
        self._frames.append(to_int16(frame).copy())
        return None

    def _take(self) -> Samples:
        audio = np.concatenate(self._frames) if self._frames else np.zeros(0, dtype=np.int16)
        self.reset()
        return audio

    async def _recognise(self, transcriber: HttpTranscriber, audio: Samples) -> Recognition:
        started = time.perf_counter()
        text, confidence = ("", 0.0) if not len(audio) else await transcriber.transcribe(audio)
        text = " ".join(words_of(text))
        return Recognition(text=text, confidence=confidence if text else 0.0, is_final=True, engine=ENGINE_NAME,
                           grammar=self._grammar.name if self._grammar is not None else None,
                           audio_seconds=len(audio) / SAMPLE_RATE,
                           latency_ms=(time.perf_counter() - started) * 1000)

    async def finish_async(self) -> Recognition:
        """The utterance transcribed by the endpoint; :class:`SttHttpError` when it fails."""
        return await self._recognise(self._engine.transcriber, self._take())

    def finish(self) -> Recognition:
        """:meth:`finish_async` from a thread that runs no event loop (the owner's executor): on the loop where
        the engine's session lives when there is one, else on a loop of its own. :class:`SttHttpError` when the
        endpoint fails; ``RuntimeError`` when called on a running event loop (it would block it)."""
        try:
            asyncio.get_running_loop()
        except RuntimeError:
            pass
        else:
            raise RuntimeError("HttpRecognizer.finish() would block the running event loop: await finish_async()")
        audio = self._take()
        shared = self._engine.transcriber
        loop = shared.loop
        if loop is not None and loop.is_running():
            return asyncio.run_coroutine_threadsafe(self._recognise(shared, audio), loop).result()
        own = HttpTranscriber(shared.options)

        async def run() -> Recognition:
            try:
                return await self._recognise(own, audio)
            finally:
                await own.close()

        return asyncio.run(run())

    def reset(self) -> None:
        self._frames = []


class HttpEngine:
    """Open recognition by an OpenAI-compatible endpoint; a grammar is named in the results, not sent."""

    name = ENGINE_NAME

    def __init__(self, options: HttpSttOptions | None = None, *, transcriber: HttpTranscriber | None = None) -> None:
        if transcriber is None:
            if options is None:
                raise ValueError("HttpEngine needs options or a transcriber")
            transcriber = HttpTranscriber(options)
        self.transcriber = transcriber
        self.options = transcriber.options

    def open(self, grammar: Grammar | None = None) -> HttpRecognizer:
        return HttpRecognizer(self, grammar)

    async def close(self) -> None:
        await self.transcriber.close()
