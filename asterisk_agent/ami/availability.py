"""Which human agents are free right now, kept from AMI, so the worker never rings a busy or paused agent.

One owner task holds one AMI connection at a time: connect, log in, read a snapshot (``QueueStatus`` for the
watched queues, ``DeviceStateList``), then follow events (queue member status, pause, added, removed; queue
callers joining and leaving; device state changes) and ping while idle. When the connection drops, or a ping
goes unanswered, the view is **stale** until the next connection's snapshot is in: questions then answer
``None`` (unknown), never a guess, and the caller of this module decides what unknown means for it (the
warm transfer may still ring a queue, whose own logic skips busy members, and skip a direct endpoint).

Events that arrive while a snapshot is being read are held and replayed over it (see
:meth:`AvailabilityView.seed`), so a change made between the snapshot and the first event is never lost.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import random
import time
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from typing import Any

from asterisk_agent.ami.connection import AmiAuthError, AmiConnection, AmiError
from asterisk_agent.ami.view import AmiMessage, AvailabilityView, DeviceState, QueueMember
from asterisk_agent.config import AmiConfig

log = logging.getLogger(__name__)

ConnectionFactory = Callable[..., AmiConnection]


@dataclass(frozen=True)
class AvailabilityState:
    """A snapshot for an admin view: what is known, and whether it can be trusted (``fresh``)."""

    connected: bool  # an AMI connection is logged in
    fresh: bool  # connected and seeded: the answers are current
    stale_for_ms: int | None  # how long the view has not been current (None: it is)
    connections: int  # successful logins so far
    bad_events: int  # AMI messages that could not be used
    last_error: str
    queues: Mapping[str, tuple[QueueMember, ...]]
    callers: Mapping[str, int]  # callers waiting, per queue
    devices: Mapping[str, DeviceState]
    claimed: frozenset[str]  # devices this worker is dialling

    def as_json(self) -> dict[str, object]:
        return {
            "connected": self.connected, "fresh": self.fresh, "stale_for_ms": self.stale_for_ms,
            "connections": self.connections, "bad_events": self.bad_events, "last_error": self.last_error,
            "queues": {name: {"callers": self.callers.get(name, 0), "members": [m.as_json() for m in members]}
                       for name, members in self.queues.items()},
            "devices": {device: state.value for device, state in self.devices.items()},
            "claimed": sorted(self.claimed),
        }


def _list_items(answer: Any, action: str) -> list[dict[str, object]]:
    """The items of a list answer (between the Response and the ...Complete event), as header dicts."""
    if not isinstance(answer, list):
        message = answer.get("Message", "") if hasattr(answer, "get") else ""
        raise AmiError(f"AMI refused {action}: {message or 'no reason given'} (check the user's permissions)")
    if not answer or not answer[0].success:
        raise AmiError(f"AMI refused {action}")
    return [{k: v for k, v in item.items() if k != "content"} for item in answer[1:-1]]


class AgentAvailability:
    """Agent availability over AMI (``ami`` in the configuration; docs/agents.md).

    ``start()`` and ``stop()`` are idempotent; ``start()`` returns at once (await :meth:`wait_fresh` to know
    the first snapshot is in). The answers are synchronous reads of the in-memory view.
    """

    def __init__(self, config: AmiConfig, *, connection_factory: ConnectionFactory = AmiConnection) -> None:
        self._config = config
        self._connection_factory = connection_factory
        self.view = AvailabilityView(config.queues)
        self.connections = 0  # successful logins
        self.seeds = 0  # snapshots taken (one per connection that got that far)
        self.last_error = ""
        self._connection: AmiConnection | None = None
        self._logged_in: AmiConnection | None = None
        self._task: asyncio.Task[None] | None = None
        self._fresh = False
        self._stale_since: float | None = time.monotonic()
        self._held: list[AmiMessage] | None = None  # events arriving while a snapshot is read
        self._claimed: set[str] = set()  # devices the worker is dialling (see claim)
        self._changed = asyncio.Event()

    def __repr__(self) -> str:
        return (f"<AgentAvailability {self._config.username}@{self._config.host}:{self._config.port} "
                f"{'fresh' if self._fresh else 'stale'}>")

    # --- answers ------------------------------------------------------------------------------------------

    @property
    def fresh(self) -> bool:
        """Connected and seeded: the answers below are current."""
        return self._fresh

    @property
    def connected(self) -> bool:
        """A connection is logged in (it may still be reading its snapshot)."""
        connection = self._connection
        return connection is not None and connection is self._logged_in and not connection.closed.done()

    @property
    def bad_events(self) -> int:
        return self.view.bad_events

    def can_ring_endpoint(self, device: str) -> bool | None:
        """May ``device`` (``PJSIP/agent1``, as in Dial()) be rung now? True only when Asterisk says it is idle
        (NOT_INUSE); False when it is in use, ringing, busy, on hold, unavailable, invalid, unknown, or never
        reported; None when the view is stale (AMI down or reconnecting): unknown, the caller decides."""
        if not self._fresh:
            return None
        return device not in self._claimed and self.view.can_ring(device)

    def device_state(self, device: str) -> DeviceState | None:
        """The device's last known state (None: stale, or never reported)."""
        return self.view.device(device) if self._fresh else None

    def free_members(self, queue: str) -> list[str] | None:
        """Interfaces of the queue's members that are not paused and not in use (device NOT_INUSE, not on a
        queue call), in the queue's order. None when the view is stale, or the queue is not watched or does not
        exist on the PBX: unknown, not "nobody"."""
        if not self._fresh:
            return None
        if queue not in self.view.queues:
            return None
        claimed = self._claimed
        return [member.interface for member in self.view.members(queue)
                if member.free and member.interface not in claimed and member.state_interface not in claimed]

    def claim(self, device: str) -> bool:
        """Take ``device`` for a call this worker is about to place, if it can be rung: True when taken. Until
        :meth:`release`, it is not free for anyone else here. Asterisk reports a dialled device NOT_INUSE until
        it answers the INVITE with 180 Ringing, so two transfers that only asked ``can_ring_endpoint`` could
        both ring the same agent; a claim closes that gap. Only with a fresh view (a stale one answers False:
        ring it without a claim if you decide to)."""
        if self.can_ring_endpoint(device) is not True:
            return False
        self._claimed.add(device)
        return True

    def release(self, device: str) -> None:
        """End a claim (idempotent); the device's own state decides again."""
        if device in self._claimed:
            self._claimed.discard(device)
            self._notify()

    def state(self) -> AvailabilityState:
        stale_since = self._stale_since
        return AvailabilityState(
            connected=self.connected, fresh=self._fresh,
            stale_for_ms=None if stale_since is None else round((time.monotonic() - stale_since) * 1000),
            connections=self.connections, bad_events=self.view.bad_events, last_error=self.last_error,
            queues={name: tuple(q.members.values()) for name, q in self.view.queues.items()},
            callers={name: q.callers for name, q in self.view.queues.items()},
            devices=dict(self.view.devices), claimed=frozenset(self._claimed),
        )

    async def wait_until(self, predicate: Callable[[AgentAvailability], bool]) -> None:
        """Return once ``predicate(self)`` holds; it is checked after every change of the view, of its
        freshness, of ``bad_events`` and of ``last_error`` (bound it with ``asyncio.timeout``)."""
        while not predicate(self):
            changed = self._changed
            await changed.wait()

    async def wait_fresh(self) -> None:
        await self.wait_until(lambda availability: availability.fresh)

    # --- life ---------------------------------------------------------------------------------------------

    async def start(self) -> None:
        if self._task is None or self._task.done():
            self._task = asyncio.create_task(self._run(), name="ami-availability")

    async def stop(self) -> None:
        task, self._task = self._task, None
        if task is not None:
            task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await task
        if self._connection is not None:
            self._connection.close("stopped")
            self._connection = None
        self._set_fresh(False, quiet=True)

    async def _run(self) -> None:
        config = self._config
        delay = config.reconnect_min_ms / 1000
        failures = 0
        while True:
            started = time.monotonic()
            seeds = self.seeds
            try:
                await self._connect_and_follow()
            except AmiAuthError as exc:
                self._failed(str(exc), logging.ERROR if failures == 0 else logging.DEBUG)
            except AmiError as exc:
                self._failed(str(exc), logging.WARNING if failures == 0 else logging.DEBUG)
            except Exception as exc:  # a bug must not end availability for the worker's life
                log.exception("AMI: unexpected failure; reconnecting")
                self.last_error = f"{type(exc).__name__}: {exc}"
            finally:
                if self._connection is not None:
                    self._connection.close("reconnecting")
                task = asyncio.current_task()
                self._set_fresh(False, quiet=task is not None and task.cancelling() > 0)  # quiet when stopping
            if self.seeds > seeds:
                failures = 0
                if time.monotonic() - started >= config.reconnect_max_ms / 1000:  # it held: back off from the start
                    delay = config.reconnect_min_ms / 1000  # (a link that drops at once keeps backing off)
            else:
                failures += 1
            await asyncio.sleep(delay * random.uniform(0.5, 1.0))
            delay = min(config.reconnect_max_ms / 1000, delay * 2)

    def _failed(self, message: str, level: int) -> None:
        self.last_error = message
        log.log(level, "%s; retrying with backoff", message)
        self._notify()

    async def _connect_and_follow(self) -> None:
        """One connection's life: log in, seed, follow until it ends (always by an exception)."""
        config = self._config

        def on_event(message: dict[str, object]) -> None:
            if self._connection is connection:  # never a message of an earlier connection
                self._on_event(message)

        connection = self._connection_factory(
            config.host, config.port, config.username, config.secret,
            on_event=on_event, action_timeout_ms=config.action_timeout_ms,
        )
        self._connection = connection
        self._held = []
        try:
            await connection.open(config.connect_timeout_ms / 1000)
            self._logged_in = connection
            self.connections += 1
            queue_items, device_items = await self._snapshot(connection)
            held, self._held = self._held, None
            self.view.seed(queue_items, device_items, held)
            self.seeds += 1
        finally:
            self._held = None
        self.last_error = ""
        self._set_fresh(True)
        log.info("AMI: connected to %s:%d as %s (connection %d): %d queue(s), %d device(s)", config.host,
                 config.port, config.username, self.connections, len(self.view.queues), len(self.view.devices))
        await self._follow(connection)

    async def _snapshot(self, connection: AmiConnection) -> tuple[list[dict[str, object]], list[dict[str, object]]]:
        queue_items: list[dict[str, object]] = []
        asks = [{"Action": "QueueStatus", "Queue": name} for name in sorted(self.view.watched)]
        for action in asks or [{"Action": "QueueStatus"}]:  # no queue named: every queue
            queue_items += _list_items(await connection.send(action, expect_list=True), "QueueStatus")
        answer = await connection.send({"Action": "DeviceStateList"}, expect_list=True)
        return queue_items, _list_items(answer, "DeviceStateList")

    async def _follow(self, connection: AmiConnection) -> None:
        """Wait for the connection to end, pinging it after each quiet interval."""
        interval = self._config.ping_interval_ms / 1000
        while True:
            await asyncio.wait({connection.closed}, timeout=interval)
            if connection.closed.done():
                raise AmiError(f"AMI connection lost ({connection.closed.result()})")
            try:
                await connection.send({"Action": "Ping"}, expect_list=False)
            except AmiError:
                connection.close("no answer to Ping")
                raise

    def _on_event(self, message: dict[str, object]) -> None:
        if self._held is not None:
            self._held.append(message)
            return
        bad = self.view.bad_events
        if self.view.apply(message) or self.view.bad_events != bad:
            self._notify()

    def _set_fresh(self, fresh: bool, *, quiet: bool = False) -> None:
        if fresh == self._fresh:
            return
        self._fresh = fresh
        self._stale_since = None if fresh else time.monotonic()
        if not fresh and not quiet:
            log.warning("AMI: agent availability is stale (unknown) until AMI is back")
        self._notify()

    def _notify(self) -> None:
        changed, self._changed = self._changed, asyncio.Event()
        changed.set()
