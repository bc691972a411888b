"""Fixtures of the spoken-call tests: the callers' voice and ears, and their media legs."""

from __future__ import annotations

from collections.abc import AsyncIterator
from pathlib import Path

import pytest_asyncio

from asterisk_agent.backends.runner import ReferenceBackends
from asterisk_agent.media.leg import MediaContext
from asterisk_agent.media.pacer import PacingClock
from asterisk_agent.media.transport import PortPool
from asterisk_agent.pbx.carrier.callers import caller_voice
from asterisk_agent.speech.stt.whisper_engine import WhisperBatcher, WhisperOptions
from asterisk_agent.speech.voice import Voice


@pytest_asyncio.fixture(loop_scope="session", scope="module")
async def voices() -> AsyncIterator[Voice]:
    voice = await caller_voice()
    yield voice
    voice.close()


@pytest_asyncio.fixture(loop_scope="session", scope="module")
async def ears(stt_cache: Path) -> AsyncIterator[WhisperBatcher]:
    """The callers' own transcriber: what each heard, checked by content after the call."""
    batcher = WhisperBatcher(WhisperOptions(cache_dir=str(stt_cache), cpu_threads=1))
    await batcher.start()
    yield batcher
    await batcher.close()


@pytest_asyncio.fixture(loop_scope="session")
async def caller_media() -> AsyncIterator[MediaContext]:
    clock = PacingClock()
    clock.start()
    yield MediaContext(pool=PortPool("127.0.0.1", 44000, 44199), clock=clock, app="carrier",
                       advertised_address="127.0.0.1")
    await clock.stop()


@pytest_asyncio.fixture(loop_scope="session")
async def backends() -> AsyncIterator[ReferenceBackends]:
    """The reference backends (clinic, bank, insurance) on free local ports."""
    async with ReferenceBackends() as running:
        yield running
