"""``asterisk-agent demo``: the private pbx and carrier, the worker with speech on, and N simultaneous real SIP
calls that talk.

Every fourth simulated caller dials in, listens to the greeting, says its own name and number (piper, pitched up,
through the real phone path), and listens to the answer; every second of those talks over the greeting
(barge-in), and one that hears "sorry" says it again (at most three times). The others run the clinic, bank and
insurance flows against the reference backends (``demo_scenarios``). After the calls, each caller's audio is
transcribed and checked: its own name and number and no other caller's, or its own booking, balance or claim,
which the backend must hold. Prints a table and a summary, writes JSON, exits non-zero on any failure.
"""

from __future__ import annotations

import asyncio
import json
import logging
import statistics
import sys
import time
from collections.abc import Sequence
from dataclasses import asdict, dataclass, field
from pathlib import Path

from asterisk_agent.ari.client import AriClient
from asterisk_agent.backends.runner import ReferenceBackends
from asterisk_agent.config import DEFAULT_NAMES, AccountConfig, AriConfig, MediaConfig, Settings, TimersConfig
from asterisk_agent.demo_scenarios import DIGIT_WORDS, SCENARIO_DIDS, SCENARIOS
from asterisk_agent.integrations.settings import EndpointSettings
from asterisk_agent.media.frames import FRAME_MS, FRAME_SAMPLES
from asterisk_agent.media.leg import MediaContext, Samples
from asterisk_agent.media.pacer import PacingClock
from asterisk_agent.media.transport import PortPool
from asterisk_agent.pbx.audit import audit
from asterisk_agent.pbx.carrier.callers import Carrier, SimulatedCaller, caller_voice
from asterisk_agent.pbx.instances import TestBed
from asterisk_agent.pbx.root import PbxError, asterisk_version, build_root, default_home
from asterisk_agent.speech.stt.grammars import digits_in, pronouncing_dictionary, words_of
from asterisk_agent.speech.stt.metrics import edit_distance
from asterisk_agent.speech.stt.whisper_engine import WhisperBatcher, WhisperOptions
from asterisk_agent.speech.voice import Voice
from asterisk_agent.worker import Worker

DEMO_DID = "100"
CALLER_PORTS = (46000, 46999)
WORKER_PORTS = (47000, 47999)
MAX_TRIES = 3


def caller_name(index: int) -> str:
    return DEFAULT_NAMES[index % len(DEFAULT_NAMES)]


def caller_number(index: int) -> str:
    """A 4-digit number no other caller of the run has (index 0-9999), spread out so neighbours differ."""
    return f"{(index * 7919 + 1234) % 10000:04d}"


def introduction_line(name: str, number: str) -> str:
    return f"My name is {name}. My number is {', '.join(DIGIT_WORDS[int(d)] for d in number)}."


def _phones(word: str) -> list[tuple[str, ...]]:
    """The word's pronunciations as phone sequences, stress marks dropped ([] when the dictionary lacks it)."""
    dictionary = pronouncing_dictionary()
    if word not in dictionary:
        return []
    return [tuple(phone.rstrip("012") for phone in p.split()) for p in dictionary.pronunciations(word)]


def _sound_distance(heard: str, name: str) -> int:
    """Phones apart when the dictionary knows both words, else letters apart."""
    pairs = [edit_distance(a, b) for a in _phones(heard) for b in _phones(name)]
    return min(pairs) if pairs else edit_distance(heard, name)


def heard_name(text: str, name: str, others: Sequence[str] = DEFAULT_NAMES) -> bool:
    """Whether ``text`` names ``name``: written as such, or a word within one phone of it (one letter, for
    words the dictionary lacks) and nearer to it than to any other name of ``others``. A transcriber writes
    "Marita" for a synthetic "Maria" now and then: the check is about which caller's name was said, not how
    a transcriber spells it."""
    if name.lower() in text.lower():
        return True
    rivals = [other.lower() for other in others if other.lower() != name.lower()]
    for word in words_of(text):
        own = _sound_distance(word, name.lower())
        if own <= 1 and all(own < _sound_distance(word, rival) for rival in rivals):
            return True
    return False


def heard_number(text: str, number: str, others: Sequence[str] = ()) -> bool:
    """Whether ``text`` says ``number``: all its digits in order, or digits one slip away from it ("9-1-5-free")
    and further from every number of ``others`` (the other callers')."""
    heard = digits_in(text)
    if number in heard:
        return True
    own = edit_distance(heard, number)
    return own <= 1 and all(own < edit_distance(heard, other) for other in others if other != number)


def heard_own(text: str, name: str, number: str, numbers: Sequence[str] = ()) -> bool:
    """Own name and own number, judged against the other callers' names and ``numbers``."""
    return heard_name(text, name) and heard_number(text, number, numbers)


@dataclass
class CallResult:
    call: int
    name: str
    number: str
    answered: bool = False
    heard_text: str = ""
    heard_correctly: bool = False
    heard_other_caller: bool = False
    tries: int = 0
    barged_in: bool = False
    barge_ins: int = 0  # as the worker recorded them
    setup_ms: float | None = None
    voice_to_voice_ms: list[float] = field(default_factory=list)  # the caller's last word to the reply's first
    # The worker's side of each answer: endpoint decision to recognised, and to the first reply audio queued.
    recognize_ms: list[float] = field(default_factory=list)
    reply_ms: list[float] = field(default_factory=list)
    session_id: str | None = None
    error: str | None = None
    scenario: str | None = None  # clinic, bank or insurance: a reference flow instead of an introduction
    detail: str = ""  # for a scenario: what the backend stored for this caller
    dialog: list[str] = field(default_factory=list)  # for a scenario: the flow's turns (state: text -> decision)


def scenario_for(index: int) -> str | None:
    """Every fourth caller introduces itself; the others call the clinic, the bank and the insurer in turn."""
    return (None, "clinic", "bank", "insurance")[index % 4]


def rephrased_line(name: str, number: str) -> str:
    """What a caller says when asked again: the same facts in other words, as people do."""
    return f"This is {name}. The number is {', '.join(DIGIT_WORDS[int(d)] for d in number)}."


async def converse(caller: SimulatedCaller, lines: Sequence[Samples], ears: WhisperBatcher, hint: str, *,
                   barge_in: bool, result: CallResult) -> None:
    """The caller's side of one conversation: listen, introduce itself, listen; when it hears "sorry", say it
    again with the next of ``lines`` (the last one repeated)."""
    if barge_in:
        await caller.ear.reply_after(0, 0)  # the greeting has started: talk over it
        result.barged_in = True
    else:
        await caller.wait_reply(0, quiet_ms=1000, timeout_s=60)
    for attempt in range(MAX_TRIES):
        result.tries += 1
        _, said_last = await caller.speak(lines[min(attempt, len(lines) - 1)])
        reply_first, _ = await caller.wait_reply(said_last + 1, quiet_ms=1000, timeout_s=60)
        result.voice_to_voice_ms.append((reply_first - said_last) * FRAME_MS)
        heard = caller.heard()[(said_last + 1) * FRAME_SAMPLES:]
        result.heard_text = (await ears.transcribe_8k(heard, hint)).text
        if "sorry" not in result.heard_text.lower():
            return


async def _one_call(carrier: Carrier, media: MediaContext, ears: WhisperBatcher, hint: str, *, index: int,
                    callers: int, lines: Sequence[Samples], voice: Voice,
                    backends: ReferenceBackends) -> tuple[CallResult, SimulatedCaller | None]:
    scenario = scenario_for(index)
    result = CallResult(index + 1, caller_name(index), caller_number(index), scenario=scenario)
    if scenario is not None:
        result.name, result.number = scenario, "-"
    caller: SimulatedCaller | None = None
    try:
        did = SCENARIO_DIDS[scenario] if scenario is not None else DEMO_DID
        caller = await carrier.call(did, caller_number=f"1555{index:04d}")
        await caller.wait_answered(timeout_s=20)
        result.answered = True
        result.setup_ms = caller.setup_ms
        await caller.attach_media(carrier, media)
        if scenario is not None:
            outcome = await SCENARIOS[scenario](caller, voice, ears, backends, index // 4)
            result.tries = 1
            result.heard_text, result.detail = outcome.heard, outcome.detail
            result.voice_to_voice_ms = outcome.voice_to_voice_ms
            result.heard_correctly = outcome.verified
            return result, caller
        await converse(caller, lines, ears, hint, barge_in=index % 8 == 4, result=result)
        numbers = [caller_number(i) for i in range(callers) if scenario_for(i) is None]
        result.heard_correctly = heard_own(result.heard_text, result.name, result.number, numbers)
    except Exception as exc:  # one failed call must not stop the others
        result.error = f"{type(exc).__name__}: {exc}"
    finally:
        if caller is not None:
            await caller.hangup()
    return result, caller


def demo_settings(bed: TestBed, backends: ReferenceBackends) -> Settings:
    creds = bed.pbx.credentials
    return Settings(
        instance_id="demo",
        ari=AriConfig(url=bed.pbx.ari_url, username=creds.ari_user, password=creds.ari_password),
        media=MediaConfig(enabled=True, port_min=WORKER_PORTS[0], port_max=WORKER_PORTS[1]),
        timers=TimersConfig(call_max_ms=180_000, digit_timeout_ms=3000),
        accounts={"demo": AccountConfig(numbers=[DEMO_DID], greeting="hello-world"),
                  **{name: AccountConfig(numbers=[did], flow=name) for name, did in SCENARIO_DIDS.items()}},
        integrations={"scheduling": EndpointSettings(base_url=backends.urls["clinic"]),
                      "banking": EndpointSettings(base_url=backends.urls["bank"]),
                      "crm": EndpointSettings(base_url=backends.urls["insurance"])},
    )


async def _demo(bed: TestBed, calls: int) -> tuple[list[CallResult], list[str], float]:
    async with ReferenceBackends() as backends:
        return await _demo_with(bed, calls, backends)


async def _demo_with(bed: TestBed, calls: int, backends: ReferenceBackends) -> tuple[list[CallResult], list[str],
                                                                                  float]:
    worker = Worker(demo_settings(bed, backends))
    await worker.start()
    await worker.wait_connected()
    voice: Voice = await caller_voice(workers=2)
    ears = WhisperBatcher(WhisperOptions(cpu_threads=2))
    await ears.start()
    hint = "My name is " + ", ".join(DEFAULT_NAMES) + "."
    clock = PacingClock()
    clock.start()
    media = MediaContext(pool=PortPool("127.0.0.1", *CALLER_PORTS), clock=clock, app="carrier",
                         advertised_address="127.0.0.1")
    carrier_creds = bed.carrier.credentials
    try:
        lines = [[await voice.prompt(text(caller_name(i), caller_number(i))) for text in (introduction_line,
                                                                                        rephrased_line)]
                 if scenario_for(i) is None else [] for i in range(calls)]
        async with AriClient(bed.carrier.ari_url, carrier_creds.ari_user, carrier_creds.ari_password) as carrier_ari:
            carrier = Carrier(carrier_ari)
            await carrier.start()
            started = time.monotonic()
            try:
                done = await asyncio.gather(
                    *(_one_call(carrier, media, ears, hint, index=i, callers=calls, lines=lines[i], voice=voice,
                                backends=backends) for i in range(calls))
                )
            finally:
                elapsed = time.monotonic() - started
                await carrier.stop()
                await worker.manager.wait_idle(timeout_s=30)
                sessions = {s.caller.caller_number: s for s in worker.manager.finished}
                await worker.stop(send_callers_on=False)
            creds = bed.pbx.credentials
            async with AriClient(bed.pbx.ari_url, creds.ari_user, creds.ari_password) as pbx_ari:
                leaks = await audit(pbx_ari, carrier_ari)
    finally:
        await clock.stop()
        await ears.close()
        voice.close()
    results = [result for result, _ in done]
    numbers = {r.number for r in results if r.scenario is None}
    for result, caller in done:
        if result.scenario is None:
            others = {n for n in numbers if n != result.number and n in digits_in(result.heard_text)}
            result.heard_other_caller = bool(others)
        session = sessions.get(caller.caller_number) if caller is not None else None
        if session is not None:
            result.session_id = session.id
            result.barge_ins = len(session.barge_ins)
            answers = [turn for turn in session.transcript if turn.speaker == "agent"]
            if session.dialog is not None and session.dialog.outcome:
                result.detail += f"; outcome {session.dialog.outcome}"
            if session.dialog is not None:
                result.dialog = [f"{t.state}: {t.text} -> {t.decision} {t.value or ''}".strip()
                                 for t in session.dialog.turns]
            result.recognize_ms = [t.recognize_ms for t in answers if t.recognize_ms is not None]
            result.reply_ms = [t.reply_ms for t in answers if t.reply_ms is not None]
    return results, leaks, elapsed


def _percentile(values: list[float], q: float) -> float | None:
    if not values:
        return None
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, round(q * (len(ordered) - 1)))]


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
    print(f"asterisk-agent demo: {calls} simultaneous spoken calls into {version}")
    print(f"{'call':>4}  {'name':<9} {'number':>6}  {'tries':>5}  {'barge':>5}  {'v2v ms':>7}  {'session':<12}  "
          "heard / result")
    for r in results:
        status = "ok" if r.heard_correctly and not r.heard_other_caller else f"FAILED: {r.error or 'wrong content'}"
        v2v = f"{r.voice_to_voice_ms[-1]:7.0f}" if r.voice_to_voice_ms else "      -"
        print(f"{r.call:>4}  {r.name:<9} {r.number:>6}  {r.tries:>5}  {r.barge_ins:>5}  {v2v}  "
              f"{(r.session_id or '-')[:12]:<12}  {r.heard_text!r} {status}{' (' + r.detail + ')' if r.detail else ''}")
    answered = sum(r.answered for r in results)
    correct = sum(r.heard_correctly and not r.heard_other_caller for r in results)
    latencies = [ms for r in results for ms in r.voice_to_voice_ms]
    setups = [r.setup_ms for r in results if r.setup_ms is not None]
    distinct_sessions = len({r.session_id for r in results if r.session_id})
    errors = [f"call {r.call}: {r.error}" for r in results if r.error]
    errors += [f"call {r.call}: heard another caller's number" for r in results if r.heard_other_caller]
    errors += [f"call {r.call}: did not hear its own name and number" for r in results
               if not r.error and not r.heard_correctly and r.scenario is None]
    errors += [f"call {r.call}: {r.scenario} not verified: {r.detail}" for r in results
               if not r.error and not r.heard_correctly and r.scenario is not None]
    errors += [f"leak: {leak}" for leak in leaks]
    if distinct_sessions != answered:
        errors.append(f"{answered} answered calls but {distinct_sessions} distinct sessions")
    summary = {
        "asterisk": version,
        "calls": calls,
        "answered": answered,
        "heard_correctly": correct,
        "heard_other_caller": sum(r.heard_other_caller for r in results),
        "barge_ins": sum(r.barge_ins for r in results),
        "errors": errors,
        "elapsed_s": round(elapsed, 2),
        "setup_ms_p50": round(statistics.median(setups), 2) if setups else None,
        "voice_to_voice_ms_p50": _percentile(latencies, 0.5),
        "voice_to_voice_ms_p95": _percentile(latencies, 0.95),
        "recognize_ms_p50": _percentile([ms for r in results for ms in r.recognize_ms], 0.5),
        "reply_ms_p50": _percentile([ms for r in results for ms in r.reply_ms], 0.5),
        "reply_ms_p95": _percentile([ms for r in results for ms in r.reply_ms], 0.95),
        "per_call": [asdict(r) for r in results],
    }
    Path(json_path).write_text(json.dumps(summary, indent=2))
    print(f"answered {answered}/{calls}, heard correctly {correct}/{calls}, sessions {distinct_sessions}, "
          f"barge-ins {summary['barge_ins']}, voice-to-voice p50 {summary['voice_to_voice_ms_p50']} ms "
          f"p95 {summary['voice_to_voice_ms_p95']} ms (endpoint to first reply audio p50 {summary['reply_ms_p50']} "
          f"ms), leaks {len(leaks)}, {elapsed:.1f} s; wrote {json_path}")
    for error in errors:
        print(f"error: {error}", file=sys.stderr)
    return 0 if not errors and correct == calls else 1
