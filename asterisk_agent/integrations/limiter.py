"""The per-endpoint gate every attempt passes: at most ``max_in_flight`` on the wire, at most ``rate_per_s``
attempts a second, nothing while the backend has asked us to pause (a 429's Retry-After), and a bounded FIFO
queue for the rest.

One queue for all three reasons to wait, so ``queue_max`` bounds every waiting request, whatever it waits for,
and a request that waits for the pause cannot overtake one that waits for a slot. Slots are handed over by
:meth:`Gate.release` (or a timer when the rate or a pause is what holds the head back) straight to the head of
the queue, so a newcomer never jumps it.

The rate is a bucket of one token: attempts are at least ``1 / rate_per_s`` apart, never in bursts, which is
the strictest reading of a backend's published limit.
"""

from __future__ import annotations

import asyncio
import collections


class QueueFull(Exception):
    """The wait queue already holds ``queue_max`` requests."""


class Gate:
    def __init__(self, max_in_flight: int, queue_max: int, rate_per_s: float = 0.0) -> None:
        if max_in_flight < 1 or queue_max < 0 or rate_per_s < 0:
            raise ValueError("max_in_flight must be >= 1, queue_max and rate_per_s >= 0")
        self.max_in_flight = max_in_flight
        self.queue_max = queue_max
        self.interval = 1.0 / rate_per_s if rate_per_s else 0.0
        self.in_flight = 0
        self.peak_in_flight = 0
        self.peak_queued = 0
        self._waiters: collections.deque[asyncio.Future[None]] = collections.deque()
        self._paused_until = 0.0  # loop time
        self._next_grant = 0.0  # loop time; the rate's token
        self._timer: asyncio.TimerHandle | None = None
        self._timer_at = 0.0

    @property
    def queued(self) -> int:
        return len(self._waiters)

    @property
    def paused_until(self) -> float:
        return self._paused_until

    def pause_until(self, when: float) -> None:
        """Hand out no slot before loop time ``when`` (the backend said so). Attempts already on the wire go on."""
        self._paused_until = max(self._paused_until, when)

    def _ready_at(self) -> float:
        return max(self._paused_until, self._next_grant)

    def _take(self, now: float) -> None:
        self.in_flight += 1
        self.peak_in_flight = max(self.peak_in_flight, self.in_flight)
        if self.interval:
            self._next_grant = now + self.interval

    def try_acquire(self) -> bool:
        """A slot now, if one is free and nobody is queued for it (no timer, no future: the common case)."""
        now = asyncio.get_running_loop().time()
        if not self._waiters and self.in_flight < self.max_in_flight and now >= self._ready_at():
            self._take(now)
            return True
        return False

    async def acquire(self) -> None:
        """A slot: :class:`QueueFull` at once when the queue is full, else the wait in the queue (bound it with
        ``asyncio.timeout``; a cancelled or timed-out wait leaves the queue and holds nothing). The caller must
        :meth:`release` the slot."""
        if self.try_acquire():
            return
        loop = asyncio.get_running_loop()
        if len(self._waiters) >= self.queue_max:
            raise QueueFull
        waiter: asyncio.Future[None] = loop.create_future()
        self._waiters.append(waiter)
        self.peak_queued = max(self.peak_queued, len(self._waiters))
        self._dispatch()
        try:
            await waiter
        except BaseException:
            if waiter.done() and not waiter.cancelled():
                self.release()  # granted in the same instant as the timeout or cancellation: give it back
            else:
                waiter.cancel()
                if waiter in self._waiters:  # _dispatch drops cancelled waiters it meets at the head
                    self._waiters.remove(waiter)
            raise

    def release(self) -> None:
        self.in_flight -= 1
        self._dispatch()

    def _dispatch(self) -> None:
        """Hand free slots to the head of the queue, or set a timer for when the rate or a pause allows it."""
        loop = asyncio.get_running_loop()
        while self._waiters and self.in_flight < self.max_in_flight:
            now = loop.time()
            ready = self._ready_at()
            if now < ready:
                self._wake_at(loop, ready)
                return
            waiter = self._waiters.popleft()
            if waiter.done():
                continue  # cancelled, its owner not yet resumed
            self._take(now)
            waiter.set_result(None)

    def _wake_at(self, loop: asyncio.AbstractEventLoop, when: float) -> None:
        if self._timer is not None:
            if self._timer_at <= when:
                return  # an earlier (or the same) wake-up is set; it will look again
            self._timer.cancel()
        self._timer_at = when
        self._timer = loop.call_at(when, self._on_timer)

    def _on_timer(self) -> None:
        self._timer = None
        self._dispatch()

    def close(self) -> None:
        if self._timer is not None:
            self._timer.cancel()
            self._timer = None
