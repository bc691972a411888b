"""What simulated callers and simulated agents share: a party to a call on the carrier, with ears and a voice.

Either side of a test call may need to hear what the pbx sends and to say something back, so both get the same
audio path: the party's channel bridged on the carrier with an externalMedia leg of our own (``MediaLeg``),
whose tap records what the party heard, frame by frame, and whose outbound queue carries what it says. Every
carrier resource the leg creates is written into the party's ledger before it is requested, so one release
removes them whatever happened to the call.
"""

from __future__ import annotations

import asyncio
import bisect
import contextlib
from typing import Any, Protocol

import numpy as np

from asterisk_agent.ari import requests as ari
from asterisk_agent.ari.client import AriClient
from asterisk_agent.ari.ids import IdFactory
from asterisk_agent.calls.ledger import Ledger
from asterisk_agent.media.frames import FRAME_MS, FRAME_SAMPLES
from asterisk_agent.media.leg import MediaContext, MediaLeg, Samples
from asterisk_agent.speech.vad import frame_dbfs

HEARD_VOICED_DBFS = -45.0  # a 20 ms frame louder than this is someone speaking (the line is digital silence)


class CallFailed(Exception):
    """A call ended before what the test waits for (an answer, a scripted line) happened."""


def voiced_frames(samples: Samples) -> list[int]:
    """Indices of the 20 ms frames of ``samples`` with speech in them (by level)."""
    whole = len(samples) // FRAME_SAMPLES
    return [i for i in range(whole) if frame_dbfs(samples[i * FRAME_SAMPLES:(i + 1) * FRAME_SAMPLES])
            > HEARD_VOICED_DBFS]


class Ear:
    """What a simulated party hears, frame by frame (on the media leg's tick): which tap frames were voiced,
    and futures waiting for a reply to start and end. Each frame costs one level measurement and a look at
    each waiter, whatever the length of the call."""

    def __init__(self) -> None:
        self.frame = 0  # the next tap frame index
        self.voiced: list[int] = []  # voiced tap frames, in order
        self._waiters: list[tuple[int, int, asyncio.Future[tuple[int, int]]]] = []

    def attach(self, leg: MediaLeg) -> None:
        self.frame = leg.tap.frames
        leg.on_frame = self.on_frame

    def on_frame(self, heard: Samples, said: Samples) -> None:
        del said
        index = self.frame
        self.frame += 1
        if frame_dbfs(heard) > HEARD_VOICED_DBFS:
            self.voiced.append(index)
        if not self._waiters:
            return
        pending = []
        for since, quiet, future in self._waiters:
            found = None if future.done() else self._reply(since, quiet)
            if found is not None:
                future.set_result(found)
            elif not future.done():
                pending.append((since, quiet, future))
        self._waiters = pending

    def _reply(self, since: int, quiet: int) -> tuple[int, int] | None:
        """The first voiced frame at or after ``since`` and the last voiced frame, once ``quiet`` silent frames
        followed it; ``None`` before."""
        if not self.voiced or self.voiced[-1] < since or self.frame - 1 - self.voiced[-1] < quiet:
            return None
        return self.voiced[bisect.bisect_left(self.voiced, since)], self.voiced[-1]

    async def reply_after(self, since: int, quiet_frames: int) -> tuple[int, int]:
        found = self._reply(since, quiet_frames)
        if found is not None:
            return found
        future: asyncio.Future[tuple[int, int]] = asyncio.get_running_loop().create_future()
        self._waiters.append((since, quiet_frames, future))
        return await future


class MediaHost(Protocol):
    """The carrier's app as a media leg needs it: ids for new resources, the app name, StasisStart futures."""

    ids: IdFactory
    app: str

    def expect_stasis(self, channel_id: str) -> asyncio.Future[None]: ...


class CallParty:
    """The audio half of a simulated caller or agent: attach a media leg, hear, speak, wait for a reply.

    Subclasses are dataclasses that provide the attributes declared here; ``gone`` resolves (with the hangup
    cause) when the party's channel hangs up, so nothing here waits on audio that can no longer come."""

    client: AriClient
    channel_id: str
    media_leg: MediaLeg | None
    ledger: Ledger
    ear: Ear
    gone: asyncio.Future[int]

    @property
    def media_label(self) -> str:
        """How the party's media leg is named in logs."""
        return self.channel_id

    async def attach_media(self, host: MediaHost, media: MediaContext) -> MediaLeg:
        """Bridge this party's channel with an externalMedia leg of the carrier's, so it can speak and record
        what it hears (the tap's first channel is what came from the pbx)."""
        self.media_leg = MediaLeg(
            client=self.client, ids=host.ids, ledger=self.ledger, pool=media.pool, clock=media.clock,
            app=host.app, advertised_address=media.advertised_address, codec=media.codec,
            jitter_depth=media.jitter_depth, label=self.media_label,
        )
        await self.media_leg.start(self.channel_id, host.expect_stasis)
        self.ear.attach(self.media_leg)
        return self.media_leg

    def heard(self) -> Samples:
        """Everything this party heard so far, 8 kHz."""
        return self.media_leg.tap.caller() if self.media_leg is not None else np.zeros(0, dtype=np.int16)

    async def speak(self, samples: Samples) -> tuple[int, int]:
        """Say ``samples`` (8 kHz) into the call and wait until all of it is out (or the call is gone). Returns
        the tap frames of its first and last voiced 20 ms (the last is where a voice-to-voice latency starts)."""
        leg = self.media_leg
        if leg is None:
            raise RuntimeError("attach_media first")
        start = leg.tap.frames
        voiced = voiced_frames(samples)
        leg.play(samples)
        drained: asyncio.Future[Any] = asyncio.ensure_future(leg.drained.wait())
        gone: asyncio.Future[Any] = asyncio.shield(self.gone)
        try:
            # A leg closed because the call ended never drains: the hangup ends the wait too.
            await asyncio.wait([drained, gone], return_when=asyncio.FIRST_COMPLETED)
        finally:
            drained.cancel()
            gone.cancel()
        if not voiced:
            return start, start
        return start + voiced[0], start + voiced[-1]

    async def wait_reply(self, since_frame: int, *, quiet_ms: int = 800, timeout_s: float = 30.0) -> tuple[int, int]:
        """Wait until this party hears speech that starts at or after tap frame ``since_frame`` and then
        ``quiet_ms`` of silence. Returns the first and last voiced frames of it."""
        async with asyncio.timeout(timeout_s):
            return await self.ear.reply_after(since_frame, quiet_ms // FRAME_MS)

    async def send_digits(self, digits: str, *, duration_ms: int = 100) -> None:
        """Send digits one request at a time, so a hangup can come between any two."""
        for index, digit in enumerate(digits):
            await self.client.send(
                ari.send_dtmf(self.channel_id, digit, duration_ms=duration_ms, before_ms=60 if index else None)
            )

    async def release_media(self) -> None:
        """Stop the media leg and remove its carrier resources (externalMedia channel, bridge)."""
        if self.media_leg is not None:
            self.media_leg.close()
        await self.ledger.release_all(self.client)


def settle_failed(future: asyncio.Future[None], reason: str) -> None:
    """Fail a future nobody may be waiting on, without the 'exception never retrieved' warning."""
    if not future.done():
        future.set_exception(CallFailed(reason))
        with contextlib.suppress(CallFailed):
            future.result()
