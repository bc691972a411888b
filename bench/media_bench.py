"""Media-path capacity: how many simultaneous calls the worker's full media path carries without loss, as a
ratio to a trivial RTP echo measured the same way in the same run.

Subjects, each a fresh process per level on the private test bed's pbx, registered as ``asterisk-agent``:

- ``echo``: ``bench/echo_app.py --media``: answers, bridges the caller with an externalMedia channel and sends
  every RTP packet straight back (no jitter buffer, no pacing, no decoding).
- ``worker``: ``python -m asterisk_agent run`` with media on and recognition off: per call the externalMedia
  leg, jitter buffer, VAD and endpointer on every frame, the recording tap, the greeting from the prompt cache
  plus its per-call sentence, paced 20 ms RTP out, barge-in.

Per level N the callers dial within ``--ramp`` seconds, each bridged on the carrier with a media leg of its
own, and send ``--hold`` seconds of audio without a break: 8 s of silence (the greeting plays out), then piper
speech with pauses. After that every caller waits one second for packets in flight, then hangs up. Loss is
counted both ways from packet counters: caller to subject (what the subject received / what the callers sent)
and subject to caller, each as RTP receivers count it (RFC 3550): packets missing between the first and the
highest sequence number that arrived (what a caller sent before the subject's leg joined the bridge never
entered the stream and is not loss; it is reported as ``callers_sent`` beside the rest). The worker only sends while it
speaks (its greeting), the echo app for the whole call, so the worker's outbound side carries less traffic:
read the outbound figures with that in mind. A level passes with at most 0.1 % loss each way and every call
answered; the most calls a subject carries is its highest passing level.

Slot ``$ASTERISK_AGENT_PBX_SLOT`` (1 when unset). Results: JSON, and a section of BENCHMARKS.md between markers.
"""

from __future__ import annotations

import argparse
import asyncio
import datetime as dt
import json
import logging
import os
import re
import shlex
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

import numpy as np
from setup_bench import Subject, clear, cpu_seconds, drain, git_commit, machine, start_bed, update_markdown

from asterisk_agent.ari.client import AriClient
from asterisk_agent.demo import caller_name, caller_number, introduction_line
from asterisk_agent.media.frames import SAMPLE_RATE
from asterisk_agent.media.leg import MediaContext
from asterisk_agent.media.pacer import PacingClock
from asterisk_agent.media.transport import PortPool
from asterisk_agent.pbx.carrier.callers import Carrier, SimulatedCaller, caller_voice
from asterisk_agent.pbx.instances import TestBed
from asterisk_agent.pbx.root import asterisk_version

REPO = Path(__file__).resolve().parent.parent
APP = "asterisk-agent"
DID = "100"
LEVELS = (60, 100, 140)
SUBJECTS = ("echo", "worker")
SECTION_TITLE = "Media path: calls carried without loss, against a trivial RTP echo"
BEGIN = "<!-- bench:media_bench.py:begin -->"
END = "<!-- bench:media_bench.py:end -->"
SUBJECT_PORTS = (54000, 55999)
CALLER_PORTS = (56000, 57999)
LOSS_LIMIT = 0.001
WORKER_MEDIA = re.compile(r"media: received (\d+) of (\d+) expected, sent (\d+)")
ECHO_MEDIA = re.compile(r"RTP received (\d+) of (\d+) expected, sent (\d+)")


def start(subject: str, bed: TestBed, results: Path, tag: str) -> Subject:
    env = {k: v for k, v in os.environ.items() if not k.startswith("ASTERISK_AGENT_")}
    env["PYTHONUNBUFFERED"] = "1"
    creds = bed.pbx.credentials
    if subject == "worker":
        config = results / "media-worker.yaml"
        config.write_text(
            "# written by bench/media_bench.py: the worker's media path, recognition off\n"
            f"instance_id: bench\nari:\n  url: {bed.pbx.ari_url}\n  username: {creds.ari_user}\n"
            f"  password: {creds.ari_password}\n  app: {APP}\n"
            f"media:\n  enabled: true\n  port_min: {SUBJECT_PORTS[0]}\n  port_max: {SUBJECT_PORTS[1]}\n"
            "speech:\n  stt:\n    engine: none\n"
            "timers:\n  call_max_ms: 600000\n"
            'accounts:\n  bench:\n    numbers: ["_X."]\nlog_level: INFO\n'
        )
        command = [sys.executable, "-m", "asterisk_agent", "run", "--config", str(config)]
        marker = f"ARI events connected for app {APP}"
    else:
        command = [sys.executable, str(REPO / "bench" / "echo_app.py"), "--ari-url", bed.pbx.ari_url, "--user",
                   creds.ari_user, "--password", creds.ari_password, "--app", APP, "--media",
                   f"{SUBJECT_PORTS[0]}:{SUBJECT_PORTS[1]}"]
        marker = "echo app connected"
    log_path = results / f"media-{subject}-{tag}.log"
    with log_path.open("wb") as out:
        process = subprocess.Popen(command, stdout=out, stderr=subprocess.STDOUT, stdin=subprocess.DEVNULL, env=env,
                                   cwd=REPO)
    return Subject(subject, process, log_path, marker)


async def one_caller(carrier: Carrier, media: MediaContext, audio: np.ndarray, index: int, ramp_s: float,
                     calls: int) -> tuple[SimulatedCaller | None, str | None]:
    await asyncio.sleep(ramp_s * index / max(1, calls))
    caller: SimulatedCaller | None = None
    try:
        caller = await carrier.call(DID, caller_number=f"1777{index:04d}")
        await caller.wait_answered(timeout_s=30)
        leg = await caller.attach_media(carrier, media)
        leg.play(audio)
        await leg.drained.wait()
        await asyncio.sleep(1.0)  # packets in flight both ways arrive before the hangup
        return caller, None
    except Exception as exc:
        return caller, f"{type(exc).__name__}: {exc}"
    finally:
        if caller is not None:
            await caller.hangup()


async def run_level(bed: TestBed, results: Path, subject_name: str, calls: int, audio: np.ndarray,
                    ramp_s: float) -> dict[str, Any]:
    subject = start(subject_name, bed, results, f"{calls}")
    clock = PacingClock()
    creds, ccreds = bed.pbx.credentials, bed.carrier.credentials
    try:
        await subject.wait_ready(timeout_s=60)
        clock.start()
        media = MediaContext(pool=PortPool("127.0.0.1", *CALLER_PORTS), clock=clock, app="carrier",
                             advertised_address="127.0.0.1")
        async with AriClient(bed.carrier.ari_url, ccreds.ari_user, ccreds.ari_password) as carrier_ari:
            carrier = Carrier(carrier_ari)
            await carrier.start()
            cpu_before, began = cpu_seconds(subject.pid), time.monotonic()
            try:
                done = await asyncio.gather(*(one_caller(carrier, media, audio, i, ramp_s, calls)
                                              for i in range(calls)))
            finally:
                await carrier.stop()
            cpu = cpu_seconds(subject.pid) - cpu_before
            elapsed = time.monotonic() - began
            async with AriClient(bed.pbx.ari_url, creds.ari_user, creds.ari_password) as pbx:
                left, _ = await drain(pbx, carrier_ari, timeout_s=20)
                if left:
                    await clear(pbx, carrier_ari)
    finally:
        await clock.stop()
        await subject.stop()
    legs = [c.media_leg.endpoint.stats for c, _ in done
            if c is not None and c.media_leg is not None and c.media_leg.endpoint is not None]
    callers_sent = sum(stats.sent for stats in legs)
    callers_received = sum(stats.received for stats in legs)
    callers_expected = sum(stats.expected for stats in legs)
    pattern = WORKER_MEDIA if subject_name == "worker" else ECHO_MEDIA
    counts = [(int(r), int(e), int(s)) for r, e, s in pattern.findall(subject.log_text())]
    subject_received, subject_expected = sum(c[0] for c in counts), sum(c[1] for c in counts)
    subject_sent = sum(c[2] for c in counts)
    # Loss from sequence numbers (RFC 3550): packets missing between the first and the last that arrived.
    # Packets a caller sent before the subject's leg joined its bridge never entered the stream: not loss.
    inbound = 1 - subject_received / subject_expected if subject_expected else None
    outbound = 1 - callers_received / callers_expected if callers_expected else None
    errors = [f"call {i}: {e}" for i, (_, e) in enumerate(done) if e]
    passed = (not errors and not left and inbound is not None and inbound <= LOSS_LIMIT
              and (outbound is None or outbound <= LOSS_LIMIT))
    return {
        "subject": subject_name, "calls": calls, "answered": sum(c is not None and c.answered_at is not None
                                                                 for c, _ in done),
        "callers_sent": callers_sent, "subject_expected": subject_expected, "subject_received": subject_received,
        "subject_sent": subject_sent, "callers_expected": callers_expected, "callers_received": callers_received,
        "loss_in_percent": round(100 * inbound, 3) if inbound is not None else None,
        "loss_out_percent": round(100 * outbound, 3) if outbound is not None else None,
        "subject_cpu_s": round(cpu, 2), "elapsed_s": round(elapsed, 1), "errors": errors[:10],
        "leftovers": left, "passed": passed,
    }


async def run_all(bed: TestBed, results: Path, subjects: list[str], levels: list[int], hold_s: float,
                  ramp_s: float) -> list[dict[str, Any]]:
    voice = await caller_voice()
    speech = [await voice.prompt(introduction_line(caller_name(i), caller_number(i))) for i in range(4)]
    voice.close()
    pause = np.zeros(SAMPLE_RATE, dtype=np.int16)
    parts = [np.zeros(8 * SAMPLE_RATE, dtype=np.int16)]
    while sum(len(p) for p in parts) < hold_s * SAMPLE_RATE:
        parts += [speech[len(parts) % len(speech)], pause]
    audio = np.concatenate(parts)[: int(hold_s * SAMPLE_RATE)]
    rows = []
    for calls in levels:
        for subject in subjects:
            row = await run_level(bed, results, subject, calls, audio, ramp_s)
            print(json.dumps(row), flush=True)
            rows.append(row)
    return rows


def most_carried(rows: list[dict[str, Any]], subject: str) -> int:
    return max((r["calls"] for r in rows if r["subject"] == subject and r["passed"]), default=0)


def markdown_section(report: dict[str, Any]) -> str:
    m = report["machine"]
    rows = report["levels"]
    echo, worker = most_carried(rows, "echo"), most_carried(rows, "worker")
    ratio = f"{worker / echo:.2f}" if echo else "-"
    lines = [
        BEGIN, f"## {SECTION_TITLE}", "",
        "Written by `bench/media_bench.py` (its docstring has the method); rerun it to refresh this section.", "",
        f"- Date: {report['date']}; commit {report['commit']}; {report['total_s']} s in all",
        f"- Machine: {m['nproc']} CPUs ({m['cpu_model']}), {m['memory_gib']} GiB, Linux {m['kernel']}, Python "
        f"{m['python']}; the subject, both Asterisk instances and the callers share these CPUs",
        f"- Asterisk: {report['asterisk']} (private test bed, slot {report['slot']})",
        f"- Command: `{report['command']}`; {report['hold_s']} s of audio per caller, {report['ramp_s']} s ramp",
        "",
        "| calls | subject | answered | loss caller→subject % | loss subject→caller % | subject CPU-s | passed |",
        "|---|---|---|---|---|---|---|",
    ]
    for r in rows:
        lines.append(f"| {r['calls']} | {r['subject']} | {r['answered']} | {r['loss_in_percent']} | "
                     f"{r['loss_out_percent']} | {r['subject_cpu_s']} | {'yes' if r['passed'] else 'no'} |")
    lines += ["", f"Most calls carried without loss (≤ {LOSS_LIMIT * 100:g} % each way): echo {echo}, worker "
              f"{worker}; ratio {ratio} (target at least 0.9, DESIGN.md). Levels are coarse: the ratio is a "
              "bound at this step size.", END, ""]
    return "\n".join(lines)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--json", default="bench/results/media.json")
    parser.add_argument("--markdown", default=None)
    parser.add_argument("--levels", default=",".join(map(str, LEVELS)))
    parser.add_argument("--subjects", default=",".join(SUBJECTS))
    parser.add_argument("--hold", type=float, default=20.0)
    parser.add_argument("--ramp", type=float, default=5.0)
    args = parser.parse_args(argv)
    levels = [int(x) for x in args.levels.split(",") if x]
    subjects = [s for s in args.subjects.split(",") if s]
    if not levels or any(n < 1 for n in levels) or any(s not in SUBJECTS for s in subjects) or args.hold < 10:
        parser.error(f"levels at least 1, subjects among {', '.join(SUBJECTS)}, hold at least 10 s")
    json_path = Path(args.json).resolve()
    command = shlex.join([".venv/bin/python", "bench/media_bench.py", *(argv if argv is not None else sys.argv[1:])])
    os.chdir(REPO)
    logging.basicConfig(level=logging.WARNING, format="%(levelname)s %(name)s: %(message)s")
    json_path.parent.mkdir(parents=True, exist_ok=True)
    began = time.monotonic()
    started = start_bed()
    if started is None:
        return 1
    home, slot, bed = started
    try:
        rows = asyncio.run(run_all(bed, json_path.parent, subjects, levels, args.hold, args.ramp))
    finally:
        bed.stop()
    report = {
        "benchmark": "media path capacity", "date": dt.datetime.now(dt.UTC).strftime("%Y-%m-%d %H:%M UTC"),
        "machine": machine(), "asterisk": asterisk_version(home), "slot": slot, "commit": git_commit(),
        "command": command, "hold_s": args.hold, "ramp_s": args.ramp,
        "total_s": round(time.monotonic() - began, 1), "levels": rows,
    }
    json_path.write_text(json.dumps(report, indent=2))
    if args.markdown:
        update_markdown(Path(args.markdown).resolve(), markdown_section(report), BEGIN, END)
    print(f"wrote {json_path}; most carried: echo {most_carried(rows, 'echo')}, worker "
          f"{most_carried(rows, 'worker')}", flush=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())
