"""Benchmark: what admission, the call records with their webhook outbox, and call recording cost.

    .venv/bin/python bench/records_bench.py --json bench/results/records.json --markdown BENCHMARKS.md

Pure Python on this machine: no Asterisk. Three parts.

**Admission decision time.** :class:`LocalAdmission` with an account limit and two trunk limits (every call
counts against all three), at 0, 100 and 1000 live slots (other calls' slots, leases of 60 s): each decision is
``admit`` then ``release`` of one slot, timed one by one (``perf_counter_ns``, the garbage collector on), so the
live count stays put. Also: a refusal (the account full at 100 live slots); leases expiring (a clock that moves on
by lease / live slots per decision, slots never released, so every admit also expires the oldest slot and the
count stays at 1000); and the manager's whole FastAGI decision, :meth:`CallManager.admit_before_stasis` (the
account by dialled number, ``limits_for`` from the configuration, ``admit``) then ``release``. The target is p99 at
most 1 ms. Decisions over 1 ms are counted and matched against the garbage collector's runs (``gc.callbacks``).

**Outbox.** A fresh database per run: an SQLite file (the store's own settings: WAL, synchronous NORMAL) and
PostgreSQL from Debian's server binaries, started as the store's tests start it
(``asterisk_agent.store.testing``: a private cluster on 127.0.0.1 with fsync, synchronous_commit and full-page
writes off, so PostgreSQL's figures leave out the commit's disk flush a production server pays). A receiver in a
process of its own (aiohttp on 127.0.0.1, as a customer's endpoint) checks every signature (HMAC-SHA256),
refuses a bad one (401) and de-duplicates on ``Idempotency-Key``. Each run:

1. *write*: ``--writers`` tasks record ``--calls`` calls through :meth:`Store.start_session` and
   :meth:`Store.finish_session` (one transaction each, the account's webhook configured, so every call leaves a
   ``call.started`` and a ``call.ended`` row in the outbox), no sender running: calls recorded per second and
   each transaction's time;
2. *drain*: the sender(s) start (the worker's default :class:`OutboxSettings`: batches of 16) and deliver the
   whole backlog: messages per second from the start to the receiver's last arrival, CPU per message of this
   process (the sender), the receiver and the PostgreSQL server;
3. *live*: with the sender(s) running, calls are recorded at ``--live-rate`` calls a second (start then end)
   for ``--live-calls`` calls: delivery latency from the write's commit (in the writer, wall clock) to the
   receiver's arrival (its wall clock, same machine).

On PostgreSQL the runs are with one sender and with two senders (each with its own engine and pool, as two
workers would have, in this one process; the writes alternate between their stores so each sender is woken by
its own writes), and (``--pool-variant N``, 20 by default) once more with one sender through an engine whose
pool keeps N connections instead of SQLAlchemy's default 5 (not what the worker ships; write and drain only), to
show what the connections the sender opens cost. Database connections opened are counted in every phase. Every
run checks: each message arrived once with a good signature, the receiver saw no duplicate, the senders'
attempts equal the messages and the outbox holds none undelivered.

**Recording.** ``--record-calls`` :class:`CallRecorder` instances (the worker's defaults: 8 kHz, two channels,
batches of 50 frames) fed one 20 ms frame per direction per call on an asyncio timer, ``--record-seconds`` of call
time, ``--speed`` times faster than real time (the CPU is what is measured, not the wall time), against the same
timer and frames without recording; ``--rounds`` of each, alternating, medians reported. CPU is the process's
(``time.process_time``, checked against ``getrusage(RUSAGE_SELF)``), so the writer threads count; the main thread's
share by ``time.thread_time``. Opening the files and closing them (last batch, header, fsync, SHA-256 read back)
are measured apart, per call. The files go to a temporary folder on this machine's disk; writeback by the kernel's
own threads is not counted.

Before measuring and after each part, the benchmark notes any pytest process on the machine, and for each part
the CPU the machine spent outside this benchmark (this process, the receiver and the PostgreSQL server): a busy
machine distorts every figure here. Results: ``--json`` (every figure, the latency samples too) and this
benchmark's section of ``--markdown`` between its markers (the rest is kept).
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import datetime as dt
import gc
import json
import logging
import multiprocessing as mp
import os
import resource
import shlex
import shutil
import statistics
import sys
import tempfile
import time
import uuid
from collections.abc import Callable, Sequence
from multiprocessing.connection import Connection
from pathlib import Path
from typing import Any, cast

import aiohttp
import numpy as np
from aiohttp import web
from setup_bench import REPO, git_commit, machine, machine_busy_seconds, update_markdown
from sqlalchemy import event
from sqlalchemy.ext.asyncio import create_async_engine

from asterisk_agent.admission.limits import Limit
from asterisk_agent.admission.slots import LocalAdmission
from asterisk_agent.ari.client import AriClient
from asterisk_agent.calls.manager import CallManager
from asterisk_agent.config import AccountConfig, MediaConfig, OverflowConfig, Settings, TrunkConfig
from asterisk_agent.media.frames import FRAME_MS, FRAME_SAMPLES
from asterisk_agent.media.recorder import CallRecorder, RecordingSummary, recording_path
from asterisk_agent.outbox import (
    IDEMPOTENCY_HEADER,
    SIGNATURE_HEADER,
    TIMESTAMP_HEADER,
    OutboxSender,
    OutboxSettings,
    WebhookSettings,
    counts,
    verify_signature,
)
from asterisk_agent.store import Store, parse_store_url
from asterisk_agent.store.testing import PostgresCluster, PostgresUnavailable, find_bindir

BEGIN = "<!-- bench:records_bench.py:begin -->"
END = "<!-- bench:records_bench.py:end -->"
CLK_TCK = os.sysconf("SC_CLK_TCK")
SECRET = "bench-webhook-secret-0123456789"
ACCOUNT = "acme"
DID = "8123"
CHANNEL = "PJSIP/carrier-0000001a"
LEVELS = (0, 100, 1000)
SESSION_LEASE_MS = 60_000
TARGET_US = 1000.0


# --- machine ----------------------------------------------------------------------------------------------


def pytest_processes() -> list[int]:
    """Process ids of anything running pytest on this machine (a test suite distorts every figure here)."""
    found = []
    for entry in Path("/proc").iterdir():
        if not entry.name.isdigit() or int(entry.name) == os.getpid():
            continue
        with contextlib.suppress(OSError):
            if b"pytest" in (entry / "cmdline").read_bytes():
                found.append(int(entry.name))
    return found


def own_cpu_s() -> float:
    """This process (every thread) and its waited-for children."""
    times = os.times()
    return times.user + times.system + times.children_user + times.children_system


def _stat_fields(pid: int) -> list[str]:
    text = Path(f"/proc/{pid}/stat").read_text()
    return text[text.rindex(")") + 2:].split()


def postgres_cpu_s(cluster: PostgresCluster) -> float:
    """CPU of the PostgreSQL server: the postmaster with its finished children, and its live children."""
    try:
        postmaster = int((cluster.data / "postmaster.pid").read_text().split()[0])
        fields = _stat_fields(postmaster)
    except (OSError, ValueError, IndexError):
        return 0.0
    ticks = sum(int(value) for value in fields[11:15])  # utime, stime, cutime, cstime
    for entry in Path("/proc").iterdir():
        if entry.name.isdigit():
            with contextlib.suppress(OSError, ValueError, IndexError):
                child = _stat_fields(int(entry.name))
                if int(child[1]) == postmaster:
                    ticks += int(child[11]) + int(child[12])
    return ticks / CLK_TCK


def filesystem_of(path: Path) -> str:
    """The type of the filesystem ``path`` is on (its longest mount point in /proc/mounts)."""
    best, kind = "", "unknown"
    with contextlib.suppress(OSError):
        for line in Path("/proc/mounts").read_text().splitlines():
            parts = line.split()
            if len(parts) > 2 and str(path).startswith(parts[1]) and len(parts[1]) > len(best):
                best, kind = parts[1], parts[2]
    return kind


class LoadMeter:
    """The CPU the machine spent while a part ran, split into this benchmark's and everyone else's."""

    def __init__(self) -> None:
        self.machine = machine_busy_seconds()
        self.own = own_cpu_s()
        self.wall = time.monotonic()

    def done(self, helpers_s: float = 0.0) -> dict[str, float]:
        """``helpers_s``: CPU of this part's helper processes that are not this process's children yet (the
        receiver, the PostgreSQL server)."""
        wall = time.monotonic() - self.wall
        machine_s = machine_busy_seconds() - self.machine
        own = own_cpu_s() - self.own + helpers_s
        other = max(0.0, machine_s - own)
        cpus = len(os.sched_getaffinity(0))
        return {"wall_s": round(wall, 2), "benchmark_cpu_s": round(own, 2), "other_cpu_s": round(other, 2),
                "other_share_of_machine": round(other / (wall * cpus), 4) if wall > 0 else 0.0}


def pct(values: Sequence[float], q: float) -> float:
    return float(np.percentile(np.asarray(values, dtype=np.float64), q * 100)) if len(values) else float("nan")


# --- 1. admission -------------------------------------------------------------------------------------------


def bench_limits(account_max: int = 2000) -> tuple[Limit, ...]:
    overflow = OverflowConfig()
    return (Limit(f"account:{ACCOUNT}", account_max, overflow), Limit("trunk:carrier", 1500, overflow),
            Limit("trunk:sales", 1200, overflow))


def bench_settings() -> Settings:
    """Three accounts by number, the measured one with a limit; a trunk by endpoint and a number group."""
    return Settings(
        instance_id="rb",
        media=MediaConfig(enabled=False),
        accounts={
            "clinic": AccountConfig(numbers=["_2XXX"], max_concurrent_calls=100),
            "bank": AccountConfig(numbers=["202", "203"], max_concurrent_calls=50),
            ACCOUNT: AccountConfig(numbers=["_8XXX"], max_concurrent_calls=2000),
        },
        trunks={"carrier": TrunkConfig(endpoints=["carrier"], max_concurrent_calls=1500),
                "sales": TrunkConfig(numbers=["_81XX"], max_concurrent_calls=1200)},
    )


def _summary_us(samples_ns: list[int]) -> dict[str, float]:
    values = np.asarray(samples_ns, dtype=np.float64) / 1000
    return {"p50_us": round(float(np.percentile(values, 50)), 2), "p99_us": round(float(np.percentile(values, 99)), 2),
            "max_us": round(float(values.max()), 1), "mean_us": round(float(values.mean()), 2), "n": len(values)}


class GcWatch:
    """When the garbage collector ran (``perf_counter_ns`` start and end, generation) while the block ran."""

    def __init__(self) -> None:
        self.runs: list[tuple[int, int, int]] = []
        self._started = 0

    def __call__(self, phase: str, info: dict[str, int]) -> None:
        now = time.perf_counter_ns()
        if phase == "start":
            self._started = now
        else:
            self.runs.append((self._started, now, info["generation"]))

    def __enter__(self) -> GcWatch:
        gc.callbacks.append(self)
        return self

    def __exit__(self, *_: object) -> None:
        gc.callbacks.remove(self)


def slow_decisions(starts: Sequence[int], durations: Sequence[int], watch: GcWatch,
                   over_ns: int = 1_000_000) -> dict[str, Any]:
    """The decisions that took over 1 ms, and how many of them overlapped a garbage collection."""
    slow = [(start, start + took) for start, took in zip(starts, durations, strict=True) if took > over_ns]
    during_gc = sum(1 for start, end in slow if any(gs < end and ge > start for gs, ge, _ in watch.runs))
    return {"over_1ms": len(slow), "over_1ms_during_gc": during_gc, "gc_runs": len(watch.runs),
            "gc_full_runs": sum(1 for *_, generation in watch.runs if generation == 2),
            "gc_longest_ms": round(max((ge - gs for gs, ge, _ in watch.runs), default=0) / 1e6, 2)}


def admission_pairs(level: int, decisions: int) -> dict[str, Any]:
    """``level`` live slots, then ``decisions`` times: admit one more and release it."""
    admission = LocalAdmission()
    limits = bench_limits()
    for index in range(level):
        admission.admit(limits, lease_ms=SESSION_LEASE_MS, holder="session", channel_id=f"live-{index}")
    starts, admit_ns, release_ns = [0] * decisions, [0] * decisions, [0] * decisions
    clock = time.perf_counter_ns
    with GcWatch() as watch:
        for index in range(decisions):
            started = clock()
            decision = admission.admit(limits, lease_ms=SESSION_LEASE_MS, holder="session", channel_id="measured")
            admitted = clock()
            assert decision.slot is not None
            admission.release(decision.slot.token)
            released = clock()
            starts[index], admit_ns[index], release_ns[index] = started, admitted - started, released - admitted
    assert admission.in_use(limits[0].key) == level
    totals = [a + r for a, r in zip(admit_ns, release_ns, strict=True)]
    return {"live": level, "admit": _summary_us(admit_ns), "release": _summary_us(release_ns),
            "decision": _summary_us(totals), "slow": slow_decisions(starts, totals, watch)}


def admission_refused(level: int, decisions: int) -> dict[str, Any]:
    """The account full at ``level``: every decision is a refusal."""
    admission = LocalAdmission()
    limits = bench_limits(account_max=level)
    for index in range(level):
        admission.admit(limits, lease_ms=SESSION_LEASE_MS, holder="session", channel_id=f"live-{index}")
    starts, samples = [0] * decisions, [0] * decisions
    clock = time.perf_counter_ns
    with GcWatch() as watch:
        for index in range(decisions):
            started = clock()
            decision = admission.admit(limits, lease_ms=SESSION_LEASE_MS, holder="agi", channel_id="measured")
            starts[index], samples[index] = started, clock() - started
            assert decision.slot is None
    return {"live": level, "admit": _summary_us(samples), "slow": slow_decisions(starts, samples, watch)}


def admission_expiring(level: int, decisions: int) -> dict[str, Any]:
    """Slots never released: each admit also expires the oldest one, so ``level`` stay live."""
    now = [0.0]
    admission = LocalAdmission(clock=lambda: now[0])
    limits = bench_limits()
    lease_ms = SESSION_LEASE_MS
    step = lease_ms / 1000 / level
    for index in range(level):
        admission.admit(limits, lease_ms=lease_ms, holder="session", channel_id=f"live-{index}")
        now[0] += step
    starts, samples = [0] * decisions, [0] * decisions
    clock = time.perf_counter_ns
    with GcWatch() as watch:
        for index in range(decisions):
            started = clock()
            decision = admission.admit(limits, lease_ms=lease_ms, holder="session", channel_id="measured")
            starts[index], samples[index] = started, clock() - started
            assert decision.slot is not None
            now[0] += step
    live = admission.in_use(limits[0].key)
    return {"live": level, "live_after": live, "expired": admission.stats.expired, "admit": _summary_us(samples),
            "slow": slow_decisions(starts, samples, watch)}


def manager_pairs(level: int, decisions: int) -> dict[str, Any]:
    """The FastAGI ``admit`` route's decision (account by number, limits from the configuration, admit), then
    the ``release`` route's."""
    manager = CallManager(cast(AriClient, None), bench_settings())  # the ARI client is not used by admission
    for index in range(level):
        assert manager.admit_before_stasis(DID, CHANNEL, f"live-{index}").status == "admitted"
    starts, admit_ns, release_ns = [0] * decisions, [0] * decisions, [0] * decisions
    clock = time.perf_counter_ns
    with GcWatch() as watch:
        for index in range(decisions):
            started = clock()
            answer = manager.admit_before_stasis(DID, CHANNEL, "measured")
            admitted = clock()
            manager.admission.release(answer.token)
            released = clock()
            starts[index], admit_ns[index], release_ns[index] = started, admitted - started, released - admitted
            assert answer.status == "admitted"
    limits = [f"account:{ACCOUNT}", "trunk:carrier", "trunk:sales"]
    assert all(manager.admission.in_use(key) == level for key in limits)
    totals = [a + r for a, r in zip(admit_ns, release_ns, strict=True)]
    return {"live": level, "admit": _summary_us(admit_ns), "release": _summary_us(release_ns),
            "decision": _summary_us(totals), "slow": slow_decisions(starts, totals, watch)}


def run_admission(decisions: int) -> dict[str, Any]:
    meter = LoadMeter()
    warm = max(1000, decisions // 20)
    admission_pairs(100, warm)
    manager_pairs(100, warm)
    report: dict[str, Any] = {"decisions": decisions, "limits": [
        {"key": limit.key, "maximum": limit.maximum} for limit in bench_limits()]}
    report["pairs"] = [admission_pairs(level, decisions) for level in LEVELS]
    report["refused"] = admission_refused(100, decisions)
    report["expiring"] = admission_expiring(LEVELS[-1], decisions)
    report["manager"] = [manager_pairs(level, decisions) for level in LEVELS]
    report["load"] = meter.done()
    worst = max([row["decision"]["p99_us"] for row in report["pairs"] + report["manager"]]
                + [report["expiring"]["admit"]["p99_us"], report["refused"]["admit"]["p99_us"]])
    report["worst_p99_us"] = worst
    report["target_met"] = worst <= TARGET_US
    return report


# --- 2. outbox: the receiver (a process of its own) --------------------------------------------------------


def receive(conn: Connection) -> None:
    """The webhook receiver, in its own process until the parent closes the pipe: ``POST /hooks/calls``
    (signature checked, de-duplicated), ``GET /wait?count=N`` (until N distinct messages arrived), ``GET
    /stats`` (counts, arrivals, its own CPU) and ``POST /reset``."""
    delivered: dict[str, tuple[str, str, float]] = {}  # key -> (session id, type, arrival wall time)
    stats = {"requests": 0, "duplicates": 0, "bad_signatures": 0, "key_mismatches": 0}
    wanted = [0]
    reached = asyncio.Event()

    async def hook(request: web.Request) -> web.Response:
        arrived = time.time()
        body = await request.read()
        stats["requests"] += 1
        headers = request.headers
        if not verify_signature(SECRET, headers.get(TIMESTAMP_HEADER, ""), body, headers.get(SIGNATURE_HEADER, "")):
            stats["bad_signatures"] += 1
            return web.Response(status=401)
        key = headers.get(IDEMPOTENCY_HEADER, "")
        if key in delivered:
            stats["duplicates"] += 1
        else:
            message = json.loads(body)
            if message.get("id") != key:
                stats["key_mismatches"] += 1
            delivered[key] = (message["session_id"], message["type"], arrived)
            if wanted[0] and len(delivered) >= wanted[0]:
                reached.set()
        return web.json_response({"ok": True})

    async def wait(request: web.Request) -> web.Response:
        wanted[0] = int(request.query["count"])
        reached.clear()
        if len(delivered) < wanted[0]:
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(reached.wait(), float(request.query.get("timeout", "120")))
        wanted[0] = 0
        last = max((arrival for _, _, arrival in delivered.values()), default=0.0)
        return web.json_response({"delivered": len(delivered), "last": last})

    async def report(request: web.Request) -> web.Response:
        usage = resource.getrusage(resource.RUSAGE_SELF)
        return web.json_response({**stats, "delivered": len(delivered), "cpu_s": usage.ru_utime + usage.ru_stime,
                                  "arrivals": [[key, *value] for key, value in delivered.items()]})

    async def reset(request: web.Request) -> web.Response:
        delivered.clear()
        for name in stats:
            stats[name] = 0
        return web.json_response({"ok": True})

    async def main() -> None:
        app = web.Application()
        app.router.add_post("/hooks/calls", hook)
        app.router.add_get("/wait", wait)
        app.router.add_get("/stats", report)
        app.router.add_post("/reset", reset)
        runner = web.AppRunner(app, access_log=None)
        await runner.setup()
        site = web.TCPSite(runner, "127.0.0.1", 0, backlog=1024)
        await site.start()
        conn.send(int(runner.addresses[0][1]))
        with contextlib.suppress(EOFError):
            await asyncio.get_running_loop().run_in_executor(None, conn.recv_bytes)  # EOF: the parent is done
        await runner.cleanup()

    asyncio.run(main())


class ReceiverControl:
    def __init__(self, port: int, session: aiohttp.ClientSession) -> None:
        self.base = f"http://127.0.0.1:{port}"
        self.session = session

    @property
    def hook_url(self) -> str:
        return f"{self.base}/hooks/calls"

    async def reset(self) -> None:
        async with self.session.post(f"{self.base}/reset") as response:
            response.raise_for_status()

    async def wait(self, count: int, timeout_s: float = 120.0) -> dict[str, Any]:
        async with self.session.get(f"{self.base}/wait", params={"count": count, "timeout": timeout_s},
                                    timeout=aiohttp.ClientTimeout(total=timeout_s + 10)) as response:
            return cast(dict[str, Any], await response.json())

    async def stats(self) -> dict[str, Any]:
        async with self.session.get(f"{self.base}/stats") as response:
            return cast(dict[str, Any], await response.json())


# --- 2. outbox: the runs -------------------------------------------------------------------------------------


async def record_call(store: Store, session_id: str, index: int) -> tuple[float, float, float]:
    """One call's start and end, each in its own transaction; (start began, start committed, end committed) in
    wall-clock seconds (the end begins when the start is committed)."""
    began = time.time()
    await store.start_session(session_id=session_id, account=ACCOUNT, did=DID, caller_number=f"+1555{index:07d}",
                              caller_name="Grace", channel_id=f"1700000000.{index}", flow="bank")
    started = time.time()
    await store.finish_session(session_id, outcome="balance_told", end_reason="caller_hangup",
                               data={"intent": "balance", "slots_filled": 2, "escalated": False})
    return began, started, time.time()


async def write_phase(stores: Sequence[Store], prefix: str, calls: int, writers: int) -> dict[str, Any]:
    transactions: list[float] = []
    queue = iter(range(calls))

    async def writer() -> None:
        for index in queue:
            began, started, ended = await record_call(stores[index % len(stores)], f"{prefix}{index:06d}", index)
            transactions.extend((started - began, ended - started))

    cpu, wall = time.process_time(), time.perf_counter()
    await asyncio.gather(*(writer() for _ in range(writers)))
    wall, cpu = time.perf_counter() - wall, time.process_time() - cpu
    return {"calls": calls, "messages": 2 * calls, "writers": writers, "wall_s": round(wall, 3),
            "calls_per_s": round(calls / wall, 1), "messages_per_s": round(2 * calls / wall, 1),
            "cpu_ms_per_call": round(cpu / calls * 1000, 3),
            "transaction_p50_ms": round(pct(transactions, 0.5) * 1000, 2),
            "transaction_p99_ms": round(pct(transactions, 0.99) * 1000, 2)}


async def open_store(url: str, pool_size: int | None) -> Store:
    """The store as the worker opens it; with ``pool_size`` (PostgreSQL only), the same database through an
    engine whose pool keeps that many connections (not what the worker ships: a variant to compare)."""
    store = await Store.open(url)  # migrates
    if pool_size is None:
        return store
    await store.close()
    parsed = parse_store_url(url)
    assert parsed.get_backend_name() == "postgresql"
    return Store(create_async_engine(parsed, pool_size=pool_size, pool_pre_ping=True), parsed)


async def live_phase(stores: Sequence[Store], receiver: ReceiverControl, prefix: str, calls: int, rate: float,
                     before: int) -> dict[str, Any]:
    """``calls`` calls at ``rate`` a second while the sender(s) run; latency from each commit to its arrival
    (``before``: messages the receiver has already had)."""
    committed: dict[tuple[str, str], float] = {}

    async def one(index: int) -> None:
        session_id = f"{prefix}{index:06d}"
        _, started, ended = await record_call(stores[index % len(stores)], session_id, index)
        committed[(session_id, "call.started")] = started
        committed[(session_id, "call.ended")] = ended

    loop = asyncio.get_running_loop()
    tasks: list[asyncio.Task[None]] = []
    first = loop.time()
    for index in range(calls):
        await asyncio.sleep(max(0.0, first + index / rate - loop.time()))
        tasks.append(asyncio.create_task(one(index)))
    await asyncio.gather(*tasks)
    arrived = await receiver.wait(before + 2 * calls)
    assert arrived["delivered"] == before + 2 * calls, arrived
    seen = await receiver.stats()
    latencies = sorted((arrival - committed[(session_id, kind)]) * 1000
                       for _, session_id, kind, arrival in seen["arrivals"] if session_id.startswith(prefix))
    assert len(latencies) == 2 * calls
    return {"calls": calls, "rate_calls_per_s": rate, "messages": len(latencies),
            "latency_p50_ms": round(pct(latencies, 0.5), 2), "latency_p99_ms": round(pct(latencies, 0.99), 2),
            "latency_max_ms": round(latencies[-1], 2), "latencies_ms": [round(v, 2) for v in latencies]}


async def outbox_run(name: str, url: str, senders: int, args: argparse.Namespace, receiver: ReceiverControl,
                     cluster: PostgresCluster | None, *, pool_size: int | None = None,
                     live: bool = True) -> dict[str, Any]:
    def server_cpu() -> float:
        return postgres_cpu_s(cluster) if cluster is not None else 0.0

    print(f"outbox: {name}, {senders} sender(s), pool {pool_size or 'as shipped'}", flush=True)
    stores = [await open_store(url, pool_size) for _ in range(senders)]
    connects = [0]  # database connections opened

    def connected(*_: Any) -> None:
        connects[0] += 1

    for store in stores:
        event.listen(store.engine.sync_engine, "connect", connected)
    run = uuid.uuid4().hex[:6]
    target = {ACCOUNT: WebhookSettings(url=receiver.hook_url, secret=SECRET)}
    result: dict[str, Any] = {"database": name, "senders": senders, "pool_size": pool_size}
    try:
        await receiver.reset()
        server0, connects0 = server_cpu(), connects[0]
        result["write"] = await write_phase(stores, f"w{run}-", args.calls, args.writers)
        result["write"]["server_cpu_ms_per_call"] = round((server_cpu() - server0) / args.calls * 1000, 3)
        result["write"]["connections_opened"] = connects[0] - connects0
        backlog = 2 * args.calls
        assert (await counts(stores[0].engine)).pending == backlog

        workers = [OutboxSender(store, target, OutboxSettings(), owner=f"bench-{run}-{k}")
                   for k, store in enumerate(stores)]
        receiver_cpu0 = (await receiver.stats())["cpu_s"]
        server0, cpu0, connects0 = server_cpu(), time.process_time(), connects[0]
        began = time.time()
        for sender in workers:
            await sender.start()
        arrived = await receiver.wait(backlog)
        cpu, server = time.process_time() - cpu0, server_cpu() - server0
        seen = await receiver.stats()
        assert arrived["delivered"] == backlog, arrived
        drain_s = arrived["last"] - began
        result["drain"] = {
            "messages": backlog, "wall_s": round(drain_s, 3), "messages_per_s": round(backlog / drain_s, 1),
            "sender_cpu_us_per_message": round(cpu / backlog * 1e6, 1),
            "receiver_cpu_us_per_message": round((seen["cpu_s"] - receiver_cpu0) / backlog * 1e6, 1),
            "server_cpu_us_per_message": round(server / backlog * 1e6, 1),
            "connections_opened": connects[0] - connects0,
        }
        expected = backlog
        if live:
            result["live"] = await live_phase(stores, receiver, f"l{run}-", args.live_calls, args.live_rate, backlog)
            expected += 2 * args.live_calls
        for sender in workers:
            await sender.stop()
        seen = await receiver.stats()
        final = await counts(stores[0].engine)
        attempts = sum(sender.stats.attempts for sender in workers)
        result["checks"] = {
            "messages": expected, "received": seen["delivered"], "requests": seen["requests"],
            "duplicates": seen["duplicates"], "bad_signatures": seen["bad_signatures"],
            "key_mismatches": seen["key_mismatches"], "sender_attempts": attempts,
            "sender_failed": sum(sender.stats.failed for sender in workers),
            "outbox_pending": final.pending, "outbox_delivered": final.delivered,
            "per_sender": [sender.stats.delivered for sender in workers],
        }
        checks = result["checks"]
        result["ok"] = (checks["received"] == expected == checks["requests"] == attempts == final.delivered
                        and not checks["duplicates"] and not checks["bad_signatures"] and not checks["key_mismatches"]
                        and final.pending == 0)
    finally:
        for store in stores:
            await store.close()
    latency = f", latency p50 {result['live']['latency_p50_ms']} ms" if live else ""
    print(f"  write {result['write']['calls_per_s']} calls/s, drain {result['drain']['messages_per_s']} msgs/s"
          f"{latency}, ok={result['ok']}", flush=True)
    return result


async def run_outbox_runs(port: int, args: argparse.Namespace, work: Path,
                          cluster: PostgresCluster | None) -> list[dict[str, Any]]:
    results = []
    async with aiohttp.ClientSession() as session:
        receiver = ReceiverControl(port, session)
        results.append(await outbox_run("SQLite", f"sqlite+aiosqlite:///{work / 'store.db'}", 1, args, receiver,
                                        None))
        if cluster is not None:
            for senders in (1, 2):
                url = cluster.create_database(f"bench_{senders}_{uuid.uuid4().hex[:8]}")
                results.append(await outbox_run("PostgreSQL", url, senders, args, receiver, cluster))
            if args.pool_variant:
                url = cluster.create_database(f"bench_pool_{uuid.uuid4().hex[:8]}")
                results.append(await outbox_run("PostgreSQL", url, 1, args, receiver, cluster,
                                                pool_size=args.pool_variant, live=False))
    return results


def run_outbox(args: argparse.Namespace) -> dict[str, Any]:
    meter = LoadMeter()
    work = Path(tempfile.mkdtemp(prefix="records-bench-"))
    cluster: PostgresCluster | None = None
    report: dict[str, Any] = {"calls": args.calls, "writers": args.writers, "live_calls": args.live_calls,
                              "live_rate": args.live_rate, "outbox_settings": OutboxSettings().model_dump()}
    context = mp.get_context("spawn")
    parent, child = context.Pipe()
    receiver = context.Process(target=receive, args=(child,), daemon=True)
    receiver.start()
    child.close()
    server_total = 0.0
    try:
        bindir = find_bindir()
        if bindir is None:
            report["postgres"] = "no PostgreSQL server binaries (Debian's postgresql package): not measured"
        else:
            try:
                cluster = PostgresCluster.start(bindir)
                report["postgres"] = f"PostgreSQL {bindir.parent.name} (Debian), private cluster"
            except PostgresUnavailable as exc:
                report["postgres"] = f"could not start PostgreSQL: {exc}"
        port = parent.recv()
        report["runs"] = asyncio.run(run_outbox_runs(port, args, work, cluster))
        if cluster is not None:
            server_total = postgres_cpu_s(cluster)
    finally:
        if cluster is not None:
            cluster.stop()
        parent.close()
        receiver.join(timeout=10)
        if receiver.is_alive():
            receiver.terminate()
            receiver.join(timeout=5)
        shutil.rmtree(work, ignore_errors=True)
    report["load"] = meter.done(server_total)  # the receiver is a joined child by now: in own_cpu_s
    return report


# --- 3. recording ------------------------------------------------------------------------------------------


def cpu_now() -> tuple[float, float, float]:
    usage = resource.getrusage(resource.RUSAGE_SELF)
    return time.process_time(), usage.ru_utime + usage.ru_stime, time.thread_time()


def _delta(before: tuple[float, float, float]) -> tuple[float, float, float]:
    after = cpu_now()
    return after[0] - before[0], after[1] - before[1], after[2] - before[2]


async def recording_round(calls: int, seconds: float, speed: float, record: bool, root: Path,
                          tag: str) -> dict[str, Any]:
    rng = np.random.default_rng(7)
    pool = [rng.integers(-8000, 8000, FRAME_SAMPLES, dtype=np.int16) for _ in range(64)]
    ticks = round(seconds * 1000 / FRAME_MS)
    interval = FRAME_MS / 1000 / speed
    recorders: list[CallRecorder] = []
    result: dict[str, Any] = {"record": record, "calls": calls, "call_seconds": calls * ticks * FRAME_MS / 1000}
    if record:
        started = dt.datetime.now(dt.UTC)
        before = cpu_now()
        recorders = [await CallRecorder.open(recording_path(root, ACCOUNT, f"{tag}-{index:03d}", started))
                     for index in range(calls)]
        result["open_cpu_ms_per_call"] = round(_delta(before)[0] / calls * 1000, 3)
        assert all(recorder.error is None for recorder in recorders)
    sink = [0]

    def tick(number: int) -> None:
        for index in range(calls):
            caller, agent = pool[(number + index) % 64], pool[(number + 2 * index + 1) % 64]
            if record:
                recorders[index].add(caller, agent)
            else:
                sink[0] += len(caller) + len(agent)  # the same look-up of both frames, nothing recorded

    loop = asyncio.get_running_loop()
    late: list[float] = []
    gc.collect()
    before, wall = cpu_now(), time.perf_counter()
    due = loop.time()
    for number in range(ticks):
        due += interval
        delay = due - loop.time()
        if delay > 0:
            await asyncio.sleep(delay)
        else:
            late.append(-delay)
        tick(number)
    if record:  # until every full batch is on disk: the writers' work belongs to the streaming figure
        full = ticks // recorders[0].flush_frames * recorders[0].flush_frames
        deadline = loop.time() + 60
        while True:
            if all(recorder.written_frames >= full for recorder in recorders):
                break
            if loop.time() > deadline:
                raise RuntimeError("the recorders' writers did not catch up within 60 s")
            await asyncio.sleep(0.002)
    process_s, rusage_s, main_s = _delta(before)
    result.update({"wall_s": round(time.perf_counter() - wall, 3), "cpu_s": round(process_s, 4),
                   "rusage_cpu_s": round(rusage_s, 4), "main_thread_cpu_s": round(main_s, 4),
                   "late_ticks": len(late)})
    if record:
        before = cpu_now()
        summaries: list[RecordingSummary] = list(await asyncio.gather(*(recorder.close() for recorder in recorders)))
        result["close_cpu_ms_per_call"] = round(_delta(before)[0] / calls * 1000, 3)
        result["bytes"] = sum(summary.bytes for summary in summaries)
        result["recorded_ms"] = sum(summary.duration_ms for summary in summaries)
        result["dropped_frames"] = sum(summary.dropped for summary in summaries)
        result["errors"] = sum(1 for summary in summaries if not summary.ok)
        sizes = await asyncio.to_thread(lambda: [os.stat(summary.path).st_size for summary in summaries])
        assert sizes == [summary.bytes for summary in summaries]
    return result


def run_recording(args: argparse.Namespace) -> dict[str, Any]:
    meter = LoadMeter()
    root = Path(tempfile.mkdtemp(prefix="records-bench-rec-"))
    rounds: list[dict[str, Any]] = []
    try:
        for number in range(args.rounds):
            for record in (False, True):
                rounds.append(asyncio.run(recording_round(args.record_calls, args.record_seconds, args.speed, record,
                                                          root, f"r{number}")))
                shutil.rmtree(root, ignore_errors=True)
                root.mkdir()
    finally:
        shutil.rmtree(root, ignore_errors=True)
    call_s = args.record_calls * args.record_seconds

    def med(record: bool, key: str) -> float:
        return float(statistics.median(row[key] for row in rounds if row["record"] is record))

    base = med(False, "cpu_s") / call_s * 1000
    with_rec = med(True, "cpu_s") / call_s * 1000
    added = with_rec - base
    open_close = med(True, "open_cpu_ms_per_call") + med(True, "close_cpu_ms_per_call")
    all_in = added + open_close / args.record_seconds
    recorded = [row for row in rounds if row["record"]]
    bytes_per_minute = statistics.median(row["bytes"] / (row["recorded_ms"] / 60_000) for row in recorded)
    return {
        "calls": args.record_calls, "seconds": args.record_seconds, "speed": args.speed, "rounds": rounds,
        "filesystem": filesystem_of(root),
        "baseline_cpu_ms_per_call_s": round(base, 4), "recording_cpu_ms_per_call_s": round(with_rec, 4),
        "added_cpu_ms_per_call_s": round(added, 4),
        "added_main_thread_ms_per_call_s": round(
            (med(True, "main_thread_cpu_s") - med(False, "main_thread_cpu_s")) / call_s * 1000, 4),
        "rusage_added_cpu_ms_per_call_s": round((med(True, "rusage_cpu_s") - med(False, "rusage_cpu_s"))
                                                / call_s * 1000, 4),
        "open_cpu_ms_per_call": med(True, "open_cpu_ms_per_call"),
        "close_cpu_ms_per_call": med(True, "close_cpu_ms_per_call"),
        "all_in_cpu_ms_per_call_s": round(all_in, 4),
        "core_share_at_calls": round(added * args.record_calls / 1000, 4),
        "all_in_core_share_at_calls": round(all_in * args.record_calls / 1000, 4),
        "bytes_per_call_minute": round(bytes_per_minute),
        "dropped_frames": sum(row["dropped_frames"] for row in recorded),
        "errors": sum(row["errors"] for row in recorded),
        "late_ticks": sum(row["late_ticks"] for row in rounds),
        "ticks": len(rounds) * round(args.record_seconds * 1000 / FRAME_MS),
        "load": meter.done(),
    }


# --- report -------------------------------------------------------------------------------------------------


def _load_note(load: dict[str, float]) -> str:
    return (f"{load['other_cpu_s']} CPU-s outside this benchmark in {load['wall_s']} s "
            f"({load['other_share_of_machine'] * 100:.1f} % of the machine)")


def markdown_section(report: dict[str, Any]) -> str:
    m, adm, out, rec = report["machine"], report["admission"], report["outbox"], report["recording"]
    seen = {when: pids for when, pids in report["pytest_seen"].items() if pids}
    state = ("**busy**: pytest processes were running (" + ", ".join(f"{when}: {len(pids)}"
                                                                     for when, pids in seen.items()) + ")"
             if seen else "no test suite running at the start, between the parts or at the end")
    lines = [
        BEGIN,
        "## Records and admission: admission decisions, the webhook outbox, recording's CPU",
        "",
        "Written by `bench/records_bench.py` (its docstring has the method); rerun it to refresh this section.",
        "",
        f"- Date: {report['date']}; commit {report['commit']}; {report['total_s']} s in all",
        f"- Machine: {m['nproc']} CPUs ({m['cpu_model']}), {m['memory_gib']} GiB memory, Linux {m['kernel']}, "
        f"Python {m['python']}; {state}; the benchmark, the receiver and the PostgreSQL server share these CPUs",
        f"- Command: `{report['command']}`",
        "",
        f"**Admission decision time** ({adm['decisions']:,} decisions a row, one at a time; limits "
        + ", ".join(f"`{limit['key']}` {limit['maximum']}" for limit in adm["limits"])
        + ", every call counted against all three; other load: " + _load_note(adm["load"]) + ").",
        "",
        "| what | live slots | admit p50 / p99 / max µs | release p50 / p99 / max µs "
        "| admit + release p50 / p99 / max µs | over 1 ms (during a garbage collection) |",
        "|---|---:|---:|---:|---:|---:|",
    ]

    def three(row: dict[str, float]) -> str:
        return f"{row['p50_us']:.2f} / {row['p99_us']:.2f} / {row['max_us']:.0f}"

    def slow(row: dict[str, Any]) -> str:
        return f"{row['slow']['over_1ms']} ({row['slow']['over_1ms_during_gc']})"

    for row in adm["pairs"]:
        lines.append(f"| `LocalAdmission` | {row['live']} | {three(row['admit'])} | {three(row['release'])} | "
                     f"{three(row['decision'])} | {slow(row)} |")
    refused, expiring = adm["refused"], adm["expiring"]
    lines.append(f"| `LocalAdmission`, refused (account full) | {refused['live']} | {three(refused['admit'])} "
                 f"| - | - | {slow(refused)} |")
    lines.append(f"| `LocalAdmission`, every admit expires a lease | {expiring['live']} | {three(expiring['admit'])} "
                 f"| - | - | {slow(expiring)} |")
    for row in adm["manager"]:
        lines.append(f"| `CallManager.admit_before_stasis` (account, `limits_for`, admit) | {row['live']} | "
                     f"{three(row['admit'])} | {three(row['release'])} | {three(row['decision'])} | {slow(row)} |")
    rows = [*adm["pairs"], refused, expiring, *adm["manager"]]
    over = sum(row["slow"]["over_1ms"] for row in rows)
    during = sum(row["slow"]["over_1ms_during_gc"] for row in rows)
    collections = sum(row["slow"]["gc_runs"] for row in rows)
    longest = max(row["slow"]["gc_longest_ms"] for row in rows)
    total = f"{len(rows) * adm['decisions']:,}"
    if over:
        times = "once" if collections == 1 else f"{collections} times"
        outliers = (f"{over} of the {total} decisions took over 1 ms, {during} of them while the garbage collector "
                    f"ran (it ran {times} during the rows, the longest {longest} ms)"
                    + (f"; {'the other' if over - during == 1 else 'the others'} lost the CPU meanwhile (the "
                       "scheduler, or this virtual machine's host)." if over > during else "."))
    else:
        times = "once" if collections == 1 else f"{collections} times"
        outliers = f"None of the {total} decisions took over 1 ms (the garbage collector ran {times} during the rows)."
    lines += [
        "",
        f"Target p99 ≤ 1 ms: {'met' if adm['target_met'] else 'missed'} (the worst p99 above is "
        f"{adm['worst_p99_us']:.1f} µs). Each admit first sweeps every slot for an expired lease, so its time grows "
        f"with the live slots. {outliers}",
        "",
    ]

    runs = out["runs"]
    settings = out["outbox_settings"]
    lines += [
        f"**Outbox** ({out['calls']:,} calls a run, each started and ended, two messages each, written by "
        f"{out['writers']} concurrent writers with no sender running; then delivered by the sender(s) with the "
        f"default settings (batches of {settings['batch']}) to a local receiver that checks every signature; then "
        f"{out['live_calls']} calls at {out['live_rate']:g} calls/s with the sender(s) running, for the delivery "
        f"latency; {out['postgres']}; other load: {_load_note(out['load'])}).",
        "",
        "| database | senders | calls recorded/s (transaction p50 / p99 ms) | messages delivered/s "
        "| CPU µs per message: sender / receiver / database server | database connections opened: write / drain "
        "| delivery latency p50 / p99 / max ms | received once, signed / messages (duplicates) |",
        "|---|---:|---:|---:|---:|---:|---:|---:|",
    ]
    for run in runs:
        w, d, c = run["write"], run["drain"], run["checks"]
        server = "-" if run["database"] == "SQLite" else f"{d['server_cpu_us_per_message']:.0f}"
        split = f"; {' + '.join(str(n) for n in c['per_sender'])} by sender" if run["senders"] > 1 else ""
        database = run["database"]
        if run["pool_size"]:
            database += f", pool of {run['pool_size']} (variant, not shipped)"
        live = run.get("live")
        latency = (f"{live['latency_p50_ms']:.1f} / {live['latency_p99_ms']:.1f} / {live['latency_max_ms']:.1f}"
                   if live else "-")
        lines.append(
            f"| {database} | {run['senders']} | {w['calls_per_s']:,.0f} ({w['transaction_p50_ms']:.1f} / "
            f"{w['transaction_p99_ms']:.1f}) | {d['messages_per_s']:,.0f} | "
            f"{d['sender_cpu_us_per_message']:.0f} / {d['receiver_cpu_us_per_message']:.0f} / {server} | "
            f"{w['connections_opened']:,} / {d['connections_opened']:,} | {latency} | "
            f"{c['received']:,} / {c['messages']:,} ({c['duplicates']}){split} |")
    all_ok = all(run["ok"] for run in runs)
    notes = [
        "Calls recorded/s counts a call's two transactions (its start with `call.started`, its end with "
        "`call.ended`). Messages delivered/s runs from the senders' start to the receiver's last arrival; the sender "
        "claims a batch in one transaction and marks each message delivered in a transaction of its own. Latency: "
        f"from the write's commit to the receiver's arrival, at {out['live_rate']:g} calls/s "
        f"({2 * out['live_rate']:g} messages/s), far above a deployment's rate (60 simultaneous 3-minute calls start "
        "and end a third of a call a second). "
        + ("Every run: each message received exactly once with a good signature, the senders' attempts equal to the "
           "messages, nothing left in the outbox; with two senders, each took part of the messages and none was "
           "sent twice." if all_ok else
           "**A check failed** (see the JSON: received, duplicates, signatures, attempts, outbox left)."),
    ]
    shipped = [run for run in runs if not run["pool_size"]]
    churn = [run for run in shipped if run["drain"]["connections_opened"] > run["drain"]["messages"] // 4]
    if churn:
        note = (
            f"**Connections.** While draining {out['calls'] * 2:,} messages, the senders opened this many database "
            "connections: "
            + ", ".join(f"{run['drain']['connections_opened']:,} ({run['database']}, {run['senders']} "
                        f"sender{'s' if run['senders'] > 1 else ''})" for run in churn)
            + ". A sender marks the "
            f"{settings['batch']} messages of a batch delivered at once, one transaction each, and the store's engine "
            "keeps 5 connections in its pool (SQLAlchemy's default; up to 10 more are opened when needed and closed "
            "when returned), so most of those transactions open a fresh connection (on PostgreSQL a server process "
            "each).")
        variant = next((run for run in runs if run["pool_size"]), None)
        base = next((run for run in shipped if run["database"] == "PostgreSQL" and run["senders"] == 1), None)
        if variant is not None and base is not None:
            v, b = variant["drain"], base["drain"]
            note += (
                f" The same drain on PostgreSQL through an engine whose pool keeps {variant['pool_size']} connections "
                f"(a variant, not the shipped setting) opened {v['connections_opened']:,} and delivered "
                f"{v['messages_per_s']:,.0f} messages/s against {b['messages_per_s']:,.0f}, at "
                f"{v['sender_cpu_us_per_message']:.0f} against {b['sender_cpu_us_per_message']:.0f} µs of the "
                f"sender's CPU and {v['server_cpu_us_per_message']:.0f} against "
                f"{b['server_cpu_us_per_message']:.0f} µs of the server's per message.")
        notes.append(note)
    sqlite = [run for run in runs if run["database"] == "SQLite"]
    if sqlite and sqlite[0]["write"]["transaction_p99_ms"] > 10 * sqlite[0]["write"]["transaction_p50_ms"]:
        notes.append(
            f"**SQLite's write lock.** The {out['writers']} writers take turns on SQLite's one write lock "
            "(`BEGIN IMMEDIATE`); a writer that finds it taken waits in SQLite's busy handler, which sleeps between "
            "tries (up to 100 ms at a time), hence a transaction p99 far above its p50"
            + (", and the delivery latency's p99 (the sender's transactions wait for the writers' and the other way "
               "round)." if sqlite[0]["live"]["latency_p99_ms"] > 10 * sqlite[0]["live"]["latency_p50_ms"] else "."))
    for note in notes:
        lines += ["", note]
    lines.append("")

    calls = rec["calls"]
    lines += [
        f"**Recording** ({calls} simultaneous calls, {rec['seconds']:g} s of call time each, 20 ms frames on an "
        f"asyncio timer {rec['speed']:g} times faster than real time, {len(rec['rounds']) // 2} rounds with and "
        f"without recording, medians; files on {rec['filesystem']}; other load: {_load_note(rec['load'])}).",
        "",
        "| | CPU-ms per call-second | share of a core at "
        f"{calls} calls |",
        "|---|---:|---:|",
        f"| timer and frames, no recording (baseline) | {rec['baseline_cpu_ms_per_call_s']:.3f} | "
        f"{rec['baseline_cpu_ms_per_call_s'] * calls / 1000 * 100:.2f} % |",
        f"| with recording | {rec['recording_cpu_ms_per_call_s']:.3f} | "
        f"{rec['recording_cpu_ms_per_call_s'] * calls / 1000 * 100:.2f} % |",
        f"| **added by recording**, streaming | **{rec['added_cpu_ms_per_call_s']:.3f}** | "
        f"**{rec['core_share_at_calls'] * 100:.2f} %** |",
        f"| added by recording, with opening and closing a {rec['seconds']:g} s call | "
        f"{rec['all_in_cpu_ms_per_call_s']:.3f} | {rec['all_in_core_share_at_calls'] * 100:.2f} % |",
        "",
        f"Of the streaming cost, {rec['added_main_thread_ms_per_call_s']:.3f} ms per call-second is on the event "
        f"loop's thread (`add` copying the two frames into the batch, and handing full batches "
        f"to the writer), the rest on the writer threads; "
        f"`getrusage(RUSAGE_SELF)` gives {rec['rusage_added_cpu_ms_per_call_s']:.3f}. Opening a file costs "
        f"{rec['open_cpu_ms_per_call']:.2f} CPU-ms per call, closing it (last batch, header, fsync, SHA-256 read back) "
        f"{rec['close_cpu_ms_per_call']:.2f} ms. Written: {rec['bytes_per_call_minute']:,} bytes per call-minute "
        f"({rec['bytes_per_call_minute'] / 2**20:.2f} MiB: 8 kHz, two 16-bit channels); "
        f"{rec['dropped_frames']} frames dropped, {rec['errors']} recordings failed; "
        f"{rec['late_ticks']} of {rec['ticks']} ticks late.",
        "",
        "Raw figures (every run, the latency samples): the JSON report (`--json`, not committed).",
        END,
        "",
    ]
    return "\n".join(lines)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=(__doc__ or "").split("\n")[0])
    parser.add_argument("--json", default=str(REPO / "bench" / "results" / "records.json"))
    parser.add_argument("--markdown", default=None, help="update this file's section (e.g. BENCHMARKS.md)")
    parser.add_argument("--decisions", type=int, default=100_000, help="admission decisions per row")
    parser.add_argument("--calls", type=int, default=2000, help="outbox: calls written per run (two messages each)")
    parser.add_argument("--writers", type=int, default=8, help="outbox: concurrent writers")
    parser.add_argument("--live-calls", type=int, default=150, help="outbox: calls of the latency phase")
    parser.add_argument("--live-rate", type=float, default=20.0, help="outbox: calls a second in the latency phase")
    parser.add_argument("--pool-variant", type=int, default=20,
                        help="outbox: one more PostgreSQL drain through a pool of this many connections (0: none)")
    parser.add_argument("--record-calls", type=int, default=60, help="recording: simultaneous calls")
    parser.add_argument("--record-seconds", type=float, default=30.0, help="recording: call time per call")
    parser.add_argument("--speed", type=float, default=10.0, help="recording: times faster than real time")
    parser.add_argument("--rounds", type=int, default=3, help="recording: rounds with and without recording")
    parser.add_argument("--parts", default="admission,outbox,recording", help="what to run (all three by default)")
    args = parser.parse_args(argv)
    parts = set(args.parts.split(","))
    command = shlex.join([".venv/bin/python", "bench/records_bench.py", *(argv if argv is not None else sys.argv[1:])])
    json_path = Path(args.json).resolve()
    markdown = Path(args.markdown).resolve() if args.markdown else None
    logging.basicConfig(level=logging.WARNING, format="%(levelname)s %(name)s: %(message)s")
    began = time.monotonic()
    report: dict[str, Any] = {"benchmark": "records", "date": dt.datetime.now(dt.UTC).strftime("%Y-%m-%d %H:%M UTC"),
                              "machine": machine(), "commit": git_commit(), "command": command,
                              "pytest_seen": {"at the start": pytest_processes()}}
    if report["pytest_seen"]["at the start"]:
        print("warning: pytest is running: figures will be distorted", flush=True)
    steps: list[tuple[str, Callable[[], dict[str, Any]]]] = [
        ("admission", lambda: run_admission(args.decisions)),
        ("outbox", lambda: run_outbox(args)),
        ("recording", lambda: run_recording(args)),
    ]
    for name, step in steps:
        if name in parts:
            print(f"{name}...", flush=True)
            report[name] = step()
            report["pytest_seen"][f"after the {name} part"] = pytest_processes()
    report["total_s"] = round(time.monotonic() - began, 1)
    json_path.parent.mkdir(parents=True, exist_ok=True)
    json_path.write_text(json.dumps(report, indent=2))
    print(f"wrote {json_path}")
    if parts >= {"admission", "outbox", "recording"}:
        section = markdown_section(report)
        print(section.replace(BEGIN + "\n", "").replace(END + "\n", ""), flush=True)
        if markdown is not None:
            update_markdown(markdown, section, BEGIN, END)
            print(f"updated the section of {markdown}")
    return 0


if __name__ == "__main__":
    with contextlib.suppress(KeyboardInterrupt):
        sys.exit(main())
