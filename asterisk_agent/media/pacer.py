"""Outbound pacing: one deadline clock drives the sender of every call, one 20 ms frame per stream per tick.

:class:`PacingClock` ticks on a fixed grid of the monotonic clock: tick ``k`` is due at ``origin + k * period``
(the grid is computed from the origin, never accumulated, so there is no drift, not even float drift), and it
sleeps until each deadline, never ``sleep(period)`` in a loop. When the loop was blocked for a period or more,
the ticks missed are skipped and counted (``stats.skipped``), and the next tick runs on the same grid: a stall
never turns into a burst of frames, and the phase is not lost. Each tick calls every registered stream's
``tick(now)`` (synchronous, cheap: send at most one frame); registering or unregistering from inside a tick is
safe (a stream registered during a tick starts on the next one; one unregistered is not called again). A
callback that raises is logged, counted and unregistered: one broken stream does not stop every call's audio.

Time is injectable (a ``now()`` callable and a ``sleep_until(deadline)`` awaitable); :class:`VirtualTime` is
the one tests and simulations use to run minutes of ticks in milliseconds. The default is ``time.monotonic``
with ``asyncio.sleep(deadline - now)``.

:class:`FrameQueue` holds a stream's outgoing 20 ms payloads; ``clear()`` is barge-in (it returns how many
frames were dropped, so the session can record where the reply was cut). :class:`PacedSender` is the usual
stream: one frame from its queue to a send callable per tick.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import time
from collections import deque
from collections.abc import Awaitable, Callable, Iterable
from dataclasses import dataclass, field

from asterisk_agent.media.frames import FRAME_SECONDS

log = logging.getLogger(__name__)

Now = Callable[[], float]
SleepUntil = Callable[[float], Awaitable[None]]
TickCallback = Callable[[float], object]

_EPSILON = 1e-6  # lateness this close to a whole period counts as the period (float rounding of the grid)


async def sleep_until_monotonic(deadline: float) -> None:
    """Sleep until ``time.monotonic()`` reaches ``deadline``; yields to the loop even when it already has."""
    delay = deadline - time.monotonic()
    await asyncio.sleep(delay if delay > 0 else 0)


class VirtualTime:
    """A virtual monotonic clock: ``sleep_until`` jumps time to the deadline (plus ``wake_delay()``, to model the
    loop's scheduling delay), then yields once; ``advance()`` models the loop being blocked."""

    def __init__(self, start: float = 1000.0, *, wake_delay: Callable[[], float] | None = None) -> None:
        self.time = start
        self.wake_delay = wake_delay

    def now(self) -> float:
        return self.time

    def advance(self, seconds: float) -> None:
        self.time += seconds

    async def sleep_until(self, deadline: float) -> None:
        self.time = max(self.time, deadline)
        if self.wake_delay is not None:
            self.time += self.wake_delay()
        await asyncio.sleep(0)


class TickHandle:
    """A registration with a :class:`PacingClock`; ``cancel()`` unregisters it (idempotent)."""

    __slots__ = ("_clock", "active", "callback", "error")

    def __init__(self, clock: PacingClock, callback: TickCallback) -> None:
        self._clock = clock
        self.callback = callback
        self.active = True
        self.error: BaseException | None = None  # set when the callback raised and was unregistered

    def cancel(self) -> None:
        self._clock.unregister(self)


DEVIATION_BIN_MS = 0.1
DEVIATION_BINS = 201  # 0 .. 20 ms in 0.1 ms steps; the last bin holds everything beyond


@dataclass(slots=True)
class PacingStats:
    ticks: int = 0  # ticks run
    skipped: int = 0  # grid ticks skipped after stalls (never sent late in a burst)
    stalls: int = 0  # wake-ups that were a period or more late
    errors: int = 0  # callbacks that raised (and were unregistered)
    max_lateness: float = 0.0  # worst lateness of a tick that ran, in seconds, relative to its grid deadline
    # How far each interval between two ticks strayed from the period (|lateness - previous lateness|), as a
    # histogram, so a long run costs no memory; :meth:`deviation_ms` reads percentiles off it.
    deviations: list[int] = field(default_factory=lambda: [0] * DEVIATION_BINS)
    _window_stalls: int = 0  # stalls and skipped ticks when the current window began
    _window_skipped: int = 0

    def add_deviation(self, seconds: float) -> None:
        self.deviations[min(DEVIATION_BINS - 1, int(abs(seconds) * 1000 / DEVIATION_BIN_MS))] += 1

    def deviation_ms(self, q: float) -> float | None:
        """The ``q`` quantile (0..1) of the interval deviation in milliseconds (upper edge of its bin)."""
        total = sum(self.deviations)
        if not total:
            return None
        rank, seen = q * total, 0
        for index, count in enumerate(self.deviations):
            seen += count
            if seen >= rank:
                return round((index + 1) * DEVIATION_BIN_MS, 1)
        return round(DEVIATION_BINS * DEVIATION_BIN_MS, 1)

    def take_window(self) -> dict[str, float | int | None]:
        """A summary since the last call (intervals, p50/p99/max deviation, stalls and skipped ticks), then start
        a new window. The counters themselves stay cumulative."""
        summary: dict[str, float | int | None] = {
            "intervals": sum(self.deviations), "p50_ms": self.deviation_ms(0.5), "p99_ms": self.deviation_ms(0.99),
            "max_ms": self.deviation_ms(1.0), "stalls": self.stalls - self._window_stalls,
            "skipped": self.skipped - self._window_skipped,
        }
        self.deviations = [0] * DEVIATION_BINS
        self._window_stalls, self._window_skipped = self.stalls, self.skipped
        return summary


class PacingClock:
    """One 20 ms deadline clock for many streams; see the module docstring."""

    def __init__(self, *, period: float = FRAME_SECONDS, now: Now = time.monotonic,
                 sleep_until: SleepUntil | None = None) -> None:
        if period <= 0:
            raise ValueError("period must be positive")
        self.period = period
        self._now = now
        self._sleep_until: SleepUntil = sleep_until if sleep_until is not None else sleep_until_monotonic
        self._handles: dict[TickHandle, None] = {}
        self._snapshot: tuple[TickHandle, ...] | None = ()
        self._running = False
        self._stopping = False
        self._task: asyncio.Task[None] | None = None
        self.origin: float | None = None  # monotonic time of grid tick 0
        self.index = -1  # grid index of the current (or last) tick
        self.stats = PacingStats()

    # ---- registration ----------------------------------------------------------------------------------------

    def register(self, callback: TickCallback) -> TickHandle:
        """Call ``callback(now)`` on every tick from the next one on, until the handle is cancelled."""
        handle = TickHandle(self, callback)
        self._handles[handle] = None
        self._snapshot = None
        return handle

    def unregister(self, handle: TickHandle) -> None:
        handle.active = False
        if handle in self._handles:
            del self._handles[handle]
            self._snapshot = None

    def __len__(self) -> int:
        return len(self._handles)

    @property
    def running(self) -> bool:
        return self._running

    def now(self) -> float:
        return self._now()

    def deadline(self, index: int) -> float:
        """When grid tick ``index`` is due (the clock must have started)."""
        if self.origin is None:
            raise RuntimeError("the clock has not started")
        return self.origin + index * self.period

    # ---- running -----------------------------------------------------------------------------------------------

    async def run(self, ticks: int | None = None) -> None:
        """Tick until ``stop()`` (or cancellation), or until ``ticks`` ticks have run."""
        if self._running:
            raise RuntimeError("the pacing clock is already running")
        self._running = True
        self._stopping = False
        period = self.period
        origin = self._now()
        self.origin = origin
        index = 0
        done = 0
        previous_late = 0.0
        try:
            while not self._stopping and (ticks is None or done < ticks):
                deadline = origin + index * period
                await self._sleep_until(deadline)
                now = self._now()
                late = now - deadline
                if late >= period - _EPSILON:  # stalled: skip the ticks missed, stay on the grid
                    missed = int((late + _EPSILON) // period)
                    index += missed
                    self.stats.skipped += missed
                    self.stats.stalls += 1
                    late -= missed * period
                self.stats.max_lateness = max(self.stats.max_lateness, late)
                if done:
                    self.stats.add_deviation(late - previous_late)
                previous_late = late
                self.index = index
                self.stats.ticks += 1
                self._fire(now)
                index += 1
                done += 1
        finally:
            self._running = False

    def _fire(self, now: float) -> None:
        snapshot = self._snapshot
        if snapshot is None:
            snapshot = self._snapshot = tuple(self._handles)
        for handle in snapshot:
            if not handle.active:
                continue
            try:
                handle.callback(now)
            except Exception as exc:
                self.stats.errors += 1
                handle.error = exc
                self.unregister(handle)
                log.exception("pacing: a stream's tick raised; it is unregistered")

    def start(self) -> asyncio.Task[None]:
        """Run the clock in a task of its own (``stop()`` ends it)."""
        if self._task is not None and not self._task.done():
            return self._task
        self._task = asyncio.get_running_loop().create_task(self.run(), name="pacing-clock")
        return self._task

    async def stop(self) -> None:
        """Stop ticking; idempotent. Registered streams stay registered."""
        self._stopping = True
        task, self._task = self._task, None
        if task is not None and not task.done():
            task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await task

    async def __aenter__(self) -> PacingClock:
        self.start()
        return self

    async def __aexit__(self, *exc_info: object) -> None:
        await self.stop()


class FrameQueue:
    """A stream's outgoing 20 ms payloads, oldest first."""

    __slots__ = ("_frames", "cleared", "enqueued", "taken")

    def __init__(self) -> None:
        self._frames: deque[bytes] = deque()
        self.enqueued = 0
        self.taken = 0
        self.cleared = 0

    def put(self, payload: bytes) -> None:
        self._frames.append(payload)
        self.enqueued += 1

    def extend(self, payloads: Iterable[bytes]) -> None:
        before = len(self._frames)
        self._frames.extend(payloads)
        self.enqueued += len(self._frames) - before

    def pop(self) -> bytes | None:
        """The next frame to send, or None when the queue is empty."""
        if not self._frames:
            return None
        self.taken += 1
        return self._frames.popleft()

    def clear(self) -> int:
        """Drop every queued frame (barge-in); return how many were dropped."""
        dropped = len(self._frames)
        self._frames.clear()
        self.cleared += dropped
        return dropped

    def __len__(self) -> int:
        return len(self._frames)

    def __bool__(self) -> bool:
        return bool(self._frames)


class PacedSender:
    """A stream for the clock: each tick sends at most one frame from ``queue`` through ``send``.

    ``clock.register(sender.tick)``; barge-in is ``sender.queue.clear()``, effective from the next tick.
    """

    __slots__ = ("queue", "send", "sent")

    def __init__(self, send: Callable[[bytes], object], queue: FrameQueue | None = None) -> None:
        self.send = send
        self.queue = queue if queue is not None else FrameQueue()
        self.sent = 0

    def tick(self, now: float) -> None:
        del now
        payload = self.queue.pop()
        if payload is not None:
            self.send(payload)
            self.sent += 1
