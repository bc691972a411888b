"""Spoken conversations on real calls: callers speak (piper, pitched up, through the real phone path), the
worker hears them (VAD, endpointer, whisper), answers with their own name and number, and each caller checks by
transcribing what it heard. Barge-in, isolation between simultaneous callers, and bad input."""

from __future__ import annotations

import asyncio
from pathlib import Path

import pytest
from blockbuster import BlockingError, blockbuster_ctx

from asterisk_agent.calls.session import CallState, Session
from asterisk_agent.config import DEFAULT_NAMES
from asterisk_agent.demo import (
    CallResult,
    caller_name,
    caller_number,
    converse,
    heard_own,
    introduction_line,
    rephrased_line,
)
from asterisk_agent.media.frames import FRAME_SAMPLES
from asterisk_agent.media.leg import MediaContext
from asterisk_agent.pbx.carrier.callers import Carrier, SimulatedCaller
from asterisk_agent.speech.stt.grammars import Introduction, digits_in
from asterisk_agent.speech.stt.whisper_engine import WhisperBatcher
from asterisk_agent.speech.voice import Voice
from asterisk_agent.worker import Worker
from tests.support import speech_samples
from tests.support.calls import dial, session_of

pytestmark = [pytest.mark.asterisk, pytest.mark.usefixtures("leak_audit")]



async def speaking_worker(make_worker, stt_cache: Path, **speech: object) -> Worker:  # type: ignore[no-untyped-def]
    stt = {"whisper": {"cache_dir": str(stt_cache)}, **speech}
    return await make_worker(media={"enabled": True, "port_min": 45000, "port_max": 45199}, speech={"stt": stt})


async def dial_in(carrier: Carrier, worker: Worker, media: MediaContext,
                  number: str) -> tuple[SimulatedCaller, Session]:
    """A caller with its own media leg, answered, and the worker's session for it."""
    caller = await dial(carrier, media, number)
    return caller, session_of(worker, caller)


async def heard_text(ears: WhisperBatcher, caller: SimulatedCaller, first_frame: int) -> str:
    hint = "My name is " + ", ".join(DEFAULT_NAMES) + "."
    return (await ears.transcribe_8k(caller.heard()[first_frame * FRAME_SAMPLES:], hint)).text


async def test_a_caller_says_name_and_number_and_hears_both_back(
    make_worker, stt_cache: Path, carrier: Carrier, caller_media: MediaContext, voices: Voice, ears: WhisperBatcher
) -> None:
    worker = await speaking_worker(make_worker, stt_cache)
    line = await voices.prompt(introduction_line("Grace", "4271"))
    caller = await carrier.call("100", caller_number="15550001")
    await caller.wait_answered()
    await caller.attach_media(carrier, caller_media)
    greeting = await caller.wait_reply(0, quiet_ms=1000)
    _, said_last = await caller.speak(line)
    reply_first, _ = await caller.wait_reply(said_last + 1, quiet_ms=1000)
    session = session_of(worker, caller)
    text = await heard_text(ears, caller, said_last + 1)
    assert "grace" in text.lower() and "4271" in digits_in(text), text
    greeting_text = await ears.transcribe_8k(caller.heard()[: (greeting[1] + 1) * FRAME_SAMPLES])
    assert "name" in greeting_text.text.lower() and "number" in greeting_text.text.lower(), greeting_text.text
    heard_turn, reply_turn = session.transcript[-2:]
    assert heard_turn.speaker == "caller" and "grace" in heard_turn.text and heard_turn.engine == "faster-whisper"
    assert session.introduction is not None
    assert session.introduction.build().normalize(heard_turn.text) == Introduction("Grace", "4271")
    assert 0.5 < (heard_turn.confidence or 0) <= 1
    assert reply_turn.speaker == "agent" and reply_turn.text == "Thank you Grace. Your number is 4, 2, 7, 1."
    assert reply_turn.recognize_ms is not None and reply_turn.reply_ms is not None
    assert reply_turn.reply_ms >= reply_turn.recognize_ms
    # The caller's turn sits where the caller spoke, in the worker's recording tap (20 ms frames, both clocks
    # within a few frames of each other).
    assert heard_turn.end_ms is not None and reply_first > said_last
    await caller.hangup()
    await worker.manager.wait_idle()
    assert session.ledger.live() == [] and session.state is CallState.ENDED


async def test_recognition_started_at_a_pause_answers_the_same(
    make_worker, stt_cache: Path, carrier: Carrier, caller_media: MediaContext, voices: Voice, ears: WhisperBatcher
) -> None:
    worker = await make_worker(media={"enabled": True, "port_min": 45000, "port_max": 45199},
                               speech={"stt": {"whisper": {"cache_dir": str(stt_cache)}},
                                       "endpointer": {"end_ms": 400, "pause_ms": 200}})
    line = await voices.prompt(introduction_line("Laura", "8906"))
    caller, session = await dial_in(carrier, worker, caller_media, "15550007")
    await caller.wait_reply(0, quiet_ms=1000)
    _, said_last = await caller.speak(line)
    await caller.wait_reply(said_last + 1, quiet_ms=1000)
    heard_turn = [turn for turn in session.transcript if turn.speaker == "caller"][-1]
    assert heard_turn.early and "laura" in heard_turn.text
    assert session.transcript[-1].text == "Thank you Laura. Your number is 8, 9, 0, 6."
    text = await heard_text(ears, caller, said_last + 1)
    assert "laura" in text.lower() and "8906" in digits_in(text), text
    await caller.hangup()
    await worker.manager.wait_idle()


async def test_the_caller_talking_over_the_greeting_cuts_it_and_is_understood(
    make_worker, stt_cache: Path, carrier: Carrier, caller_media: MediaContext, voices: Voice, ears: WhisperBatcher
) -> None:
    worker = await speaking_worker(make_worker, stt_cache)
    line = await voices.prompt(introduction_line("Oscar", "9052"))
    caller, session = await dial_in(carrier, worker, caller_media, "15550002")
    greeting_first, _ = await caller.ear.reply_after(0, 0)  # the greeting has started
    _, said_last = await caller.speak(line)  # talks over the rest of it (it lasts about 9 s)
    await caller.wait_reply(said_last + 1, quiet_ms=1000)
    assert len(session.barge_ins) >= 1
    frame, cut = session.barge_ins[0]
    assert cut > 0 and greeting_first < frame
    replies = [turn for turn in session.transcript if turn.speaker == "agent"]
    assert replies and replies[-1].text == "Thank you Oscar. Your number is 9, 0, 5, 2."
    text = await heard_text(ears, caller, said_last + 1)
    assert "oscar" in text.lower() and "9052" in digits_in(text), text
    await caller.hangup()
    await worker.manager.wait_idle()


async def test_twenty_simultaneous_callers_each_hear_only_their_own_name_and_number(
    make_worker, stt_cache: Path, carrier: Carrier, caller_media: MediaContext, voices: Voice, ears: WhisperBatcher
) -> None:
    worker = await speaking_worker(make_worker, stt_cache)
    count = 20
    lines = [[await voices.prompt(text(caller_name(i), caller_number(i))) for text in (introduction_line,
                                                                                      rephrased_line)]
             for i in range(count)]
    hint = "My name is " + ", ".join(DEFAULT_NAMES) + "."

    async def one(index: int) -> tuple[SimulatedCaller, CallResult]:
        result = CallResult(index + 1, caller_name(index), caller_number(index))
        caller = await carrier.call("100", caller_number=f"1555020{index:02d}")
        await caller.wait_answered(timeout_s=20)
        await caller.attach_media(carrier, caller_media)
        # A caller that hears "sorry" says it again, as people do (at most three times).
        await converse(caller, lines[index], ears, hint, barge_in=index % 4 == 3, result=result)
        return caller, result

    done = await asyncio.gather(*(one(i) for i in range(count)))
    for caller, _ in done:
        await caller.hangup()
    await worker.manager.wait_idle(timeout_s=30)
    wrong = []
    for index, (caller, result) in enumerate(done):
        heard_digits = digits_in(result.heard_text)
        others = [caller_number(j) for j in range(count) if j != index and caller_number(j) in heard_digits]
        other_names = [caller_name(j) for j in range(count) if j != index
                       and caller_name(j).lower() in result.heard_text.lower()]
        numbers = [caller_number(j) for j in range(count)]
        if not heard_own(result.heard_text, result.name, result.number, numbers) or others or other_names:
            heard_by_agent = [t.text for t in session_of(worker, caller).transcript if t.speaker == "caller"]
            wrong.append((result.name, result.number, result.heard_text, heard_by_agent))
    assert wrong == [], "\n".join(map(str, wrong))
    assert len({session_of(worker, caller).id for caller, _ in done}) == count
    assert sum(len(session_of(worker, caller).barge_ins) > 0 for caller, _ in done) >= count // 4


async def test_silence_and_line_noise_start_no_turn(
    make_worker, stt_cache: Path, carrier: Carrier, caller_media: MediaContext
) -> None:
    worker = await speaking_worker(make_worker, stt_cache)
    caller, session = await dial_in(carrier, worker, caller_media, "15550003")
    leg = caller.media_leg
    assert leg is not None
    await caller.wait_reply(0, quiet_ms=600)  # the whole greeting, undisturbed
    await caller.speak(speech_samples.silence(2.0))
    await caller.speak(speech_samples.white_noise(3.0, level_dbfs=-45.0))
    assert leg.outbound.taken > 0
    assert session.utterances == [] and session.barge_ins == []
    assert [turn for turn in session.transcript if turn.speaker == "caller"] == []
    assert session.state is CallState.COLLECTING  # still listening
    await caller.hangup()
    await worker.manager.wait_idle()


async def test_a_caller_hanging_up_mid_reply_ends_the_session_cleanly(
    make_worker, stt_cache: Path, carrier: Carrier, caller_media: MediaContext, voices: Voice
) -> None:
    worker = await speaking_worker(make_worker, stt_cache)
    line = await voices.prompt(introduction_line("Nora", "3607"))
    caller, session = await dial_in(carrier, worker, caller_media, "15550004")
    await caller.wait_reply(0, quiet_ms=1000)
    _, said_last = await caller.speak(line)
    await caller.ear.reply_after(said_last + 1, 0)  # the reply has started
    await caller.hangup()
    await worker.manager.wait_idle()
    assert session.state is CallState.ENDED and session.end_reason is not None
    assert session.end_reason.value == "caller_hangup"
    assert session.ledger.live() == []
    assert worker.manager.media is not None and worker.manager.media.pool.in_use == 0


async def test_a_failing_recognition_engine_apologises_and_the_call_goes_on(
    make_worker, stt_cache: Path, carrier: Carrier, caller_media: MediaContext, voices: Voice, ears: WhisperBatcher,
    unused_tcp_port: int,
) -> None:
    # An OpenAI-compatible endpoint that is down: nothing listens on the port.
    worker = await speaking_worker(make_worker, stt_cache, engine="http",
                                   http={"base_url": f"http://127.0.0.1:{unused_tcp_port}", "timeout_ms": 1000})
    line = await voices.prompt(introduction_line("Paul", "5983"))
    caller, session = await dial_in(carrier, worker, caller_media, "15550005")
    await caller.wait_reply(0, quiet_ms=1000)
    _, said_last = await caller.speak(line)
    await caller.wait_reply(said_last + 1, quiet_ms=1000)
    heard_turn = next(turn for turn in session.transcript if turn.speaker == "caller")
    assert heard_turn.text == "" and heard_turn.error is not None and "cannot reach" in heard_turn.error
    text = await heard_text(ears, caller, said_last + 1)
    assert "sorry" in text.lower() and "again" in text.lower(), text
    assert session.state is CallState.COLLECTING  # listening again
    await caller.hangup()
    await worker.manager.wait_idle()


async def test_no_blocking_call_on_the_event_loop_during_a_spoken_call(
    make_worker, stt_cache: Path, carrier: Carrier, caller_media: MediaContext, voices: Voice,
    caplog: pytest.LogCaptureFixture,
) -> None:
    """blockbuster raises on blocking I/O (sleeps, file and socket calls on blocking descriptors) made from our
    package on the event loop's thread; errors raised in loop callbacks are logged, so the log is checked too."""
    worker = await speaking_worker(make_worker, stt_cache)
    line = await voices.prompt(introduction_line("Henry", "2718"))
    loop = asyncio.get_running_loop()
    failures: list[object] = []
    previous = loop.get_exception_handler()
    loop.set_exception_handler(lambda _loop, context: failures.append(context.get("exception")))
    try:
        with blockbuster_ctx(["asterisk_agent"], excluded_modules=["asterisk_agent.pbx"]):
            caller, session = await dial_in(carrier, worker, caller_media, "15550006")
            await caller.wait_reply(0, quiet_ms=1000)
            _, said_last = await caller.speak(line)
            await caller.wait_reply(said_last + 1, quiet_ms=1000)
            await caller.hangup()
            await worker.manager.wait_idle()
    finally:
        loop.set_exception_handler(previous)
    assert failures == []
    assert not [r for r in caplog.records if "Blocking" in r.getMessage() or (r.exc_info and r.exc_info[0] is not None
                                                                          and issubclass(r.exc_info[0], BlockingError))]
    assert session.end_reason is not None and session.end_reason.value == "caller_hangup"
    assert [turn.text for turn in session.transcript if turn.speaker == "agent"] == [
        "Thank you Henry. Your number is 2, 7, 1, 8."]
