"""Capture real externalMedia RTP from the private Asterisk into ``tests/data/rtp/`` (test data for the pure
RTP and codec code).

One mixing bridge holds three externalMedia channels (ulaw, alaw, slin16), each streaming to a UDP socket of
ours on 127.0.0.1; a 1 kHz tone (``tone:1000``) plays on the bridge, so all three streams carry the same
audio at the same moments. The first ``--packets`` datagrams each socket receives are written as they came,
one file per format (``<format>.rtp``): a sequence of records, each a 2-byte big-endian length followed by
that many bytes of the datagram. Every channel and bridge created here is removed at the end.

Needs the test bed running, on a slot of your own:

    ASTERISK_AGENT_PBX_SLOT=2 .venv/bin/asterisk-agent pbx up
    ASTERISK_AGENT_PBX_SLOT=2 .venv/bin/python -m tests.support.capture_rtp
    ASTERISK_AGENT_PBX_SLOT=2 .venv/bin/asterisk-agent pbx down
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import json
import struct
import sys
import uuid
from pathlib import Path
from typing import Any

from asterisk_agent.ari import requests as ari
from asterisk_agent.ari.client import AriClient
from asterisk_agent.ari.events import Event, StasisStart
from asterisk_agent.ari.stream import EventStream
from asterisk_agent.pbx.instances import PortPlan

FORMATS = ("ulaw", "alaw", "slin16")
DATA_DIR = Path(__file__).resolve().parents[1] / "data" / "rtp"
ARI_USER = "asterisk-agent"
ARI_PASSWORD = "testbed-ari-secret"  # the test bed's pbx (asterisk_agent.pbx.instances.TestBed.create)


def write_records(path: Path, datagrams: list[bytes]) -> None:
    path.write_bytes(b"".join(struct.pack("!H", len(d)) + d for d in datagrams))


def read_records(path: Path) -> list[bytes]:
    """The datagrams of a capture file (the inverse of :func:`write_records`)."""
    data = path.read_bytes()
    out: list[bytes] = []
    offset = 0
    while offset < len(data):
        if offset + 2 > len(data):
            raise ValueError(f"{path}: truncated length at byte {offset}")
        (length,) = struct.unpack_from("!H", data, offset)
        offset += 2
        if offset + length > len(data):
            raise ValueError(f"{path}: truncated record at byte {offset}")
        out.append(data[offset : offset + length])
        offset += length
    return out


class Collector(asyncio.DatagramProtocol):
    def __init__(self, wanted: int) -> None:
        self.wanted = wanted
        self.datagrams: list[bytes] = []
        self.sources: set[tuple[str, int]] = set()
        self.done = asyncio.get_running_loop().create_future()

    def datagram_received(self, data: bytes, addr: tuple[str | Any, int]) -> None:
        if len(self.datagrams) < self.wanted:
            self.datagrams.append(bytes(data))
            self.sources.add((str(addr[0]), int(addr[1])))
            if len(self.datagrams) == self.wanted and not self.done.done():
                self.done.set_result(None)


class StartWaiter:
    """The EventHandler of the capture app: resolves a future per channel id on its StasisStart."""

    def __init__(self) -> None:
        self.started: dict[str, asyncio.Future[None]] = {}

    def expect(self, channel_id: str) -> asyncio.Future[None]:
        return self.started.setdefault(channel_id, asyncio.get_running_loop().create_future())

    async def connected(self) -> None:
        pass

    def disconnected(self) -> None:
        pass

    def handle(self, event: Event) -> None:
        if isinstance(event, StasisStart):
            future = self.expect(event.channel.id)
            if not future.done():
                future.set_result(None)


async def capture(ari_url: str, app: str, packets: int, out_dir: Path) -> int:
    loop = asyncio.get_running_loop()
    tag = uuid.uuid4().hex[:8]
    bridge_id = f"capture-{tag}-bridge"
    playback_id = f"capture-{tag}-tone"
    channel_ids = {fmt: f"capture-{tag}-{fmt}" for fmt in FORMATS}
    created_channels: list[str] = []
    bridge_created = False
    transports: list[asyncio.DatagramTransport] = []
    collectors: dict[str, Collector] = {}
    meta: dict[str, object] = {}

    async with AriClient(ari_url, ARI_USER, ARI_PASSWORD) as client:
        info = await client.info()
        version = str(info["system"]["version"])
        waiter = StartWaiter()
        stream = EventStream(client, app, waiter)
        stream_task = asyncio.create_task(stream.run())
        try:
            await asyncio.wait_for(stream.wait_connected(), 5)
            await client.send(ari.create_bridge(bridge_id, bridge_type="mixing"))
            bridge_created = True
            for fmt in FORMATS:
                transport, collector = await loop.create_datagram_endpoint(
                    lambda: Collector(packets), local_addr=("127.0.0.1", 0)
                )
                transports.append(transport)
                collectors[fmt] = collector
                port = transport.get_extra_info("sockname")[1]
                started = waiter.expect(channel_ids[fmt])
                created_channels.append(channel_ids[fmt])
                answer = await client.send(ari.external_media(
                    channel_id=channel_ids[fmt], app=app, external_host=f"127.0.0.1:{port}", media_format=fmt,
                ))
                await asyncio.wait_for(started, 5)
                await client.send(ari.add_channel_to_bridge(bridge_id, channel_ids[fmt]))
                meta[fmt] = {"our_port": port, "channelvars": answer.get("channelvars", {})}
            await client.send(ari.play_on_bridge(bridge_id, "tone:1000", playback_id=playback_id))
            await asyncio.wait_for(asyncio.gather(*(c.done for c in collectors.values())), 10)
        finally:
            with contextlib.suppress(Exception):
                await client.delete_quietly(ari.stop_playback(playback_id))
            for channel_id in created_channels:
                with contextlib.suppress(Exception):
                    await client.delete_quietly(ari.hangup(channel_id))
            if bridge_created:
                with contextlib.suppress(Exception):
                    await client.delete_quietly(ari.destroy_bridge(bridge_id))
            for transport in transports:
                transport.close()
            stream_task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await stream_task
        await asyncio.sleep(0.3)
        left = [c["id"] for c in await client.channels() if str(c.get("id", "")).startswith(f"capture-{tag}")]
        left += [b["id"] for b in await client.bridges() if str(b.get("id", "")).startswith(f"capture-{tag}")]

    out_dir.mkdir(parents=True, exist_ok=True)
    for fmt, collector in collectors.items():
        write_records(out_dir / f"{fmt}.rtp", collector.datagrams)
        print(f"{fmt}: {len(collector.datagrams)} datagrams from {sorted(collector.sources)}, "
              f"sizes {sorted({len(d) for d in collector.datagrams})}")
    print(f"Asterisk {version}; {json.dumps(meta)}")
    if left:
        print(f"LEAK: left on Asterisk: {left}", file=sys.stderr)
        return 1
    return 0


def main(argv: list[str] | None = None) -> int:
    plan = PortPlan.from_env()
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0] if __doc__ else None)
    parser.add_argument("--ari-url", default=f"http://127.0.0.1:{plan.pbx.http}")
    parser.add_argument("--app", default="capture")
    parser.add_argument("--packets", type=int, default=50)
    parser.add_argument("--out", type=Path, default=DATA_DIR)
    args = parser.parse_args(argv)
    return asyncio.run(capture(args.ari_url, args.app, args.packets, args.out))


if __name__ == "__main__":
    sys.exit(main())
