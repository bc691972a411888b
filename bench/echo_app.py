"""A trivial ARI app: the baseline the worker's per-call cost is compared with.

It registers as the same Stasis application as the worker (``asterisk-agent``), answers every
``StasisStart`` with args ``inbound,<DID>`` at once, and sends every DTMF digit it receives straight back
to the same channel (in order, one request at a time per channel). It never hangs up, plays nothing and
keeps no history: whatever the worker costs above this is the cost of its sessions.

With ``--media MIN:MAX`` it also bridges every answered caller with an externalMedia channel (ulaw) to a UDP
port of that range and sends every RTP packet straight back as it arrives (no jitter buffer, no pacing, no
decoding): the media baseline. It prints its packet counts when it stops.

    python bench/echo_app.py --ari-url http://127.0.0.1:8188 --user asterisk-agent --password SECRET

Prints ``echo app connected ...`` (flushed) every time the event stream connects; stops on SIGTERM/SIGINT.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import logging
import signal
import sys

from asterisk_agent.ari import requests as ari
from asterisk_agent.ari.client import AriClient
from asterisk_agent.ari.errors import AriConflict, AriError, AriNotFound
from asterisk_agent.ari.events import (
    ChannelDestroyed,
    ChannelDtmfReceived,
    Event,
    StasisEnd,
    StasisStart,
)
from asterisk_agent.ari.ids import IdFactory
from asterisk_agent.ari.stream import EventStream
from asterisk_agent.media.frames import PT_PCMU
from asterisk_agent.media.rtp import RtpPacket, RtpSender
from asterisk_agent.media.transport import PortPool, RtpEndpoint

log = logging.getLogger("echo_app")


class EchoApp:
    """The EventHandler of the stream: one small task per answered channel, fed by a queue of digits."""

    def __init__(self, client: AriClient, app: str, *, dtmf_duration_ms: int = 100,
                 media_ports: tuple[int, int] | None = None) -> None:
        self.client = client
        self.app = app
        self.pool = PortPool("127.0.0.1", *media_ports) if media_ports else None
        self.ids = IdFactory("echo")
        self._media_started: dict[str, asyncio.Future[None]] = {}
        self.rtp_received = 0
        self.rtp_expected = 0  # from each stream's sequence numbers, counted when its call ends
        self.rtp_sent = 0
        self.dtmf_duration_ms = dtmf_duration_ms
        self._digits: dict[str, asyncio.Queue[str]] = {}
        self._tasks: dict[str, asyncio.Task[None]] = {}
        self.answered = 0
        self.echoed = 0
        self.stopping = False

    # EventHandler protocol
    async def connected(self) -> None:
        print(f"echo app connected: app {self.app} on {self.client.base_url}", flush=True)

    def disconnected(self) -> None:
        if not self.stopping:  # the stream also reports a disconnect when we cancel it to stop
            log.warning("event stream down")

    def handle(self, event: Event) -> None:
        if isinstance(event, StasisStart):
            started = self._media_started.pop(event.channel.id, None)
            if started is not None and not started.done():
                started.set_result(None)
            if event.args[:1] == ("inbound",) and event.channel.id not in self._tasks:
                queue: asyncio.Queue[str] = asyncio.Queue()
                self._digits[event.channel.id] = queue
                self._tasks[event.channel.id] = asyncio.create_task(
                    self._serve(event.channel.id, queue), name=f"echo-{event.channel.id}"
                )
        elif isinstance(event, ChannelDtmfReceived):
            digits = self._digits.get(event.channel.id)
            if digits is not None:
                digits.put_nowait(event.digit)
        elif isinstance(event, StasisEnd | ChannelDestroyed):
            self._digits.pop(event.channel.id, None)
            task = self._tasks.pop(event.channel.id, None)
            if task is not None:
                task.cancel()

    async def _serve(self, channel_id: str, digits: asyncio.Queue[str]) -> None:
        bridge_id = media_id = None
        endpoint: RtpEndpoint | None = None
        try:
            await self.client.send(ari.answer(channel_id))
            self.answered += 1
            if self.pool is not None:
                bridge_id, media_id = self.ids.new("br"), self.ids.new("em")
                await self.client.send(ari.create_bridge(bridge_id, bridge_type="mixing"))
                await self.client.send(ari.add_channel_to_bridge(bridge_id, channel_id))
                endpoint = await self._echo_endpoint()
                started = self._media_started[media_id] = asyncio.get_running_loop().create_future()
                answer = await self.client.send(ari.external_media(
                    channel_id=media_id, app=self.app, app_args="media",
                    external_host=f"127.0.0.1:{endpoint.port}", media_format="ulaw"))
                variables = (answer or {}).get("channelvars", {})
                endpoint.expect_peer(str(variables["UNICASTRTP_LOCAL_ADDRESS"]),
                                     int(variables["UNICASTRTP_LOCAL_PORT"]))
                await asyncio.wait_for(started, 5)
                await self.client.send(ari.add_channel_to_bridge(bridge_id, media_id))
            while True:
                digit = await digits.get()
                await self.client.send(ari.send_dtmf(channel_id, digit, duration_ms=self.dtmf_duration_ms))
                self.echoed += 1
        except (AriNotFound, AriConflict):
            pass  # the caller hung up under us
        except AriError as exc:
            log.warning("channel %s: %s", channel_id, exc)
        finally:
            if endpoint is not None:
                self.rtp_expected += endpoint.stats.expected
                endpoint.close()
            if media_id is not None:
                await asyncio.shield(self.client.delete_quietly(ari.hangup(media_id)))
            if bridge_id is not None:
                await asyncio.shield(self.client.delete_quietly(ari.destroy_bridge(bridge_id)))

    async def _echo_endpoint(self) -> RtpEndpoint:
        """A UDP endpoint that sends each packet straight back to Asterisk as its own stream."""
        assert self.pool is not None
        sender = RtpSender(PT_PCMU)
        holder: list[RtpEndpoint] = []

        def echo(packet: RtpPacket) -> None:
            self.rtp_received += 1
            holder[0].send(sender.next(packet.payload, len(packet.payload)))
            self.rtp_sent += 1

        holder.append(await RtpEndpoint.open(self.pool, echo, label="echo"))
        return holder[0]

    async def close(self) -> None:
        tasks = list(self._tasks.values())
        for task in tasks:
            task.cancel()
        for task in tasks:
            with contextlib.suppress(asyncio.CancelledError):
                await task


async def run(url: str, user: str, password: str, app: str, media_ports: tuple[int, int] | None = None) -> int:
    client = AriClient(url, user, password)
    echo = EchoApp(client, app, media_ports=media_ports)
    stream = EventStream(client, app, echo)
    try:
        await client.info()  # fail fast on a wrong URL or password
    except AriError as exc:
        print(f"error: {exc}", file=sys.stderr)
        await client.close()
        return 1
    stop = asyncio.Event()
    loop = asyncio.get_running_loop()
    for signum in (signal.SIGINT, signal.SIGTERM):
        loop.add_signal_handler(signum, stop.set)
    runner = asyncio.create_task(stream.run(), name="echo-events")
    stopper = asyncio.create_task(stop.wait())
    await asyncio.wait({runner, stopper}, return_when=asyncio.FIRST_COMPLETED)
    echo.stopping = True
    code = 0
    if runner.done() and runner.exception() is not None:
        print(f"error: {runner.exception()}", file=sys.stderr)
        code = 2
    runner.cancel()
    stopper.cancel()
    with contextlib.suppress(asyncio.CancelledError, Exception):
        await runner
    await echo.close()
    await client.close()
    print(f"echo app stopped: answered {echo.answered}, echoed {echo.echoed} digits, RTP received "
          f"{echo.rtp_received} of {echo.rtp_expected} expected, sent {echo.rtp_sent}", flush=True)
    return code


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--ari-url", required=True, help="e.g. http://127.0.0.1:8088 (without /ari)")
    parser.add_argument("--user", required=True, help="the ARI user")
    parser.add_argument("--password", required=True, help="the ARI user's password")
    parser.add_argument("--app", default="asterisk-agent", help="the Stasis application (default asterisk-agent)")
    parser.add_argument("--media", default="", help="MIN:MAX: echo every caller's RTP from a port of this range")
    args = parser.parse_args(argv)
    logging.basicConfig(level=logging.WARNING, format="%(asctime)s %(levelname)s %(name)s: %(message)s")
    ports = tuple(int(p) for p in args.media.split(":")) if args.media else None
    if ports is not None and len(ports) != 2:
        parser.error("--media takes MIN:MAX")
    return asyncio.run(run(args.ari_url, args.user, args.password, args.app,
                           (ports[0], ports[1]) if ports else None))


if __name__ == "__main__":
    sys.exit(main())
