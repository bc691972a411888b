"""Pacing benchmark: one real PacingClock drives N streams that each send a 20 ms frame over UDP on every tick.

    .venv/bin/python bench/pacing_bench.py                   # 10 s, 60 streams
    .venv/bin/python bench/pacing_bench.py --duration 600    # the 10-minute call
    .venv/bin/python bench/pacing_bench.py --loop-load 0.3   # the loop 30 % busy, blocked 1 ms at a time
    .venv/bin/python bench/pacing_bench.py --naive           # the baseline: sleep(0.02) in a loop per stream

Each stream has its own UDP socket and a ``PacedSender`` over a ``FrameQueue``; every packet carries the stream
and the tick's grid index. A receiver in another process reads them with the kernel's receive timestamps
(``SO_TIMESTAMPNS``, so its own scheduling does not count) and measures, per stream:

- the deviation of every inter-packet interval from 20 ms (from ``Δindex * 20 ms`` across skipped ticks);
- the drift: how far the arrivals moved off the 20 ms grid between the start and the end of the run (median of
  ``arrival - index * 20 ms`` over the last 50 packets minus the same over the first 50, so one late packet
  at either end does not count as drift).

Prints p50 / p99 / max of |deviation|, the drift, losses and the clock's own counters. Nothing is written.
"""

from __future__ import annotations

import argparse
import asyncio
import itertools
import multiprocessing as mp
import os
import resource
import socket
import struct
import sys
import time
from multiprocessing.connection import Connection
from typing import Any

import numpy as np

from asterisk_agent.media.frames import FRAME_SAMPLES, FRAME_SECONDS
from asterisk_agent.media.pacer import PacedSender, PacingClock

HEADER = struct.Struct("!HI")  # stream, grid index
STOP_STREAM = 0xFFFF
SO_TIMESTAMPNS = getattr(socket, "SO_TIMESTAMPNS", 35)  # Linux; Python does not export it


def receiver(conn: Connection, streams: int) -> None:
    """Runs in its own process: collect (stream, index, kernel time) until the stop packet, then send stats."""
    sock = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, 8 << 20)
    sock.bind(("127.0.0.1", 0))
    kernel_stamps = True
    try:
        sock.setsockopt(socket.SOL_SOCKET, SO_TIMESTAMPNS, 1)
    except OSError:
        kernel_stamps = False
    conn.send(sock.getsockname()[1])
    records: list[tuple[int, int, float]] = []
    while True:
        data, ancdata, _flags, _addr = sock.recvmsg(2048, socket.CMSG_SPACE(16))
        stamp = time.monotonic()
        for level, kind, cdata in ancdata:
            if level == socket.SOL_SOCKET and kind == SO_TIMESTAMPNS and len(cdata) >= 16:
                sec, nsec = struct.unpack("qq", cdata[:16])
                stamp = sec + nsec * 1e-9
        stream, index = HEADER.unpack_from(data)
        if stream == STOP_STREAM:
            break
        records.append((stream, index, stamp))
    conn.send(analyse(records, streams, kernel_stamps))


def analyse(records: list[tuple[int, int, float]], streams: int, kernel_stamps: bool) -> dict[str, Any]:
    data = np.array(records, dtype=np.float64).reshape(-1, 3)
    deviations: list[np.ndarray[Any, np.dtype[np.float64]]] = []
    drifts: list[float] = []
    received = 0
    expected = 0
    for stream in range(streams):
        rows = data[data[:, 0] == stream]
        if len(rows) < 2:
            continue
        rows = rows[np.argsort(rows[:, 1], kind="stable")]
        index, stamp = rows[:, 1], rows[:, 2]
        received += len(rows)
        expected += int(index[-1] - index[0]) + 1
        steps = np.diff(index)
        deviations.append(np.diff(stamp) - steps * FRAME_SECONDS)
        offset = stamp - index * FRAME_SECONDS  # constant when there is no drift
        edge = max(1, min(50, len(offset) // 10))
        drifts.append(float(np.median(offset[-edge:]) - np.median(offset[:edge])))
    dev = np.abs(np.concatenate(deviations)) * 1000 if deviations else np.zeros(1)
    signed = np.concatenate(deviations) * 1000 if deviations else np.zeros(1)
    return {
        "kernel_stamps": kernel_stamps,
        "intervals": int(dev.size),
        "p50_ms": float(np.percentile(dev, 50)),
        "p99_ms": float(np.percentile(dev, 99)),
        "p999_ms": float(np.percentile(dev, 99.9)),
        "max_ms": float(dev.max()),
        "within_2ms": float(np.mean(dev <= 2.0)),
        "mean_signed_ms": float(signed.mean()),
        "drift_max_ms": float(np.max(np.abs(drifts)) * 1000) if drifts else 0.0,
        "drift_mean_ms": float(np.mean(drifts) * 1000) if drifts else 0.0,
        "received": received,
        "missing": expected - received,  # grid indexes never seen: skipped ticks, or lost
    }


async def loop_load(fraction: float, slice_s: float) -> None:
    """Keep the event loop ``fraction`` busy with blocking work in slices of ``slice_s`` (other calls' work)."""
    if fraction <= 0:
        return
    idle = slice_s * (1 - fraction) / fraction
    while True:
        end = time.perf_counter() + slice_s
        while time.perf_counter() < end:
            pass
        await asyncio.sleep(idle)


async def run_clock(args: argparse.Namespace, port: int) -> dict[str, Any]:
    clock = PacingClock()
    frame = b"\xff" * FRAME_SAMPLES
    ticks = round(args.duration / FRAME_SECONDS)
    sockets = []
    senders: list[PacedSender] = []
    for stream in range(args.streams):
        sock = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
        sock.setblocking(False)
        sockets.append(sock)

        def send(payload: bytes, sock: socket.socket = sock, stream: int = stream) -> None:
            sock.sendto(HEADER.pack(stream, clock.index) + payload, ("127.0.0.1", port))

        sender = PacedSender(send)
        sender.queue.extend(itertools.repeat(frame, ticks + 10))
        senders.append(sender)
        clock.register(sender.tick)
    load = asyncio.get_running_loop().create_task(loop_load(args.loop_load, args.load_slice_ms / 1000))
    try:
        await clock.run(ticks=ticks)
    finally:
        load.cancel()
        for sock in sockets:
            sock.close()
    stats = clock.stats
    return {"ticks": stats.ticks, "skipped": stats.skipped, "stalls": stats.stalls,
            "sent": sum(sender.sent for sender in senders),
            "clock_max_lateness_ms": stats.max_lateness * 1000}


async def run_naive(args: argparse.Namespace, port: int) -> dict[str, Any]:
    """The baseline this module replaces: every stream sleeps 20 ms after each send."""
    ticks = round(args.duration / FRAME_SECONDS)
    frame = b"\xff" * FRAME_SAMPLES

    async def stream_task(stream: int) -> None:
        sock = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
        sock.setblocking(False)
        try:
            for index in range(ticks):
                sock.sendto(HEADER.pack(stream, index) + frame, ("127.0.0.1", port))
                await asyncio.sleep(FRAME_SECONDS)
        finally:
            sock.close()

    load = asyncio.get_running_loop().create_task(loop_load(args.loop_load, args.load_slice_ms / 1000))
    try:
        await asyncio.gather(*(stream_task(s) for s in range(args.streams)))
    finally:
        load.cancel()
    return {"ticks": ticks, "skipped": 0, "stalls": 0, "sent": ticks * args.streams,
            "clock_max_lateness_ms": float("nan")}


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--duration", type=float, default=10.0, help="seconds (default 10)")
    parser.add_argument("--streams", type=int, default=60, help="streams on the one clock (default 60)")
    parser.add_argument("--loop-load", type=float, default=0.0,
                        help="fraction of the loop kept busy by blocking work (default 0)")
    parser.add_argument("--load-slice-ms", type=float, default=1.0,
                        help="length of each blocking slice of that work, in ms (default 1)")
    parser.add_argument("--naive", action="store_true", help="baseline: sleep(0.02) per stream instead of the clock")
    args = parser.parse_args(argv)

    ctx = mp.get_context("spawn")
    parent, child = ctx.Pipe()
    proc = ctx.Process(target=receiver, args=(child, args.streams), daemon=True)
    proc.start()
    port: int = parent.recv()

    cpu0 = resource.getrusage(resource.RUSAGE_SELF)
    wall0 = time.monotonic()
    runner = run_naive if args.naive else run_clock
    clock_stats = asyncio.run(runner(args, port))
    wall = time.monotonic() - wall0
    cpu1 = resource.getrusage(resource.RUSAGE_SELF)
    cpu = (cpu1.ru_utime - cpu0.ru_utime) + (cpu1.ru_stime - cpu0.ru_stime)

    time.sleep(0.2)  # let the last packets land
    with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as stop:
        stop.sendto(HEADER.pack(STOP_STREAM, 0), ("127.0.0.1", port))
    result: dict[str, Any] = parent.recv()
    proc.join(timeout=10)

    mode = "naive sleep(0.02) per stream" if args.naive else "PacingClock"
    load = f"loop load {args.loop_load:.0%} in {args.load_slice_ms:g} ms slices" if args.loop_load else "no loop load"
    print(f"pacing bench: {mode}, {args.streams} streams, {args.duration:g} s, {load}, "
          f"{os.cpu_count()} cores, Python {sys.version.split()[0]}")
    stamps = "kernel SO_TIMESTAMPNS" if result["kernel_stamps"] else "receiver time.monotonic"
    print(f"  receiver: {result['intervals']} intervals ({stamps}), received {result['received']}, "
          f"lost {clock_stats['sent'] - result['received']} of {clock_stats['sent']} sent")
    print(f"  |interval - 20 ms|: p50 {result['p50_ms']:.3f} ms, p99 {result['p99_ms']:.3f} ms, "
          f"p99.9 {result['p999_ms']:.3f} ms, max {result['max_ms']:.3f} ms; "
          f"{result['within_2ms']:.2%} within 2 ms; mean signed {result['mean_signed_ms']:+.4f} ms")
    print(f"  drift over the run: worst {result['drift_max_ms']:.3f} ms (|max| over streams), "
          f"mean {result['drift_mean_ms']:+.3f} ms")
    print(f"  clock: {clock_stats['ticks']} ticks, {clock_stats['skipped']} skipped in {clock_stats['stalls']} "
          f"stalls, worst tick lateness {clock_stats['clock_max_lateness_ms']:.3f} ms")
    print(f"  sender process CPU: {cpu:.2f} s over {wall:.1f} s ({cpu / wall:.1%} of a core)")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
