"""A loopback TCP proxy that tests put between a client and a real server, to break the link for real: cut
every connection (and refuse new ones until healed), stall them (bytes stop flowing, sockets stay open, as
a dead link looks), or inject bytes towards the client."""

from __future__ import annotations

import asyncio
import contextlib
from dataclasses import dataclass, field


@dataclass(eq=False)
class _Pair:
    client: asyncio.StreamWriter
    server: asyncio.StreamWriter
    stalled: bool = False
    tasks: list[asyncio.Task[None]] = field(default_factory=list)

    def close(self) -> None:
        for writer in (self.client, self.server):
            writer.close()


class TcpProxy:
    def __init__(self, host: str, port: int) -> None:
        self.upstream = (host, port)
        self.port = 0
        self.accepted = 0  # connections forwarded so far
        self.refused = 0
        self._refusing = False
        self._pairs: set[_Pair] = set()
        self._server: asyncio.Server | None = None
        self._connected = asyncio.Condition()

    async def start(self) -> None:
        self._server = await asyncio.start_server(self._accept, "127.0.0.1", 0)
        self.port = self._server.sockets[0].getsockname()[1]

    async def stop(self) -> None:
        self.cut()
        if self._server is not None:
            self._server.close()
            await self._server.wait_closed()
        for pair in list(self._pairs):
            for task in pair.tasks:
                task.cancel()

    def cut(self) -> None:
        """Close every connection now, and close new ones at once until :meth:`heal`."""
        self._refusing = True
        for pair in list(self._pairs):
            pair.close()

    def heal(self) -> None:
        self._refusing = False

    def stall(self) -> None:
        """Stop carrying bytes on the connections open now (they stay open); new connections work."""
        for pair in self._pairs:
            pair.stalled = True

    def inject(self, data: bytes) -> None:
        """Send ``data`` to every connected client, as if the server had sent it."""
        for pair in self._pairs:
            if not pair.stalled:
                pair.client.write(data)

    async def wait_accepted(self, count: int) -> None:
        async with self._connected:
            await self._connected.wait_for(lambda: self.accepted >= count)

    async def wait_refused(self, count: int) -> None:
        async with self._connected:
            await self._connected.wait_for(lambda: self.refused >= count)

    async def _accept(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        if self._refusing:
            writer.close()
            async with self._connected:
                self.refused += 1
                self._connected.notify_all()
            return
        try:
            up_reader, up_writer = await asyncio.open_connection(*self.upstream)
        except OSError:
            writer.close()
            return
        pair = _Pair(writer, up_writer)
        self._pairs.add(pair)
        pair.tasks = [asyncio.create_task(self._pump(reader, up_writer, pair)),
                      asyncio.create_task(self._pump(up_reader, writer, pair))]
        async with self._connected:
            self.accepted += 1
            self._connected.notify_all()
        await asyncio.gather(*pair.tasks, return_exceptions=True)
        self._pairs.discard(pair)
        pair.close()

    async def _pump(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter, pair: _Pair) -> None:
        with contextlib.suppress(OSError, asyncio.CancelledError):
            while data := await reader.read(65536):
                if not pair.stalled:
                    writer.write(data)
                    await writer.drain()
        pair.close()
