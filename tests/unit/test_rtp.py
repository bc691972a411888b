"""RTP parsing and serialising, on real packets captured from Asterisk 22's externalMedia (tests/data/rtp/,
made by tests/support/capture_rtp.py) and on built and random bytes."""

from __future__ import annotations

import random
import struct
from itertools import pairwise
from pathlib import Path

import pytest

from asterisk_agent.media.frames import FRAME_SAMPLES, PT_PCMA, PT_PCMU, PT_SLIN16, WIDEBAND_FRAME_SAMPLES
from asterisk_agent.media.rtp import (
    RtpError,
    RtpPacket,
    RtpSender,
    is_rtcp,
    parse,
    seq_distance,
    serialize,
)
from tests.support.capture_rtp import read_records

DATA = Path(__file__).resolve().parents[1] / "data" / "rtp"
# name: (payload type, payload bytes per packet, timestamp step per packet), as DESIGN.md states them
STREAMS = {
    "ulaw": (PT_PCMU, FRAME_SAMPLES, FRAME_SAMPLES),
    "alaw": (PT_PCMA, FRAME_SAMPLES, FRAME_SAMPLES),
    "slin16": (PT_SLIN16, 2 * WIDEBAND_FRAME_SAMPLES, WIDEBAND_FRAME_SAMPLES),
}


def captured(name: str) -> list[bytes]:
    return read_records(DATA / f"{name}.rtp")


ALL_CAPTURED = [data for name in STREAMS for data in captured(name)]


def error_of(data: bytes) -> str:
    with pytest.raises(RtpError) as info:
        parse(data)
    return str(info.value)


# --- the real packets ------------------------------------------------------------------------------------------


@pytest.mark.parametrize("name", STREAMS)
def test_capture_holds_about_fifty_rtp_packets(name: str) -> None:
    datagrams = captured(name)
    assert len(datagrams) == 50
    assert not any(is_rtcp(d) for d in datagrams)


@pytest.mark.parametrize("name", STREAMS)
def test_asterisk_stream_facts(name: str) -> None:
    """What DESIGN.md says Asterisk 22 sends on externalMedia, checked on its real packets."""
    payload_type, payload_size, step = STREAMS[name]
    packets = [parse(d) for d in captured(name)]
    assert {p.payload_type for p in packets} == {payload_type}
    assert {len(p.payload) for p in packets} == {payload_size}
    assert len({p.ssrc for p in packets}) == 1  # one SSRC per stream
    assert not any(p.marker for p in packets)  # no marker bit, not even on the first packet
    assert all(p.csrcs == () and p.extension is None for p in packets)
    assert all(d[0] == 0x80 for d in captured(name))  # version 2, no padding, no extension, no CSRC
    for before, after in pairwise(packets):
        assert seq_distance(before.sequence, after.sequence) == 1  # consecutive, none lost on loopback
        assert (after.timestamp - before.timestamp) % 2**32 == step


def test_each_stream_has_its_own_ssrc() -> None:
    ssrcs = {name: parse(captured(name)[0]).ssrc for name in STREAMS}
    assert len(set(ssrcs.values())) == len(STREAMS)


@pytest.mark.parametrize("name", STREAMS)
def test_real_packets_round_trip(name: str) -> None:
    for data in captured(name):
        packet = parse(data)
        assert serialize(packet) == data
        assert parse(serialize(packet)) == packet
        assert packet.payload == data[12:]


@pytest.mark.parametrize("name", STREAMS)
def test_every_prefix_shorter_than_the_header_gives_the_exact_error(name: str) -> None:
    data = captured(name)[0]
    for size in range(12):
        assert error_of(data[:size]) == f"RTP packet too short: {size} bytes, need 12"


@pytest.mark.parametrize("name", STREAMS)
def test_longer_prefixes_of_a_real_packet_parse_with_the_payload_cut(name: str) -> None:
    data = captured(name)[-1]
    whole = parse(data)
    for size in range(12, len(data) + 1):
        packet = parse(data[:size])
        assert packet.payload == data[12:size]
        assert (packet.sequence, packet.timestamp, packet.ssrc) == (whole.sequence, whole.timestamp, whole.ssrc)


@pytest.mark.parametrize("version", [0, 1, 3])
def test_other_versions_are_refused(version: int) -> None:
    data = bytearray(captured("ulaw")[0])
    data[0] = (data[0] & 0x3F) | (version << 6)
    assert error_of(bytes(data)) == f"RTP version {version}, expected 2"


# --- CSRCs, header extension, padding --------------------------------------------------------------------------


def full_packet() -> tuple[RtpPacket, bytes]:
    """A real ulaw packet given two CSRCs, a two-word header extension and 4 bytes of padding."""
    real = parse(captured("ulaw")[10])
    packet = RtpPacket(
        real.payload_type, real.sequence, real.timestamp, real.ssrc, real.payload, marker=True,
        csrcs=(0x01020304, 0xFFFFFFFF), extension=(0xBEDE, b"\x10\xaa\x00\x00\x21\xbb\xcc\x00"),
    )
    data = bytearray(serialize(packet) + b"\x00\x00\x00\x04")
    data[0] |= 0x20
    return packet, bytes(data)


def test_csrcs_extension_and_padding_are_parsed() -> None:
    packet, data = full_packet()
    assert data[0] == 0x80 | 0x20 | 0x10 | 2  # version 2, padding, extension, 2 CSRCs
    assert parse(data) == packet
    assert serialize(packet) == bytes([data[0] & ~0x20]) + data[1:-4]  # the same, unpadded


def test_every_truncation_of_a_full_packet_gives_the_specific_error() -> None:
    _, data = full_packet()
    for size in range(len(data)):
        prefix = data[:size]
        if size < 12:
            expected: str | None = f"RTP packet too short: {size} bytes, need 12"
        elif size < 20:
            expected = f"RTP CSRC list truncated: 2 CSRCs need 20 bytes, packet has {size}"
        elif size < 24:
            expected = f"RTP header extension truncated: its header needs 24 bytes, packet has {size}"
        elif size < 32:
            expected = f"RTP header extension truncated: 2 words need 32 bytes, packet has {size}"
        elif size == 32:
            expected = "RTP padding bit set but the packet has no payload"
        else:
            expected = None  # the last byte of a cut payload is read as the padding count: valid or not
        if expected is not None:
            assert error_of(prefix) == expected, size
            continue
        count = prefix[-1]
        if count == 0:
            assert error_of(prefix) == "RTP padding length 0 (must count at least its own byte)"
        elif count > size - 32:
            assert error_of(prefix) == f"RTP padding length {count} exceeds payload of {size - 32} bytes"
        else:
            assert parse(prefix).payload == prefix[32 : size - count]


def padded(payload: bytes, count_byte: int) -> bytes:
    header = bytearray(serialize(RtpPacket(PT_PCMU, 7, 1120, 0xABCDEF01, b"")))
    header[0] |= 0x20
    return bytes(header) + payload + bytes([count_byte])


def test_padding_is_removed_from_the_payload() -> None:
    assert parse(padded(b"\x01\x02\x03\x00\x00", 3)).payload == b"\x01\x02\x03"
    assert parse(padded(b"\x01\x02\x03", 1)).payload == b"\x01\x02\x03"  # the count byte alone
    assert parse(padded(b"\x00\x00\x00", 4)).payload == b""  # padding only


def test_bad_padding_is_refused_with_its_numbers() -> None:
    assert error_of(padded(b"\x00" * 149, 200)) == "RTP padding length 200 exceeds payload of 150 bytes"
    assert error_of(padded(b"\x00" * 3, 5)) == "RTP padding length 5 exceeds payload of 4 bytes"
    assert error_of(padded(b"\x01\x02", 0)) == "RTP padding length 0 (must count at least its own byte)"
    header = bytearray(serialize(RtpPacket(PT_PCMU, 7, 1120, 0xABCDEF01, b"")))
    header[0] |= 0x20
    assert error_of(bytes(header)) == "RTP padding bit set but the packet has no payload"


def test_fifteen_csrcs_and_an_empty_extension_round_trip() -> None:
    packet = RtpPacket(127, 0xFFFF, 0xFFFFFFFF, 0, b"x", csrcs=tuple(range(15)), extension=(0, b""))
    data = serialize(packet)
    assert len(data) == 12 + 60 + 4 + 1
    assert parse(data) == packet


# --- serialize refuses what cannot be sent ---------------------------------------------------------------------


GOOD = RtpPacket(PT_PCMU, 1, 2, 3, b"\xff" * 160)


@pytest.mark.parametrize(
    ("changes", "message"),
    [
        ({"payload_type": 128}, "RTP payload type 128 out of range 0-127"),
        ({"payload_type": -1}, "RTP payload type -1 out of range 0-127"),
        ({"sequence": 0x10000}, "RTP sequence 65536 out of range 0-65535"),
        ({"sequence": -1}, "RTP sequence -1 out of range 0-65535"),
        ({"timestamp": 2**32}, "RTP timestamp 4294967296 out of range 0-4294967295"),
        ({"ssrc": 2**32}, "RTP SSRC 4294967296 out of range 0-4294967295"),
        ({"csrcs": tuple(range(16))}, "RTP packet has 16 CSRCs, at most 15"),
        ({"csrcs": (2**32,)}, "RTP CSRC 4294967296 out of range 0-4294967295"),
        ({"extension": (0x10000, b"")}, "RTP extension profile 65536 out of range 0-65535"),
        ({"extension": (1, b"abc")}, "RTP header extension data is 3 bytes, not a multiple of 4"),
        ({"extension": (1, b"\x00" * 4 * 0x10000)}, "RTP extension length (words) 65536 out of range 0-65535"),
    ],
)
def test_serialize_refuses_fields_out_of_range(changes: dict[str, object], message: str) -> None:
    fields = {
        "payload_type": GOOD.payload_type, "sequence": GOOD.sequence, "timestamp": GOOD.timestamp,
        "ssrc": GOOD.ssrc, "payload": GOOD.payload, "csrcs": GOOD.csrcs, "extension": GOOD.extension,
    }
    fields.update(changes)
    with pytest.raises(RtpError) as info:
        serialize(RtpPacket(**fields))  # type: ignore[arg-type]
    assert str(info.value) == message


def test_rtp_error_is_a_value_error() -> None:
    assert issubclass(RtpError, ValueError)


# --- garbage never raises anything but RtpError ----------------------------------------------------------------


def parse_or_error(data: bytes) -> RtpPacket | None:
    try:
        return parse(data)
    except RtpError:
        return None


def test_random_bytes_only_ever_raise_rtp_error() -> None:
    rng = random.Random(3550)
    parsed = 0
    for _ in range(20000):
        data = rng.randbytes(rng.randrange(0, 80))
        if rng.random() < 0.5 and data:
            data = bytes([0x80 | (data[0] & 0x3F)]) + data[1:]  # version 2: reach the deeper checks
        packet = parse_or_error(data)
        if packet is not None:
            parsed += 1
            if not data[0] & 0x20:
                assert serialize(packet) == data
    assert parsed > 1000  # the loop reached the parser's later stages too


def test_mutated_real_packets_only_ever_raise_rtp_error() -> None:
    rng = random.Random(5761)
    sources = ALL_CAPTURED
    for _ in range(5000):
        data = bytearray(rng.choice(sources))
        for _ in range(rng.randrange(1, 4)):
            data[rng.randrange(0, 16)] = rng.randrange(256)
        cut = bytes(data[: rng.randrange(0, len(data) + 1)]) if rng.random() < 0.5 else bytes(data)
        packet = parse_or_error(cut)
        if packet is not None and not cut[0] & 0x20:
            assert serialize(packet) == cut


@pytest.mark.parametrize("data", [b"", b"\x80", bytes(12), b"\xff" * 12, b"\x8f" + bytes(70), b"\xbf" * 40])
def test_odd_datagrams_are_rtp_errors(data: bytes) -> None:
    assert parse_or_error(data) is None


# --- RTCP demultiplexing ----------------------------------------------------------------------------------------


def rtcp(packet_type: int, count: int = 0, body: bytes = b"\x12\x34\x56\x78") -> bytes:
    return struct.pack("!BBH", 0x80 | count, packet_type, len(body) // 4) + body


@pytest.mark.parametrize("packet_type", range(200, 208))  # SR RR SDES BYE APP RTPFB PSFB XR
def test_rtcp_packets_are_recognised(packet_type: int) -> None:
    assert is_rtcp(rtcp(packet_type))


def test_a_real_sender_report_is_rtcp() -> None:
    report = rtcp(200, 0, struct.pack("!IIIIII", 0x24A15507, 0xE8E1A5C2, 0x1B4E7B2F, 160, 50, 8000))
    assert is_rtcp(report)


@pytest.mark.parametrize("name", STREAMS)
def test_rtp_is_not_rtcp_even_with_the_marker_bit(name: str) -> None:
    for data in captured(name):
        assert not is_rtcp(data)
        marked = bytes([data[0], data[1] | 0x80]) + data[2:]
        assert not is_rtcp(marked)
        assert parse(marked).marker


@pytest.mark.parametrize("data", [b"", b"\x80\xc8", b"\x80\xc8\x00", b"\x40\xc8\x00\x01", b"\x80\xbf\x00\x01",
                                  b"\x80\xe0\x00\x01"])
def test_non_rtcp_datagrams(data: bytes) -> None:
    assert not is_rtcp(data)


# --- sequence arithmetic ----------------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("a", "b", "distance"),
    [(0, 1, 1), (65535, 0, 1), (0, 65535, -1), (100, 100, 0), (65000, 500, 1036), (500, 65000, -1036),
     (0, 32767, 32767), (0, 32768, -32768), (1000, 900, -100), (65535, 65534, -1)],
)
def test_seq_distance_wraps_at_16_bits(a: int, b: int, distance: int) -> None:
    assert seq_distance(a, b) == distance


def test_seq_distance_is_antisymmetric() -> None:
    rng = random.Random(1)
    for _ in range(1000):
        a, b = rng.randrange(65536), rng.randrange(65536)
        if seq_distance(a, b) != -32768:
            assert seq_distance(b, a) == -seq_distance(a, b)
        assert (a + seq_distance(a, b)) % 65536 == b


# --- the sender -------------------------------------------------------------------------------------------------


def test_sender_wraps_sequence_and_timestamp() -> None:
    sender = RtpSender(PT_PCMU, ssrc=0xDEADBEEF, sequence=65534, timestamp=2**32 - 160)
    packets = [parse(sender.next(bytes([i]) * 160, 160, marker=i == 0)) for i in range(4)]
    assert [p.sequence for p in packets] == [65534, 65535, 0, 1]
    assert [p.timestamp for p in packets] == [2**32 - 160, 0, 160, 320]
    assert {p.ssrc for p in packets} == {0xDEADBEEF}
    assert [p.marker for p in packets] == [True, False, False, False]
    assert [p.payload[0] for p in packets] == [0, 1, 2, 3]
    assert (sender.packets, sender.octets) == (4, 640)


def test_sender_resends_a_real_stream_with_its_own_numbers() -> None:
    real = [parse(d) for d in captured("slin16")]
    sender = RtpSender(11)
    sent = [parse(sender.next(p.payload, WIDEBAND_FRAME_SAMPLES)) for p in real]
    assert [p.payload for p in sent] == [p.payload for p in real]
    assert {p.payload_type for p in sent} == {11}
    assert len({p.ssrc for p in sent}) == 1
    assert all(seq_distance(a.sequence, b.sequence) == 1 for a, b in pairwise(sent))
    assert all((b.timestamp - a.timestamp) % 2**32 == 320 for a, b in pairwise(sent))


def test_senders_start_at_random_places() -> None:
    senders = [RtpSender(PT_PCMA) for _ in range(8)]
    assert len({s.ssrc for s in senders}) == 8
    assert len({(s.sequence, s.timestamp) for s in senders}) == 8
    assert all(0 <= s.sequence <= 0xFFFF and 0 <= s.timestamp <= 0xFFFFFFFF for s in senders)


def test_sender_refuses_bad_settings() -> None:
    with pytest.raises(RtpError, match="payload type 200"):
        RtpSender(200)
    with pytest.raises(RtpError, match="sequence 70000"):
        RtpSender(0, sequence=70000)
    sender = RtpSender(0)
    with pytest.raises(RtpError, match="-1 samples"):
        sender.next(b"", -1)


def test_sequence_span_counts_expected_packets_across_wraparound_and_reordering() -> None:
    from asterisk_agent.media.rtp import SequenceSpan

    span = SequenceSpan()
    assert span.expected == 0
    for sequence in (65533, 65534, 1, 0, 65535, 3):  # wraps; 0 and 65535 arrive late; 2 is lost
        span.update(sequence)
    assert span.expected == 7  # 65533 .. 3 across the wrap
    span.update(65530)  # a very late straggler from before the first: not counted forward
    assert span.expected == 7
