"""A session's audio path: a mixing bridge holding the caller and an externalMedia channel whose RTP comes to
our UDP endpoint. Inbound packets go through a jitter buffer; every 20 ms tick of the shared pacing clock takes
one inbound frame and sends at most one outbound frame, and the recording tap keeps both, aligned by tick.

Every Asterisk resource is recorded in the session's ledger before it is requested, so the session's one
teardown removes it; :meth:`MediaLeg.close` only stops the local side (tick, socket) and is idempotent.
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Awaitable, Callable
from dataclasses import dataclass, field

import numpy as np
import numpy.typing as npt

from asterisk_agent.ari import requests as ari
from asterisk_agent.ari.client import AriClient
from asterisk_agent.ari.ids import IdFactory
from asterisk_agent.calls.ledger import Kind, Ledger
from asterisk_agent.media.codecs import Codec, Resampler, get_codec, resample, slin_be_decode
from asterisk_agent.media.frames import FRAME_SAMPLES, PT_L16_8K, SAMPLE_RATE
from asterisk_agent.media.jitter import JitterBuffer
from asterisk_agent.media.pacer import FrameQueue, PacingClock, TickHandle
from asterisk_agent.media.rtp import RtpPacket, RtpSender
from asterisk_agent.media.transport import PortPool, RtpEndpoint
from asterisk_agent.speech.endpointer import EndpointerConfig
from asterisk_agent.speech.vad import VadConfig

log = logging.getLogger(__name__)

Samples = npt.NDArray[np.int16]
SILENT_FRAME: Samples = np.zeros(FRAME_SAMPLES, dtype=np.int16)


def _frame(samples: Samples) -> Samples:
    """Exactly one 8 kHz frame (a streaming resampler may hand back a sample more or less)."""
    if len(samples) == FRAME_SAMPLES:
        return samples
    if len(samples) > FRAME_SAMPLES:
        return samples[:FRAME_SAMPLES]
    return np.concatenate([samples, np.zeros(FRAME_SAMPLES - len(samples), dtype=np.int16)])


class RecordingTap:
    """Both directions of a call, 20 ms per tick, time-aligned (channel 1 the caller, channel 2 the agent).

    Bounded: past ``max_frames`` ticks it stops keeping audio and counts what it dropped (the records issue
    streams to a file instead of memory)."""

    def __init__(self, max_frames: int) -> None:
        self.max_frames = max_frames
        self._caller: list[Samples] = []
        self._agent: list[Samples] = []
        self.dropped = 0

    def add(self, caller: Samples, agent: Samples) -> None:
        if len(self._caller) >= self.max_frames:
            self.dropped += 1
            return
        self._caller.append(caller)
        self._agent.append(agent)

    @property
    def frames(self) -> int:
        return len(self._caller)

    def caller(self) -> Samples:
        return np.concatenate(self._caller) if self._caller else SILENT_FRAME[:0]

    def agent(self) -> Samples:
        return np.concatenate(self._agent) if self._agent else SILENT_FRAME[:0]

    def caller_frames(self, first: int, last: int) -> Samples:
        """The caller's audio from frame ``first`` through ``last`` (clamped to what was kept)."""
        frames = self._caller[max(0, first): max(0, last + 1)]
        return np.concatenate(frames) if frames else SILENT_FRAME[:0]

    def stereo(self) -> Samples:
        """Interleaved two-channel samples, ready for a WAV writer."""
        return np.column_stack([self.caller(), self.agent()]).astype(np.int16)


@dataclass(frozen=True)
class MediaContext:
    """What every call's media leg shares: the port pool, the pacing clock, where Asterisk sends RTP."""

    pool: PortPool
    clock: PacingClock
    app: str
    advertised_address: str
    codec: str = "ulaw"
    jitter_depth: int = 3
    vad: VadConfig = field(default_factory=VadConfig)
    endpointer: EndpointerConfig = field(default_factory=EndpointerConfig)


class MediaLeg:
    def __init__(
        self,
        *,
        client: AriClient,
        ids: IdFactory,
        ledger: Ledger,
        pool: PortPool,
        clock: PacingClock,
        app: str,
        advertised_address: str,
        codec: str = "ulaw",
        jitter_depth: int = 3,
        tap_max_frames: int = 3000 * 60,
        label: str = "",
    ) -> None:
        self._client = client
        self._ids = ids
        self._ledger = ledger
        self._pool = pool
        self._clock = clock
        self._app = app
        self._advertised = advertised_address
        self.codec: Codec = get_codec(codec)
        self.label = label
        silence = self.codec.encode(np.zeros(self.codec.frame_samples, dtype=np.int16))
        self._jitter = JitterBuffer(lambda: silence, depth=jitter_depth)
        self._sender = RtpSender(self.codec.send_payload_type)
        # What we send, decoded again for the tap (8 kHz L16 when answering slin16, else the same codec).
        self._send_decode = slin_be_decode if self.codec.send_payload_type == PT_L16_8K else self.codec.decode
        wideband = self.codec.sample_rate != SAMPLE_RATE
        self._downsample = Resampler(self.codec.sample_rate, SAMPLE_RATE) if wideband else None
        self.outbound = FrameQueue()
        self.tap = RecordingTap(tap_max_frames)
        # Each tick: the caller's 20 ms frame and the agent's (what it sent, silence when nothing), 8 kHz.
        self.on_frame: Callable[[Samples, Samples], None] | None = None
        self.bridge_id: str | None = None
        self.channel_id: str | None = None
        self._endpoint: RtpEndpoint | None = None
        self._tick: TickHandle | None = None
        self._closed = False
        self.drained = asyncio.Event()  # set whenever nothing is left to send
        self.drained.set()
        self.wrong_payload_type = 0  # packets from the right peer in a format we did not ask for (dropped)

    @property
    def endpoint(self) -> RtpEndpoint | None:
        return self._endpoint

    @property
    def jitter(self) -> JitterBuffer:
        return self._jitter

    async def start(self, caller_id: str, stasis_started: Callable[[str], Awaitable[None]]) -> None:
        """Bridge the caller with an externalMedia channel streaming to our endpoint.

        ``stasis_started(channel_id)`` returns an awaitable that completes on that channel's StasisStart
        (a channel joins a bridge only once it is in Stasis)."""
        self.bridge_id = self._ids.new("br")
        self._ledger.record(Kind.BRIDGE, self.bridge_id, "media-bridge")
        await self._client.send(ari.create_bridge(self.bridge_id, bridge_type="mixing", name=self.bridge_id))
        await self._client.send(ari.add_channel_to_bridge(self.bridge_id, caller_id))
        self._endpoint = await RtpEndpoint.open(self._pool, self._on_packet, label=self.label)
        self.channel_id = self._ids.new("em")
        self._ledger.record(Kind.CHANNEL, self.channel_id, "external-media")
        started = stasis_started(self.channel_id)
        answer = await self._client.send(
            ari.external_media(
                channel_id=self.channel_id, app=self._app, app_args="media",
                external_host=f"{self._advertised}:{self._endpoint.port}", media_format=self.codec.name,
            )
        )
        variables = (answer or {}).get("channelvars", {})
        try:
            self._endpoint.expect_peer(
                str(variables["UNICASTRTP_LOCAL_ADDRESS"]), int(variables["UNICASTRTP_LOCAL_PORT"])
            )
        except (KeyError, ValueError) as exc:
            raise RuntimeError("externalMedia answer without UNICASTRTP_LOCAL_ADDRESS/PORT") from exc
        await asyncio.wait_for(started, 5)
        await self._client.send(ari.add_channel_to_bridge(self.bridge_id, self.channel_id))
        self._tick = self._clock.register(self._on_tick)

    def play(self, samples: npt.ArrayLike, rate: int = SAMPLE_RATE) -> int:
        """Queue audio for the caller (any rate; resampled to what we send); returns the frames queued."""
        audio = np.asarray(samples, dtype=np.int16)
        if rate != self.codec.send_rate:
            audio = resample(audio, rate, self.codec.send_rate)
        size = self.codec.send_frame_samples
        if len(audio) % size:
            audio = np.concatenate([audio, np.zeros(size - len(audio) % size, dtype=np.int16)])
        frames = [self.codec.encode(audio[i : i + size]) for i in range(0, len(audio), size)]
        self.outbound.extend(frames)
        if frames:
            self.drained.clear()
        return len(frames)

    def barge_in(self) -> int:
        """Stop the reply now: drop every queued frame; returns how many were cut."""
        cut = self.outbound.clear()
        self.drained.set()
        return cut

    def _on_packet(self, packet: RtpPacket) -> None:
        if packet.payload_type != self.codec.payload_type:
            # Not the format we asked Asterisk for (comfort noise, a stray stream): never decode it as audio.
            self.wrong_payload_type += 1
            if self.wrong_payload_type <= 3:
                log.warning("media %s: dropped RTP with payload type %d (expected %d for %s)", self.label,
                            packet.payload_type, self.codec.payload_type, self.codec.name)
            return
        self._jitter.push(packet.sequence, packet.timestamp, packet.payload, self._clock.now(), ssrc=packet.ssrc)

    def _on_tick(self, now: float) -> None:
        del now
        frame = self._jitter.pop()
        heard = self.codec.decode(frame.payload) if frame.payload else SILENT_FRAME
        if self._downsample is not None:
            heard = self._downsample.process(heard)
        said = SILENT_FRAME
        payload = self.outbound.pop()
        if payload is not None and self._endpoint is not None:
            self._endpoint.send(self._sender.next(payload, self.codec.send_frame_samples))
            said = self._send_decode(payload)
            if not self.outbound:
                self.drained.set()
        heard, said = _frame(heard), _frame(said)
        self.tap.add(heard, said)
        if self.on_frame is not None:
            self.on_frame(heard, said)

    def close(self) -> None:
        """Stop the local side: the tick and the socket (idempotent). Asterisk's side goes with the ledger."""
        if self._closed:
            return
        self._closed = True
        if self._tick is not None:
            self._tick.cancel()
        if self._endpoint is not None:
            self._endpoint.close()
