"""Events lost while the event socket is down, worker restarts, no worker, a second client on our app."""

from __future__ import annotations

import asyncio
import os
import signal
import subprocess
import sys
from pathlib import Path

import aiohttp
import pytest
import yaml

from asterisk_agent.ari import requests as ari
from asterisk_agent.ari.client import AriClient
from asterisk_agent.ari.errors import ApplicationReplaced
from asterisk_agent.ari.events import Channel
from asterisk_agent.calls.manager import stasis_args
from asterisk_agent.calls.session import EndReason
from asterisk_agent.pbx.carrier.callers import Carrier
from asterisk_agent.pbx.instances import TestBed
from tests.conftest import worker_settings
from tests.support.ariproxy import AriProxy

pytestmark = [pytest.mark.asterisk, pytest.mark.usefixtures("leak_audit")]


async def until(predicate, timeout_s: float = 10.0, what: str = "condition") -> None:  # type: ignore[no-untyped-def]
    """Wait for a condition on state we cannot subscribe to (another process, Asterisk's channel list)."""
    loop = asyncio.get_running_loop()
    deadline = loop.time() + timeout_s
    while True:
        result = predicate()
        if asyncio.iscoroutine(result):
            result = await result
        if result:
            return
        if loop.time() > deadline:
            raise TimeoutError(f"timed out waiting for {what}")
        await asyncio.sleep(0.02)


async def callers_in_app(pbx: AriClient, state: str | None = None) -> list[Channel]:
    channels = [Channel.from_json(c) for c in await pbx.channels()]
    return [c for c in channels if stasis_args(c, "asterisk-agent") and (state is None or c.state == state)]


async def test_events_lost_in_a_partition_are_recovered_by_resync(
    make_worker, carrier: Carrier, proxy: AriProxy, pbx_ari: AriClient
) -> None:
    worker = await make_worker(ari={"url": proxy.url})
    live = await carrier.call("100")
    await live.wait_answered()
    await live.send_digits("11#")
    assert await live.wait_digits(2) == "11"
    vanishing = await carrier.call("101")
    await vanishing.wait_answered()
    await until(lambda: len(worker.manager.sessions) == 2, what="two sessions")
    live_session = next(s for s in worker.manager.sessions.values() if s.did == "100")

    await proxy.partition()
    await until(lambda: not worker.stream.is_connected, what="the worker to see the socket drop")
    await vanishing.hangup()
    await vanishing.wait_gone()
    ringing = await carrier.call("102")
    await until(lambda: callers_in_app(pbx_ari, "Ring"), what="the new caller to ring in the app")
    assert len(worker.manager.sessions) == 2  # the worker saw neither the hangup nor the new caller
    assert proxy.discarded_events > 0

    proxy.heal()
    await ringing.wait_answered()
    await ringing.send_digits("33#")
    assert await ringing.wait_digits(2) == "33"
    await live.send_digits("12#")
    assert await live.wait_digits(4) == "1112"
    assert next(s for s in worker.manager.sessions.values() if s.did == "100") is live_session

    await live.hangup()
    await ringing.hangup()
    await worker.manager.wait_idle()
    by_did = {s.did: s for s in worker.manager.finished}
    assert by_did["101"].end_reason is EndReason.VANISHED
    assert by_did["102"].adopted and by_did["102"].readbacks == ["33"]
    assert by_did["100"].readbacks == ["11", "12"] and not by_did["100"].adopted
    assert worker.manager.resyncs >= 2


def _write_config(testbed: TestBed, folder: Path, **overrides: object) -> Path:
    settings = worker_settings(testbed, **overrides)
    path = folder / "worker.yaml"
    path.write_text(yaml.safe_dump(settings.model_dump(mode="json")))
    return path


def _start_worker_process(config: Path, log: Path) -> subprocess.Popen[bytes]:
    env = {k: v for k, v in os.environ.items() if not k.startswith("ASTERISK_AGENT_")}
    with log.open("wb") as output:
        return subprocess.Popen(
            [sys.executable, "-m", "asterisk_agent", "run", "--config", str(config)],
            stdout=output, stderr=subprocess.STDOUT, env=env,
        )


async def _app_registered(pbx: AriClient) -> bool:
    return any(app["name"] == "asterisk-agent" for app in await pbx.send(ari.list_applications()))


async def test_worker_killed_and_restarted_adopts_its_callers(
    testbed: TestBed, carrier: Carrier, pbx_ari: AriClient, tmp_path: Path
) -> None:
    config = _write_config(testbed, tmp_path, log_level="DEBUG")
    first = _start_worker_process(config, tmp_path / "first.log")
    second: subprocess.Popen[bytes] | None = None
    try:
        await until(lambda: _app_registered(pbx_ari), what="the worker to register its app")
        caller = await carrier.call("100")
        await caller.wait_answered()
        await caller.send_digits("21#")
        assert await caller.wait_digits(2) == "21"

        first.send_signal(signal.SIGKILL)
        first.wait(timeout=5)
        assert [c.state for c in await callers_in_app(pbx_ari)] == ["Up"]  # still in Stasis, in dead air

        second = _start_worker_process(config, tmp_path / "second.log")
        # Asterisk keeps the app listed while its callers wait, so wait for the new worker's own resync.
        await until(lambda: "resync:" in (tmp_path / "second.log").read_text(), what="the restarted worker's resync")
        await caller.send_digits("22#")
        assert await caller.wait_digits(4) == "2122"
        await caller.hangup()
        await caller.wait_gone()
        second.send_signal(signal.SIGTERM)
        assert second.wait(timeout=10) == 0
        log = (tmp_path / "second.log").read_text()
        assert "1 adopted" in log
    finally:
        for process in (first, second):
            if process is not None and process.poll() is None:
                process.kill()
                process.wait()


async def test_without_a_worker_the_dialplan_fallback_rings_the_operator(carrier: Carrier, pbx_ari: AriClient) -> None:
    assert not await _app_registered(pbx_ari)
    caller = await carrier.call("100", caller_number="15550199")
    async with asyncio.timeout(10):
        operator = await carrier.agent_calls.get()
    assert operator.endpoint == "operator"
    assert operator.caller_number == "15550199"
    await operator.answer()
    await caller.wait_answered()
    await caller.hangup()
    await operator.gone


async def test_a_second_client_on_our_app_stops_the_worker(make_worker, testbed: TestBed) -> None:
    worker = await make_worker()
    creds = testbed.pbx.credentials
    async with aiohttp.ClientSession(auth=None) as http:
        client = AriClient(testbed.pbx.ari_url, creds.ari_user, creds.ari_password)
        ws = await http.ws_connect(
            testbed.pbx.ari_url.replace("http", "ws") + "/ari/events",
            params={"app": "asterisk-agent"}, headers=client.auth_headers,
        )
        with pytest.raises(ApplicationReplaced, match="took it over"):
            async with asyncio.timeout(5):
                await worker.wait()
        await ws.close()


async def test_the_worker_process_exits_2_when_its_app_is_taken(
    testbed: TestBed, pbx_ari: AriClient, tmp_path: Path
) -> None:
    process = _start_worker_process(_write_config(testbed, tmp_path), tmp_path / "worker.log")
    try:
        await until(lambda: _app_registered(pbx_ari), what="the worker to register its app")
        async with aiohttp.ClientSession() as http:
            ws = await http.ws_connect(
                testbed.pbx.ari_url.replace("http", "ws") + "/ari/events",
                params={"app": "asterisk-agent"}, headers=pbx_ari.auth_headers,
            )
            await until(lambda: process.poll() is not None, what="the worker to exit")
            await ws.close()
        assert process.returncode == 2
        assert "took it over" in (tmp_path / "worker.log").read_text()
    finally:
        if process.poll() is None:
            process.kill()
            process.wait()


async def test_a_worker_stopped_with_sigterm_sends_its_callers_to_the_fallback(
    testbed: TestBed, carrier: Carrier, pbx_ari: AriClient, tmp_path: Path
) -> None:
    process = _start_worker_process(_write_config(testbed, tmp_path), tmp_path / "worker.log")
    try:
        await until(lambda: "resync:" in (tmp_path / "worker.log").read_text(), what="the worker to connect")
        caller = await carrier.call("100", caller_number="15550142")
        await caller.wait_answered()
        await caller.send_digits("7#")
        assert await caller.wait_digits(1) == "7"
        process.send_signal(signal.SIGTERM)
        async with asyncio.timeout(10):
            operator = await carrier.agent_calls.get()  # the caller is not dropped: the fallback rings
        assert (operator.endpoint, operator.caller_number) == ("operator", "15550142")
        assert process.wait(timeout=10) == 0
        assert not caller.gone.done()
        await operator.answer()
        await caller.hangup()
        await operator.gone
    finally:
        if process.poll() is None:
            process.kill()
            process.wait()
