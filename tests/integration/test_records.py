"""Every call's record in the store and its context and outcome at the account's webhook, on real calls: with
the webhook down for the whole run and then up, and with the worker killed mid-run and restarted, a
de-duplicating receiver ends up with every call's start and end, each signed."""

from __future__ import annotations

import asyncio
import datetime as dt
import json
import logging
import re
import signal
import subprocess
import wave
from pathlib import Path
from typing import Any

import numpy as np
import pytest
import yaml

from asterisk_agent.ari.client import AriClient
from asterisk_agent.backends.runner import ReferenceBackends
from asterisk_agent.demo import introduction_line
from asterisk_agent.media.leg import MediaContext
from asterisk_agent.outbox.queue import counts
from asterisk_agent.pbx.carrier.callers import Carrier, SimulatedCaller
from asterisk_agent.pbx.instances import TestBed
from asterisk_agent.speech.stt.whisper_engine import WhisperBatcher
from asterisk_agent.speech.voice import Voice
from asterisk_agent.store.store import Store
from asterisk_agent.worker import Worker
from tests.conftest import worker_settings
from tests.integration.test_flows import QUIET_MS, flow_worker
from tests.integration.test_resync import _app_registered, _start_worker_process, until
from tests.store.receiver import Receiver
from tests.support.calls import dial, session_of

pytestmark = [pytest.mark.asterisk, pytest.mark.usefixtures("leak_audit")]

SECRET = "a-shared-secret-of-the-crm-0001"
FAST_OUTBOX = {"poll_ms": 50, "backoff_base_ms": 50, "backoff_max_ms": 300, "timeout_ms": 1000, "lease_ms": 2000}


def account_with_webhook(receiver: Receiver) -> dict[str, Any]:
    return {"demo": {"numbers": ["_X."], "greeting": "beep", "webhook": {"url": receiver.url, "secret": SECRET}}}


async def keyed_call(carrier: Carrier, number: str, digits: str) -> SimulatedCaller:
    caller = await carrier.call("100", caller_number=number)
    await caller.wait_answered()
    await caller.send_digits(digits + "#")
    assert await caller.wait_digits(len(digits)) == digits
    return caller


def messages_by_session(receiver: Receiver) -> dict[str, dict[str, dict[str, Any]]]:
    by_session: dict[str, dict[str, dict[str, Any]]] = {}
    for message in receiver.delivered.values():
        by_session.setdefault(message["session_id"], {})[message["type"]] = message
    return by_session


async def test_the_webhook_down_for_the_whole_run_then_up_gets_every_call(make_worker, carrier: Carrier) -> None:
    receiver = Receiver(secret=SECRET)  # not listening yet
    worker: Worker = await make_worker(accounts=account_with_webhook(receiver), outbox=FAST_OUTBOX)
    numbers = {f"155507{index:02d}": f"7{index}" for index in range(4)}
    callers = await asyncio.gather(*(keyed_call(carrier, number, digits) for number, digits in numbers.items()))
    for caller in callers:
        await caller.hangup()
    await worker.manager.wait_idle()
    assert worker.store is not None
    records = worker.store.for_account("demo")
    for caller in callers:
        detail = await records.get_session(session_of(worker, caller).id)
        assert detail is not None and detail.call.caller_number == caller.caller_number, detail
        assert detail.outcome is not None and detail.outcome.end_reason == "caller_hangup", detail.outcome
        digits = [event.reason for event in detail.events if event.kind == "digits"]
        assert digits == [numbers[caller.caller_number]], detail.events  # each record holds its own digits
    assert await worker.store.for_account("other").list_sessions() == []  # another tenant sees nothing
    pending = await counts(worker.store.engine, "demo")
    assert (pending.pending, pending.delivered) == (8, 0), pending  # 4 starts and 4 ends wait for the webhook

    await receiver.start()
    try:
        await receiver.wait_for(lambda: len(receiver.delivered) == 8, timeout=20)
    finally:
        await receiver.stop()
    by_session = messages_by_session(receiver)
    assert sorted(by_session) == sorted(session_of(worker, caller).id for caller in callers)
    for caller in callers:
        started, ended = (by_session[session_of(worker, caller).id][kind] for kind in ("call.started", "call.ended"))
        assert started["data"]["caller_number"] == ended["data"]["caller_number"] == caller.caller_number
        assert ended["data"]["end_reason"] == "caller_hangup"
    assert all(arrival.signed for arrival in receiver.arrivals)
    store = worker.store  # the sender marks each delivered once the receiver's answer is in
    await until(lambda: _nothing_pending(store), what="the outbox to mark every message delivered")


async def test_a_worker_killed_mid_run_and_restarted_delivers_every_message(
    testbed: TestBed, carrier: Carrier, pbx_ari: AriClient, tmp_path: Path,
) -> None:
    """Three calls end under the first worker while the webhook is down; a fourth is live when the worker is
    killed (SIGKILL) and ends under the restarted one, which adopts it and goes on with the same record. Then the
    webhook comes up: every call's start and end arrive, each once per idempotency key."""
    receiver = Receiver(secret=SECRET)
    settings = worker_settings(testbed, accounts=account_with_webhook(receiver), outbox=FAST_OUTBOX,
                               data_dir=str(tmp_path / "data"), log_level="DEBUG")
    config = tmp_path / "worker.yaml"
    config.write_text(yaml.safe_dump(settings.model_dump(mode="json")))
    first = _start_worker_process(config, tmp_path / "first.log")
    second: subprocess.Popen[bytes] | None = None
    try:
        await until(lambda: _app_registered(pbx_ari), what="the worker to register its app")
        ended = [await keyed_call(carrier, f"1555080{index}", f"8{index}") for index in range(3)]
        for caller in ended:
            await caller.hangup()
            await caller.wait_gone()
        live = await keyed_call(carrier, "15550809", "89")
        await until(lambda: _ended_in_store(tmp_path / "data", 3), what="the first calls' records")
        first.send_signal(signal.SIGKILL)
        first.wait(timeout=5)
        second = _start_worker_process(config, tmp_path / "second.log")
        await until(lambda: _log_says(tmp_path / "second.log", "resync:"), what="the restarted worker's resync")
        await live.send_digits("90#")
        assert await live.wait_digits(4) == "8990"  # the adopted call goes on
        await live.hangup()
        await until(lambda: _ended_in_store(tmp_path / "data", 4), what="the adopted call's record")
        await receiver.start()
        await receiver.wait_for(lambda: len(receiver.delivered) == 8, timeout=20)
        second.send_signal(signal.SIGTERM)
        assert second.wait(timeout=10) == 0
    finally:
        await receiver.stop()
        for process in (first, second):
            if process is not None and process.poll() is None:
                process.kill()
                process.wait()
    by_session = messages_by_session(receiver)
    assert len(by_session) == 4 and all(set(kinds) == {"call.started", "call.ended"} for kinds in by_session.values())
    numbers = sorted(kinds["call.started"]["data"]["caller_number"] for kinds in by_session.values())
    assert numbers == ["15550800", "15550801", "15550802", "15550809"]
    assert all(arrival.signed for arrival in receiver.arrivals)
    assert "record resumed after adoption" in (tmp_path / "second.log").read_text()


async def _nothing_pending(store: Store) -> bool:
    return (await counts(store.engine, "demo")).pending == 0


async def _ended_in_store(data: Path, expected: int) -> bool:
    store = await Store.open(f"sqlite+aiosqlite:///{data / 'asterisk-agent.db'}")
    try:
        calls = await store.admin().list_sessions(account="demo")
        return sum(1 for call in calls if call.state == "ended") >= expected
    finally:
        await store.close()


async def _log_says(log: Path, text: str) -> bool:
    return text in log.read_text()


async def test_no_secret_or_caller_data_reaches_the_logs(
    make_worker, stt_cache: Path, carrier: Carrier, caller_media: MediaContext, backends: ReferenceBackends,
    testbed: TestBed, caplog: pytest.LogCaptureFixture,
) -> None:
    """A bank caller keys account number and PIN on a worker logging at DEBUG, with a webhook and its secret:
    the caller's number, the account number, the PIN, the webhook secret and the ARI password appear in no log
    line of the worker (the recording and the record mute and mask them too)."""
    caplog.set_level(logging.DEBUG)
    receiver = Receiver(secret=SECRET)
    await receiver.start()
    try:
        worker = await flow_worker(make_worker, stt_cache, backends, "bank", log_level="DEBUG", outbox=FAST_OUTBOX,
                                   account_settings={"webhook": {"url": receiver.url, "secret": SECRET}})
        caller = await dial(carrier, caller_media, "15553141592")
        _, last = await caller.wait_reply(0, quiet_ms=QUIET_MS)
        await caller.send_digits("87654321")
        _, last = await caller.wait_reply(last + 1, quiet_ms=QUIET_MS)
        await caller.send_digits("1111")
        await caller.wait_reply(last + 1, quiet_ms=QUIET_MS)  # thank you, and the menu
        await caller.hangup()
        await worker.manager.wait_idle()
        await receiver.wait_for(lambda: len(receiver.delivered) == 2, timeout=20)
    finally:
        await receiver.stop()
    session = session_of(worker, caller)
    assert session.recorder is not None and session.recorder.muted_spans  # the PIN and account were muted
    secrets = {"caller number": "15553141592", "account number": "87654321", "PIN": "1111", "secret": SECRET,
               "ARI password": testbed.pbx.credentials.ari_password}
    ours = [record for record in caplog.records
            if record.name.startswith("asterisk_agent") and not record.name.startswith("asterisk_agent.pbx")]
    assert len(ours) > 50  # the worker did log, at DEBUG
    for record in ours:
        text = record.getMessage() + (logging.Formatter().formatException(record.exc_info) if record.exc_info else "")
        for what, value in secrets.items():
            assert not re.search(rf"(?<!\d){re.escape(value)}(?!\d)", text), f"{what} in log: {record.name}"
    ended = next(m for m in receiver.delivered.values() if m["type"] == "call.ended")
    assert "87654321" not in json.dumps(ended) and "1111" not in json.dumps(ended["data"]["details"])


def channels_of(path: Path) -> tuple[np.ndarray, np.ndarray]:
    with wave.open(str(path), "rb") as wav:
        assert (wav.getnchannels(), wav.getframerate(), wav.getsampwidth()) == (2, 8000, 2)
        samples = np.frombuffer(wav.readframes(wav.getnframes()), dtype="<i2").reshape(-1, 2)
    return samples[:, 0], samples[:, 1]


async def test_the_recording_holds_caller_and_agent_after_the_consent_announcement(
    make_worker, stt_cache: Path, carrier: Carrier, caller_media: MediaContext, voices: Voice,
    ears: WhisperBatcher,
) -> None:
    worker: Worker = await make_worker(
        media={"enabled": True, "port_min": 45000, "port_max": 45199},
        speech={"stt": {"whisper": {"cache_dir": str(stt_cache)}}},
        accounts={"demo": {"numbers": ["_X."], "consent_announcement": "This call is recorded for quality.",
                           "retention_days": 1}})
    caller = await dial(carrier, caller_media, "15550901")
    await caller.wait_reply(0, quiet_ms=1000)  # the consent announcement, then the greeting
    _, said_last = await caller.speak(await voices.prompt(introduction_line("Grace", "4271")))
    await caller.wait_reply(said_last + 1, quiet_ms=1000)
    await caller.hangup()
    await worker.manager.wait_idle()
    session = session_of(worker, caller)
    heard = (await ears.transcribe_8k(caller.heard())).text.lower()
    assert "recorded" in heard, heard  # the caller heard the announcement...
    assert worker.store is not None
    detail = await worker.store.for_account("demo").get_session(session.id)
    assert detail is not None and len(detail.recordings) == 1
    path = Path(detail.recordings[0].path)
    assert path.is_relative_to(Path(worker.settings.data_dir) / "recordings" / "demo")
    caller_side, agent_side = channels_of(path)
    agent_text = (await ears.transcribe_8k(agent_side)).text.lower()
    assert "recorded" not in agent_text, agent_text  # ...before the recording started
    assert "name" in agent_text and "grace" in agent_text, agent_text  # the greeting and the reply
    turn = next(t for t in detail.turns if t.speaker == "caller")
    assert turn.start_ms is not None and turn.end_ms is not None
    spoken = caller_side[turn.start_ms * 8: turn.end_ms * 8]  # the caller's turn, at its offsets in the file
    caller_text = (await ears.transcribe_8k(spoken)).text.lower()
    assert "grace" in caller_text, caller_text
    assert "grace" not in (await ears.transcribe_8k(caller_side[:max(0, turn.start_ms - 500) * 8])).text.lower()
    # Retention: a day later the record and the file are really gone.
    assert worker.manager.records is not None
    await worker.manager.records.purge_now(now=dt.datetime.now(dt.UTC) + dt.timedelta(days=1, minutes=1))
    assert not path.exists()
    assert await worker.store.for_account("demo").get_session(session.id) is None
