"""The FastAGI server: accepts Asterisk's connections, reads the environment under a deadline and a size limit,
and hands each request to the handler of its route (``agi://HOST:PORT/ROUTE?query``).

Every connection is a task this server owns: :meth:`FastAgiServer.close` stops the listener, cancels the tasks
still running and waits for them. A request that ends badly (unknown route, malformed or slow environment,
handler failure, server closing) is answered with the ``FAILURE`` line before the connection closes, so the
dialplan sees ``AGISTATUS=FAILURE`` and can fall back; a request whose handler returns ends with ``SUCCESS``.
Logs name the route and the channel's uniqueid, never the caller's number or name.
"""

from __future__ import annotations

import asyncio
import itertools
import logging
from collections.abc import Awaitable, Callable, Mapping
from dataclasses import dataclass, field
from types import TracebackType

from asterisk_agent.agi.errors import AgiHangup, AgiProtocolError
from asterisk_agent.agi.protocol import (
    DEFAULT_PORT,
    FAILURE_LINE,
    MAX_ENVIRONMENT_BYTES,
    MAX_REPLY_BYTES,
    AgiEnvironment,
    parse_environment,
    parse_environment_line,
)
from asterisk_agent.agi.request import AgiRequest

__all__ = ["AgiCounters", "AgiRequest", "FastAgiServer", "Handler"]

log = logging.getLogger(__name__)

Handler = Callable[[AgiRequest], Awaitable[None]]

_CLOSE_TIMEOUT_S = 1.0  # for the socket to close once we are done with it; then it is aborted


def _show(route: str) -> str:
    """A route name from the network, safe to log: quoted (no line breaks reach the log) and short."""
    return repr(route[:64])


@dataclass
class AgiCounters:
    """What the server has seen since it started, for metrics. ``protocol_errors`` counts environments that
    were malformed, too large, cut short or too slow (those also in ``header_timeouts``) and malformed replies
    that ended a handler."""

    connections: int = 0  # accepted
    rejected: int = 0  # over max_connections: answered FAILURE without running a handler
    requests: int = 0  # complete environments, routed or not
    by_route: dict[str, int] = field(default_factory=dict)
    unknown_routes: int = 0
    protocol_errors: int = 0
    header_timeouts: int = 0
    handler_errors: int = 0  # handlers that raised (other than for a hangup or a protocol error)
    hangups: int = 0  # requests during which the channel hung up
    active: int = 0  # connections open now

    def snapshot(self) -> dict[str, int | dict[str, int]]:
        return {
            "connections": self.connections,
            "rejected": self.rejected,
            "requests": self.requests,
            "by_route": dict(self.by_route),
            "unknown_routes": self.unknown_routes,
            "protocol_errors": self.protocol_errors,
            "header_timeouts": self.header_timeouts,
            "handler_errors": self.handler_errors,
            "hangups": self.hangups,
            "active": self.active,
        }


class FastAgiServer:
    """A FastAGI server for ``routes`` (route name -> handler). Timers are in milliseconds."""

    def __init__(
        self,
        routes: Mapping[str, Handler],
        host: str = "127.0.0.1",
        port: int = DEFAULT_PORT,
        *,
        header_timeout_ms: int = 5000,
        command_timeout_ms: int = 10_000,
        max_connections: int = 256,
        max_header_bytes: int = MAX_ENVIRONMENT_BYTES,
    ) -> None:
        for route in routes:
            if not route or route != route.strip("/") or "?" in route:
                raise ValueError(f"AGI route {route!r} must be a non-empty path without '?' or outer '/'")
        if min(header_timeout_ms, command_timeout_ms, max_connections, max_header_bytes) <= 0:
            raise ValueError("AGI server timers and limits must be positive")
        self._routes = dict(routes)
        self._host = host
        self._requested_port = port
        self._header_timeout = header_timeout_ms / 1000
        self._command_timeout_ms = command_timeout_ms
        self._max_connections = max_connections
        self._max_header_bytes = max_header_bytes
        self._stream_limit = max(MAX_REPLY_BYTES, max_header_bytes)  # the longest line a read may buffer
        self._server: asyncio.Server | None = None
        self._tasks: set[asyncio.Task[None]] = set()
        self._closing = False
        self._close_task: asyncio.Task[None] | None = None
        self._ids = itertools.count(1)
        self.counters = AgiCounters()

    @property
    def port(self) -> int:
        """The port listened on (the real one when constructed with port 0)."""
        if self._server is None or not self._server.sockets:
            raise RuntimeError("the AGI server is not listening")
        port: int = self._server.sockets[0].getsockname()[1]
        return port

    async def start(self) -> None:
        if self._server is not None or self._closing:
            raise RuntimeError("the AGI server was already started")
        self._server = await asyncio.start_server(
            self._accept, self._host, self._requested_port, limit=self._stream_limit
        )
        log.info("FastAGI server listening on %s:%d, routes: %s", self._host, self.port, ", ".join(self._routes))

    async def close(self) -> None:
        """Stop listening, cancel the requests in progress (each answered FAILURE) and wait for them.
        Idempotent; concurrent callers all wait for the one shutdown."""
        if self._close_task is None:
            self._closing = True
            self._close_task = asyncio.create_task(self._shutdown(), name="agi-server-close")
        await asyncio.shield(self._close_task)

    async def __aenter__(self) -> FastAgiServer:
        await self.start()
        return self

    async def __aexit__(
        self, exc_type: type[BaseException] | None, exc: BaseException | None, tb: TracebackType | None
    ) -> None:
        await self.close()

    async def _shutdown(self) -> None:
        if self._server is not None:
            self._server.close()
        while self._tasks:
            tasks = list(self._tasks)
            for task in tasks:
                task.cancel()
            await asyncio.gather(*tasks, return_exceptions=True)
        if self._server is not None:
            await self._server.wait_closed()
        log.info("FastAGI server closed")

    def _accept(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        """Called by asyncio for each connection: start its task, which this server owns."""
        if self._closing:
            writer.transport.abort()
            return
        task = asyncio.create_task(self._serve(reader, writer), name=f"agi-connection-{next(self._ids)}")
        self._tasks.add(task)
        task.add_done_callback(self._tasks.discard)

    async def _serve(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        counters = self.counters
        counters.connections += 1
        counters.active += 1
        over_limit = counters.active > self._max_connections  # decided on arrival, in arrival order
        failure = True
        try:
            env = await self._read_environment(reader, writer)  # read even when refusing: a clean close
            if env is None:
                return
            counters.requests += 1
            if over_limit:
                counters.rejected += 1
                log.warning("FastAGI: %d connections open, over the limit of %d: refused route %s (uniqueid %s)",
                            counters.active, self._max_connections, _show(env.script), env.uniqueid)
                return
            failure = await self._dispatch(env, reader, writer)
        except asyncio.CancelledError:
            failure = True
            raise
        finally:
            counters.active -= 1
            await self._finish(writer, failure=failure)

    async def _read_environment(
        self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter
    ) -> AgiEnvironment | None:
        """The request's environment, or None (logged and counted) when it is malformed, too large, cut short
        or not complete within header_timeout_ms. Each line is checked as it arrives, so garbage ends the
        connection at once; a connection closed before the blank line ends it too, never a loop."""
        peer = writer.get_extra_info("peername")
        lines: list[bytes] = []
        size = 0
        try:
            async with asyncio.timeout(self._header_timeout):
                while True:
                    line = await reader.readline()
                    if not line.endswith(b"\n"):
                        self.counters.protocol_errors += 1
                        log.warning("FastAGI from %s: connection closed after %d environment lines, before the "
                                    "blank line", peer, len(lines))
                        return None
                    if line in (b"\n", b"\r\n"):
                        break
                    size += len(line)
                    if size > self._max_header_bytes:
                        raise AgiProtocolError(f"environment over the limit of {self._max_header_bytes} bytes")
                    parse_environment_line(line, len(lines) + 1)
                    lines.append(line)
            return parse_environment(b"".join(lines), max_bytes=self._max_header_bytes)
        except TimeoutError:
            self.counters.protocol_errors += 1
            self.counters.header_timeouts += 1
            log.warning("FastAGI from %s: environment not complete within %d ms (%d lines)",
                        peer, round(self._header_timeout * 1000), len(lines))
        except AgiProtocolError as exc:
            self.counters.protocol_errors += 1
            log.warning("FastAGI from %s: bad environment: %s", peer, exc)
        except ValueError:  # StreamReader's limit: one line longer than a read may buffer
            self.counters.protocol_errors += 1
            log.warning("FastAGI from %s: environment line over %d bytes", peer, self._stream_limit)
        except (ConnectionError, OSError) as exc:
            self.counters.protocol_errors += 1
            log.warning("FastAGI from %s: connection failed while reading the environment: %s", peer, exc)
        return None

    async def _dispatch(
        self, env: AgiEnvironment, reader: asyncio.StreamReader, writer: asyncio.StreamWriter
    ) -> bool:
        """Run the route's handler; True when the request failed (so the dialplan should see FAILURE)."""
        handler = self._routes.get(env.script)
        if handler is None:
            self.counters.unknown_routes += 1
            log.warning("FastAGI: no route %s (uniqueid %s): answered AGISTATUS=FAILURE", _show(env.script),
                        env.uniqueid)
            return True
        route = env.script
        self.counters.by_route[route] = self.counters.by_route.get(route, 0) + 1
        request = AgiRequest(env, reader, writer, command_timeout_ms=self._command_timeout_ms)
        failed = True
        try:
            await handler(request)
            failed = False
        except AgiHangup as exc:
            log.info("FastAGI route %s (uniqueid %s): %s", _show(route), env.uniqueid, exc)
            failed = False  # the channel is gone: nobody reads AGISTATUS
        except AgiProtocolError as exc:
            self.counters.protocol_errors += 1
            log.warning("FastAGI route %s (uniqueid %s): %s", _show(route), env.uniqueid, exc)
        except Exception:
            self.counters.handler_errors += 1
            log.error("FastAGI route %s (uniqueid %s): handler failed", _show(route), env.uniqueid, exc_info=True)
        finally:
            if request.hung_up:
                self.counters.hangups += 1
        return failed

    async def _finish(self, writer: asyncio.StreamWriter, *, failure: bool) -> None:
        """End the connection: the FAILURE line first when the request failed, then our end of the stream."""
        try:
            if not writer.is_closing():
                if failure:
                    writer.write(FAILURE_LINE)
                if writer.can_write_eof():
                    writer.write_eof()
        except (ConnectionError, OSError, RuntimeError):
            pass  # the peer is gone already
        writer.close()
        try:
            async with asyncio.timeout(_CLOSE_TIMEOUT_S):
                await writer.wait_closed()
        except (TimeoutError, ConnectionError, OSError):
            writer.transport.abort()
