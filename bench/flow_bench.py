"""Benchmark: how long a caller waits for an answer that needs a backend, when the backend answers at once,
slowly, or fails and the cached answer is served.

Method. The private test bed (slot $ASTERISK_AGENT_PBX_SLOT, 1 when unset), the reference backends and a worker
in this process with the shipped bank flow. Each call is real: the caller dials, keys its account number and PIN
(the identity check always works), then says "My balance, please." at the menu. Before it speaks, the bank is
put in the condition measured:

- live: no fault;
- slow: every answer delayed by ``--slow-ms`` (the agent says its hold message after 0.7 s);
- outage: 503 with Retry-After 1 s (the client retries as configured, then serves the cached balance and the
  agent says it is the latest information);
- down: the bank stops listening (connections refused; retries, then the cache).

The first live call fills the cache. For each call: from the caller's last voiced frame to the first reply
frame it hears (voice to voice, what the caller experiences), and, from the worker's transcript, from the end of
the caller's turn to the start of the agent's first words and to the balance sentence itself.
"""

from __future__ import annotations

import argparse
import asyncio
import datetime as dt
import json
import logging
import os
import shlex
import sys
import time
from pathlib import Path
from typing import Any

from setup_bench import REPO, git_commit, machine, percentile, start_bed, update_markdown

from asterisk_agent.ari.client import AriClient
from asterisk_agent.backends.bank import SEED_ACCOUNTS
from asterisk_agent.backends.runner import ReferenceBackends
from asterisk_agent.config import AccountConfig, AriConfig, MediaConfig, Settings
from asterisk_agent.integrations.settings import EndpointSettings
from asterisk_agent.media.frames import FRAME_MS
from asterisk_agent.media.leg import MediaContext
from asterisk_agent.media.pacer import PacingClock
from asterisk_agent.media.transport import PortPool
from asterisk_agent.pbx.carrier.callers import Carrier, caller_voice
from asterisk_agent.pbx.instances import TestBed
from asterisk_agent.pbx.root import asterisk_version
from asterisk_agent.worker import Worker

BEGIN = "<!-- bench:flow_bench.py:begin -->"
END = "<!-- bench:flow_bench.py:end -->"
CONDITIONS = ("live", "slow", "outage", "down")
BANK_DID = "202"
QUIET_MS = 1500


def settings(bed: TestBed, backends: ReferenceBackends) -> Settings:
    creds = bed.pbx.credentials
    return Settings(
        instance_id="fb",
        ari=AriConfig(url=bed.pbx.ari_url, username=creds.ari_user, password=creds.ari_password),
        media=MediaConfig(enabled=True, port_min=47000, port_max=47199),
        accounts={"bank": AccountConfig(numbers=[BANK_DID], flow="bank")},
        integrations={"banking": EndpointSettings(base_url=backends.urls["bank"])},
    )


async def apply(condition: str, backends: ReferenceBackends, slow_ms: int) -> None:
    if condition == "slow":
        backends.bank.faults.apply({"mode": "slow", "slow_ms": slow_ms})
    elif condition == "outage":
        backends.bank.faults.apply({"mode": "503", "retry_after_s": 1})
    elif condition == "down":
        await backends.stop_listening("bank")


async def restore(condition: str, backends: ReferenceBackends) -> None:
    backends.bank.faults.clear()
    if condition == "down":
        await backends.start_listening("bank")


async def one_call(carrier: Carrier, media: MediaContext, worker: Worker, backends: ReferenceBackends,
                   line: Any, condition: str, index: int, slow_ms: int) -> dict[str, Any]:
    account = SEED_ACCOUNTS[0]
    caller = await carrier.call(BANK_DID, caller_number=f"1555800{index:02d}")
    try:
        await caller.wait_answered()
        await caller.attach_media(carrier, media)
        _, last = await caller.wait_reply(0, quiet_ms=QUIET_MS, timeout_s=60)
        await caller.send_digits(account.number)
        _, last = await caller.wait_reply(last + 1, quiet_ms=QUIET_MS, timeout_s=60)
        await caller.send_digits(account.pin)
        _, last = await caller.wait_reply(last + 1, quiet_ms=QUIET_MS, timeout_s=60)
        await apply(condition, backends, slow_ms)
        _, said_last = await caller.speak(line)
        reply_first, _ = await caller.wait_reply(said_last + 1, quiet_ms=QUIET_MS, timeout_s=60)
        session = next(s for s in [*worker.manager.sessions.values(), *worker.manager.finished]
                       if s.caller.caller_number == caller.caller_number)
        turns = session.transcript
        heard = max(i for i, t in enumerate(turns) if t.speaker == "caller")
        after = [t for t in turns[heard + 1:] if t.speaker == "agent"]
        end_ms = turns[heard].end_ms or 0
        balance = next((t for t in after if t.text.startswith("Your balance")), None)
        return {
            "condition": condition,
            "voice_to_voice_ms": (reply_first - said_last) * FRAME_MS,
            "first_words_ms": after[0].start_ms - end_ms if after else None,
            "answer_ms": balance.start_ms - end_ms if balance else None,
            "said": [t.text for t in after],
            "cached": any("latest information" in t.text for t in after),
        }
    finally:
        await restore(condition, backends)
        await caller.hangup()


async def run_all(bed: TestBed, calls: int, slow_ms: int) -> list[dict[str, Any]]:
    rows: list[dict[str, Any]] = []
    async with ReferenceBackends() as backends:
        worker = Worker(settings(bed, backends))
        await worker.start()
        await worker.wait_connected()
        voice = await caller_voice()
        clock = PacingClock()
        clock.start()
        media = MediaContext(pool=PortPool("127.0.0.1", 46000, 46199), clock=clock, app="carrier",
                             advertised_address="127.0.0.1")
        creds = bed.carrier.credentials
        try:
            line = await voice.prompt("My balance, please.")
            async with AriClient(bed.carrier.ari_url, creds.ari_user, creds.ari_password) as carrier_ari:
                carrier = Carrier(carrier_ari)
                await carrier.start()
                try:
                    index = 0
                    for condition in CONDITIONS:
                        for _ in range(calls):
                            row = await one_call(carrier, media, worker, backends, line, condition, index, slow_ms)
                            index += 1
                            rows.append(row)
                            print(json.dumps(row), flush=True)
                            await worker.manager.wait_idle(timeout_s=30)
                finally:
                    await carrier.stop()
        finally:
            await worker.stop(send_callers_on=False)
            await clock.stop()
            voice.close()
    return rows


def summarize(rows: list[dict[str, Any]]) -> list[dict[str, Any]]:
    table = []
    for condition in CONDITIONS:
        mine = [r for r in rows if r["condition"] == condition]

        def p(key: str, q: float, of: list[dict[str, Any]] = mine) -> float | None:
            return percentile([r[key] for r in of if r[key] is not None], q)

        table.append({"condition": condition, "calls": len(mine),
                      "voice_to_voice_ms_p50": p("voice_to_voice_ms", 0.5),
                      "voice_to_voice_ms_max": p("voice_to_voice_ms", 1.0),
                      "first_words_ms_p50": p("first_words_ms", 0.5),
                      "answer_ms_p50": p("answer_ms", 0.5), "answer_ms_max": p("answer_ms", 1.0),
                      "answered": sum(r["answer_ms"] is not None for r in mine),
                      "cached": sum(r["cached"] for r in mine)})
    return table


def markdown_section(report: dict[str, Any]) -> str:
    m = report["machine"]
    lines = [
        BEGIN,
        "## Flows: waiting for a backend that is fast, slow, failing or down",
        "",
        "Written by `bench/flow_bench.py` (its docstring has the method); rerun it to refresh this section.",
        "",
        f"- Date: {report['date']}; commit {report['commit']}",
        f"- Machine: {m['nproc']} CPUs ({m['cpu_model']}), {m['memory_gib']} GiB, Python {m['python']}; the "
        "worker, both Asterisk instances, the backends and the caller share them",
        f"- Asterisk: {report['asterisk']}",
        f"- Command: `{report['command']}`; the bank flow, one call at a time; slow = {report['slow_ms']} ms",
        "",
        "| bank | calls | caller's words to first reply audio p50 / max ms | to the agent's first words p50 ms "
        "| to the balance p50 / max ms | balance told | from cache |",
        "|---|---|---|---|---|---|---|",
    ]
    for r in report["table"]:
        lines.append(f"| {r['condition']} | {r['calls']} | {r['voice_to_voice_ms_p50']} / {r['voice_to_voice_ms_max']}"
                     f" | {r['first_words_ms_p50']} | {r['answer_ms_p50']} / {r['answer_ms_max']} | "
                     f"{r['answered']}/{r['calls']} | {r['cached']}/{r['calls']} |")
    lines += ["", "The agent's first words and the balance are measured in the worker's recording tap from the end "
              "of the caller's turn (the endpoint adds its 400 ms of silence before that); voice to voice is what "
              "the caller's own recording shows.", END, ""]
    return "\n".join(lines)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--calls", type=int, default=3, help="calls per condition")
    parser.add_argument("--slow-ms", type=int, default=1500, help="the slow bank's delay")
    parser.add_argument("--json", default="bench/results/flow.json")
    parser.add_argument("--markdown", default=None, help="update this file's section (e.g. BENCHMARKS.md)")
    args = parser.parse_args(argv)
    command = shlex.join([".venv/bin/python", "bench/flow_bench.py", *(argv if argv is not None else sys.argv[1:])])
    json_path = Path(args.json).resolve()
    markdown = Path(args.markdown).resolve() if args.markdown else None
    os.chdir(REPO)
    logging.basicConfig(level=logging.ERROR, format="%(levelname)s %(name)s: %(message)s")
    started = start_bed()
    if started is None:
        return 1
    home, _, bed = started
    began = time.monotonic()
    try:
        rows = asyncio.run(run_all(bed, args.calls, args.slow_ms))
    finally:
        bed.stop()
    report = {"date": dt.datetime.now(dt.UTC).strftime("%Y-%m-%d %H:%M UTC"), "machine": machine(),
              "commit": git_commit(), "asterisk": asterisk_version(home), "command": command,
              "slow_ms": args.slow_ms, "table": summarize(rows), "rows": rows,
              "elapsed_s": round(time.monotonic() - began, 1)}
    json_path.parent.mkdir(parents=True, exist_ok=True)
    json_path.write_text(json.dumps(report, indent=2))
    section = markdown_section(report)
    print(section)
    if markdown is not None:
        update_markdown(markdown, section, BEGIN, END)
    return 0


if __name__ == "__main__":
    sys.exit(main())
