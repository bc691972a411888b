"""A loopback ARI proxy the tests control: it relays REST and the event WebSocket to a real Asterisk and can
partition the worker from Asterisk, inject raw messages into the event stream, and fail or stall requests."""

from __future__ import annotations

import asyncio
import contextlib
import re
from dataclasses import dataclass, field

import aiohttp
from aiohttp import web


@dataclass
class Fault:
    method: str
    path_pattern: str  # regex on the path after /ari
    kind: str  # "500" or "hang"
    hits: int = 0


@dataclass
class _Link:
    client: web.WebSocketResponse
    upstream: aiohttp.ClientWebSocketResponse
    tasks: list[asyncio.Task[None]] = field(default_factory=list)
    detached: bool = False  # partitioned: the worker side is gone, upstream events are thrown away


class AriProxy:
    def __init__(self, upstream: str) -> None:
        self.upstream = upstream.rstrip("/")
        self.port = 0
        self.partitioned = False
        self.faults: list[Fault] = []
        self.discarded_events = 0
        self._links: list[_Link] = []
        self._orphans: list[aiohttp.ClientWebSocketResponse] = []  # upstream sockets kept during a partition
        self._detached: list[_Link] = []
        self._http: aiohttp.ClientSession | None = None
        self._runner: web.AppRunner | None = None
        self._hung: list[asyncio.Future[None]] = []

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    async def start(self) -> None:
        self._http = aiohttp.ClientSession()
        app = web.Application()
        app.router.add_route("GET", "/ari/events", self._events)
        app.router.add_route("*", "/ari/{tail:.*}", self._rest)
        self._runner = web.AppRunner(app, handle_signals=False)
        await self._runner.setup()
        site = web.TCPSite(self._runner, "127.0.0.1", 0)
        await site.start()
        self.port = site._server.sockets[0].getsockname()[1]  # type: ignore[union-attr]

    async def stop(self) -> None:
        for hung in self._hung:
            if not hung.done():
                hung.set_result(None)
        await self._close_links()
        for orphan in self._orphans:
            await orphan.close()
        for task in self._detached_tasks():
            task.cancel()
        if self._runner is not None:
            await self._runner.cleanup()
        if self._http is not None:
            await self._http.close()

    # --- controls ---------------------------------------------------------------------------------------

    async def partition(self) -> None:
        """Cut the worker off: close its event socket and refuse new ones, while Asterisk keeps the app
        registered (the upstream socket stays open) and its events are thrown away, as on a broken network."""
        self.partitioned = True
        for link in self._links:
            link.detached = True
            await link.client.close()
        self._orphans += [link.upstream for link in self._links]
        self._detached += list(self._links)
        self._links.clear()

    def heal(self) -> None:
        self.partitioned = False

    async def inject(self, text: str) -> None:
        for link in self._links:
            await link.client.send_str(text)

    def fail(self, method: str, path_pattern: str, kind: str) -> Fault:
        fault = Fault(method, path_pattern, kind)
        self.faults.append(fault)
        return fault

    # --- relays -----------------------------------------------------------------------------------------

    async def _events(self, request: web.Request) -> web.StreamResponse:
        if self.partitioned:
            return web.Response(status=503, text="partitioned")
        assert self._http is not None
        upstream = await self._http.ws_connect(
            self.upstream.replace("http", "ws", 1) + "/ari/events",
            params=request.query, headers={"Authorization": request.headers.get("Authorization", "")},
        )
        client = web.WebSocketResponse()
        await client.prepare(request)
        link = _Link(client, upstream)
        self._links.append(link)

        async def down() -> None:
            async for message in upstream:
                if link.detached:
                    self.discarded_events += 1
                elif message.type == aiohttp.WSMsgType.TEXT:
                    await client.send_str(message.data)
            if not link.detached:
                await client.close()

        async def up() -> None:
            async for message in client:
                if message.type == aiohttp.WSMsgType.TEXT:
                    await upstream.send_str(message.data)

        link.tasks = [asyncio.create_task(down()), asyncio.create_task(up())]
        await asyncio.wait(link.tasks, return_when=asyncio.FIRST_COMPLETED)
        if link.detached:
            link.tasks[1].cancel()  # the upstream side lives on, discarding, until stop()
        elif link in self._links:
            self._links.remove(link)
            for task in link.tasks:
                task.cancel()
            await upstream.close()
        return client

    async def _rest(self, request: web.Request) -> web.StreamResponse:
        path = "/" + request.match_info["tail"]
        for fault in self.faults:
            if fault.method == request.method and re.fullmatch(fault.path_pattern, path):
                fault.hits += 1
                if fault.kind == "500":
                    return web.json_response({"message": "Internal Server Error (injected)"}, status=500)
                hung = asyncio.get_running_loop().create_future()
                self._hung.append(hung)
                await hung
                return web.Response(status=504)
        assert self._http is not None
        body = await request.read()
        headers = {k: v for k, v in request.headers.items() if k.lower() in ("authorization", "content-type")}
        async with self._http.request(
            request.method, f"{self.upstream}/ari{path}", params=request.query, data=body or None, headers=headers
        ) as response:
            payload = await response.read()
            return web.Response(
                status=response.status, body=payload, content_type=response.content_type or "application/json"
            )

    def _detached_tasks(self) -> list[asyncio.Task[None]]:
        return [task for link in self._detached for task in link.tasks]

    async def _close_links(self) -> None:
        for link in list(self._links):
            for task in link.tasks:
                task.cancel()
            with contextlib.suppress(Exception):
                await link.client.close()
                await link.upstream.close()
        self._links.clear()
