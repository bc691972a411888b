"""Call-setup benchmark of the foundation: setup time and the ARI app's CPU and memory per call.

For each level N (10, 50, 100 simultaneous calls) and each subject (the real worker,
``python -m asterisk_agent run --config FILE``, and the trivial echo app of ``bench/echo_app.py`` as the
baseline), ``--runs`` times, each with a fresh subject process on the private test bed's pbx:

1. start the subject and wait until its event stream is up; place one warm-up call through the whole script
   (not measured); check that ``GET /channels`` and ``GET /bridges`` are empty on both instances;
2. create the N callers in the carrier's app (the pbx sees nothing yet), sample the subject's CPU time
   (utime+stime of /proc/PID/stat) and idle RSS (VmRSS of /proc/PID/status), then dial all N at once and
   wait until all are answered; every caller keys its own 3 digits + ``#`` and waits for its digits to come
   back as DTMF (the worker reads them back after the ``#``; the echo app echoes every key); all calls are
   held a few seconds, then all hang up;
3. wait until both instances hold no channel and no bridge again (the leak audit), sample CPU time again,
   stop the subject.

Setup time is measured twice, the same way for both subjects: on the carrier, from the ``dial`` request to the
caller's ``ChannelStateChange`` to Up (what a caller experiences, through SIP and ARI), and on the pbx, from
the channel entering ``Stasis()`` (``ChannelDialplan`` with app Stasis: the moment of ``StasisStart``) to its
``ChannelStateChange`` to Up, both with Asterisk's own event timestamps (a ``subscribeAll`` monitor app).

The test bed runs on port slot ``$ASTERISK_AGENT_PBX_SLOT``, slot 1 when it is unset, so a test run on
slot 0 is never disturbed. Results: JSON, and a section of BENCHMARKS.md between markers (other sections kept).
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import datetime as dt
import json
import logging
import os
import platform
import shlex
import signal
import statistics
import subprocess
import sys
import time
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

import aiohttp

from asterisk_agent.ari import requests as ari
from asterisk_agent.ari.client import AriClient
from asterisk_agent.ari.stream import events_url
from asterisk_agent.pbx.audit import leftovers
from asterisk_agent.pbx.carrier.callers import Carrier, SimulatedCaller
from asterisk_agent.pbx.instances import PortPlan, TestBed
from asterisk_agent.pbx.root import PbxError, asterisk_version, build_root, default_home

REPO = Path(__file__).resolve().parent.parent
APP = "asterisk-agent"
MONITOR_APP = "bench-monitor"
DID = "100"
SUBJECTS = ("worker", "echo")
LEVELS = (10, 50, 100)
SECTION_TITLE = "Call setup and per-call cost (foundation)"
BEGIN = "<!-- bench:setup_bench.py:begin -->"
END = "<!-- bench:setup_bench.py:end -->"
MAKE_ARGS = "--json bench/results/setup.json --markdown BENCHMARKS.md"
CLK_TCK = os.sysconf("SC_CLK_TCK")

log = logging.getLogger("setup_bench")


# --- /proc -----------------------------------------------------------------------------------------------


def cpu_seconds(pid: int) -> float:
    """utime + stime of a process, in seconds (fields 14 and 15 of /proc/PID/stat)."""
    with open(f"/proc/{pid}/stat") as stat:
        fields = stat.read().rsplit(") ", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / CLK_TCK  # fields[0] is field 3 (state)


def machine_busy_seconds() -> float:
    """CPU time all processes of the machine ran so far (user, nice, system of /proc/stat), in seconds."""
    with open("/proc/stat") as stat:
        user, nice, system = (int(v) for v in stat.readline().split()[1:4])
    return (user + nice + system) / CLK_TCK


def own_seconds() -> float:
    """This benchmark process's own CPU time (it drives the carrier and the monitor)."""
    times = os.times()
    return times.user + times.system


def rss_kb(pid: int) -> int:
    with open(f"/proc/{pid}/status") as status:
        for line in status:
            if line.startswith("VmRSS:"):
                return int(line.split()[1])
    return 0


class RssSampler:
    """The highest VmRSS of a process, sampled every ``interval_s`` while running."""

    def __init__(self, pid: int, interval_s: float = 0.05) -> None:
        self.pid = pid
        self.interval_s = interval_s
        self.peak_kb = 0
        self.samples = 0
        self._task: asyncio.Task[None] | None = None

    def start(self) -> None:
        self.peak_kb = rss_kb(self.pid)
        self._task = asyncio.create_task(self._run(), name="rss-sampler")

    async def _run(self) -> None:
        while True:
            with contextlib.suppress(OSError):
                self.peak_kb = max(self.peak_kb, rss_kb(self.pid))
                self.samples += 1
            await asyncio.sleep(self.interval_s)

    async def stop(self) -> int:
        if self._task is not None:
            self._task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._task
        with contextlib.suppress(OSError):
            self.peak_kb = max(self.peak_kb, rss_kb(self.pid))
        return self.peak_kb


# --- the pbx-side monitor -----------------------------------------------------------------------------------


def _ari_time(stamp: str) -> float:
    return dt.datetime.strptime(stamp, "%Y-%m-%dT%H:%M:%S.%f%z").timestamp()


class PbxMonitor:
    """A second Stasis app on the pbx with subscribeAll: Asterisk's timestamps of Stasis entry and answer."""

    def __init__(self, client: AriClient) -> None:
        self.client = client
        self.stasis_at: dict[str, float] = {}
        self.up_at: dict[str, float] = {}
        self.events = 0
        self._task: asyncio.Task[None] | None = None
        self._connected = asyncio.Event()

    async def start(self) -> None:
        self._task = asyncio.create_task(self._run(), name="pbx-monitor")
        async with asyncio.timeout(10):
            await self._connected.wait()

    async def _run(self) -> None:
        url = events_url(self.client.base_url, MONITOR_APP)
        params = {"app": MONITOR_APP, "subscribeAll": "true"}
        async with (
            aiohttp.ClientSession(headers=self.client.auth_headers) as http,
            http.ws_connect(url, params=params, heartbeat=5.0) as ws,
        ):
            self._connected.set()
            async for message in ws:
                if message.type == aiohttp.WSMsgType.TEXT:
                    self._on(json.loads(message.data))

    def _on(self, data: dict[str, Any]) -> None:
        self.events += 1
        channel = data.get("channel") or {}
        channel_id, stamp = channel.get("id"), data.get("timestamp")
        if not channel_id or not stamp or not str(channel.get("name", "")).startswith("PJSIP/carrier-"):
            return
        if data.get("type") == "ChannelDialplan" and data.get("dialplan_app") == "Stasis":
            self.stasis_at.setdefault(channel_id, _ari_time(stamp))
        elif data.get("type") == "ChannelStateChange" and channel.get("state") == "Up":
            self.up_at.setdefault(channel_id, _ari_time(stamp))

    def reset(self) -> None:
        self.stasis_at.clear()
        self.up_at.clear()

    def arrival_span_ms(self) -> float:
        """From the first call entering Stasis() to the last: how simultaneous the calls really arrived."""
        stamps = self.stasis_at.values()
        return round((max(stamps) - min(stamps)) * 1000, 1) if stamps else 0.0

    def setup_ms(self) -> list[float]:
        return sorted(
            round((self.up_at[c] - self.stasis_at[c]) * 1000, 3) for c in self.stasis_at if c in self.up_at
        )

    async def stop(self) -> None:
        if self._task is not None:
            self._task.cancel()
            with contextlib.suppress(asyncio.CancelledError, Exception):
                await self._task


# --- subjects -------------------------------------------------------------------------------------------


@dataclass
class Subject:
    name: str
    process: subprocess.Popen[bytes]
    log_path: Path
    ready_marker: str

    @property
    def pid(self) -> int:
        return self.process.pid

    def log_text(self) -> str:
        try:
            return self.log_path.read_text(errors="replace")
        except OSError:
            return ""

    async def wait_ready(self, timeout_s: float = 20.0) -> None:
        deadline = time.monotonic() + timeout_s
        while self.ready_marker not in self.log_text():
            if self.process.poll() is not None:
                raise RuntimeError(f"{self.name} exited at start (code {self.process.returncode}): "
                                   f"{self.log_text()[-500:]}")
            if time.monotonic() > deadline:
                raise RuntimeError(f"{self.name} did not connect within {timeout_s} s: {self.log_text()[-500:]}")
            await asyncio.sleep(0.05)

    async def stop(self, timeout_s: float = 10.0) -> int | None:
        if self.process.poll() is None:
            self.process.send_signal(signal.SIGTERM)
        try:
            await asyncio.to_thread(self.process.wait, timeout_s)
        except subprocess.TimeoutExpired:
            self.process.kill()
            await asyncio.to_thread(self.process.wait, 5)
        return self.process.returncode


def worker_config(bed: TestBed, path: Path) -> Path:
    creds = bed.pbx.credentials
    path.write_text(
        "# written by bench/setup_bench.py: the worker on the private test bed's pbx\n"
        "instance_id: bench\n"
        "ari:\n"
        f"  url: {bed.pbx.ari_url}\n"
        f"  username: {creds.ari_user}\n"
        f"  password: {creds.ari_password}\n"
        f"  app: {APP}\n"
        "media:\n"
        "  enabled: false\n"  # the foundation's keys-only path, compared with the echo app
        "timers:\n"
        "  call_max_ms: 120000\n"
        "accounts:\n"
        "  bench:\n"
        '    numbers: ["_X."]\n'
        "    greeting: hello-world\n"
        "log_level: INFO\n"
    )
    return path


def start_subject(name: str, bed: TestBed, results: Path, tag: str) -> Subject:
    # The config file is the whole truth for the subject: no ASTERISK_AGENT_* override from this shell.
    env = {k: v for k, v in os.environ.items() if not k.startswith("ASTERISK_AGENT_")}
    env["PYTHONUNBUFFERED"] = "1"
    creds = bed.pbx.credentials
    if name == "worker":
        config = worker_config(bed, results / "worker-config.yaml")
        command = [sys.executable, "-m", "asterisk_agent", "run", "--config", str(config)]
        marker = f"ARI events connected for app {APP}"
    else:
        command = [sys.executable, str(REPO / "bench" / "echo_app.py"), "--ari-url", bed.pbx.ari_url,
                   "--user", creds.ari_user, "--password", creds.ari_password, "--app", APP]
        marker = "echo app connected"
    log_path = results / f"{name}-{tag}.log"
    with log_path.open("wb") as out:
        process = subprocess.Popen(command, stdout=out, stderr=subprocess.STDOUT, stdin=subprocess.DEVNULL,
                                   env=env, cwd=REPO)
    return Subject(name, process, log_path, marker)


# --- calls ----------------------------------------------------------------------------------------------


def call_digits(count: int) -> list[str]:
    """``count`` distinct 3-digit strings without two equal digits in a row (no tone can merge with the next)."""
    out = []
    for value in range(1000):
        text = f"{value:03d}"
        if text[0] != text[1] and text[1] != text[2]:
            out.append(text)
    step = max(1, len(out) // count) if count else 1
    return [out[(i * step) % len(out)] for i in range(count)]


@dataclass
class Call:
    index: int
    digits: str
    caller: SimulatedCaller | None = None
    answered: bool = False
    heard: str = ""
    verified: bool = False
    setup_ms: float | None = None
    answered_at: float | None = None
    hung_up_at: float | None = None
    error: str | None = None


async def prepare(carrier: Carrier, call: Call) -> None:
    """What ``Carrier.call`` does before dialling: the caller's channel, in the carrier's app, not dialled yet."""
    channel_id = carrier.ids.new("caller")
    number = f"1555{call.index:04d}"
    caller = SimulatedCaller(carrier.client, channel_id, DID, number)
    carrier.callers[channel_id] = caller
    call.caller = caller
    try:
        await carrier.client.send(ari.create_channel(
            f"PJSIP/{DID}@{carrier.trunk}", channel_id=channel_id, app=carrier.app, app_args="caller",
            formats="ulaw",
        ))
        async with asyncio.timeout(10):
            await caller.in_stasis  # dialling before StasisStart answers 409 "Channel not in Stasis"
        await carrier.client.send(ari.set_channel_variable(channel_id, "CONNECTEDLINE(num)", number))
    except Exception as exc:
        call.error = f"prepare: {type(exc).__name__}: {exc}"


async def dial(call: Call, timeout_s: float) -> None:
    """Dial a prepared caller into the pbx and wait until it is answered (ChannelStateChange Up)."""
    caller = call.caller
    if caller is None or call.error:
        return
    try:
        caller.created_at = time.monotonic()  # SimulatedCaller.setup_ms counts from here
        await caller.client.send(ari.dial(caller.channel_id, caller=None, timeout_s=int(timeout_s)))
        await caller.wait_answered(timeout_s=timeout_s)
        call.answered = True
        call.answered_at = caller.answered_at
        call.setup_ms = caller.setup_ms
    except Exception as exc:  # one failed call must not stop the others
        call.error = f"setup: {type(exc).__name__}: {exc}"


async def key_and_listen(call: Call, timeout_s: float) -> None:
    if call.caller is None or not call.answered:
        return
    try:
        await call.caller.send_digits(call.digits + "#")
        call.heard = await call.caller.wait_digits(len(call.digits), timeout_s=timeout_s)
        call.verified = call.heard[: len(call.digits)] == call.digits
        if not call.verified:
            call.error = f"heard {call.heard!r}, sent {call.digits!r}"
    except Exception as exc:
        call.error = f"digits: {type(exc).__name__}: {exc} (heard {call.caller.received_digits!r})"


async def hang_up(call: Call) -> None:
    if call.caller is None:
        return
    call.hung_up_at = time.monotonic()
    try:
        await call.caller.hangup()
    except Exception as exc:
        call.error = (call.error or "") + f" hangup: {type(exc).__name__}: {exc}"


async def run_calls(carrier: Carrier, digits: list[str], *, hold_s: float, start_index: int) -> list[Call]:
    calls = [Call(start_index + i, d) for i, d in enumerate(digits)]
    await asyncio.gather(*(prepare(carrier, c) for c in calls))
    await asyncio.gather(*(dial(c, 30) for c in calls))
    await asyncio.gather(*(key_and_listen(c, 30) for c in calls))
    await asyncio.sleep(hold_s)
    await asyncio.gather(*(hang_up(c) for c in calls))
    return calls


async def drain(pbx: AriClient, carrier: AriClient, timeout_s: float) -> tuple[list[str], float]:
    """Wait until neither instance holds a channel or bridge; return what is left and how long it took."""
    started = time.monotonic()
    while True:
        left = await leftovers(pbx, carrier)
        if not left or time.monotonic() - started > timeout_s:
            return left, round(time.monotonic() - started, 3)
        await asyncio.sleep(0.05)


async def clear(pbx: AriClient, carrier: AriClient) -> None:
    """Remove leftovers so the next level starts on an empty bed (after they were reported)."""
    for client in (carrier, pbx):
        for channel in await client.channels():
            await client.delete_quietly(ari.hangup(channel["id"]))
        for bridge in await client.bridges():
            await client.delete_quietly(ari.destroy_bridge(bridge["id"]))


# --- one level -----------------------------------------------------------------------------------------


def percentile(values: list[float], q: float) -> float | None:
    """Linear interpolation between closest ranks (as numpy's default)."""
    if not values:
        return None
    ordered = sorted(values)
    pos = (len(ordered) - 1) * q
    low = int(pos)
    high = min(low + 1, len(ordered) - 1)
    return round(ordered[low] + (ordered[high] - ordered[low]) * (pos - low), 2)


@dataclass
class RunResult:
    """One run of one level: a fresh subject process, N simultaneous calls."""

    subject: str
    calls: int
    run: int
    answered: int = 0
    verified: int = 0
    setup_ms: list[float] = field(default_factory=list)
    pbx_setup_ms: list[float] = field(default_factory=list)
    arrival_span_ms: float = 0.0
    cpu_s: float = 0.0
    call_seconds: float = 0.0
    rss_idle_kb: int = 0
    rss_peak_kb: int = 0
    pbx_asterisk_cpu_s: float = 0.0
    carrier_asterisk_cpu_s: float = 0.0
    bench_cpu_s: float = 0.0
    other_cpu_s: float = 0.0  # the rest of the machine (other processes) over the same window
    all_answered_s: float = 0.0
    window_s: float = 0.0
    warmup_ok: bool = False
    channels_before: list[str] = field(default_factory=list)
    leftovers_after: list[str] = field(default_factory=list)
    drain_s: float = 0.0
    subject_exit: int | None = None
    subject_log_problems: list[str] = field(default_factory=list)
    errors: list[str] = field(default_factory=list)

    @property
    def cpu_ms_per_call(self) -> float:
        return self.cpu_s * 1000 / self.calls

    @property
    def cpu_pct_per_call_second(self) -> float:
        return self.cpu_s / self.call_seconds * 100 if self.call_seconds else 0.0

    @property
    def rss_mb_per_call(self) -> float:
        return (self.rss_peak_kb - self.rss_idle_kb) / 1024 / self.calls


def _problems(log_text: str) -> list[str]:
    words = (" WARNING ", " ERROR ", "Traceback", "error:")
    return [line for line in log_text.splitlines() if any(word in line for word in words)][:20]


async def run_once(
    subject_name: str, level: int, run: int, bed: TestBed, carrier: Carrier, pbx_ari: AriClient,
    carrier_ari: AriClient, monitor: PbxMonitor, results: Path, hold_s: float,
) -> RunResult:
    result = RunResult(subject_name, level, run)
    subject = start_subject(subject_name, bed, results, f"{level}-{run}")
    try:
        await subject.wait_ready()
        warm = await run_calls(carrier, ["258"], hold_s=0.2, start_index=9000 + run)
        result.warmup_ok = all(c.verified for c in warm)
        result.errors += [f"warm-up: {c.error}" for c in warm if c.error]
        left, _ = await drain(pbx_ari, carrier_ari, 10)
        result.channels_before = left  # the pre-level leak audit: must be empty
        if left:
            await clear(pbx_ari, carrier_ari)
        await asyncio.sleep(0.5)  # let the subject settle (and finish logging the warm-up call)

        # Every caller is created in the carrier's app first (the pbx sees nothing yet), then all dial at once.
        calls = [Call(i, d) for i, d in enumerate(call_digits(level))]
        await asyncio.gather(*(prepare(carrier, c) for c in calls))
        pbx_pid = bed.pbx.process.pid if bed.pbx.process else None
        carrier_pid = bed.carrier.process.pid if bed.carrier.process else None
        monitor.reset()
        result.rss_idle_kb = rss_kb(subject.pid)
        sampler = RssSampler(subject.pid)
        sampler.start()
        cpu0 = cpu_seconds(subject.pid)
        pbx0 = cpu_seconds(pbx_pid) if pbx_pid else 0.0
        carrier0 = cpu_seconds(carrier_pid) if carrier_pid else 0.0
        busy0, own0 = machine_busy_seconds(), own_seconds()
        started = time.monotonic()

        await asyncio.gather(*(dial(c, 30) for c in calls))
        result.all_answered_s = round(time.monotonic() - started, 3)
        await asyncio.gather(*(key_and_listen(c, 30) for c in calls))
        await asyncio.sleep(hold_s)
        await asyncio.gather(*(hang_up(c) for c in calls))
        result.leftovers_after, result.drain_s = await drain(pbx_ari, carrier_ari, 20)  # the leak audit

        result.cpu_s = round(cpu_seconds(subject.pid) - cpu0, 3)
        result.pbx_asterisk_cpu_s = round(cpu_seconds(pbx_pid) - pbx0, 3) if pbx_pid else 0.0
        result.carrier_asterisk_cpu_s = round(cpu_seconds(carrier_pid) - carrier0, 3) if carrier_pid else 0.0
        result.bench_cpu_s = round(own_seconds() - own0, 3)
        busy = machine_busy_seconds() - busy0
        result.window_s = round(time.monotonic() - started, 3)
        result.other_cpu_s = round(max(0.0, busy - result.cpu_s - result.pbx_asterisk_cpu_s
                                       - result.carrier_asterisk_cpu_s - result.bench_cpu_s), 2)
        result.rss_peak_kb = await sampler.stop()
        if result.leftovers_after:
            await clear(pbx_ari, carrier_ari)

        result.answered = sum(c.answered for c in calls)
        result.verified = sum(c.verified for c in calls)
        result.errors += [f"call {c.index}: {c.error}" for c in calls if c.error]
        result.setup_ms = sorted(c.setup_ms for c in calls if c.setup_ms is not None)
        result.pbx_setup_ms = monitor.setup_ms()
        result.arrival_span_ms = monitor.arrival_span_ms()
        result.call_seconds = round(sum(
            c.hung_up_at - c.answered_at for c in calls if c.answered_at is not None and c.hung_up_at is not None
        ), 2)
    except Exception as exc:
        result.errors.append(f"run failed: {type(exc).__name__}: {exc}")
        with contextlib.suppress(Exception):
            await clear(pbx_ari, carrier_ari)
    finally:
        result.subject_log_problems = _problems(subject.log_text())  # before the stop: its own lines are noise
        result.subject_exit = await subject.stop()
    return result


def _median(values: list[float]) -> float:
    return statistics.median(values) if values else 0.0


def summarize(subject: str, level: int, runs: list[RunResult]) -> dict[str, Any]:
    """One row of the table: setup times pooled over the runs; CPU and memory the median run."""
    setup = [v for r in runs for v in r.setup_ms]
    pbx_setup = [v for r in runs for v in r.pbx_setup_ms]
    return {
        "subject": subject,
        "calls": level,
        "runs": len(runs),
        "placed": level * len(runs),
        "answered": sum(r.answered for r in runs),
        "verified": sum(r.verified for r in runs),
        "setup_ms_p50": percentile(setup, 0.50),
        "setup_ms_p95": percentile(setup, 0.95),
        "setup_ms_max": max(setup) if setup else None,
        "pbx_setup_ms_p50": percentile(pbx_setup, 0.50),
        "pbx_setup_ms_p95": percentile(pbx_setup, 0.95),
        "pbx_setup_ms_max": max(pbx_setup) if pbx_setup else None,
        "pbx_setup_samples": len(pbx_setup),
        "pbx_setup_ms_p50_runs": [percentile(r.pbx_setup_ms, 0.50) for r in runs],
        "arrival_span_ms": round(_median([r.arrival_span_ms for r in runs]), 1),
        "cpu_ms_per_call": round(_median([r.cpu_ms_per_call for r in runs]), 2),
        "cpu_ms_per_call_runs": [round(r.cpu_ms_per_call, 2) for r in runs],
        "cpu_pct_per_call_second": round(_median([r.cpu_pct_per_call_second for r in runs]), 3),
        "rss_mb_per_call": round(_median([r.rss_mb_per_call for r in runs]), 4),
        "rss_mb_per_call_runs": [round(r.rss_mb_per_call, 4) for r in runs],
        "rss_idle_mb": round(_median([r.rss_idle_kb / 1024 for r in runs]), 1),
        "pbx_asterisk_cpu_ms_per_call": round(_median([r.pbx_asterisk_cpu_s * 1000 / level for r in runs]), 2),
        "carrier_asterisk_cpu_ms_per_call": round(
            _median([r.carrier_asterisk_cpu_s * 1000 / level for r in runs]), 2
        ),
        "window_s": round(sum(r.window_s for r in runs), 1),
        "other_cpu_s": round(sum(r.other_cpu_s for r in runs), 2),
        "channels_before": sum(len(r.channels_before) for r in runs),
        "leftovers_after": sum(len(r.leftovers_after) for r in runs),
        "drain_s_max": max((r.drain_s for r in runs), default=0.0),
        "errors": [f"run {r.run}: {e}" for r in runs for e in r.errors],
        "subject_log_problems": [f"run {r.run}: {p}" for r in runs for p in r.subject_log_problems],
        "subject_exits": [r.subject_exit for r in runs],
    }


async def run_all(
    bed: TestBed, results: Path, subjects: list[str], levels: list[int], runs: int, hold_s: float
) -> tuple[list[dict[str, Any]], list[RunResult]]:
    pbx_creds, carrier_creds = bed.pbx.credentials, bed.carrier.credentials
    rows: list[dict[str, Any]] = []
    every: list[RunResult] = []
    async with (
        AriClient(bed.pbx.ari_url, pbx_creds.ari_user, pbx_creds.ari_password) as pbx_ari,
        AriClient(bed.carrier.ari_url, carrier_creds.ari_user, carrier_creds.ari_password,
                  request_timeout_ms=15_000, max_connections=32) as carrier_ari,
    ):
        carrier = Carrier(carrier_ari)
        await carrier.start()
        monitor = PbxMonitor(pbx_ari)
        await monitor.start()
        try:
            for level in levels:
                for subject in subjects:
                    begun = time.monotonic()
                    done = []
                    for run in range(1, runs + 1):
                        done.append(await run_once(subject, level, run, bed, carrier, pbx_ari, carrier_ari,
                                                   monitor, results, hold_s))
                    every += done
                    row = summarize(subject, level, done)
                    rows.append(row)
                    print(f"{subject:>6} {level:>4} calls x {runs}: answered {row['answered']}/{row['placed']}, "
                          f"verified {row['verified']}, setup p50/p95 {row['setup_ms_p50']}/{row['setup_ms_p95']} "
                          f"ms (pbx {row['pbx_setup_ms_p50']}/{row['pbx_setup_ms_p95']}), "
                          f"CPU {row['cpu_ms_per_call_runs']} ms/call, RSS {row['rss_mb_per_call_runs']} MB/call, "
                          f"leftovers {row['leftovers_after']}, errors {len(row['errors'])} "
                          f"({time.monotonic() - begun:.1f} s)", flush=True)
                    for error in row["errors"][:5]:
                        print(f"         error: {error}", flush=True)
        finally:
            await monitor.stop()
            await carrier.stop()
    return rows, every


# --- report ---------------------------------------------------------------------------------------------


def machine() -> dict[str, Any]:
    model = "unknown"
    with contextlib.suppress(OSError):
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                model = line.split(":", 1)[1].strip()
                break
    mem_kb = 0
    with contextlib.suppress(OSError, ValueError, IndexError):
        for line in Path("/proc/meminfo").read_text().splitlines():
            if line.startswith("MemTotal:"):
                mem_kb = int(line.split()[1])
    return {
        "nproc": len(os.sched_getaffinity(0)),
        "cpu_model": model,
        "memory_gib": round(mem_kb / 1024 / 1024, 1),
        "kernel": platform.release(),
        "python": platform.python_version(),
    }


def git_commit() -> str:
    """The commit measured (``-dirty``: tracked files changed; untracked ones do not show)."""
    try:
        out = subprocess.run(["git", "describe", "--always", "--dirty"], cwd=REPO, capture_output=True,
                             text=True, timeout=10, check=False)
    except (OSError, subprocess.TimeoutExpired):
        return "unknown"
    return out.stdout.strip() or "unknown"


def _fmt(value: float | None, digits: int = 1) -> str:
    return "-" if value is None else f"{value:.{digits}f}"


def markdown_section(report: dict[str, Any]) -> str:
    m = report["machine"]
    runs = report["runs"]
    lines = [
        BEGIN,
        f"## {SECTION_TITLE}",
        "",
        "Written by `bench/setup_bench.py`; rerun `make bench` to refresh this section (the rest of the file is kept).",
        "",
        f"- Date: {report['date']}",
        f"- Machine: {m['nproc']} CPUs ({m['cpu_model']}), {m['memory_gib']} GiB memory, Linux {m['kernel']}, "
        f"Python {m['python']}; the benchmark, both subjects and both Asterisk instances share these CPUs",
        f"- Asterisk: {report['asterisk']} (the private test bed: pbx + carrier instances on this machine, "
        f"port slot {report['slot']})",
        f"- Command: `{report['command']}`"
        + (" (`make bench`)" if report["command"].endswith(MAKE_ARGS) else "")
        + f"; {report['total_s']:.0f} s in all; commit {report['commit']}",
        "",
        "**Subjects.** Each is its own process registered as the Stasis app `asterisk-agent` on the pbx: the real "
        "worker (`python -m asterisk_agent run --config FILE`: default timers and ARI pool, greeting "
        "`hello-world`, log level INFO) and, as the baseline, `bench/echo_app.py` (same ARI client and event "
        "stream; answers at once, sends every DTMF key straight back, nothing else).",
        "",
        "**Reading the numbers.** The benchmark process, both Asterisk instances and the subject share the "
        "machine's CPUs. With few CPUs, setup times at 50 and 100 calls measure the whole test bed's saturation "
        "as much as the subject: the carrier-side time includes the carrier launching all N calls, and the "
        "pbx-side time grows with whatever the pbx must do for the calls answered just before (the worker starts "
        "a greeting playback right after each answer; the echo app plays nothing). The CPU totals have a 10 ms "
        "resolution (a few ticks per run at 10 calls).",
        "",
        f"**Procedure.** For each level N and each subject, {runs} run(s), each with a fresh subject process: one "
        "warm-up call (not counted), the leak audit, then N callers are created in the carrier's app and all dial "
        "the pbx at once; when all are answered, every caller keys its own 3 digits + `#` and waits for its 3 "
        "digits to come back as DTMF (the worker reads them back after `#`, the echo app echoes each key): "
        f"*verified* = the right digits came back. All calls are held {report['hold_s']:g} s more, then hang up.",
        "",
        "- **setup (carrier)**: from the carrier's `dial` request to the caller's `ChannelStateChange` Up, measured "
        "in the benchmark process: what a caller experiences (SIP both ways, the pbx, the subject's answer).",
        "- **setup (pbx)**: StasisStart to answered on the pbx: from the inbound channel entering `Stasis()` "
        "(`ChannelDialplan` with app Stasis) to its `ChannelStateChange` Up, both with Asterisk's own event "
        "timestamps (1 ms resolution), seen by a `subscribeAll` monitor app on the pbx: the subject's reaction "
        "time plus Asterisk's answer.",
        "- **arrival spread**: from the first to the last of the N calls entering `Stasis()` on the pbx (median "
        "run): the carrier cannot launch N calls in the same millisecond, so this is how simultaneous they were.",
        "- Setup percentiles pool every call of the level's runs; CPU and RSS are the median run.",
        "- **CPU**: utime+stime of the subject process (/proc/PID/stat, 10 ms ticks) from the dial burst until "
        "both instances hold no channel again, divided by N (ms per call) and by the call-seconds (answer to "
        "hangup, summed over the calls): % of one core per simultaneous call.",
        "- **RSS**: VmRSS of the subject (/proc/PID/status), peak (sampled every 50 ms) minus idle (after the "
        "warm-up call), divided by N.",
        "- **pbx Asterisk CPU**: the pbx instance's CPU time over the same window, per call (the worker's "
        "prompts cost Asterisk CPU, not the worker's).",
        "- **leak audit**: `GET /channels` and `GET /bridges` on both instances, empty before every run (after "
        "the warm-up call) and again after its hangups; the table gives the longest drain.",
        "",
        "| subject | calls | runs | answered / verified | arrival spread ms | setup (carrier) p50 / p95 ms "
        "| setup (pbx) p50 / p95 ms | CPU ms per call | CPU % per call-second | RSS MB per call "
        "| pbx Asterisk CPU ms per call | leak audit |",
        "|---|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|---|",
    ]
    for r in report["levels"]:
        audit = "clean" if not r["channels_before"] else f"**{r['channels_before']} before**"
        audit += f", drained in {r['drain_s_max']:.2f} s" if not r["leftovers_after"] else \
            f", **{r['leftovers_after']} left**"
        lines.append(
            f"| {r['subject']} | {r['calls']} | {r['runs']} | {r['answered']} / {r['verified']} "
            f"| {r['arrival_span_ms']:.0f} "
            f"| {_fmt(r['setup_ms_p50'])} / {_fmt(r['setup_ms_p95'])} "
            f"| {_fmt(r['pbx_setup_ms_p50'])} / {_fmt(r['pbx_setup_ms_p95'])} "
            f"| {r['cpu_ms_per_call']:.1f} | {r['cpu_pct_per_call_second']:.3f} | {r['rss_mb_per_call']:.3f} "
            f"| {r['pbx_asterisk_cpu_ms_per_call']:.1f} | {audit} |"
        )
    by_key = {(r["subject"], r["calls"]): r for r in report["levels"]}
    deltas = []
    for (subject, calls), r in by_key.items():
        echo = by_key.get(("echo", calls))
        if subject == "worker" and echo is not None:
            deltas.append(
                f"{calls} calls: {r['cpu_ms_per_call'] - echo['cpu_ms_per_call']:+.1f} ms CPU, "
                f"{(r['rss_mb_per_call'] - echo['rss_mb_per_call']) * 1024:+.0f} KB RSS, "
                f"{r['pbx_asterisk_cpu_ms_per_call'] - echo['pbx_asterisk_cpu_ms_per_call']:+.1f} ms pbx Asterisk CPU"
            )
    window = sum(r["window_s"] for r in report["levels"])
    other = sum(r["other_cpu_s"] for r in report["levels"])
    nproc = report["machine"]["nproc"]
    idle = {r["subject"]: r["rss_idle_mb"] for r in report["levels"]}
    lines.append("")
    lines.append(
        f"Other load: processes outside the test bed used {other:.1f} CPU-seconds during the {window:.0f} s of "
        f"measured windows ({other / window / nproc * 100 if window else 0:.1f}% of the machine's {nproc} CPUs)."
    )
    lines.append("")
    lines.append("Idle RSS after the warm-up call: " + ", ".join(f"{k} {v:.1f} MB" for k, v in idle.items()) + ".")
    lines.append("")
    if deltas:
        lines.append("Worker minus echo baseline, per call: " + "; ".join(deltas) + ".")
        lines.append("")
    problems = [f"{r['subject']} {r['calls']}: {e}" for r in report["levels"] for e in r["errors"]]
    if problems:
        lines.append(f"Errors ({len(problems)}):")
        lines.append("")
        lines += [f"- {p}" for p in problems[:20]]
        if len(problems) > 20:
            lines.append(f"- ... and {len(problems) - 20} more (see the JSON)")
    else:
        lines.append("No call failed, and every run drained to zero channels and bridges on both instances.")
    lines += ["", f"Raw numbers (every setup time, each run's CPU and RSS): `{report['json']}` (not committed).", END]
    return "\n".join(lines) + "\n"


def update_markdown(path: Path, section: str, begin: str = BEGIN, end: str = END) -> None:
    """Replace the section between ``begin`` and ``end`` (each benchmark has its own markers), or append it."""
    text = path.read_text() if path.exists() else "# Benchmarks\n"
    if begin in text and end in text:
        head, rest = text.split(begin, 1)
        tail = rest.split(end, 1)[1].lstrip("\n")
        text = head + section + ("\n" + tail if tail else "")
    else:
        text = text.rstrip("\n") + "\n\n" + section
    path.write_text(text)


# --- main -----------------------------------------------------------------------------------------------


def start_bed() -> tuple[Path, int, TestBed] | None:
    """Build the private Asterisk root if needed and start both instances on slot $ASTERISK_AGENT_PBX_SLOT, slot
    1 unless told otherwise (a test run, on slot 0 by default, is never disturbed). ``None`` after printing the
    error when it cannot start."""
    slot = int(os.environ.get("ASTERISK_AGENT_PBX_SLOT") or 1)
    home = default_home()
    try:
        build_root(home)
        bed = TestBed.create(home, REPO / "dialplan", PortPlan.for_slot(slot))
        bed.start()
    except PbxError as exc:
        print(f"error: {exc}", file=sys.stderr)
        return None
    print(f"test bed up on slot {slot}: pbx ARI {bed.pbx.ari_url}, carrier ARI {bed.carrier.ari_url}", flush=True)
    return home, slot, bed


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--json", default="bench/results/setup.json", help="where to write the raw results")
    parser.add_argument("--markdown", default=None, help="update this file's section (e.g. BENCHMARKS.md)")
    parser.add_argument("--levels", default=",".join(map(str, LEVELS)), help="simultaneous calls, e.g. 10,50,100")
    parser.add_argument("--subjects", default=",".join(SUBJECTS), help="worker,echo (or one of them)")
    parser.add_argument("--runs", type=int, default=3, help="runs per subject and level, each a fresh process")
    parser.add_argument("--hold", type=float, default=3.0, help="seconds every call is held after its digits")
    args = parser.parse_args(argv)
    json_path = Path(args.json).resolve()
    markdown = Path(args.markdown).resolve() if args.markdown else None
    levels = [int(x) for x in args.levels.split(",") if x]
    subjects = [s for s in args.subjects.split(",") if s]
    if any(s not in SUBJECTS for s in subjects) or args.runs < 1 or any(n < 1 for n in levels):
        parser.error(f"subjects are {', '.join(SUBJECTS)}; levels and runs at least 1")
    command = shlex.join([".venv/bin/python", "bench/setup_bench.py", *(argv if argv is not None else sys.argv[1:])])
    os.chdir(REPO)  # the dialplan and .pbx are the repository's
    logging.basicConfig(level=logging.WARNING, format="%(levelname)s %(name)s: %(message)s")

    results = json_path.parent
    results.mkdir(parents=True, exist_ok=True)
    began = time.monotonic()
    started = start_bed()
    if started is None:
        return 1
    home, slot, bed = started
    try:
        rows, every = asyncio.run(run_all(bed, results, subjects, levels, args.runs, args.hold))
    finally:
        bed.stop()
    still = [i.name for i in (bed.pbx, bed.carrier) if i.is_running()]
    report: dict[str, Any] = {
        "benchmark": "call setup and per-call cost (foundation)",
        "date": dt.datetime.now(dt.UTC).strftime("%Y-%m-%d %H:%M UTC"),
        "machine": machine(),
        "asterisk": asterisk_version(home),
        "slot": slot,
        "commit": git_commit(),
        "command": command,
        "runs": args.runs,
        "hold_s": args.hold,
        "total_s": round(time.monotonic() - began, 1),
        "json": os.path.relpath(json_path, REPO),
        "setup_measures": {
            "setup_ms": "carrier: dial request -> ChannelStateChange Up of the caller (benchmark process clock)",
            "pbx_setup_ms": "pbx: ChannelDialplan app=Stasis -> ChannelStateChange Up (Asterisk timestamps)",
        },
        "instances_left_running": still,
        "levels": rows,
        "every_run": [asdict(r) for r in every],
    }
    json_path.write_text(json.dumps(report, indent=2))
    if markdown is not None:
        update_markdown(markdown, markdown_section(report))
    failed = [r for r in rows if r["errors"] or r["leftovers_after"] or r["channels_before"]
              or r["verified"] != r["placed"]]
    print(f"wrote {json_path}" + (f" and {markdown}" if markdown else "") + f"; {report['total_s']} s; "
          f"{len(failed)} level(s) with failures", flush=True)
    if still:
        print(f"error: still running after stop: {', '.join(still)}", file=sys.stderr)
    return 1 if failed or still else 0


if __name__ == "__main__":
    sys.exit(main())
