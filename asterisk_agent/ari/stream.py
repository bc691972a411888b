"""The ARI event WebSocket for one Stasis application, with reconnect and backoff.

Events that arrive while the socket is down are lost, so the handler's ``connected`` hook runs on every
(re)connect, before any event of that connection is dispatched: that is where the worker resyncs.
"""

from __future__ import annotations

import asyncio
import logging
import random
from typing import Protocol
from urllib.parse import urlsplit, urlunsplit

import aiohttp

from asterisk_agent.ari.client import AriClient
from asterisk_agent.ari.errors import ApplicationReplaced
from asterisk_agent.ari.events import ApplicationReplaced as ApplicationReplacedEvent
from asterisk_agent.ari.events import Event, parse_event

log = logging.getLogger(__name__)


class EventHandler(Protocol):
    async def connected(self) -> None: ...

    def disconnected(self) -> None: ...

    def handle(self, event: Event) -> None: ...


def events_url(base_url: str, app: str) -> str:
    parts = urlsplit(base_url)
    scheme = "wss" if parts.scheme == "https" else "ws"
    return urlunsplit((scheme, parts.netloc, parts.path.rstrip("/") + "/ari/events", "", ""))


class EventStream:
    def __init__(
        self,
        client: AriClient,
        app: str,
        handler: EventHandler,
        *,
        reconnect_min_ms: int = 100,
        reconnect_max_ms: int = 5000,
        heartbeat_s: float = 5.0,
    ) -> None:
        self._client = client
        self._app = app
        self._handler = handler
        self._min = reconnect_min_ms / 1000
        self._max = reconnect_max_ms / 1000
        self._heartbeat = heartbeat_s
        self.connections = 0  # successful connects so far
        self.bad_messages = 0
        self._connected = asyncio.Event()

    @property
    def is_connected(self) -> bool:
        return self._connected.is_set()

    async def wait_connected(self) -> None:
        await self._connected.wait()

    async def run(self) -> None:
        """Connect and dispatch until cancelled. Raise ApplicationReplaced if another client takes the app."""
        delay = self._min
        url = events_url(self._client.base_url, self._app)
        params = {"app": self._app, "subscribeAll": "false"}
        async with aiohttp.ClientSession(headers=self._client.auth_headers) as http:
            while True:
                try:
                    async with http.ws_connect(
                        url, params=params, heartbeat=self._heartbeat, timeout=aiohttp.ClientWSTimeout(ws_close=2)
                    ) as ws:
                        self.connections += 1
                        log.info("ARI events connected for app %s (connection %d)", self._app, self.connections)
                        await self._handler.connected()
                        self._connected.set()
                        delay = self._min
                        await self._pump(ws)
                        log.warning("ARI events socket closed (%s); reconnecting", ws.close_code)
                except ApplicationReplaced:
                    raise
                except aiohttp.WSServerHandshakeError as exc:
                    if exc.status == 401:
                        log.error("ARI events: wrong ARI user or password (401)")
                    else:
                        log.warning("ARI events: handshake refused: %s %s", exc.status, exc.message)
                except (aiohttp.ClientError, OSError, TimeoutError) as exc:
                    log.warning("ARI events: cannot connect: %s", exc)
                finally:
                    task = asyncio.current_task()
                    stopping = task is not None and task.cancelling() > 0  # shutting down: not a drop
                    if self._connected.is_set() and stopping:
                        self._connected.clear()
                    elif self._connected.is_set():
                        self._connected.clear()
                        self._handler.disconnected()
                await asyncio.sleep(delay * random.uniform(0.5, 1.0))
                delay = min(self._max, delay * 2)

    async def _pump(self, ws: aiohttp.ClientWebSocketResponse) -> None:
        async for message in ws:
            if message.type != aiohttp.WSMsgType.TEXT:
                if message.type in (aiohttp.WSMsgType.ERROR, aiohttp.WSMsgType.CLOSE):
                    return
                continue
            try:
                event = parse_event(message.data)
            except ValueError as exc:
                self.bad_messages += 1
                log.warning("ARI events: dropped a malformed event: %s", exc)
                continue
            if isinstance(event, ApplicationReplacedEvent):
                raise ApplicationReplaced(
                    f"another client connected to the Stasis application {self._app!r} and took it over; "
                    "this worker stops instead of fighting for it (give each worker its own app name)"
                )
            try:
                self._handler.handle(event)
            except Exception:
                log.exception("ARI events: handler failed on %s", event.type)
