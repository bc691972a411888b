"""The UDP side of an externalMedia leg: a port from the configured range, RTP accepted only from the address
Asterisk gave for that channel, bad packets logged and dropped, never raised into the call.
"""

from __future__ import annotations

import asyncio
import logging
import socket
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import cast

from asterisk_agent.media.rtp import RtpError, RtpPacket, SequenceSpan, is_rtcp, parse

log = logging.getLogger(__name__)

Address = tuple[str, int]


class PortsExhausted(Exception):
    """Every port of the configured media range is in use."""


class PortPool:
    """Hands out UDP ports from ``[port_min, port_max]`` on ``bind_address``; a port in use elsewhere is skipped."""

    def __init__(self, bind_address: str, port_min: int, port_max: int) -> None:
        self.bind_address = bind_address
        self._free = list(range(port_min, port_max + 1))
        self._used: set[int] = set()

    @property
    def in_use(self) -> int:
        return len(self._used)

    def bind(self) -> socket.socket:
        """A non-blocking UDP socket bound to the next free port; raise PortsExhausted when none is left."""
        for _ in range(len(self._free)):
            port = self._free.pop(0)
            sock = socket.socket(socket.AF_INET6 if ":" in self.bind_address else socket.AF_INET, socket.SOCK_DGRAM)
            try:
                sock.bind((self.bind_address, port))
            except OSError:
                sock.close()
                self._free.append(port)  # taken by someone else: try it again later
                continue
            sock.setblocking(False)
            self._used.add(port)
            return sock
        raise PortsExhausted(f"no free UDP port for media on {self.bind_address}")

    def release(self, port: int) -> None:
        if port in self._used:
            self._used.discard(port)
            self._free.append(port)


@dataclass
class EndpointStats:
    received: int = 0
    sent: int = 0
    rtcp: int = 0
    malformed: int = 0
    wrong_source: int = 0
    before_peer: int = 0
    last_error: str = ""
    wrong_sources: set[Address] = field(default_factory=set)
    span: SequenceSpan = field(default_factory=SequenceSpan)  # what the peer's stream should have delivered

    @property
    def expected(self) -> int:
        return self.span.expected


class RtpEndpoint(asyncio.DatagramProtocol):
    """One call's media socket. ``on_packet`` gets every valid RTP packet from the expected peer."""

    def __init__(
        self, on_packet: Callable[[RtpPacket], None], *, label: str = "", release: Callable[[], None] | None = None
    ) -> None:
        self._on_packet = on_packet
        self._release = release
        self.label = label
        self.peer: Address | None = None
        self.stats = EndpointStats()
        self._transport: asyncio.DatagramTransport | None = None
        self.local: Address | None = None

    @classmethod
    async def open(
        cls, pool: PortPool, on_packet: Callable[[RtpPacket], None], *, label: str = ""
    ) -> RtpEndpoint:
        """Bind a port from the pool and start receiving; ``close()`` gives the port back."""
        sock = pool.bind()
        port: int = sock.getsockname()[1]
        loop = asyncio.get_running_loop()
        try:
            _, endpoint = await loop.create_datagram_endpoint(
                lambda: cls(on_packet, label=label, release=lambda: pool.release(port)), sock=sock
            )
        except Exception:
            sock.close()
            pool.release(port)
            raise
        return endpoint

    def expect_peer(self, host: str, port: int) -> None:
        """Accept RTP only from this address (UNICASTRTP_LOCAL_ADDRESS/PORT of the externalMedia channel)."""
        self.peer = (host, port)

    # asyncio.DatagramProtocol
    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        self._transport = cast(asyncio.DatagramTransport, transport)  # not a subclass at run time on 3.11
        self.local = transport.get_extra_info("sockname")[:2]

    def datagram_received(self, data: bytes, addr: tuple[str | int, ...]) -> None:
        source = (str(addr[0]), int(addr[1]))
        if self.peer is None:
            self.stats.before_peer += 1
            return
        if source != self.peer:
            self.stats.wrong_source += 1
            if source not in self.stats.wrong_sources and len(self.stats.wrong_sources) < 16:
                self.stats.wrong_sources.add(source)
                log.warning("media %s: dropped RTP from an unexpected address", self.label)
            return
        if is_rtcp(data):
            self.stats.rtcp += 1
            return
        try:
            packet = parse(data)
        except RtpError as exc:
            self.stats.malformed += 1
            if self.stats.malformed <= 3 or self.stats.malformed % 1000 == 0:
                log.warning("media %s: dropped a malformed RTP packet (%d so far): %s", self.label,
                            self.stats.malformed, exc)
            self.stats.last_error = str(exc)
            return
        self.stats.received += 1
        self.stats.span.update(packet.sequence)
        self._on_packet(packet)

    def error_received(self, exc: Exception) -> None:
        log.debug("media %s: socket error %s", self.label, exc)

    def send(self, data: bytes) -> None:
        if self._transport is None or self.peer is None or self._transport.is_closing():
            return
        self._transport.sendto(data, self.peer)
        self.stats.sent += 1

    @property
    def port(self) -> int:
        assert self.local is not None
        return self.local[1]

    def close(self) -> None:
        """Idempotent: close the socket and give its port back to the pool."""
        if self._transport is not None:
            self._transport.close()
            self._transport = None
        if self._release is not None:
            self._release()
            self._release = None
