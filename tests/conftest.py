from __future__ import annotations

import tempfile
from collections.abc import AsyncIterator, Awaitable, Callable
from pathlib import Path
from typing import Any

import pytest
import pytest_asyncio

from asterisk_agent.config import Settings
from asterisk_agent.pbx.instances import TestBed
from asterisk_agent.worker import Worker
from tests.support.ariproxy import AriProxy

WorkerFactory = Callable[..., Awaitable[Worker]]


@pytest.fixture(scope="session")
def stt_cache(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """One folder for the assembled whisper model (about 145 MB) for the whole run."""
    return tmp_path_factory.mktemp("stt-model")


@pytest_asyncio.fixture(loop_scope="session")
async def proxy(testbed: TestBed) -> AsyncIterator[AriProxy]:
    """A loopback ARI proxy in front of the pbx that tests can partition, inject into and make fail."""
    ariproxy = AriProxy(testbed.pbx.ari_url)
    await ariproxy.start()
    yield ariproxy
    await ariproxy.stop()


def worker_settings(testbed: TestBed, **overrides: Any) -> Settings:
    """Settings for a worker on the test bed's pbx; timers short so tests stay fast."""
    creds = testbed.pbx.credentials
    data: dict[str, Any] = {
        "instance_id": "aa",
        "ari": {"url": testbed.pbx.ari_url, "username": creds.ari_user, "password": creds.ari_password,
                "reconnect_min_ms": 20, "reconnect_max_ms": 200},
        "timers": {"call_max_ms": 60_000, "digit_timeout_ms": 1500, "teardown_timeout_ms": 3000},
        "accounts": {"demo": {"numbers": ["_X."], "greeting": "beep"}},
        "media": {"enabled": False},  # keys only unless a test turns speech on
        "data_dir": tempfile.mkdtemp(prefix="worker-data-"),  # the store and recordings: the test's own
    }
    for key, value in overrides.items():
        if isinstance(value, dict) and isinstance(data.get(key), dict):
            data[key] = {**data[key], **value}
        else:
            data[key] = value
    return Settings(**data)


@pytest_asyncio.fixture(loop_scope="session")
async def make_worker(testbed: TestBed) -> AsyncIterator[WorkerFactory]:
    """Start in-process workers on the pbx; every one is stopped (callers sent on) after the test."""
    started: list[Worker] = []

    async def factory(**overrides: Any) -> Worker:
        worker = Worker(worker_settings(testbed, **overrides))
        await worker.start()
        await worker.wait_connected()
        started.append(worker)
        return worker

    yield factory
    for worker in started:
        await worker.stop(send_callers_on=False)
