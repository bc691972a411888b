"""``asterisk-agent demo``: the private pbx and carrier, the worker, and N simultaneous real SIP calls.

Each simulated caller dials in, waits to be answered, keys its own digits, and checks that exactly its own
digits come back to it (as DTMF, by content). Prints a table and a summary, writes JSON, exits non-zero on
any failure.
"""

from __future__ import annotations

import asyncio
import json
import logging
import statistics
import sys
import time
from dataclasses import asdict, dataclass
from pathlib import Path

from asterisk_agent.ari.client import AriClient
from asterisk_agent.config import AccountConfig, AriConfig, Settings, TimersConfig
from asterisk_agent.pbx.audit import audit
from asterisk_agent.pbx.carrier.callers import Carrier, SimulatedCaller
from asterisk_agent.pbx.instances import TestBed
from asterisk_agent.pbx.root import PbxError, asterisk_version, build_root, default_home
from asterisk_agent.worker import Worker

DEMO_DID = "100"


@dataclass
class CallResult:
    call: int
    did: str
    digits_sent: str
    digits_heard: str
    answered: bool
    verified: bool
    setup_ms: float | None
    session_id: str | None
    error: str | None = None


def unique_digits(index: int) -> str:
    """Digits no other caller of the run sends: the call number, then a check digit."""
    body = f"{index + 1:03d}"
    return body + str(sum(int(d) for d in body) * 7 % 10)


async def _one_call(carrier: Carrier, worker: Worker, index: int) -> CallResult:
    digits = unique_digits(index)
    result = CallResult(index + 1, DEMO_DID, digits, "", False, False, None, None)
    caller: SimulatedCaller | None = None
    try:
        caller = await carrier.call(DEMO_DID, caller_number=f"1555{index:04d}")
        await caller.wait_answered(timeout_s=15)
        result.answered = True
        result.setup_ms = caller.setup_ms
        await caller.send_digits(digits + "#")
        result.digits_heard = await caller.wait_digits(len(digits), timeout_s=20)
        result.verified = result.digits_heard == digits
        if not result.verified:
            result.error = f"heard {result.digits_heard!r}, sent {digits!r}"
    except Exception as exc:  # one failed call must not stop the others
        result.error = f"{type(exc).__name__}: {exc}"
    finally:
        if caller is not None:
            session = next(
                (s for s in [*worker.manager.sessions.values(), *worker.manager.finished] if digits in s.readbacks),
                None,
            )
            result.session_id = session.id if session else None
            await caller.hangup()
    return result


async def _demo(bed: TestBed, calls: int) -> tuple[list[CallResult], list[str], float]:
    creds = bed.pbx.credentials
    settings = Settings(
        instance_id="demo",
        ari=AriConfig(url=bed.pbx.ari_url, username=creds.ari_user, password=creds.ari_password),
        timers=TimersConfig(call_max_ms=120_000, digit_timeout_ms=3000),
        accounts={"demo": AccountConfig(numbers=[DEMO_DID], greeting="hello-world")},
    )
    worker = Worker(settings)
    await worker.start()
    await worker.wait_connected()
    carrier_creds = bed.carrier.credentials
    async with AriClient(bed.carrier.ari_url, carrier_creds.ari_user, carrier_creds.ari_password) as carrier_ari:
        carrier = Carrier(carrier_ari)
        await carrier.start()
        started = time.monotonic()
        try:
            results = await asyncio.gather(*(_one_call(carrier, worker, i) for i in range(calls)))
        finally:
            elapsed = time.monotonic() - started
            await carrier.stop()
            await worker.stop(send_callers_on=False)
        pbx_ari = AriClient(bed.pbx.ari_url, creds.ari_user, creds.ari_password)
        async with pbx_ari:
            leaks = await audit(pbx_ari, carrier_ari)
    return list(results), leaks, elapsed


def run_demo(*, calls: int, json_path: str, dialplan: Path) -> int:
    logging.basicConfig(level=logging.WARNING, format="%(levelname)s %(name)s: %(message)s")
    home = default_home()
    try:
        build_root(home)
        bed = TestBed.create(home, dialplan)
        bed.start()
    except PbxError as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 1
    try:
        results, leaks, elapsed = asyncio.run(_demo(bed, calls))
    finally:
        bed.stop()
    version = asterisk_version(home)
    print(f"asterisk-agent demo: {calls} simultaneous calls into {version}")
    print(f"{'call':>4}  {'did':>4}  {'sent':>6}  {'heard':>6}  {'setup ms':>8}  {'session':<12}  result")
    for r in results:
        status = "ok" if r.verified else f"FAILED: {r.error}"
        setup = f"{r.setup_ms:8.1f}" if r.setup_ms is not None else "       -"
        print(f"{r.call:>4}  {r.did:>4}  {r.digits_sent:>6}  {r.digits_heard:>6}  {setup}  "
              f"{(r.session_id or '-')[:12]:<12}  {status}")
    answered = sum(r.answered for r in results)
    verified = sum(r.verified for r in results)
    setups = sorted(r.setup_ms for r in results if r.setup_ms is not None)
    distinct_sessions = len({r.session_id for r in results if r.session_id})
    errors = [f"call {r.call}: {r.error}" for r in results if r.error]
    errors += [f"leak: {leak}" for leak in leaks]
    if distinct_sessions != verified:
        errors.append(f"{verified} verified calls but {distinct_sessions} distinct sessions")
    summary = {
        "asterisk": version,
        "calls": calls,
        "answered": answered,
        "verified": verified,
        "errors": errors,
        "elapsed_s": round(elapsed, 2),
        "setup_ms_p50": round(statistics.median(setups), 2) if setups else None,
        "setup_ms_max": setups[-1] if setups else None,
        "per_call": [asdict(r) for r in results],
    }
    Path(json_path).write_text(json.dumps(summary, indent=2))
    print(f"answered {answered}/{calls}, verified {verified}/{calls}, sessions {distinct_sessions}, "
          f"setup p50 {summary['setup_ms_p50']} ms, leaks {len(leaks)}, {elapsed:.1f} s; wrote {json_path}")
    for error in errors:
        print(f"error: {error}", file=sys.stderr)
    return 0 if not errors and verified == calls else 1
