"""A real OpenAI-compatible transcription server on 127.0.0.1 (a random port) for the HTTP STT engine's tests.

``POST /v1/audio/transcriptions`` takes the multipart upload, checks that ``file`` is a valid WAV (RIFF/WAVE,
PCM, at least one frame: 400 otherwise), that ``model`` is present (400) and, when a token is configured, the
bearer token (401); then answers according to :attr:`SttStubServer.fault`:

- ``None``: ``{"text": <text>}`` (``verbose_json`` adds one segment with ``avg_logprob``/``no_speech_prob``);
- ``"429"``: 429 with ``Retry-After: 1``; ``"500"``: 500 with a JSON error;
- ``"slow"``: the answer after ``delay_s`` seconds; ``"invalid_json"``: 200 with a body that is not JSON.

Every accepted upload is recorded in :attr:`SttStubServer.requests` (model, language, rate, frames, auth).
"""

from __future__ import annotations

import asyncio
import contextlib
import io
import json
import wave
from dataclasses import dataclass, field

from aiohttp import web


@dataclass(slots=True)
class Upload:
    model: str
    language: str
    response_format: str
    rate: int
    channels: int
    frames: int
    authorization: str


@dataclass(slots=True)
class SttStubServer:
    text: str = "hello from the stub"
    fault: str | None = None
    delay_s: float = 2.0
    token: str = ""
    avg_logprob: float = -0.1
    no_speech_prob: float = 0.02
    requests: list[Upload] = field(default_factory=list)
    _runner: web.AppRunner | None = None
    _port: int = 0
    _stopping: asyncio.Event = field(default_factory=asyncio.Event)

    @property
    def base_url(self) -> str:
        return f"http://127.0.0.1:{self._port}"

    async def start(self) -> None:
        app = web.Application()
        app.router.add_post("/v1/audio/transcriptions", self._transcriptions)
        self._runner = web.AppRunner(app, handler_cancellation=True, shutdown_timeout=1.0)
        await self._runner.setup()
        site = web.TCPSite(self._runner, "127.0.0.1", 0)
        await site.start()
        address = self._runner.addresses[0]
        self._port = int(address[1])

    async def stop(self) -> None:
        self._stopping.set()
        if self._runner is not None:
            await self._runner.cleanup()
            self._runner = None

    async def _transcriptions(self, request: web.Request) -> web.StreamResponse:
        if self.token and request.headers.get("Authorization") != f"Bearer {self.token}":
            return web.json_response({"error": {"message": "bad token"}}, status=401)
        try:
            form = await request.post()
        except ValueError:
            return web.json_response({"error": {"message": "not a multipart form"}}, status=400)
        upload = form.get("file")
        model = form.get("model")
        if not isinstance(upload, web.FileField):
            return web.json_response({"error": {"message": "no file"}}, status=400)
        if not isinstance(model, str) or not model:
            return web.json_response({"error": {"message": "no model"}}, status=400)
        try:
            data = upload.file.read()
        finally:
            upload.file.close()
        try:
            with wave.open(io.BytesIO(data), "rb") as wav:
                rate, channels, width, frames = (wav.getframerate(), wav.getnchannels(), wav.getsampwidth(),
                                                 wav.getnframes())
        except (wave.Error, EOFError) as error:
            return web.json_response({"error": {"message": f"not a WAV file: {error}"}}, status=400)
        if width != 2 or frames == 0 or len(data) < 44 + frames * channels * width:
            return web.json_response({"error": {"message": "empty or truncated WAV"}}, status=400)
        language = form.get("language")
        response_format = form.get("response_format")
        self.requests.append(Upload(model, language if isinstance(language, str) else "",
                                    response_format if isinstance(response_format, str) else "json",
                                    rate, channels, frames, request.headers.get("Authorization", "")))
        if self.fault == "429":
            return web.json_response({"error": {"message": "rate limited"}}, status=429, headers={"Retry-After": "1"})
        if self.fault == "500":
            return web.json_response({"error": {"message": "internal error"}}, status=500)
        if self.fault == "invalid_json":
            return web.Response(text='{"text": "unterminated', content_type="application/json")
        if self.fault == "slow":
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(self._stopping.wait(), self.delay_s)
        body: dict[str, object] = {"text": self.text}
        if response_format == "verbose_json":
            seconds = frames / rate
            body.update(language="english", duration=seconds, segments=[{
                "id": 0, "start": 0.0, "end": seconds, "text": self.text,
                "avg_logprob": self.avg_logprob, "no_speech_prob": self.no_speech_prob,
            }])
        return web.Response(text=json.dumps(body), content_type="application/json")
