"""A real webhook receiver on 127.0.0.1, as a customer would write one: it checks every signature, answers
from a script (fail, hang, 429 with Retry-After, accept), and de-duplicates on the idempotency key."""

from __future__ import annotations

import asyncio
import json
import socket
from collections.abc import Awaitable, Callable
from dataclasses import dataclass, field
from typing import Any

from aiohttp import web

from asterisk_agent.outbox import IDEMPOTENCY_HEADER, SIGNATURE_HEADER, TIMESTAMP_HEADER, verify_signature

Answer = Callable[[web.Request], Awaitable[web.StreamResponse]]


def free_port() -> int:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return int(probe.getsockname()[1])


async def accept(request: web.Request) -> web.StreamResponse:
    return web.json_response({"ok": True})


def status(code: int, headers: dict[str, str] | None = None) -> Answer:
    async def answer(request: web.Request) -> web.StreamResponse:
        return web.Response(status=code, headers=headers)
    return answer


@dataclass
class Arrival:
    at: float  # loop time
    key: str
    timestamp: str
    body: bytes
    signed: bool  # the signature verified with the receiver's secret


@dataclass
class Receiver:
    secret: str
    port: int = field(default_factory=free_port)
    script: list[Answer] = field(default_factory=list)  # answers to the first arrivals, in turn; then accept
    arrivals: list[Arrival] = field(default_factory=list)
    delivered: dict[str, Any] = field(default_factory=dict)  # idempotency key -> message, each once
    duplicates: int = 0
    release: asyncio.Event = field(default_factory=asyncio.Event)  # what hang() answers wait for
    changed: asyncio.Condition = field(default_factory=asyncio.Condition)
    _runner: web.AppRunner | None = None

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.port}/hooks/calls?token=t0k3n"

    async def start(self) -> None:
        app = web.Application()
        app.router.add_post("/hooks/calls", self._handle)
        self._runner = web.AppRunner(app, handler_cancellation=True, shutdown_timeout=0.2, access_log=None)
        await self._runner.setup()
        await web.TCPSite(self._runner, "127.0.0.1", self.port).start()

    async def stop(self) -> None:
        self.release.set()
        if self._runner is not None:
            await self._runner.cleanup()
            self._runner = None

    def hang(self) -> Answer:
        async def answer(request: web.Request) -> web.StreamResponse:
            await self.release.wait()
            return web.json_response({"ok": True})
        return answer

    async def wait_for(self, predicate: Callable[[], bool], timeout: float = 10.0) -> None:
        async with asyncio.timeout(timeout), self.changed:
            await self.changed.wait_for(predicate)

    def arrivals_of(self, key: str) -> list[Arrival]:
        return [arrival for arrival in self.arrivals if arrival.key == key]

    async def _handle(self, request: web.Request) -> web.StreamResponse:
        body = await request.read()
        timestamp = request.headers.get(TIMESTAMP_HEADER, "")
        signed = verify_signature(self.secret, timestamp, body, request.headers.get(SIGNATURE_HEADER, ""))
        arrival = Arrival(asyncio.get_running_loop().time(), request.headers.get(IDEMPOTENCY_HEADER, ""),
                          timestamp, body, signed)
        index = len(self.arrivals)
        self.arrivals.append(arrival)
        async with self.changed:
            self.changed.notify_all()
        if not signed:
            return web.Response(status=401)
        answer = self.script[index] if index < len(self.script) else accept
        response = await answer(request)
        if 200 <= response.status < 300:
            if arrival.key in self.delivered:
                self.duplicates += 1
            else:
                self.delivered[arrival.key] = json.loads(body)
            async with self.changed:
                self.changed.notify_all()
        return response
