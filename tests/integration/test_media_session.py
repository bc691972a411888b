"""A session's own media leg: the caller's audio reaches the worker and the worker's audio reaches the caller,
through real SIP, RTP and a real bridge on each side, checked by content (which tone)."""

from __future__ import annotations

import asyncio
import re
from pathlib import Path

import numpy as np
import pytest

from asterisk_agent.calls.session import CallState
from asterisk_agent.media.codecs import dominant_frequency
from asterisk_agent.media.frames import FRAME_SAMPLES, SAMPLE_RATE
from asterisk_agent.media.leg import MediaContext
from asterisk_agent.pbx.carrier.callers import Carrier
from asterisk_agent.speech.stt.metrics import edit_distance
from asterisk_agent.speech.stt.whisper_engine import WhisperBatcher, WhisperOptions
from tests.support import speech_samples

pytestmark = [pytest.mark.asterisk, pytest.mark.usefixtures("leak_audit")]

MEDIA = {"enabled": True, "port_min": 43000, "port_max": 43099}
KEYS_ONLY = {"stt": {"engine": "none"}}  # the media leg without recognition: these tests drive it by hand


def tone(freq: float, seconds: float) -> np.ndarray:
    t = np.arange(int(SAMPLE_RATE * seconds)) / SAMPLE_RATE
    return (np.sin(2 * np.pi * freq * t) * 9000).astype(np.int16)


def voiced(samples: np.ndarray) -> np.ndarray:
    """Only the 20 ms frames with sound in them."""
    frames = samples[: len(samples) // FRAME_SAMPLES * FRAME_SAMPLES].reshape(-1, FRAME_SAMPLES)
    loud = frames[np.sqrt((frames.astype(np.float64) ** 2).mean(axis=1)) > 1000]
    return loud.reshape(-1)


async def until(predicate, timeout_s: float = 10.0) -> None:  # type: ignore[no-untyped-def]
    async with asyncio.timeout(timeout_s):
        while not predicate():
            await asyncio.sleep(0.02)


async def test_each_side_hears_the_other(make_worker, carrier: Carrier, caller_media: MediaContext) -> None:
    worker = await make_worker(media=MEDIA, speech=KEYS_ONLY)
    caller = await carrier.call("100")
    await caller.wait_answered()
    leg = await caller.attach_media(carrier, caller_media)
    session = next(iter(worker.manager.sessions.values()))
    await until(lambda: session.media_leg is not None and session.media_leg.endpoint is not None)
    assert session.media_leg is not None

    # While Asterisk plays a prompt to the caller's channel, the caller's audio does not reach the bridge.
    await until(lambda: session.state is CallState.COLLECTING)
    leg.play(tone(600, 1.0))
    await until(lambda: len(voiced(session.media_leg.tap.caller())) >= SAMPLE_RATE * 0.6)  # type: ignore[union-attr]
    assert abs(dominant_frequency(voiced(session.media_leg.tap.caller()), SAMPLE_RATE) - 600) < 15

    start = len(caller.heard())  # before: the greeting
    agent_start = len(session.media_leg.tap.agent())
    session.media_leg.play(tone(1200, 1.0))
    await until(lambda: len(voiced(caller.heard()[start:])) >= SAMPLE_RATE * 0.6)
    assert abs(dominant_frequency(voiced(caller.heard()[start:]), SAMPLE_RATE) - 1200) < 15
    # The agent's side of the recording tap holds what it said, aligned with what it heard.
    assert abs(dominant_frequency(voiced(session.media_leg.tap.agent()[agent_start:]), SAMPLE_RATE) - 1200) < 15
    assert len(session.media_leg.tap.caller()) == len(session.media_leg.tap.agent())
    assert session.media_leg.endpoint.stats.wrong_source == 0  # type: ignore[union-attr]

    await caller.hangup()
    await worker.manager.wait_idle()
    (ended,) = worker.manager.finished
    assert ended.ledger.live() == []
    assert worker.manager.media is not None and worker.manager.media.pool.in_use == 0
    assert caller_media.pool.in_use == 0


async def test_barge_in_drops_the_queued_reply(make_worker, carrier: Carrier, caller_media: MediaContext) -> None:
    worker = await make_worker(media=MEDIA, speech=KEYS_ONLY)
    caller = await carrier.call("100")
    await caller.wait_answered()
    await caller.attach_media(carrier, caller_media)
    session = next(iter(worker.manager.sessions.values()))
    await until(lambda: session.state is CallState.COLLECTING)
    assert session.media_leg is not None
    start = len(caller.heard())
    queued = session.media_leg.play(tone(900, 5.0))
    await until(lambda: len(voiced(caller.heard()[start:])) >= SAMPLE_RATE * 0.3)
    cut = session.media_leg.barge_in()
    assert 0 < cut < queued
    assert len(session.media_leg.outbound) == 0
    heard_before = len(voiced(caller.heard()[start:]))
    await asyncio.sleep(0.5)  # a time window to observe silence, not a synchronisation
    assert len(voiced(caller.heard()[start:])) - heard_before <= FRAME_SAMPLES * 10  # in flight only
    await caller.hangup()
    await worker.manager.wait_idle()


async def test_the_caller_talking_over_a_reply_cuts_it_and_each_turn_is_endpointed(
    make_worker, carrier: Carrier, caller_media: MediaContext
) -> None:
    worker = await make_worker(media=MEDIA, speech=KEYS_ONLY)
    caller = await carrier.call("100")
    await caller.wait_answered()
    leg = await caller.attach_media(carrier, caller_media)
    session = next(iter(worker.manager.sessions.values()))
    await until(lambda: session.state is CallState.COLLECTING)
    assert session.media_leg is not None
    taken_before = session.media_leg.outbound.taken  # the greeting's frames
    queued = session.media_leg.play(tone(500, 8.0))  # a long reply
    await until(lambda: session.media_leg.outbound.taken - taken_before > 25)  # type: ignore[union-attr]
    # The caller says two sentences with a pause between them, over the reply.
    leg.play(speech_samples.concat(speech_samples.sentence(0), speech_samples.silence(1.2), speech_samples.sentence(1)))
    await until(lambda: len(session.utterances) == 2, timeout_s=20)
    assert len(session.barge_ins) == 1  # the first sentence cut the reply; the second had nothing to cut
    frame, cut = session.barge_ins[0]
    assert 0 < cut < queued
    assert session.media_leg.outbound.taken - taken_before + cut == queued
    (first_start, first_end), (second_start, second_end) = session.utterances
    assert second_end - second_start >= 25  # the second sentence is a whole turn (at least 0.5 s)
    assert first_start <= frame <= first_end  # cut while the first sentence was being spoken
    gap_ms = (second_start - first_end) * 20
    assert 800 <= gap_ms <= 1600  # the pause between them
    await caller.hangup()
    await worker.manager.wait_idle()


async def test_the_agent_greets_with_its_own_voice_and_reads_back_keys(
    make_worker, carrier: Carrier, caller_media: MediaContext, stt_cache: Path
) -> None:
    worker = await make_worker(media=MEDIA, speech=KEYS_ONLY)
    voice = worker.manager.voice
    assert voice is not None
    await worker.manager.wait_prerendered()  # every piece common to all calls, rendered once at start
    renders_before = voice.cache.renders
    sessions = []
    greetings: dict[str, np.ndarray] = {}
    for did in ("100", "101"):
        caller = await carrier.call(did)
        await caller.wait_answered()
        await caller.attach_media(carrier, caller_media)
        session = worker.manager.sessions[next(c for c, s in worker.manager.sessions.items() if s.did == did)]
        await until(lambda: session.state is CallState.COLLECTING, timeout_s=20)  # noqa: B023
        assert session.media_leg is not None
        greetings[did] = caller.heard().copy()
        greeting = voiced(caller.heard())
        assert len(greeting) >= SAMPLE_RATE * 2  # "Hello, this is the voice agent. You called ..."
        assert len(voiced(session.media_leg.tap.agent())) >= len(greeting) * 0.9  # all of it came from the agent
        await caller.send_digits("42#")
        assert await caller.wait_digits(2) == "42"
        said_before, heard_before = len(session.media_leg.tap.agent()), len(caller.heard())
        await until(lambda: session.readbacks == ["42"] and session.state is CallState.COLLECTING)  # noqa: B023
        await session.media_leg.drained.wait()
        said = len(voiced(session.media_leg.tap.agent()[said_before:]))
        assert said >= SAMPLE_RATE * 0.3  # "You entered 4 2."
        # Most of it arrives (DTMF played into a mixing bridge costs some of the bridge's audio around it).
        await until(lambda: len(voiced(caller.heard()[heard_before:])) >= said * 0.6)  # noqa: B023
        sessions.append(session)
        await caller.hangup()
    await worker.manager.wait_idle()
    # Nothing is synthesised per call: only each dialled number's own sentence was new (once per number).
    assert voice.cache.renders - renders_before == 2
    assert all(s.readbacks == ["42"] for s in sessions)
    # By content: each caller heard its own dialled number and its own call number, through the phone path.
    batcher = WhisperBatcher(WhisperOptions(cache_dir=str(stt_cache), cpu_threads=1))
    try:
        for session, other in zip(sessions, reversed(sessions), strict=True):
            transcript = await batcher.transcribe_8k(greetings[session.did])
            assert "voice agent" in transcript.text.lower(), transcript.text
            assert digits_after("called", transcript.text) == session.did, transcript.text
            # The random call number: its own, not the other caller's (one recognition slip tolerated).
            # Its first four digits: whisper may run on repeating a digit into the silence after the greeting
            # ("3-0-8-1-0-0-0-0-...").
            token = digits_after("number", transcript.text)[:len(session.token)]
            own, others = edit_distance(token, session.token), edit_distance(token, other.token)
            assert own == 0 or own <= 1 < others, (transcript.text, session.token, other.token)
    finally:
        await batcher.close()


_DIGIT_WORDS = {"zero": "0", "oh": "0", "one": "1", "two": "2", "three": "3", "four": "4", "five": "5",
                "six": "6", "seven": "7", "eight": "8", "nine": "9"}


def digits_after(words: str, text: str) -> str:
    """The digits spoken right after ``words`` ("You called 1-0-0." -> "100"), as digits."""
    tail = re.split(re.escape(words), text.lower(), maxsplit=1)[-1]
    digits = ""
    for token in re.findall(r"[a-z]+|\d", tail):
        if token.isdigit() or token in _DIGIT_WORDS:
            digits += _DIGIT_WORDS.get(token, token)
        elif digits:
            break
    return digits
