"""Integrations client benchmark: what :class:`IntegrationClient` costs per request on top of plain aiohttp.

    .venv/bin/python bench/integration_bench.py                        # 200 in flight, 20,000 requests a run
    .venv/bin/python bench/integration_bench.py --concurrency 50 --requests 5000 --rounds 5
    .venv/bin/python bench/integration_bench.py --json bench/results/integration.json

A trivial aiohttp server (``GET /item`` answers a small JSON object) runs in a process of its own, so the CPU
measured here is the client side's alone. In this process ``--concurrency`` tasks send ``--requests`` requests
in all, each task one after the other, through:

- ``aiohttp``: a plain ``ClientSession.get`` then ``json()`` (the baseline);
- ``client``: ``IntegrationClient.request`` with ``max_in_flight`` = the concurrency (the limiter never makes
  anyone wait: pure bookkeeping: slot, breaker, timeout, JSON parse, cache store, counters);
- ``client, queued``: the same with ``max_in_flight`` a quarter of the concurrency, so three requests in four
  wait in the FIFO queue (the queue's own cost; the server sees fewer at once, so compare its CPU, not its
  latency).

Both use the same kind of session (one connector, ``limit`` = the concurrency, no cookies). The modes take
turns for ``--rounds`` rounds after a warm-up that opens the connections; the medians are reported. Per
request: wall time (1 / throughput), CPU time of this process, and the latency p50 / p99. The overhead is the
client's figure minus aiohttp's. Prints a markdown table; ``--json PATH`` writes the numbers too.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import json
import multiprocessing as mp
import os
import platform
import statistics
import sys
import time
from multiprocessing.connection import Connection
from pathlib import Path
from typing import Any

import aiohttp
from aiohttp import web

from asterisk_agent.integrations import EndpointSettings, IntegrationClient

ITEM = {"id": 4271, "name": "Grace", "slots": ["09:00", "10:30", "14:00"], "open": True}


def serve(conn: Connection) -> None:
    """Runs in its own process: the trivial backend, until the parent closes the pipe."""

    async def item(request: web.Request) -> web.Response:
        return web.json_response(ITEM)

    async def main() -> None:
        app = web.Application()
        app.router.add_get("/item", item)
        runner = web.AppRunner(app, access_log=None)
        await runner.setup()
        site = web.TCPSite(runner, "127.0.0.1", 0, backlog=1024)
        await site.start()
        conn.send(int(runner.addresses[0][1]))
        loop = asyncio.get_running_loop()
        with contextlib.suppress(EOFError):
            await loop.run_in_executor(None, conn.recv_bytes)  # EOF when the parent is done
        await runner.cleanup()

    asyncio.run(main())


def _session(concurrency: int) -> aiohttp.ClientSession:
    return aiohttp.ClientSession(connector=aiohttp.TCPConnector(limit=concurrency), cookie_jar=aiohttp.DummyCookieJar())


async def _run(send: Any, requests: int, concurrency: int) -> dict[str, float]:
    """``requests`` calls of ``send()`` from ``concurrency`` tasks; wall, CPU and latencies."""
    latencies: list[float] = []
    remaining = requests

    async def worker() -> None:
        nonlocal remaining
        while remaining > 0:
            remaining -= 1
            started = time.perf_counter()
            await send()
            latencies.append(time.perf_counter() - started)

    cpu, wall = time.process_time(), time.perf_counter()
    await asyncio.gather(*(worker() for _ in range(concurrency)))
    wall, cpu = time.perf_counter() - wall, time.process_time() - cpu
    latencies.sort()
    return {
        "wall_us": wall / requests * 1e6, "cpu_us": cpu / requests * 1e6, "rps": requests / wall,
        "p50_ms": latencies[len(latencies) // 2] * 1000, "p99_ms": latencies[int(len(latencies) * 0.99)] * 1000,
    }


async def bench(port: int, requests: int, concurrency: int, rounds: int) -> dict[str, list[dict[str, float]]]:
    url = f"http://127.0.0.1:{port}"
    results: dict[str, list[dict[str, float]]] = {"aiohttp": [], "client": [], "client, queued": []}
    async with _session(concurrency) as plain_session, _session(concurrency) as client_session, \
            _session(concurrency) as queued_session:
        free = EndpointSettings(base_url=url, max_in_flight=concurrency, queue_max=concurrency)
        queued = EndpointSettings(base_url=url, max_in_flight=max(1, concurrency // 4), queue_max=concurrency,
                                  queue_wait_ms=60_000, total_budget_ms=120_000)
        client = IntegrationClient({"backend": free}, session=client_session)
        queued_client = IntegrationClient({"backend": queued}, session=queued_session)

        async def plain() -> None:
            async with plain_session.get(url + "/item", headers={"Accept": "application/json"}) as response:
                data = await response.json()
            assert data["id"] == ITEM["id"]

        async def through_client() -> None:
            result = await client.request("backend", "GET", "/item")
            assert result.ok, result

        async def through_queue() -> None:
            result = await queued_client.request("backend", "GET", "/item")
            assert result.ok, result

        sends = {"aiohttp": plain, "client": through_client, "client, queued": through_queue}
        for send in sends.values():  # warm-up: connections opened, code paths hot
            await _run(send, max(concurrency * 5, 1000), concurrency)
        for _ in range(rounds):
            for name, send in sends.items():
                results[name].append(await _run(send, requests, concurrency))
        for one in (client, queued_client):
            stats = one.stats("backend")
            assert stats.requests == stats.ok, stats
        await client.close()
        await queued_client.close()
    return results


def summarise(results: dict[str, list[dict[str, float]]]) -> dict[str, dict[str, float]]:
    return {name: {key: statistics.median(run[key] for run in runs) for key in runs[0]}
            for name, runs in results.items()}


def table(summary: dict[str, dict[str, float]], concurrency: int, requests: int, rounds: int) -> str:
    base = summary["aiohttp"]
    lines = [
        f"{concurrency} in flight, {requests} requests a run, median of {rounds} runs "
        f"({platform.python_version()}, aiohttp {aiohttp.__version__}, {os.cpu_count()} CPUs; the server in "
        "another process on the same machine)",
        "",
        "| path | requests/s | wall µs/request | CPU µs/request | p50 ms | p99 ms | CPU overhead µs/request |",
        "| --- | ---: | ---: | ---: | ---: | ---: | ---: |",
    ]
    for name, row in summary.items():
        overhead = "" if name == "aiohttp" else f"{row['cpu_us'] - base['cpu_us']:+.1f}"
        lines.append(f"| {name} | {row['rps']:,.0f} | {row['wall_us']:.1f} | {row['cpu_us']:.1f} | "
                     f"{row['p50_ms']:.2f} | {row['p99_ms']:.2f} | {overhead} |")
    return "\n".join(lines)


def main() -> None:
    parser = argparse.ArgumentParser(description=(__doc__ or "").split("\n")[0])
    parser.add_argument("--concurrency", type=int, default=200)
    parser.add_argument("--requests", type=int, default=20_000, help="requests per run")
    parser.add_argument("--rounds", type=int, default=3)
    parser.add_argument("--json", type=Path, help="also write the numbers here")
    args = parser.parse_args()
    context = mp.get_context("spawn")
    parent, child = context.Pipe()
    server = context.Process(target=serve, args=(child,), daemon=True)
    server.start()
    child.close()
    try:
        port = parent.recv()
        results = asyncio.run(bench(port, args.requests, args.concurrency, args.rounds))
    finally:
        parent.close()
        server.join(timeout=5)
        if server.is_alive():
            server.terminate()
    summary = summarise(results)
    print(table(summary, args.concurrency, args.requests, args.rounds))
    if args.json is not None:
        args.json.parent.mkdir(parents=True, exist_ok=True)
        args.json.write_text(json.dumps({
            "concurrency": args.concurrency, "requests": args.requests, "rounds": args.rounds,
            "python": sys.version.split()[0], "aiohttp": aiohttp.__version__, "cpus": os.cpu_count(),
            "median": summary, "runs": results,
        }, indent=2))
        print(f"\nwritten to {args.json}")


if __name__ == "__main__":
    main()
