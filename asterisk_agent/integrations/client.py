"""The one outbound HTTP client every dialog flow uses to call its backends (CRM, scheduling, banking).

Backends are shared by every call the worker carries, and a caller is waiting on the line, so the client
protects both sides:

- per endpoint, at most ``max_in_flight`` requests on the wire and at most ``rate_per_s`` attempts a second;
  the rest wait in a bounded FIFO queue (``queue_max``, ``queue_wait_ms``) and one more is refused at once
  (:mod:`.limiter`);
- a 429 pauses the whole endpoint until its ``Retry-After`` (capped), so other calls wait instead of hammering;
- retries with exponential backoff and full jitter; a 429 or 503 ``Retry-After`` replaces the backoff. A request
  that sleeps before its next attempt holds no slot;
- a circuit breaker (:mod:`.breaker`) stops asking a backend that keeps failing;
- ``total_budget_ms`` bounds the whole ``request()``: queue, attempts and backoff. When the next attempt could
  not start within it, the request ends at once with the last failure instead of sleeping into the deadline;
- when everything fails, the last good answer to the same request, if young enough, is served (``CACHED``).

``request()`` never raises for backend trouble: it returns an :class:`IntegrationResult`. It raises only for
programming errors (an unknown endpoint, a path with a query string, a body that is not JSON-serialisable).

A POST or PATCH without an ``idempotency_key`` is retried only after failures that prove the backend did not
act on it (connection refused, 408, 429, 503): after a timeout or a 500 it may have booked the appointment, and
a second attempt would book it twice. With a key (:func:`new_idempotency_key`, sent as ``Idempotency-Key`` on
every attempt) the server can recognise the repeat, so every failure is retried.

Logs name the endpoint, the method, the path (segments with digits or other characters than letters replaced
by ``*``: paths carry account numbers), the outcome, the reason and the attempts. Never headers (the endpoint's
or a request's), query parameters, bodies or answers.
"""

from __future__ import annotations

import asyncio
import collections
import json as jsonlib
import logging
import math
import re
import time
import uuid
from collections.abc import Hashable, Mapping
from dataclasses import dataclass, field
from types import TracebackType
from typing import Any

import aiohttp
from multidict import CIMultiDict

from asterisk_agent.integrations.breaker import CircuitBreaker
from asterisk_agent.integrations.cache import FallbackCache
from asterisk_agent.integrations.limiter import Gate, QueueFull
from asterisk_agent.integrations.result import (
    REASON_BUDGET_EXCEEDED,
    REASON_CIRCUIT_OPEN,
    REASON_CLIENT_ERROR,
    REASON_CONNECTION,
    REASON_INVALID_JSON,
    REASON_OK,
    REASON_QUEUE_FULL,
    REASON_QUEUE_TIMEOUT,
    REASON_RATE_LIMITED,
    REASON_SERVER_ERROR,
    REASON_TIMEOUT,
    EndpointStats,
    IntegrationResult,
    Outcome,
)
from asterisk_agent.integrations.retry import backoff_s, parse_retry_after
from asterisk_agent.integrations.settings import EndpointSettings

log = logging.getLogger(__name__)

IDEMPOTENT_METHODS = frozenset({"GET", "HEAD", "OPTIONS", "PUT", "DELETE"})
NOT_ACTED_ON = frozenset({408, 429, 503})  # statuses that say the backend did not act on the request
RETRY_AFTER_STATUSES = frozenset({429, 503})
_METHOD = re.compile(r"^[A-Z]{1,16}$")
_PATH = re.compile(r"^/[^?#\s]*$")
_PLAIN_SEGMENT = re.compile(r"^(?:[A-Za-z][A-Za-z_.-]*|v[0-9]{1,2})$")

Params = Mapping[str, str | int | float]


class UnknownEndpointError(LookupError):
    """``request()`` named an endpoint the client was not configured with."""


def new_idempotency_key() -> str:
    """A fresh key for one logical operation (make it once, before the first ``request()``, and reuse it if
    the flow itself repeats the operation)."""
    return str(uuid.uuid4())


def loggable_path(path: str) -> str:
    """``path`` fit for a log: a segment other than plain words (or a version like ``v2``) becomes ``*``, so
    ``/v1/accounts/12345678/balance`` is logged as ``/v1/accounts/*/balance``."""
    return "/".join(seg if not seg or _PLAIN_SEGMENT.match(seg) else "*" for seg in path.split("/"))


@dataclass(slots=True)
class _Counters:
    requests: int = 0
    ok: int = 0
    cached: int = 0
    retries: int = 0
    failed: collections.Counter[str] = field(default_factory=collections.Counter)
    cached_by_reason: collections.Counter[str] = field(default_factory=collections.Counter)


@dataclass(frozen=True, slots=True)
class _Attempt:
    reason: str
    status: int | None = None
    body: bytes = b""
    data: Any = None
    retry_after_s: float | None = None
    reached: bool = True  # False when the request certainly never reached the backend (connect failed)


class _Endpoint:
    def __init__(self, name: str, settings: EndpointSettings) -> None:
        self.name = name
        self.settings = settings
        self.gate = Gate(settings.max_in_flight, settings.queue_max, settings.rate_per_s)
        self.breaker = CircuitBreaker(settings.circuit_failures, settings.circuit_open_ms / 1000)
        self.cache = FallbackCache(settings.cache_ttl_ms / 1000)
        self.counters = _Counters()
        self.headers = {"Accept": "application/json", **settings.headers}

    def __repr__(self) -> str:  # never the headers
        return f"<endpoint {self.name} {self.settings.base_url}>"


def _parse(body: bytes) -> tuple[bool, Any]:
    if not body.strip():
        return True, None  # 204, or an empty 200: nothing to parse is not an error
    try:
        return True, jsonlib.loads(body)
    except (UnicodeDecodeError, ValueError):
        return False, None


class IntegrationClient:
    """Outbound requests to the configured endpoints, with one ``aiohttp.ClientSession`` for all of them
    (yours when given, else its own, made on first use in the running loop and closed by :meth:`close`).

    Its own session keeps no cookies: a cookie one call's answer set must not travel with another caller's
    request."""

    def __init__(self, endpoints: Mapping[str, EndpointSettings], session: aiohttp.ClientSession | None = None
                 ) -> None:
        if not endpoints:
            raise ValueError("IntegrationClient needs at least one endpoint")
        self._endpoints = {name: _Endpoint(name, settings) for name, settings in endpoints.items()}
        self._session = session
        self._owns_session = session is None
        self._closed = False

    def __repr__(self) -> str:
        return f"<IntegrationClient endpoints={sorted(self._endpoints)}>"

    @property
    def endpoints(self) -> tuple[str, ...]:
        return tuple(self._endpoints)

    async def __aenter__(self) -> IntegrationClient:
        return self

    async def __aexit__(self, exc_type: type[BaseException] | None, exc: BaseException | None,
                        tb: TracebackType | None) -> None:
        await self.close()

    async def close(self) -> None:
        """Close the session if the client made it (a session you gave stays open) and stop its timers."""
        self._closed = True
        for endpoint in self._endpoints.values():
            endpoint.gate.close()
        if self._owns_session and self._session is not None:
            await self._session.close()
            self._session = None

    def _client_session(self) -> aiohttp.ClientSession:
        if self._closed:
            raise RuntimeError("the IntegrationClient is closed")
        if self._session is None:
            slots = sum(endpoint.settings.max_in_flight for endpoint in self._endpoints.values())
            self._session = aiohttp.ClientSession(connector=aiohttp.TCPConnector(limit=slots),
                                                  cookie_jar=aiohttp.DummyCookieJar())
        return self._session

    def _endpoint(self, name: str) -> _Endpoint:
        try:
            return self._endpoints[name]
        except KeyError:
            raise UnknownEndpointError(f"no endpoint {name!r} (configured: {', '.join(self._endpoints)})") from None

    def stats(self, endpoint: str) -> EndpointStats:
        ep = self._endpoint(endpoint)
        counters = ep.counters
        now = asyncio.get_running_loop().time() if _loop_running() else time.monotonic()
        return EndpointStats(
            requests=counters.requests, ok=counters.ok, cached=counters.cached, failed=dict(counters.failed),
            cached_by_reason=dict(counters.cached_by_reason), retries=counters.retries,
            in_flight=ep.gate.in_flight, peak_in_flight=ep.gate.peak_in_flight, queued=ep.gate.queued,
            peak_queued=ep.gate.peak_queued, circuit=ep.breaker.state(now), circuit_opened=ep.breaker.opened,
        )

    async def request(self, endpoint: str, method: str, path: str, *, json: Any = None, params: Params | None = None,
                      idempotency_key: str | None = None, cache_key: str | None = None,
                      headers: Mapping[str, str] | None = None, cache_first: bool = False) -> IntegrationResult:
        """``method`` ``path`` (relative to the endpoint's ``base_url``, starting with ``/``, no query: put
        that in ``params``) with an optional JSON body. Successful GETs, and any request with a ``cache_key``,
        are remembered as the fallback for the same request (same ``cache_key``, or same method, path and
        params) when it later fails for any reason but ``client_error``.

        ``headers`` add to (or replace, by name in any case) the endpoint's for this request; like those they
        are never logged. ``cache_first``: when an attempt fails and a cached answer exists, return it at once
        instead of retrying (a caller is waiting on the line; the next request asks the backend again); but a
        429 is retried after its Retry-After while the budget allows, since that backend is up and said when
        to come back (the cache answers when the wait would pass the budget, or the queue is full).
        The ``Idempotency-Key`` is set by ``idempotency_key`` only, since it also decides
        whether a POST may be retried."""
        ep = self._endpoint(endpoint)
        method = method.upper()
        if not _METHOD.match(method):
            raise ValueError(f"{method!r} is not an HTTP method")
        if not _PATH.match(path):
            raise ValueError("path must start with '/' and carry no query, fragment or whitespace "
                             "(query parameters go in params=, which are never logged)")
        session = self._client_session()
        loop = asyncio.get_running_loop()
        settings = ep.settings
        call = _Call(ep, method, path, _cache_key(method, path, params, cache_key), loop.time())
        deadline = call.started + settings.total_budget_ms / 1000
        timeout_s = settings.timeout_ms / 1000
        queue_s = settings.queue_wait_ms / 1000
        sent: Mapping[str, str] = ep.headers
        if headers or idempotency_key is not None:
            merged = CIMultiDict(ep.headers)
            if headers:
                if any(name.lower() == "idempotency-key" for name in headers):
                    raise ValueError("pass the Idempotency-Key as idempotency_key=, not in headers")
                merged.update(headers)
            if idempotency_key is not None:
                merged["Idempotency-Key"] = idempotency_key
            sent = merged
        request = _Request(method, settings.base_url + path, json, params, sent)
        retry_safe = method in IDEMPOTENT_METHODS or idempotency_key is not None
        ep.counters.requests += 1

        while True:
            now = loop.time()
            if ep.breaker.rejects(now):
                return call.finish(REASON_CIRCUIT_OPEN)
            remaining = deadline - now
            if remaining <= 0:
                return call.finish(REASON_BUDGET_EXCEEDED)
            try:
                if not ep.gate.try_acquire():
                    async with asyncio.timeout(min(queue_s, remaining)):
                        await ep.gate.acquire()
            except QueueFull:
                return call.finish(REASON_QUEUE_FULL)
            except TimeoutError:
                call.waited += loop.time() - now
                return call.finish(REASON_QUEUE_TIMEOUT if queue_s < remaining else REASON_BUDGET_EXCEEDED)
            try:
                granted = loop.time()
                call.waited += granted - now
                if granted >= deadline:  # (aiohttp would read a total of 0 as "no timeout")
                    return call.finish(REASON_BUDGET_EXCEEDED)
                if not ep.breaker.admit(granted):  # opened, or another request is the probe, while we queued
                    return call.finish(REASON_CIRCUIT_OPEN)
                call.attempts += 1
                limit = min(timeout_s, deadline - granted)
                try:
                    attempt = await _attempt(session, request, limit)
                except BaseException:
                    ep.breaker.neutral()  # cancelled by its caller (or a programming error): no verdict
                    raise
                if attempt.status == 429:
                    # Before the slot goes back, or the next request in the queue is sent straight into the 429.
                    # Everyone waits, not just this request: the pause is the backend's, not ours.
                    ep.gate.pause_until(loop.time() + _pause_s(attempt, settings, call.attempts))
            finally:
                ep.gate.release()
            call.status = attempt.status if attempt.status is not None else call.status
            now = loop.time()

            if attempt.reason == REASON_OK:
                ep.breaker.success()
                if call.key is not None:
                    ep.cache.store(call.key, attempt.body, now)
                return call.finish(REASON_OK, attempt.data)
            if attempt.reason == REASON_CLIENT_ERROR:
                ep.breaker.success()  # the backend is alive and said no: its answer is the result
                return call.finish(REASON_CLIENT_ERROR, attempt.data)
            if attempt.status == 429:
                ep.breaker.neutral()
            else:
                _failure(ep, now)
            if attempt.reason == REASON_TIMEOUT and attempt.status is None and limit < timeout_s:
                return call.finish(REASON_BUDGET_EXCEEDED)  # the budget, not timeout_ms, cut this attempt

            if (cache_first and attempt.reason != REASON_RATE_LIMITED and call.key is not None
                    and ep.cache.get(call.key, now) is not None):
                return call.finish(attempt.reason)  # served from the cache (finish looks it up)
            delay = _retry_delay_s(attempt, settings, call.attempts)
            may_retry = retry_safe or not attempt.reached or attempt.status in NOT_ACTED_ON
            if call.attempts > settings.retries or not may_retry or now + delay >= deadline:
                return call.finish(attempt.reason)
            ep.counters.retries += 1
            log.info("%s %s %s: %s%s, retry %d in %.0f ms", ep.name, method, loggable_path(path), attempt.reason,
                     f" ({attempt.status})" if attempt.status is not None else "", call.attempts, delay * 1000)
            await asyncio.sleep(delay)


@dataclass(frozen=True, slots=True)
class _Request:
    """What every attempt of one request sends; only the method and the URL (no query) in its repr."""

    method: str
    url: str
    json: Any = field(repr=False)
    params: Params | None = field(repr=False)
    headers: Mapping[str, str] = field(repr=False)


@dataclass(slots=True)
class _Call:
    """One ``request()`` in progress: what its result and its log line need."""

    ep: _Endpoint
    method: str
    path: str
    key: Hashable | None
    started: float
    attempts: int = 0
    waited: float = 0.0
    status: int | None = None

    def finish(self, reason: str, data: Any = None) -> IntegrationResult:
        ep = self.ep
        now = asyncio.get_running_loop().time()
        counters = ep.counters
        stale: float | None = None
        if reason == REASON_OK:
            outcome = Outcome.OK
            counters.ok += 1
        elif reason != REASON_CLIENT_ERROR and self.key is not None and (hit := ep.cache.get(self.key, now)):
            outcome = Outcome.CACHED
            data, stale = hit
            counters.cached += 1
            counters.cached_by_reason[reason] += 1
        else:
            outcome = Outcome.FAILED
            counters.failed[reason] += 1
        result = IntegrationResult(
            outcome=outcome, reason=reason, status=self.status, data=data, attempts=self.attempts,
            waited_ms=self.waited * 1000, elapsed_ms=(now - self.started) * 1000,
            stale_ms=None if stale is None else stale * 1000,
        )
        level = logging.INFO if outcome is Outcome.OK or reason == REASON_CLIENT_ERROR else logging.WARNING
        if log.isEnabledFor(level):
            log.log(level, "%s %s %s: %s %s%s after %d attempt(s), %.0f ms%s", ep.name, self.method,
                    loggable_path(self.path), outcome.value, reason,
                    f" ({self.status})" if self.status is not None else "", self.attempts, result.elapsed_ms,
                    f", served data {result.stale_ms:.0f} ms old" if result.stale_ms is not None else "")
        return result


def _retry_delay_s(attempt: _Attempt, settings: EndpointSettings, attempts: int) -> float:
    """Seconds until the next attempt: the backend's Retry-After when a 429 or 503 gives one (capped), else
    the jittered backoff."""
    if attempt.retry_after_s is not None and attempt.status in RETRY_AFTER_STATUSES:
        return min(attempt.retry_after_s, settings.retry_after_max_ms / 1000)
    return backoff_s(attempts, settings.backoff_base_ms, settings.backoff_max_ms)


def _pause_s(attempt: _Attempt, settings: EndpointSettings, attempts: int) -> float:
    """How long a 429 pauses the whole endpoint: its Retry-After (capped), else the backoff's ceiling (not a
    jittered draw, which may be next to nothing)."""
    if attempt.retry_after_s is not None:
        return min(attempt.retry_after_s, settings.retry_after_max_ms / 1000)
    return min(settings.backoff_max_ms, settings.backoff_base_ms << (attempts - 1)) / 1000


def _failure(ep: _Endpoint, now: float) -> None:
    opened = ep.breaker.opened
    ep.breaker.failure(now)
    if ep.breaker.opened != opened:
        log.warning("%s: circuit open for %d ms after %d consecutive failed attempts", ep.name,
                    ep.settings.circuit_open_ms, ep.breaker.consecutive)


async def _attempt(session: aiohttp.ClientSession, request: _Request, timeout_s: float) -> _Attempt:
    try:
        # aiohttp's total timeout covers connecting, sending and reading the whole body, with the one timer it
        # sets anyway (an asyncio.timeout around it would add a second). No ceiling: by default it rounds
        # timeouts of 5 s and more up to the next whole second, which would overrun the budget.
        timeout = aiohttp.ClientTimeout(total=timeout_s, ceil_threshold=math.inf)
        async with session.request(request.method, request.url, headers=request.headers, json=request.json,
                                   params=request.params, allow_redirects=False, timeout=timeout) as response:
            body = await response.read()
            status = response.status
            retry_after = response.headers.get("Retry-After")
    except TimeoutError:  # aiohttp's timeouts are TimeoutErrors too (and ClientErrors: this comes first)
        return _Attempt(REASON_TIMEOUT)
    except aiohttp.ClientConnectorError:
        return _Attempt(REASON_CONNECTION, reached=False)
    except aiohttp.ClientError:
        return _Attempt(REASON_CONNECTION)
    if 200 <= status < 300:
        parsed, data = _parse(body)
        if not parsed:
            return _Attempt(REASON_INVALID_JSON, status)
        return _Attempt(REASON_OK, status, body, data)
    if status == 429:
        return _Attempt(REASON_RATE_LIMITED, status, retry_after_s=parse_retry_after(retry_after))
    if status == 408:
        return _Attempt(REASON_TIMEOUT, status)
    if status >= 500:
        return _Attempt(REASON_SERVER_ERROR, status, retry_after_s=parse_retry_after(retry_after))
    _, data = _parse(body)  # a definite answer (4xx, or a redirect we do not follow): its body, if JSON
    return _Attempt(REASON_CLIENT_ERROR, status, data=data)


def _cache_key(method: str, path: str, params: Params | None, cache_key: str | None) -> Hashable | None:
    if cache_key is not None:
        return ("key", cache_key)
    if method != "GET":
        return None
    return (method, path, tuple(sorted((name, str(value)) for name, value in (params or {}).items())))


def _loop_running() -> bool:
    try:
        asyncio.get_running_loop()
    except RuntimeError:
        return False
    return True
