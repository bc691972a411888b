"""RTP (RFC 3550) as pure functions over bytes: :func:`parse`, :func:`serialize`, RTCP demultiplexing, sequence
arithmetic, and :class:`RtpSender`, the state of one outgoing stream. No I/O here; the transport calls these.

:func:`parse` raises :class:`RtpError` (a ``ValueError``) with a specific message for every malformed packet and
nothing else, whatever the bytes: the transport logs the message and drops the packet.
"""

from __future__ import annotations

import secrets
import struct
from dataclasses import dataclass, field

RTP_VERSION = 2
HEADER_SIZE = 12  # fixed header: V/P/X/CC, M/PT, sequence, timestamp, SSRC
MAX_CSRCS = 15
SEQUENCE_MODULUS = 1 << 16
TIMESTAMP_MODULUS = 1 << 32

# RFC 5761 section 4: the second byte of an RTCP packet (its packet type) is 192-223; RTP payload types 64-95,
# which would collide with them (with the marker bit set), are not used. RTCP types defined today: 200-207.
RTCP_FIRST_TYPE = 192
RTCP_LAST_TYPE = 223

_FIXED = struct.Struct("!BBHII")
_EXTENSION_HEADER = struct.Struct("!HH")


class RtpError(ValueError):
    """A datagram that is not a well-formed RTP packet (or a packet that cannot be serialised)."""


@dataclass(frozen=True, slots=True)
class RtpPacket:
    payload_type: int
    sequence: int
    timestamp: int
    ssrc: int
    payload: bytes
    marker: bool = False
    csrcs: tuple[int, ...] = ()
    extension: tuple[int, bytes] | None = None  # (profile-defined 16 bits, data: a multiple of 4 bytes)


def is_rtcp(data: bytes) -> bool:
    """True for a datagram that is RTCP rather than RTP (RFC 5761 demultiplexing on the second byte), so the
    transport can skip it before :func:`parse`. Only version-2 datagrams of at least an RTCP header count."""
    return len(data) >= 4 and data[0] >> 6 == RTP_VERSION and RTCP_FIRST_TYPE <= data[1] <= RTCP_LAST_TYPE


def parse(data: bytes) -> RtpPacket:
    """Parse one RTP packet; raise :class:`RtpError` for anything that is not a well-formed version-2 packet.

    Padding (P bit) is validated and removed from the payload; CSRCs and a header extension are returned.
    """
    size = len(data)
    if size < HEADER_SIZE:
        raise RtpError(f"RTP packet too short: {size} bytes, need {HEADER_SIZE}")
    first, second, sequence, timestamp, ssrc = _FIXED.unpack_from(data)
    version = first >> 6
    if version != RTP_VERSION:
        raise RtpError(f"RTP version {version}, expected {RTP_VERSION}")
    has_padding = bool(first & 0x20)
    has_extension = bool(first & 0x10)
    csrc_count = first & 0x0F

    offset = HEADER_SIZE + 4 * csrc_count
    if size < offset:
        raise RtpError(f"RTP CSRC list truncated: {csrc_count} CSRCs need {offset} bytes, packet has {size}")
    csrcs = struct.unpack_from(f"!{csrc_count}I", data, HEADER_SIZE) if csrc_count else ()

    extension: tuple[int, bytes] | None = None
    if has_extension:
        if size < offset + 4:
            raise RtpError(
                f"RTP header extension truncated: its header needs {offset + 4} bytes, packet has {size}"
            )
        profile, words = _EXTENSION_HEADER.unpack_from(data, offset)
        end = offset + 4 + 4 * words
        if size < end:
            raise RtpError(
                f"RTP header extension truncated: {words} words need {end} bytes, packet has {size}"
            )
        extension = (profile, bytes(data[offset + 4 : end]))
        offset = end

    payload_end = size
    if has_padding:
        if size == offset:
            raise RtpError("RTP padding bit set but the packet has no payload")
        padding = data[-1]
        if padding == 0:
            raise RtpError("RTP padding length 0 (must count at least its own byte)")
        if padding > size - offset:
            raise RtpError(f"RTP padding length {padding} exceeds payload of {size - offset} bytes")
        payload_end = size - padding

    return RtpPacket(
        payload_type=second & 0x7F,
        sequence=sequence,
        timestamp=timestamp,
        ssrc=ssrc,
        payload=bytes(data[offset:payload_end]),
        marker=bool(second & 0x80),
        csrcs=tuple(csrcs),
        extension=extension,
    )


def _check_range(name: str, value: int, maximum: int) -> None:
    if not 0 <= value <= maximum:
        raise RtpError(f"RTP {name} {value} out of range 0-{maximum}")


def serialize(packet: RtpPacket) -> bytes:
    """The bytes of ``packet`` (never padded): ``parse(serialize(p)) == p``, and ``serialize(parse(b)) == b``
    for every well-formed ``b`` without padding. Raise :class:`RtpError` for a field out of its range."""
    _check_range("payload type", packet.payload_type, 0x7F)
    _check_range("sequence", packet.sequence, 0xFFFF)
    _check_range("timestamp", packet.timestamp, 0xFFFFFFFF)
    _check_range("SSRC", packet.ssrc, 0xFFFFFFFF)
    if len(packet.csrcs) > MAX_CSRCS:
        raise RtpError(f"RTP packet has {len(packet.csrcs)} CSRCs, at most {MAX_CSRCS}")
    for csrc in packet.csrcs:
        _check_range("CSRC", csrc, 0xFFFFFFFF)
    first = (RTP_VERSION << 6) | len(packet.csrcs)
    extension = b""
    if packet.extension is not None:
        profile, ext_data = packet.extension
        _check_range("extension profile", profile, 0xFFFF)
        if len(ext_data) % 4:
            raise RtpError(f"RTP header extension data is {len(ext_data)} bytes, not a multiple of 4")
        _check_range("extension length (words)", len(ext_data) // 4, 0xFFFF)
        first |= 0x10
        extension = _EXTENSION_HEADER.pack(profile, len(ext_data) // 4) + ext_data
    second = packet.payload_type | (0x80 if packet.marker else 0)
    return b"".join((
        _FIXED.pack(first, second, packet.sequence, packet.timestamp, packet.ssrc),
        struct.pack(f"!{len(packet.csrcs)}I", *packet.csrcs),
        extension,
        packet.payload,
    ))


def seq_distance(a: int, b: int) -> int:
    """``b - a`` for 16-bit RTP sequence numbers, across the wrap: in ``-32768..32767`` (1 when b follows a)."""
    return ((b - a + 0x8000) & 0xFFFF) - 0x8000


def _random_bits(bits: int) -> int:
    return secrets.randbits(bits)


@dataclass(slots=True)
class RtpSender:
    """The state of one outgoing RTP stream: a fixed SSRC, and the sequence number and timestamp of the next
    packet (random at the start, RFC 3550 section 5.1), which :meth:`next` advances with wraparound."""

    payload_type: int
    ssrc: int = field(default_factory=lambda: _random_bits(32))
    sequence: int = field(default_factory=lambda: _random_bits(16))
    timestamp: int = field(default_factory=lambda: _random_bits(32))
    packets: int = 0  # sent so far
    octets: int = 0  # payload bytes sent so far (for RTCP sender reports)

    def __post_init__(self) -> None:
        _check_range("payload type", self.payload_type, 0x7F)
        _check_range("SSRC", self.ssrc, 0xFFFFFFFF)
        _check_range("sequence", self.sequence, 0xFFFF)
        _check_range("timestamp", self.timestamp, 0xFFFFFFFF)

    def next(self, payload: bytes, samples: int, marker: bool = False) -> bytes:
        """The next packet's bytes, carrying ``payload`` (``samples`` samples long, which advances the timestamp
        of the packet after it)."""
        if samples < 0:
            raise RtpError(f"RTP packet cannot hold {samples} samples")
        data = serialize(RtpPacket(self.payload_type, self.sequence, self.timestamp, self.ssrc, payload, marker))
        self.sequence = (self.sequence + 1) % SEQUENCE_MODULUS
        self.timestamp = (self.timestamp + samples) % TIMESTAMP_MODULUS
        self.packets += 1
        self.octets += len(payload)
        return data


@dataclass(slots=True)
class SequenceSpan:
    """How many packets a stream should have delivered so far, from its sequence numbers (RFC 3550 A.3): the
    extended highest sequence number minus the first one, plus one. ``expected - received`` is the loss,
    counted from the first packet that arrived (packets sent before the receiver listened are not loss)."""

    first: int | None = None
    highest: int = 0  # extended: 16-bit sequence number plus 65536 per wrap

    def update(self, sequence: int) -> None:
        if self.first is None:
            self.first = self.highest = sequence
            return
        cycles, last = divmod(self.highest, 1 << 16)
        delta = (sequence - last) & 0xFFFF
        if delta < 0x8000:  # ahead of the highest (a late packet is behind it, by the same rule)
            if sequence < last:
                cycles += 1
            self.highest = cycles * (1 << 16) + sequence

    @property
    def expected(self) -> int:
        return 0 if self.first is None else self.highest - self.first + 1
