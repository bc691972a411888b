"""PacingClock on a virtual clock: on the 20 ms grid, no drift, no burst after a stall; FrameQueue and barge-in."""

from __future__ import annotations

import asyncio
import itertools
import logging
import random
import time

import pytest

from asterisk_agent.media.frames import FRAME_SECONDS
from asterisk_agent.media.pacer import FrameQueue, PacedSender, PacingClock, TickHandle, VirtualTime


def virtual_clock(**options: object) -> tuple[VirtualTime, PacingClock]:
    vt = VirtualTime(**options)  # type: ignore[arg-type]
    return vt, PacingClock(now=vt.now, sleep_until=vt.sleep_until)


async def test_sixty_seconds_of_ticks_land_exactly_on_the_grid() -> None:
    _vt, clock = virtual_clock()
    times: list[float] = []
    clock.register(times.append)
    await clock.run(ticks=3000)
    assert clock.origin is not None
    assert len(times) == 3000
    assert times == [clock.origin + k * FRAME_SECONDS for k in range(3000)]
    assert times[-1] - times[0] == pytest.approx(59.98, abs=1e-9)
    assert (clock.stats.ticks, clock.stats.skipped, clock.stats.stalls) == (3000, 0, 0)
    assert clock.index == 2999


async def test_a_stall_of_500_ms_skips_ticks_instead_of_bursting() -> None:
    vt, clock = virtual_clock()
    sent: list[tuple[int, int]] = []  # (grid index, stream)
    senders = []
    def sender_for(stream: int) -> PacedSender:
        return PacedSender(lambda _payload: sent.append((clock.index, stream)))

    for stream in range(3):
        sender = sender_for(stream)
        sender.queue.extend(bytes([stream]) * 160 for _ in range(1000))
        senders.append(sender)
        clock.register(sender.tick)
    tick_times: dict[int, float] = {}

    def observe(now: float) -> None:
        tick_times[clock.index] = now
        if clock.index == 100:
            vt.advance(0.5)  # the loop is blocked for 500 ms inside this tick

    clock.register(observe)
    await clock.run(ticks=200)
    assert clock.origin is not None
    skipped = clock.stats.skipped
    assert skipped in (24, 25)
    assert clock.stats.stalls == 1
    indexes = sorted(tick_times)
    after = indexes[indexes.index(100) + 1]
    assert after == 101 + skipped
    # one frame per stream in the first tick after the stall (not the 25 missed), and in every tick
    assert sorted(stream for index, stream in sent if index == after) == [0, 1, 2]
    assert len(sent) == 3 * len(indexes) == len(set(sent))
    # the grid is realigned: every tick, before and after the stall, sits on origin + k * 20 ms
    for index in indexes:
        assert tick_times[index] == pytest.approx(clock.origin + index * FRAME_SECONDS, abs=1e-9)
    assert tick_times[after + 1] - tick_times[after] == pytest.approx(FRAME_SECONDS, abs=1e-9)
    assert all(sender.sent == 200 for sender in senders)  # frames are delayed by the stall, never lost


async def test_a_stall_of_a_whole_number_of_periods_is_not_taken_for_lateness() -> None:
    vt, clock = virtual_clock()
    times: list[float] = []

    def tick(now: float) -> None:
        times.append(now)
        if len(times) == 10:
            vt.advance(2 * FRAME_SECONDS)

    clock.register(tick)
    await clock.run(ticks=20)
    assert clock.stats.skipped == 1
    gaps = [b - a for a, b in itertools.pairwise(times)]
    assert min(gaps) == pytest.approx(FRAME_SECONDS, abs=1e-9)  # never two ticks back to back


async def test_ten_minutes_with_random_scheduling_delays_never_accumulate_error() -> None:
    rng = random.Random(11)
    _vt, clock = virtual_clock(wake_delay=lambda: rng.uniform(0.0, 0.004))
    ticks: list[tuple[int, float]] = []
    clock.register(lambda now: ticks.append((clock.index, now)))
    await clock.run(ticks=30_000)
    assert clock.origin is not None
    errors = [now - (clock.origin + index * FRAME_SECONDS) for index, now in ticks]
    assert [index for index, _ in ticks] == list(range(30_000))
    assert min(errors) >= -1e-9
    assert max(errors) <= 0.004 + 1e-9  # each tick only as late as its own wake-up: nothing accumulates
    assert ticks[-1][1] - clock.origin == pytest.approx(599.98, abs=0.0041)
    assert clock.stats.skipped == 0
    assert 0.0035 < clock.stats.max_lateness <= 0.004 + 1e-9


async def test_unregister_and_register_during_a_tick() -> None:
    _vt, clock = virtual_clock()
    calls: list[tuple[str, int]] = []
    handles: dict[str, TickHandle] = {}

    def a(now: float) -> None:
        calls.append(("a", clock.index))
        if clock.index == 2:
            handles["b"].cancel()  # b comes after a in this tick: not called any more
            handles["a"].cancel()  # a unregisters itself
            handles["c"] = clock.register(c)  # starts on the next tick

    def b(now: float) -> None:
        calls.append(("b", clock.index))

    def c(now: float) -> None:
        calls.append(("c", clock.index))

    handles["a"] = clock.register(a)
    handles["b"] = clock.register(b)
    await clock.run(ticks=5)
    assert calls == [("a", 0), ("b", 0), ("a", 1), ("b", 1), ("a", 2), ("c", 3), ("c", 4)]
    assert len(clock) == 1
    handles["a"].cancel()  # idempotent
    assert len(clock) == 1


async def test_a_stream_that_raises_is_unregistered_and_the_others_keep_ticking(
    caplog: pytest.LogCaptureFixture,
) -> None:
    _vt, clock = virtual_clock()
    good: list[int] = []

    def bad(now: float) -> None:
        raise RuntimeError("boom")

    handle = clock.register(bad)
    clock.register(lambda now: good.append(clock.index))
    with caplog.at_level(logging.ERROR, logger="asterisk_agent.media.pacer"):
        await clock.run(ticks=3)
    assert good == [0, 1, 2]
    assert clock.stats.errors == 1 and isinstance(handle.error, RuntimeError) and not handle.active
    assert len(clock) == 1
    assert "unregistered" in caplog.text


def test_frame_queue_clear_reports_what_was_cut() -> None:
    queue = FrameQueue()
    queue.extend([b"a", b"b", b"c"])
    queue.put(b"d")
    assert len(queue) == 4 and queue
    assert queue.pop() == b"a"
    assert queue.clear() == 3
    assert not queue and queue.pop() is None
    assert queue.clear() == 0
    assert (queue.enqueued, queue.taken, queue.cleared) == (4, 1, 3)


async def test_barge_in_stops_the_reply_from_the_next_tick() -> None:
    _vt, clock = virtual_clock()
    sent: list[int] = []
    sender = PacedSender(lambda payload: sent.append(clock.index))
    sender.queue.extend(b"x" * 160 for _ in range(50))
    cut: list[int] = []

    def vad(now: float) -> None:  # registered after the sender: decides after this tick's frame went out
        if clock.index == 9:
            cut.append(sender.queue.clear())

    clock.register(sender.tick)
    clock.register(vad)
    await clock.run(ticks=20)
    assert sent == list(range(10))
    assert cut == [40]
    sender.queue.put(b"y" * 160)  # the next reply plays again
    await clock.run(ticks=1)
    assert sender.sent == 11


async def test_run_twice_at_once_is_refused() -> None:
    _vt, clock = virtual_clock()
    clock.register(lambda now: None)
    task = asyncio.ensure_future(clock.run(ticks=100))
    await asyncio.sleep(0)
    with pytest.raises(RuntimeError, match="already running"):
        await clock.run(ticks=1)
    await task
    assert not clock.running


async def test_real_clock_smoke() -> None:
    """Real time, sanity only (timing goals are measured in bench/pacing_bench.py)."""
    clock = PacingClock()
    times: list[float] = []
    clock.register(times.append)
    started = time.monotonic()
    await clock.run(ticks=20)
    assert len(times) == 20
    assert times == sorted(times)
    assert 0.35 <= time.monotonic() - started < 5.0

    async with clock:
        await asyncio.sleep(0.1)
        assert clock.running
    assert not clock.running
    assert len(times) > 20


def test_interval_deviation_histogram_and_windows() -> None:
    from asterisk_agent.media.pacer import PacingStats

    stats = PacingStats()
    assert stats.deviation_ms(0.99) is None
    for seconds in [0.0001] * 98 + [0.0015, 0.030]:
        stats.add_deviation(seconds)
    assert stats.deviation_ms(0.5) == 0.2  # 0.1 ms falls in the second bin: upper edge 0.2
    assert stats.deviation_ms(0.99) == 1.6
    assert stats.deviation_ms(1.0) == 20.1  # beyond the histogram: its last bin
    stats.stalls = 2
    window = stats.take_window()
    assert window["intervals"] == 100 and window["p99_ms"] == 1.6 and window["stalls"] == 2
    assert stats.deviation_ms(0.5) is None and stats.stalls == 2  # the counter stays cumulative
    stats.stalls = 3
    assert stats.take_window()["stalls"] == 1  # one more in the new window
