"""Store tests run twice: on an SQLite file and on a fresh database of the private PostgreSQL server
(``postgres_url`` from the asterisk_agent.store.testing plugin)."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator, Awaitable, Callable
from pathlib import Path

import pytest
import pytest_asyncio

from asterisk_agent.store import Store


@pytest.fixture(params=["sqlite", "postgresql"])
def store_url(request: pytest.FixtureRequest, tmp_path: Path) -> str:
    if request.param == "sqlite":
        return f"sqlite+aiosqlite:///{tmp_path / 'data' / 'store.db'}"
    url: str = request.getfixturevalue("postgres_url")
    return url


@pytest_asyncio.fixture(loop_scope="session")
async def store(store_url: str) -> AsyncIterator[Store]:
    opened = await Store.open(store_url)
    yield opened
    await opened.close()


async def eventually(check: Callable[[], Awaitable[bool]], *, timeout: float = 10.0, every: float = 0.01,
                     what: str = "the condition") -> None:
    """Wait until ``check()`` is true (polled), failing after ``timeout`` seconds."""
    try:
        async with asyncio.timeout(timeout):
            while not await check():
                await asyncio.sleep(every)
    except TimeoutError:
        pytest.fail(f"timed out after {timeout} s waiting for {what}")
