"""Switchable faults and request counters shared by the reference backends.

A reference backend is only useful to the worker's tests if it can misbehave the way real ones do, on demand and
at run time: refuse with 429 or 503 (both with ``Retry-After``), answer late, drop the connection without an
answer, answer 200 with a body that is not JSON, or refuse what exceeds its capacity. The fault applies to every
``every``-th request (1: all of them), counted from the moment the fault was set, so a test can predict exactly
which requests fail.

The counters are exact, because the project's tests assert from them that the worker never had more requests in
flight at a backend than its own limit: ``in_flight`` goes up when a request enters the fault middleware and down
in its ``finally``, refused requests included (a client that overruns the capacity shows a peak above it).
The ``/_control/*`` routes are never faulted nor counted.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
from collections import Counter
from collections.abc import Awaitable, Callable, Mapping
from dataclasses import dataclass, field
from typing import Any, Literal, cast

from aiohttp import web

FaultMode = Literal["none", "429", "503", "slow", "down", "invalid_json"]
FAULT_MODES: tuple[FaultMode, ...] = ("none", "429", "503", "slow", "down", "invalid_json")
CONTROL_PREFIX = "/_control/"
INVALID_JSON_BODY = b'{"status": "ok", "data": [1, 2,'  # truncated: what a proxy cut mid-answer delivers
_MAX_SLOW_MS = 600_000

Handler = Callable[[web.Request], Awaitable[web.StreamResponse]]


class ApiError(Exception):
    """An answer other than success: raised anywhere in a handler, answered as ``{"error": code, ...}``."""

    def __init__(self, status: int, error: str, *, headers: Mapping[str, str] | None = None, **extra: Any) -> None:
        super().__init__(f"{status} {error}")
        self.status = status
        self.error = error
        self.headers = dict(headers or {})
        self.extra = extra

    def response(self) -> web.Response:
        return web.json_response({"error": self.error, **self.extra}, status=self.status, headers=self.headers)


@dataclass(slots=True)
class FaultState:
    """What a backend does wrong, if anything; changed in process or through ``POST /_control/faults``."""

    mode: FaultMode = "none"
    retry_after_s: int = 1
    slow_ms: int = 3000
    every: int = 1
    capacity: int | None = None  # requests handled at once; more get 429 (None: unlimited)
    _seen: int = field(default=0, init=False, repr=False)  # requests that reached the fault since it was set
    _release: asyncio.Event = field(default_factory=asyncio.Event, init=False, repr=False)

    def __post_init__(self) -> None:
        self.apply({"mode": self.mode, "retry_after_s": self.retry_after_s, "slow_ms": self.slow_ms,
                    "every": self.every, "capacity": self.capacity})

    def apply(self, changes: Mapping[str, Any]) -> None:
        """Set the fault from a JSON object; raise ValueError (nothing changed) on a bad one.

        Giving ``mode`` sets a whole new fault: its parameters not given go back to their defaults and the
        ``every`` count starts again. ``capacity`` changes only when given (``null`` removes the limit).
        """
        unknown = set(changes) - {"mode", "retry_after_s", "slow_ms", "every", "capacity"}
        if unknown:
            raise ValueError(f"unknown fault settings: {', '.join(sorted(unknown))}")
        mode, retry_after_s, slow_ms, every = self.mode, self.retry_after_s, self.slow_ms, self.every
        if "mode" in changes:
            if changes["mode"] not in FAULT_MODES:
                raise ValueError(f"mode must be one of {', '.join(FAULT_MODES)}")
            mode, retry_after_s, slow_ms, every = cast(FaultMode, changes["mode"]), 1, 3000, 1
        retry_after_s = _int(changes, "retry_after_s", retry_after_s, 0, 3600)
        slow_ms = _int(changes, "slow_ms", slow_ms, 0, _MAX_SLOW_MS)
        every = _int(changes, "every", every, 1, 1_000_000)
        capacity = self.capacity
        if "capacity" in changes:
            capacity = None if changes["capacity"] is None else _int(changes, "capacity", 0, 1, 100_000)
        self.mode, self.retry_after_s, self.slow_ms, self.every, self.capacity = (
            mode, retry_after_s, slow_ms, every, capacity)
        if "mode" in changes:
            self._seen = 0

    def clear(self) -> None:
        """No fault and no capacity limit."""
        self.apply({"mode": "none", "capacity": None})

    def pick(self) -> FaultMode:
        """The fault for the request arriving now: the mode on every ``every``-th one, ``none`` otherwise."""
        if self.mode == "none":
            return "none"
        self._seen += 1
        return self.mode if self._seen % self.every == 0 else "none"

    async def delay(self) -> None:
        """Wait ``slow_ms``, or less if :meth:`release_slow` is called meanwhile (a test, or shutdown)."""
        with contextlib.suppress(TimeoutError):
            await asyncio.wait_for(self._release.wait(), self.slow_ms / 1000)

    def release_slow(self) -> None:
        """Let every request now delayed by ``slow`` answer at once; later ones are delayed again."""
        self._release.set()
        self._release = asyncio.Event()

    def to_dict(self) -> dict[str, Any]:
        return {"mode": self.mode, "retry_after_s": self.retry_after_s, "slow_ms": self.slow_ms,
                "every": self.every, "capacity": self.capacity}


def _int(changes: Mapping[str, Any], key: str, default: int, low: int, high: int) -> int:
    if key not in changes:
        return default
    value = changes[key]
    if isinstance(value, bool) or not isinstance(value, int) or not low <= value <= high:
        raise ValueError(f"{key} must be an integer from {low} to {high}")
    return value


@dataclass(slots=True)
class Stats:
    """What a backend saw, for tests to assert on (``GET /_control/stats``)."""

    requests: int = 0
    in_flight: int = 0
    peak_in_flight: int = 0
    by_status: Counter[str] = field(default_factory=Counter)
    faulted: int = 0  # requests a fault mode was applied to
    over_capacity: int = 0  # requests refused with 429 because ``capacity`` were already in flight
    _changed: asyncio.Event = field(default_factory=asyncio.Event, init=False, repr=False)

    def enter(self) -> None:
        self.requests += 1
        self.in_flight += 1
        self.peak_in_flight = max(self.peak_in_flight, self.in_flight)
        self._notify()

    def leave(self, status: int | None) -> None:
        self.in_flight -= 1
        if status is not None:
            self.by_status[str(status)] += 1
        self._notify()

    async def wait_until(self, predicate: Callable[[Stats], bool]) -> None:
        """Return once ``predicate(stats)`` holds, checked after every request's entry and exit: how a test
        in the same process waits for "20 requests in flight" without sleeping."""
        while not predicate(self):
            await self._changed.wait()

    def _notify(self) -> None:
        self._changed.set()
        self._changed = asyncio.Event()

    def reset(self) -> None:
        """Zero the counters; requests in flight stay counted (they will leave) and the peak restarts from them."""
        self.requests = self.faulted = self.over_capacity = 0
        self.by_status.clear()
        self.peak_in_flight = self.in_flight

    def to_dict(self) -> dict[str, Any]:
        return {"requests": self.requests, "in_flight": self.in_flight, "peak_in_flight": self.peak_in_flight,
                "by_status": dict(sorted(self.by_status.items())), "faulted": self.faulted,
                "over_capacity": self.over_capacity}


def _refusal(status: int, error: str, retry_after_s: int) -> web.Response:
    return ApiError(status, error, headers={"Retry-After": str(retry_after_s)}).response()


def _drop_connection(request: web.Request) -> None:
    """Close the socket under the request without a byte of answer, as a crashed backend would."""
    transport = request.transport
    if transport is not None:
        transport.abort()
    request.protocol.force_close()


def fault_middleware(faults: FaultState, stats: Stats) -> Any:
    """The middleware that counts every non-control request and applies capacity and faults to it.

    429, 503 and ``down`` refuse before the handler runs (nothing happens); ``slow`` and ``invalid_json`` let
    it run and spoil only the answer, so a client that gives up and retries meets what the first try did.
    """

    @web.middleware
    async def middleware(request: web.Request, handler: Handler) -> web.StreamResponse:
        if request.path.startswith(CONTROL_PREFIX):
            return await handler(request)
        stats.enter()
        status: int | None = None
        try:
            if faults.capacity is not None and stats.in_flight > faults.capacity:
                stats.over_capacity += 1
                response = _refusal(429, "over_capacity", faults.retry_after_s)
                status = response.status
                return response
            fault = faults.pick()
            if fault != "none":
                stats.faulted += 1
            if fault == "down":
                _drop_connection(request)
                return web.Response(status=204)  # never sent: the transport is gone
            if fault in ("429", "503"):
                refused = _refusal(int(fault), "rate_limited" if fault == "429" else "unavailable",
                                   faults.retry_after_s)
                status = refused.status
                return refused
            answer = await handler(request)
            if fault == "slow":
                await faults.delay()
            if fault == "invalid_json":
                answer = web.Response(body=INVALID_JSON_BODY, content_type="application/json")
            status = answer.status
            return answer
        except web.HTTPException as exc:
            status = exc.status
            raise
        except Exception:
            status = 500
            raise
        finally:
            stats.leave(status)

    return middleware


@web.middleware
async def error_middleware(request: web.Request, handler: Handler) -> web.StreamResponse:
    """Every error answered as JSON, ours (:class:`ApiError`) and aiohttp's (unknown route, wrong method)."""
    try:
        return await handler(request)
    except ApiError as exc:
        return exc.response()
    except web.HTTPException as exc:
        if exc.status < 400:
            raise
        headers = {k: v for k, v in exc.headers.items() if k.lower() not in ("content-type", "content-length")}
        code = (exc.reason or "error").lower().replace(" ", "_")
        return web.json_response({"error": code}, status=exc.status, headers=headers)


def control_routes(faults: FaultState, stats: Stats) -> list[web.RouteDef]:
    """``/_control/faults`` (GET, POST), ``/_control/stats`` (GET) and ``/_control/reset-stats`` (POST)."""

    async def get_faults(request: web.Request) -> web.Response:
        return web.json_response(faults.to_dict())

    async def set_faults(request: web.Request) -> web.Response:
        body = await read_object(request)
        try:
            faults.apply(body)
        except ValueError as exc:
            raise ApiError(400, "bad_fault", detail=str(exc)) from exc
        return web.json_response(faults.to_dict())

    async def get_stats(request: web.Request) -> web.Response:
        return web.json_response(stats.to_dict())

    async def reset_stats(request: web.Request) -> web.Response:
        stats.reset()
        return web.json_response(stats.to_dict())

    return [
        web.get(CONTROL_PREFIX + "faults", get_faults),
        web.post(CONTROL_PREFIX + "faults", set_faults),
        web.get(CONTROL_PREFIX + "stats", get_stats),
        web.post(CONTROL_PREFIX + "reset-stats", reset_stats),
    ]


async def read_object(request: web.Request) -> dict[str, Any]:
    """The request's JSON object body; 400 ``bad_json`` for anything else (an empty body is ``{}``)."""
    raw = await request.read()
    if not raw.strip():
        return {}
    try:
        body = json.loads(raw)
    except (ValueError, UnicodeDecodeError) as exc:
        raise ApiError(400, "bad_json") from exc
    if not isinstance(body, dict):
        raise ApiError(400, "bad_json", detail="the body must be a JSON object")
    return body
