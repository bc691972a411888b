"""The media endpoint's receive path, fed datagrams directly (no socket needed for the filtering rules)."""

from __future__ import annotations

import socket

import pytest

from asterisk_agent.media.rtp import RtpPacket, RtpSender
from asterisk_agent.media.transport import PortPool, PortsExhausted, RtpEndpoint

ASTERISK = ("127.0.0.1", 14002)


def _endpoint() -> tuple[RtpEndpoint, list[RtpPacket]]:
    got: list[RtpPacket] = []
    endpoint = RtpEndpoint(got.append, label="t")
    return endpoint, got


def test_only_the_expected_peer_is_heard() -> None:
    endpoint, got = _endpoint()
    packet = RtpSender(0, ssrc=7).next(b"\xff" * 160, 160)
    endpoint.datagram_received(packet, ASTERISK)  # before Asterisk's address is known
    endpoint.expect_peer(*ASTERISK)
    endpoint.datagram_received(packet, ("127.0.0.1", 14004))
    endpoint.datagram_received(packet, ("127.0.0.2", 14002))
    endpoint.datagram_received(packet, ASTERISK)
    assert [p.ssrc for p in got] == [7]
    assert (endpoint.stats.before_peer, endpoint.stats.wrong_source, endpoint.stats.received) == (1, 2, 1)


def test_malformed_and_rtcp_are_counted_and_dropped(caplog: pytest.LogCaptureFixture) -> None:
    endpoint, got = _endpoint()
    endpoint.expect_peer(*ASTERISK)
    endpoint.datagram_received(b"\x80\x00", ASTERISK)
    endpoint.datagram_received(b"\x40" + bytes(15), ASTERISK)
    endpoint.datagram_received(bytes([0x80, 200]) + bytes(26), ASTERISK)  # an RTCP sender report
    assert got == []
    assert (endpoint.stats.malformed, endpoint.stats.rtcp) == (2, 1)
    assert "version 1" in endpoint.stats.last_error
    assert sum("malformed RTP" in r.getMessage() for r in caplog.records) == 2


def test_the_port_pool_skips_taken_ports_and_runs_out_cleanly() -> None:
    squatter = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
    squatter.bind(("127.0.0.1", 0))
    taken = squatter.getsockname()[1]
    pool = PortPool("127.0.0.1", taken, taken + 1)
    try:
        first = pool.bind()
        assert first.getsockname()[1] == taken + 1
        with pytest.raises(PortsExhausted):
            pool.bind()
        first.close()
        pool.release(taken + 1)
        again = pool.bind()
        assert again.getsockname()[1] == taken + 1
        again.close()
    finally:
        squatter.close()


def test_a_media_leg_never_decodes_a_payload_type_it_did_not_ask_for(caplog: pytest.LogCaptureFixture) -> None:
    from asterisk_agent.ari.client import AriClient
    from asterisk_agent.ari.ids import IdFactory
    from asterisk_agent.calls.ledger import Ledger
    from asterisk_agent.media.leg import MediaLeg
    from asterisk_agent.media.pacer import PacingClock
    from asterisk_agent.media.rtp import parse

    leg = MediaLeg(client=AriClient("http://127.0.0.1:9", "u", "p"), ids=IdFactory("t"), ledger=Ledger(),
                   pool=PortPool("127.0.0.1", 40000, 40001), clock=PacingClock(), app="t",
                   advertised_address="127.0.0.1", codec="ulaw")
    dynamic = RtpSender(96, ssrc=1)  # a stray dynamic stream (or slin16 PT 118 on a ulaw leg)
    comfort_noise = RtpSender(13, ssrc=2)
    ulaw = RtpSender(0, ssrc=3)
    for sender, size in ((dynamic, 320), (comfort_noise, 1), (ulaw, 160)):
        leg._on_packet(parse(sender.next(b"\x01" * size, 160)))
    assert leg.wrong_payload_type == 2
    assert leg.jitter.stats.received == 1  # only the ulaw packet reached the jitter buffer
    assert sum("payload type 96" in r.getMessage() for r in caplog.records) == 1
