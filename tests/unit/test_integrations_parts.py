"""The integrations client's pure parts with explicit clocks: Retry-After parsing, the backoff's range, the
fallback cache's TTL and bound, the breaker's states, and the gate's FIFO order and cancellation."""

from __future__ import annotations

import asyncio
import email.utils
import random

import pytest

from asterisk_agent.integrations.breaker import CircuitBreaker
from asterisk_agent.integrations.cache import FallbackCache
from asterisk_agent.integrations.limiter import Gate, QueueFull
from asterisk_agent.integrations.result import CircuitState
from asterisk_agent.integrations.retry import backoff_s, parse_retry_after


def test_retry_after_forms() -> None:
    now = 1_700_000_000.0
    assert parse_retry_after("120", now) == 120.0
    assert parse_retry_after(" 0 ", now) == 0.0
    assert parse_retry_after("-5", now) == 0.0
    assert parse_retry_after(email.utils.formatdate(now + 30, usegmt=True), now) == pytest.approx(30, abs=1)
    assert parse_retry_after(email.utils.formatdate(now - 30, usegmt=True), now) == 0.0  # in the past: now
    for unreadable in (None, "", "soon", "nan", "Wed, 99 Foo 2015 07:28:00 GMT"):
        assert parse_retry_after(unreadable, now) is None, unreadable


def test_backoff_is_full_jitter_under_an_exponential_ceiling() -> None:
    rng = random.Random(7)
    for retry, ceiling in ((1, 0.1), (2, 0.2), (3, 0.4), (6, 2.0), (20, 2.0)):
        draws = [backoff_s(retry, 100, 2000, rng) for _ in range(200)]
        assert min(draws) >= 0.0 and max(draws) <= ceiling
        assert max(draws) > ceiling * 0.8 and min(draws) < ceiling * 0.2  # spread over the whole range


def test_cache_ttl_and_bound() -> None:
    cache = FallbackCache(ttl_s=10.0, max_entries=2)
    cache.store("a", b'{"x": 1}', now=100.0)
    assert cache.get("a", now=105.0) == ({"x": 1}, 5.0)
    assert cache.get("a", now=110.0) is None and len(cache) == 0  # expired entries are dropped
    cache.store("a", b"[1]", now=200.0)
    cache.store("b", b"", now=201.0)
    cache.store("c", b"2", now=202.0)  # over the bound: the oldest stored goes
    assert cache.get("a", now=203.0) is None
    assert cache.get("b", now=203.0) == (None, 2.0) and cache.get("c", now=203.0) == (2, 1.0)
    disabled = FallbackCache(ttl_s=0.0)
    disabled.store("a", b"1", now=0.0)
    assert len(disabled) == 0


def test_breaker_states() -> None:
    breaker = CircuitBreaker(failures=2, open_s=5.0)
    breaker.failure(now=0.0)
    assert breaker.state(0.0) is CircuitState.CLOSED
    breaker.success()  # not consecutive any more
    breaker.failure(now=1.0)
    assert breaker.admit(1.0)
    breaker.failure(now=1.5)
    assert breaker.state(1.5) is CircuitState.OPEN and breaker.rejects(6.4) and not breaker.admit(6.4)
    breaker.failure(now=3.0)  # a late failure does not extend the open interval
    assert breaker.state(6.5) is CircuitState.HALF_OPEN
    assert breaker.admit(6.5)  # the probe
    assert not breaker.admit(6.5) and breaker.rejects(6.6)  # one probe at a time
    breaker.neutral()  # the probe got a 429: no verdict, another may probe
    assert breaker.admit(6.7)
    breaker.failure(now=7.0)
    assert breaker.state(11.9) is CircuitState.OPEN and breaker.state(12.0) is CircuitState.HALF_OPEN
    assert breaker.admit(12.0)
    breaker.success()
    assert breaker.state(12.0) is CircuitState.CLOSED and breaker.opened == 2


async def test_gate_is_fifo_and_bounded() -> None:
    gate = Gate(max_in_flight=1, queue_max=3)
    await gate.acquire()
    order: list[int] = []

    async def take(index: int) -> None:
        await gate.acquire()
        order.append(index)

    waiters = [asyncio.create_task(take(index)) for index in range(3)]
    await asyncio.sleep(0)
    with pytest.raises(QueueFull):
        await gate.acquire()
    assert (gate.queued, gate.peak_queued) == (3, 3)
    for _ in range(3):
        gate.release()
        await asyncio.sleep(0)
    await asyncio.gather(*waiters)
    assert order == [0, 1, 2] and gate.in_flight == 1 and gate.peak_in_flight == 1
    gate.release()
    assert gate.in_flight == 0


async def test_gate_cancelled_and_timed_out_waiters_leave_nothing_behind() -> None:
    gate = Gate(max_in_flight=1, queue_max=5)
    await gate.acquire()
    cancelled = asyncio.create_task(gate.acquire())
    await asyncio.sleep(0)
    with pytest.raises(TimeoutError):
        async with asyncio.timeout(0.01):
            await gate.acquire()
    cancelled.cancel()
    with pytest.raises(asyncio.CancelledError):
        await cancelled
    assert gate.queued == 0
    gate.release()
    assert gate.in_flight == 0
    async with asyncio.timeout(1):
        await gate.acquire()  # the slot went to nobody who had left
    gate.release()


async def test_gate_pause_holds_the_queue_until_its_moment() -> None:
    gate = Gate(max_in_flight=2, queue_max=2)
    loop = asyncio.get_running_loop()
    gate.pause_until(loop.time() + 0.1)
    started = loop.time()
    await gate.acquire()
    assert loop.time() - started >= 0.099 and gate.peak_queued == 1
    gate.release()
    gate.close()
