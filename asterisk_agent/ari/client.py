"""The ARI REST client: sends :class:`AriRequest` objects over a small pool of persistent connections.

Asterisk's HTTP server accepts only a handful of pending connections, so the pool is small and reused.
"""

from __future__ import annotations

import asyncio
import json
from base64 import b64encode
from types import TracebackType
from typing import Any

import aiohttp

from asterisk_agent.ari import requests as ari
from asterisk_agent.ari.errors import (
    AriAuthError,
    AriConflict,
    AriError,
    AriNotFound,
    AriTimeout,
    AriUnavailable,
)
from asterisk_agent.ari.requests import AriRequest

Json = Any


class AriClient:
    def __init__(
        self,
        base_url: str,
        username: str,
        password: str,
        *,
        request_timeout_ms: int = 5000,
        connect_timeout_ms: int = 3000,
        max_connections: int = 8,
    ) -> None:
        self.base_url = base_url.rstrip("/")
        self.username = username
        self._password = password
        self._timeout = aiohttp.ClientTimeout(
            total=request_timeout_ms / 1000, connect=connect_timeout_ms / 1000
        )
        self._max_connections = max_connections
        self._session: aiohttp.ClientSession | None = None

    @property
    def auth_headers(self) -> dict[str, str]:
        token = b64encode(f"{self.username}:{self._password}".encode()).decode()
        return {"Authorization": f"Basic {token}"}

    def _http(self) -> aiohttp.ClientSession:
        if self._session is None or self._session.closed:
            connector = aiohttp.TCPConnector(limit=self._max_connections, keepalive_timeout=30)
            self._session = aiohttp.ClientSession(
                connector=connector, headers=self.auth_headers, timeout=self._timeout, raise_for_status=False
            )
        return self._session

    async def close(self) -> None:
        if self._session is not None:
            await self._session.close()
            self._session = None

    async def __aenter__(self) -> AriClient:
        return self

    async def __aexit__(
        self, exc_type: type[BaseException] | None, exc: BaseException | None, tb: TracebackType | None
    ) -> None:
        await self.close()

    async def send(self, request: AriRequest) -> Json:
        """Send one request; return the decoded JSON body (None when empty). Raise an AriError subclass."""
        raw = await self.send_raw(request)
        if not raw:
            return None
        try:
            return json.loads(raw)
        except ValueError as exc:
            raise AriError(request.method, request.path, 0, f"answer is not JSON: {raw[:80]!r}") from exc

    async def send_raw(self, request: AriRequest) -> bytes:
        url = f"{self.base_url}/ari{request.path}"
        params = request.query_strings()
        # A pooled connection Asterisk closed while idle fails at once: try once more on a fresh one.
        for attempt in (1, 2):
            try:
                async with self._http().request(
                    request.method, url, params=params, json=request.body
                ) as response:
                    body = await response.read()
                    if response.status >= 300:
                        raise _error_for(request, response.status, body)
                    return body
            except aiohttp.ServerDisconnectedError as exc:
                if attempt == 2:
                    raise AriUnavailable(request.method, request.path, 0, f"disconnected: {exc}") from exc
            except TimeoutError as exc:
                raise AriTimeout(request.method, request.path, 0, "no answer within the timeout") from exc
            except aiohttp.ClientError as exc:
                raise AriUnavailable(request.method, request.path, 0, f"{type(exc).__name__}: {exc}") from exc
        raise AssertionError("unreachable")

    async def delete_quietly(self, request: AriRequest) -> bool:
        """Send a delete-like request where 404 means already gone. True if this call removed something."""
        try:
            await self.send(request)
        except AriNotFound:
            return False
        return True

    # Convenience for the calls made everywhere.
    async def info(self) -> Json:
        return await self.send(ari.asterisk_info())

    async def channels(self) -> list[Json]:
        result = await self.send(ari.list_channels())
        return list(result or [])

    async def bridges(self) -> list[Json]:
        result = await self.send(ari.list_bridges())
        return list(result or [])

    async def wait_ready(self, timeout_s: float) -> Json:
        """Poll ``/asterisk/info`` until it answers (Asterisk starting up), or raise the last error."""
        loop = asyncio.get_running_loop()
        deadline = loop.time() + timeout_s
        while True:
            try:
                return await self.info()
            except (AriUnavailable, AriTimeout, AriError) as exc:
                if isinstance(exc, AriAuthError) or loop.time() > deadline:
                    raise
            await asyncio.sleep(0.05)


def _error_for(request: AriRequest, status: int, body: bytes) -> AriError:
    message = body.decode("utf-8", "replace").strip()
    try:
        decoded = json.loads(message)
        if isinstance(decoded, dict) and "message" in decoded:
            message = str(decoded["message"])
    except ValueError:
        pass
    message = message[:200]
    kind: type[AriError] = AriError
    if status == 404:
        kind = AriNotFound
    elif status in (409, 422):
        kind = AriConflict
    elif status == 401:
        kind = AriAuthError
    return kind(request.method, request.path, status, message)
