"""Conversation benchmark: staged simultaneous spoken calls through the real worker process.

The worker runs as its own process (``python -m asterisk_agent run --config FILE``, media on, whisper
recognition, piper replies) on the private test bed's pbx; this process drives the carrier's simulated callers.
Before the stages, recognition accuracy is measured offline on the project's phone-path set (every caller line
of the run, piper pitched up, through 8 kHz mu-law) with the same recognition service the worker uses.

For each stage N (1, 10, 30, 60 by default) the N callers dial within ``--ramp`` seconds and hold a
conversation for ``--hold`` seconds: listen to the greeting, then, in turn, say their own name and number,
listen to the answer until 800 ms of silence, pause 0.3-1.5 s, and say it again (about 40 % of the time
talking). Measured during the stage: voice-to-voice latency on each caller's clock (its last voiced 20 ms frame
to the first voiced frame of the answer it hears, through both Asterisks); from the worker's log, the endpoint
wait, recognition time and first reply audio after the endpoint decision, and the pacing clock's interval
deviation; the worker's CPU time and peak RSS; this process's own CPU (the callers) separately. After the stage
(outside the measured window) every answer each caller heard is transcribed and checked: its own name and
number, and no other caller's. Both instances must hold no channel or bridge afterwards.

Slot ``$ASTERISK_AGENT_PBX_SLOT`` (1 when unset) keeps a test run on slot 0 undisturbed. Results: JSON, and a
section of BENCHMARKS.md between markers (other sections kept).
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import datetime as dt
import json
import logging
import os
import random
import re
import shlex
import subprocess
import sys
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from setup_bench import (
    RssSampler,
    Subject,
    clear,
    cpu_seconds,
    drain,
    git_commit,
    machine,
    own_seconds,
    percentile,
    rss_kb,
    start_bed,
    update_markdown,
)

from asterisk_agent.ari.client import AriClient
from asterisk_agent.config import DEFAULT_NAMES, SttSettings
from asterisk_agent.demo import caller_name, caller_number, heard_own, introduction_line
from asterisk_agent.media.codecs import ulaw_decode, ulaw_encode
from asterisk_agent.media.frames import FRAME_MS, FRAME_SAMPLES
from asterisk_agent.media.leg import MediaContext, Samples
from asterisk_agent.media.pacer import PacingClock
from asterisk_agent.media.transport import PortPool
from asterisk_agent.pbx.carrier.callers import Carrier, SimulatedCaller, caller_voice
from asterisk_agent.pbx.instances import TestBed
from asterisk_agent.pbx.root import asterisk_version
from asterisk_agent.speech.recognition import make_recognition
from asterisk_agent.speech.stt.grammars import GrammarSpec, digits_in, spoken_digits, words_of
from asterisk_agent.speech.stt.metrics import word_error_rate
from asterisk_agent.speech.stt.whisper_engine import WhisperBatcher, WhisperOptions

REPO = Path(__file__).resolve().parent.parent
APP = "asterisk-agent"
DID = "100"
STAGES = (1, 10, 30, 60)
SECTION_TITLE = "Conversations: voice-to-voice latency, cost per call, recognition accuracy"
BEGIN = "<!-- bench:conversation_bench.py:begin -->"
END = "<!-- bench:conversation_bench.py:end -->"
TARGET_P50_MS, TARGET_P95_MS, TARGET_REPLY_P95_MS = 700, 900, 250
CALLER_PORTS = (50000, 51999)
WORKER_PORTS = (52000, 53999)
HINT = "My name is " + ", ".join(DEFAULT_NAMES) + "."
TURN_LINE = re.compile(r"turn: endpoint (\d+) ms after the last speech, recognised ([\d.]+|None) ms and first reply "
                       r"audio ([\d.]+|None) ms")
PACING_LINE = re.compile(r"pacing since the last idle moment: (\d+) intervals, deviation p50 ([\d.]+|None) ms "
                         r"p99 ([\d.]+|None) ms max ([\d.]+|None) ms, (\d+) stalls")

log = logging.getLogger("conversation_bench")


def worker_config(bed: TestBed, path: Path, pause_ms: int | None = None) -> Path:
    creds = bed.pbx.credentials
    path.write_text(
        "# written by bench/conversation_bench.py: the worker with speech on the private test bed's pbx\n"
        "instance_id: bench\n"
        "ari:\n"
        f"  url: {bed.pbx.ari_url}\n"
        f"  username: {creds.ari_user}\n"
        f"  password: {creds.ari_password}\n"
        f"  app: {APP}\n"
        "media:\n"
        "  enabled: true\n"
        f"  port_min: {WORKER_PORTS[0]}\n"
        f"  port_max: {WORKER_PORTS[1]}\n"
        + (f"speech:\n  endpointer:\n    pause_ms: {pause_ms}\n" if pause_ms is not None else "")
        + "timers:\n"
        "  call_max_ms: 600000\n"
        "accounts:\n"
        "  bench:\n"
        '    numbers: ["_X."]\n'
        "log_level: INFO\n"
    )
    return path


def start_worker(bed: TestBed, results: Path, pause_ms: int | None = None) -> Subject:
    env = {k: v for k, v in os.environ.items() if not k.startswith("ASTERISK_AGENT_")}
    env["PYTHONUNBUFFERED"] = "1"
    config = worker_config(bed, results / "conversation-worker.yaml", pause_ms)
    log_path = results / "conversation-worker.log"
    with log_path.open("wb") as out:
        process = subprocess.Popen([sys.executable, "-m", "asterisk_agent", "run", "--config", str(config)],
                                   stdout=out, stderr=subprocess.STDOUT, stdin=subprocess.DEVNULL, env=env, cwd=REPO)
    return Subject("worker", process, log_path, f"ARI events connected for app {APP}")


# --- recognition accuracy on the phone-path set -----------------------------------------------------------------


def _spoken(text: str) -> list[str]:
    return spoken_digits(words_of(text))


async def phone_path_accuracy(lines: dict[int, Samples], count: int, cache_dir: str) -> dict[str, Any]:
    """Word error rate and introductions read right, with the worker's own recognition service and grammar."""
    service = make_recognition(SttSettings.model_validate({"whisper": {"cache_dir": cache_dir}}))
    await service.start()
    grammar = GrammarSpec("introduction", (tuple(DEFAULT_NAMES), 4))
    built = grammar.build()
    references, hypotheses, right, cpu = [], [], 0, 0.0
    try:
        for index in range(count):
            audio = ulaw_decode(ulaw_encode(lines[index]))
            before = own_seconds()
            result = await service.recognize(f"set-{index}", audio, grammar)
            cpu += own_seconds() - before
            references.append(" ".join(_spoken(introduction_line(caller_name(index), caller_number(index)))))
            hypotheses.append(" ".join(_spoken(result.text)))
            value = built.normalize(result.text)
            right += value is not None and (value.name, value.number) == (caller_name(index), caller_number(index))
    finally:
        await service.close()
    return {"utterances": count, "wer_percent": round(100 * word_error_rate(references, hypotheses), 2),
            "introductions_right": right, "cpu_s_per_utterance": round(cpu / count, 3)}


# --- one stage ---------------------------------------------------------------------------------------------------


@dataclass
class CallerRecord:
    index: int
    answered: bool = False
    turns: list[tuple[int, int, int]] = field(default_factory=list)  # (said_last, reply_first, reply_last) frames
    error: str | None = None
    caller: SimulatedCaller | None = None


async def converse_for(carrier: Carrier, media: MediaContext, line: Samples, index: int, *, start_s: float,
                       hold_s: float, seed: int) -> CallerRecord:
    record = CallerRecord(index)
    rng = random.Random(seed)
    await asyncio.sleep(start_s)  # the ramp: arrivals spread over the first seconds
    try:
        caller = record.caller = await carrier.call(DID, caller_number=f"1666{index:04d}")
        await caller.wait_answered(timeout_s=30)
        record.answered = True
        await caller.attach_media(carrier, media)
        await caller.wait_reply(0, quiet_ms=1000, timeout_s=60)
        ends = time.monotonic() + hold_s
        while time.monotonic() < ends:
            _, said_last = await caller.speak(line)
            reply_first, reply_last = await caller.wait_reply(said_last + 1, quiet_ms=800, timeout_s=60)
            record.turns.append((said_last, reply_first, reply_last))
            await asyncio.sleep(rng.uniform(0.3, 1.5))  # the caller's own pause before it speaks again
    except Exception as exc:
        record.error = f"{type(exc).__name__}: {exc}"
    finally:
        if record.caller is not None:
            await record.caller.hangup()
    return record


async def run_stage(bed: TestBed, worker: Subject, carrier: Carrier, media: MediaContext, ears: WhisperBatcher,
                    lines: dict[int, Samples], calls: int, *, hold_s: float, ramp_s: float) -> dict[str, Any]:
    creds, ccreds = bed.pbx.credentials, bed.carrier.credentials
    log_offset = len(worker.log_text())
    sampler = RssSampler(worker.pid, interval_s=0.2)
    rss_before = rss_kb(worker.pid)
    sampler.start()
    cpu_before, own_before, began = cpu_seconds(worker.pid), own_seconds(), time.monotonic()
    records = await asyncio.gather(*(
        converse_for(carrier, media, lines[i], i, start_s=ramp_s * i / max(1, calls), hold_s=hold_s, seed=i)
        for i in range(calls)
    ))
    elapsed = time.monotonic() - began
    cpu_worker, cpu_callers = cpu_seconds(worker.pid) - cpu_before, own_seconds() - own_before
    rss_peak = await sampler.stop()
    async with AriClient(bed.pbx.ari_url, creds.ari_user, creds.ari_password) as pbx, \
            AriClient(bed.carrier.ari_url, ccreds.ari_user, ccreds.ari_password) as carrier_ari:
        left, _ = await drain(pbx, carrier_ari, timeout_s=20)
        if left:
            await clear(pbx, carrier_ari)
    # Outside the measured window: what each caller heard, by content.
    checked = wrong = other = 0
    numbers = {caller_number(i) for i in range(calls)}
    for record in records:
        if record.caller is None:
            continue
        heard = record.caller.heard()
        for _, first, last in record.turns:
            text = (await ears.transcribe_8k(heard[first * FRAME_SAMPLES:(last + 1) * FRAME_SAMPLES], HINT)).text
            checked += 1
            own_name, own_number = caller_name(record.index), caller_number(record.index)
            wrong += not heard_own(text, own_name, own_number, sorted(numbers))
            other += any(n != own_number and n in digits_in(text) for n in numbers)
    await asyncio.sleep(0.5)  # the worker logs its pacing window when its last session ends
    new_log = worker.log_text()[log_offset:]
    turns = [(int(a), float(b) if b != "None" else None, float(c) if c != "None" else None)
             for a, b, c in TURN_LINE.findall(new_log)]
    pacing = PACING_LINE.findall(new_log)
    v2v = [float((first - said) * FRAME_MS) for r in records for said, first, _ in r.turns]
    call_seconds = sum(min(hold_s, elapsed) for r in records if r.answered)
    reply = [t[2] for t in turns if t[2] is not None]
    return {
        "calls": calls,
        "answered": sum(r.answered for r in records),
        "errors": [f"call {r.index}: {r.error}" for r in records if r.error],
        "turns": len(v2v),
        "voice_to_voice_ms_p50": percentile(v2v, 0.5),
        "voice_to_voice_ms_p95": percentile(v2v, 0.95),
        "endpoint_ms_p50": percentile([float(t[0]) for t in turns], 0.5),
        "recognize_ms_p50": percentile([t[1] for t in turns if t[1] is not None], 0.5),
        "reply_ms_p50": percentile(reply, 0.5),
        "reply_ms_p95": percentile(reply, 0.95),
        "answers_checked": checked,
        "answers_wrong": wrong,
        "answers_with_another_callers_number": other,
        "worker_cpu_s": round(cpu_worker, 2),
        "worker_cpu_s_per_call_second": round(cpu_worker / call_seconds, 4) if call_seconds else None,
        "callers_cpu_s": round(cpu_callers, 2),
        "worker_rss_mb_before": round(rss_before / 1024, 1),
        "worker_rss_mb_peak": round(rss_peak / 1024, 1),
        "worker_rss_mb_per_call": round((rss_peak - rss_before) / 1024 / calls, 2),
        "pacing": [{"intervals": int(n), "p50_ms": p50, "p99_ms": p99, "max_ms": mx, "stalls": int(st)}
                   for n, p50, p99, mx, st in pacing],
        "leftovers": left,
        "elapsed_s": round(elapsed, 1),
    }


async def run_all(bed: TestBed, results: Path, stages: list[int], hold_s: float, ramp_s: float,
                  cache_dir: str, pause_ms: int | None = None) -> tuple[dict[str, Any], list[dict[str, Any]]]:
    voice = await caller_voice(workers=2)
    count = max(stages)
    lines = {i: await voice.prompt(introduction_line(caller_name(i), caller_number(i))) for i in range(count)}
    voice.close()
    accuracy = await phone_path_accuracy(lines, min(count, 60), cache_dir)
    print(f"phone-path set: {accuracy}", flush=True)
    worker = start_worker(bed, results, pause_ms)
    ears = WhisperBatcher(WhisperOptions(cache_dir=cache_dir, cpu_threads=2))
    clock = PacingClock()
    rows = []
    try:
        await worker.wait_ready(timeout_s=60)
        await ears.start()
        clock.start()
        media = MediaContext(pool=PortPool("127.0.0.1", *CALLER_PORTS), clock=clock, app="carrier",
                             advertised_address="127.0.0.1")
        ccreds = bed.carrier.credentials
        async with AriClient(bed.carrier.ari_url, ccreds.ari_user, ccreds.ari_password) as carrier_ari:
            carrier = Carrier(carrier_ari)
            await carrier.start()
            try:
                for calls in stages:
                    row = await run_stage(bed, worker, carrier, media, ears, lines, calls, hold_s=hold_s,
                                          ramp_s=ramp_s)
                    print(json.dumps({k: v for k, v in row.items() if k != "errors"}), flush=True)
                    rows.append(row)
            finally:
                await carrier.stop()
    finally:
        await clock.stop()
        await ears.close()
        await worker.stop()
    return accuracy, rows


# --- report ------------------------------------------------------------------------------------------------------


def _f(value: object) -> str:
    return "-" if value is None else str(value)


def markdown_section(report: dict[str, Any]) -> str:
    m = report["machine"]
    acc = report["phone_path_set"]
    within = [r["calls"] for r in report["stages"] if r["voice_to_voice_ms_p50"] is not None
              and r["voice_to_voice_ms_p50"] <= TARGET_P50_MS and (r["voice_to_voice_ms_p95"] or 1e9) <= TARGET_P95_MS]
    lines = [
        BEGIN,
        f"## {SECTION_TITLE}",
        "",
        "Written by `bench/conversation_bench.py` (see its docstring for the method); rerun it to refresh this "
        "section.",
        "",
        f"- Date: {report['date']}; commit {report['commit']}; {report['total_s']} s in all",
        f"- Machine: {m['nproc']} CPUs ({m['cpu_model']}), {m['memory_gib']} GiB, Linux {m['kernel']}, Python "
        f"{m['python']}; the worker, both Asterisk instances and the simulated callers share these CPUs",
        f"- Asterisk: {report['asterisk']} (private test bed, slot {report['slot']})",
        f"- Command: `{report['command']}`; each stage's callers hold {report['hold_s']} s after a "
        f"{report['ramp_s']} s ramp; early recognition `pause_ms`: "
        f"{report['pause_ms'] if report.get('pause_ms') is not None else 'the default'}",
        "",
        f"**Recognition on the phone-path set** ({acc['utterances']} caller lines, piper pitched up, 8 kHz "
        f"mu-law, whisper base with the account's names as a hint): word error rate {acc['wer_percent']} %, "
        f"{acc['introductions_right']}/{acc['utterances']} introductions read right (name and number), "
        f"{acc['cpu_s_per_utterance']} CPU-s per utterance one at a time.",
        "",
        "| calls | answered | turns | voice-to-voice p50 / p95 ms | endpoint wait p50 ms | recognised p50 ms | "
        "first reply audio after endpoint p50 / p95 ms | answers right / checked (another's number) | worker "
        "CPU-s per call-second | worker RSS peak MB (per call) | callers CPU-s | pacing p99 / max ms (stalls) |",
        "|---|---|---|---|---|---|---|---|---|---|---|---|",
    ]
    for r in report["stages"]:
        pacing = r["pacing"][-1] if r["pacing"] else {}
        lines.append(
            f"| {r['calls']} | {r['answered']} | {r['turns']} | {_f(r['voice_to_voice_ms_p50'])} / "
            f"{_f(r['voice_to_voice_ms_p95'])} | {_f(r['endpoint_ms_p50'])} | {_f(r['recognize_ms_p50'])} | "
            f"{_f(r['reply_ms_p50'])} / {_f(r['reply_ms_p95'])} | "
            f"{r['answers_checked'] - r['answers_wrong']} / {r['answers_checked']} "
            f"({r['answers_with_another_callers_number']}) | {_f(r['worker_cpu_s_per_call_second'])} | "
            f"{r['worker_rss_mb_peak']} ({r['worker_rss_mb_per_call']}) | {r['callers_cpu_s']} | "
            f"{_f(pacing.get('p99_ms'))} / {_f(pacing.get('max_ms'))} ({_f(pacing.get('stalls'))}) |"
        )
    lines += [
        "",
        f"Targets (DESIGN.md): voice-to-voice p50 ≤ {TARGET_P50_MS} ms and p95 ≤ {TARGET_P95_MS} ms at 60 calls; "
        f"≤ {TARGET_REPLY_P95_MS} ms p95 from the endpoint decision to the first reply audio; pacing p99 within "
        "2 ms; at most 2 MB per additional call. Most calls held within the latency target in this run: "
        f"{max(within) if within else 'none of the stages'}.",
        END,
        "",
    ]
    return "\n".join(lines)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--json", default="bench/results/conversation.json")
    parser.add_argument("--markdown", default=None, help="update this file's section (e.g. BENCHMARKS.md)")
    parser.add_argument("--stages", default=",".join(map(str, STAGES)))
    parser.add_argument("--hold", type=float, default=30.0, help="seconds each stage's callers keep talking")
    parser.add_argument("--ramp", type=float, default=5.0, help="seconds over which a stage's callers dial in")
    parser.add_argument("--pause-ms", type=int, default=None,
                        help="the worker's endpointer.pause_ms (early recognition); default: the worker's default")
    args = parser.parse_args(argv)
    stages = [int(x) for x in args.stages.split(",") if x]
    if not stages or any(n < 1 for n in stages) or max(stages) > 900:
        parser.error("stages are numbers of calls, 1-900")
    json_path = Path(args.json).resolve()
    markdown = Path(args.markdown).resolve() if args.markdown else None
    command = shlex.join([".venv/bin/python", "bench/conversation_bench.py",
                          *(argv if argv is not None else sys.argv[1:])])
    os.chdir(REPO)
    logging.basicConfig(level=logging.WARNING, format="%(levelname)s %(name)s: %(message)s")
    results = json_path.parent
    results.mkdir(parents=True, exist_ok=True)
    began = time.monotonic()
    started = start_bed()
    if started is None:
        return 1
    home, slot, bed = started
    try:
        accuracy, rows = asyncio.run(run_all(bed, results, stages, args.hold, args.ramp, str(results / "stt"),
                                             args.pause_ms))
    finally:
        bed.stop()
    report: dict[str, Any] = {
        "benchmark": "conversations",
        "date": dt.datetime.now(dt.UTC).strftime("%Y-%m-%d %H:%M UTC"),
        "machine": machine(),
        "asterisk": asterisk_version(home),
        "slot": slot,
        "commit": git_commit(),
        "command": command,
        "hold_s": args.hold,
        "ramp_s": args.ramp,
        "pause_ms": args.pause_ms,
        "total_s": round(time.monotonic() - began, 1),
        "phone_path_set": accuracy,
        "stages": rows,
    }
    json_path.write_text(json.dumps(report, indent=2))
    if markdown is not None:
        update_markdown(markdown, markdown_section(report), BEGIN, END)
    failed = [r for r in rows if r["errors"] or r["leftovers"] or r["answered"] != r["calls"]]
    print(f"wrote {json_path}; {report['total_s']} s; {len(failed)} stage(s) with failures", flush=True)
    for row in failed:
        for error in row["errors"][:5] + [f"leftover: {x}" for x in row["leftovers"]]:
            print(f"error ({row['calls']} calls): {error}", file=sys.stderr)
    return 1 if failed else 0


if __name__ == "__main__":
    with contextlib.suppress(KeyboardInterrupt):
        sys.exit(main())
