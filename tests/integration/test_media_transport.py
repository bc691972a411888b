"""externalMedia RTP through a real Asterisk bridge, checked by content (which tone), to and from our endpoint."""

from __future__ import annotations

import asyncio
import contextlib
import socket
from collections.abc import AsyncIterator

import numpy as np
import pytest
import pytest_asyncio

from asterisk_agent.ari import requests as ari
from asterisk_agent.ari.client import AriClient
from asterisk_agent.ari.stream import EventStream
from asterisk_agent.media.codecs import dominant_frequency, goertzel_power, ulaw_decode, ulaw_encode
from asterisk_agent.media.frames import FRAME_SAMPLES, PT_PCMU, SAMPLE_RATE
from asterisk_agent.media.rtp import RtpPacket, RtpSender
from asterisk_agent.media.transport import PortPool, RtpEndpoint
from tests.support.capture_rtp import StartWaiter

pytestmark = [pytest.mark.asterisk, pytest.mark.usefixtures("leak_audit")]

APP = "media-test"


@pytest_asyncio.fixture(loop_scope="session")
async def media_app(pbx_ari: AriClient) -> AsyncIterator[StartWaiter]:
    waiter = StartWaiter()
    stream = EventStream(pbx_ari, APP, waiter)
    task = asyncio.create_task(stream.run())
    async with asyncio.timeout(5):
        await stream.wait_connected()
    yield waiter
    task.cancel()
    with contextlib.suppress(asyncio.CancelledError):
        await task


class Received:
    def __init__(self, wanted: int) -> None:
        self.packets: list[RtpPacket] = []
        self.wanted = wanted
        self.enough = asyncio.get_running_loop().create_future()

    def __call__(self, packet: RtpPacket) -> None:
        self.packets.append(packet)
        if len(self.packets) >= self.wanted and not self.enough.done():
            self.enough.set_result(None)

    def audio(self, skip: int = 0) -> np.ndarray:
        return np.concatenate([ulaw_decode(p.payload) for p in self.packets[skip:]])


async def _external_media(pbx: AriClient, waiter: StartWaiter, endpoint: RtpEndpoint, channel_id: str) -> None:
    started = waiter.expect(channel_id)
    answer = await pbx.send(ari.external_media(
        channel_id=channel_id, app=APP, external_host=f"127.0.0.1:{endpoint.port}", media_format="ulaw"))
    variables = answer["channelvars"]
    endpoint.expect_peer(variables["UNICASTRTP_LOCAL_ADDRESS"], int(variables["UNICASTRTP_LOCAL_PORT"]))
    async with asyncio.timeout(5):
        await started  # a channel joins a bridge only once it is in Stasis


async def test_bridge_audio_reaches_us_and_ours_reaches_the_bridge(pbx_ari: AriClient, media_app: StartWaiter) -> None:
    pool = PortPool("127.0.0.1", 41000, 41009)
    speaker_in, listener_in = Received(60), Received(60)
    speaker = await RtpEndpoint.open(pool, speaker_in, label="speaker")
    listener = await RtpEndpoint.open(pool, listener_in, label="listener")
    bridge_id, speaker_id, listener_id = "mt-bridge", "mt-speaker", "mt-listener"
    try:
        await pbx_ari.send(ari.create_bridge(bridge_id))
        for endpoint, channel_id in ((speaker, speaker_id), (listener, listener_id)):
            await _external_media(pbx_ari, media_app, endpoint, channel_id)
            await pbx_ari.send(ari.add_channel_to_bridge(bridge_id, channel_id))
        await pbx_ari.send(ari.play_on_bridge(bridge_id, "tone:1000", playback_id="mt-tone"))

        # A stranger sending well-formed RTP to our port is dropped, never delivered.
        stranger = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
        stranger.sendto(RtpSender(PT_PCMU, ssrc=1).next(b"\xff" * 160, 160), ("127.0.0.1", speaker.port))
        stranger.close()

        # We speak 440 Hz into the bridge, paced by the packets Asterisk sends us (one frame per packet).
        sender = RtpSender(PT_PCMU)
        tone = (np.sin(2 * np.pi * 440 * np.arange(FRAME_SAMPLES * 200) / SAMPLE_RATE) * 8000).astype(np.int16)
        frames = [ulaw_encode(tone[i : i + FRAME_SAMPLES]) for i in range(0, len(tone), FRAME_SAMPLES)]

        def speak(packet: RtpPacket) -> None:
            speaker_in(packet)
            if speaker_in.packets and len(speaker_in.packets) <= len(frames):
                speaker.send(sender.next(frames[len(speaker_in.packets) - 1], FRAME_SAMPLES))

        speaker._on_packet = speak
        async with asyncio.timeout(10):
            await asyncio.gather(speaker_in.enough, listener_in.enough)
    finally:
        with contextlib.suppress(Exception):
            await pbx_ari.delete_quietly(ari.stop_playback("mt-tone"))
        for channel_id in (speaker_id, listener_id):
            await pbx_ari.delete_quietly(ari.hangup(channel_id))
        await pbx_ari.delete_quietly(ari.destroy_bridge(bridge_id))
        speaker.close()
        listener.close()
    assert pool.in_use == 0
    assert speaker.stats.wrong_source >= 1
    assert {p.ssrc for p in speaker_in.packets} != {1}
    assert len({p.ssrc for p in speaker_in.packets}) == 1
    assert {p.payload_type for p in listener_in.packets} == {PT_PCMU}
    # The speaker hears the bridge's tone (not its own 440 Hz: a mixing bridge never returns a party's audio).
    heard_by_speaker = speaker_in.audio(skip=10)
    assert abs(dominant_frequency(heard_by_speaker, SAMPLE_RATE) - 1000) < 20
    # The listener hears both: the bridge's tone and what we sent (700 Hz: neither).
    listener_power = {f: goertzel_power(listener_in.audio(skip=20), SAMPLE_RATE, f) for f in (440, 700, 1000)}
    speaker_power = {f: goertzel_power(heard_by_speaker, SAMPLE_RATE, f) for f in (440, 1000)}
    assert listener_power[440] > 100 * listener_power[700]
    assert listener_power[1000] > 100 * listener_power[700]
    assert speaker_power[440] < speaker_power[1000] / 100
