"""The integrations client against real local aiohttp servers on 127.0.0.1 (never a mocked client): answers,
retries and Retry-After as the server observes them, timeouts, bad bodies, refused connections, definite 4xx
answers, the in-flight bound and its queue, the circuit breaker, idempotency keys, the time budget, the cached
fallback, and logs that carry no secret.

Servers script their answers per request and record every arrival (loop time, headers, body). Timing asserts
leave wide margins one way only: "at least the Retry-After" is exact, "soon" is generous."""

from __future__ import annotations

import asyncio
import email.utils
import json
import logging
import socket
import time
import uuid
from collections.abc import AsyncIterator, Awaitable, Callable
from dataclasses import dataclass, field
from typing import Any

import pytest
import pytest_asyncio
from aiohttp import web
from blockbuster import blockbuster_ctx
from multidict import CIMultiDict
from pydantic import ValidationError

from asterisk_agent.integrations import (
    CircuitState,
    EndpointSettings,
    IntegrationClient,
    IntegrationResult,
    Outcome,
    UnknownEndpointError,
    loggable_path,
    new_idempotency_key,
)

Handler = Callable[[web.Request], Awaitable[web.StreamResponse]]


@dataclass(slots=True)
class Arrival:
    at: float  # loop time
    method: str
    path: str
    query: dict[str, str]
    headers: CIMultiDict[str]  # names in any case, as HTTP has them
    body: bytes


@dataclass(slots=True)
class Backend:
    """A real HTTP server; ``answers`` are used in turn (the last one repeats), each a handler."""

    answers: list[Handler] = field(default_factory=list)
    arrivals: list[Arrival] = field(default_factory=list)
    in_flight: int = 0
    peak_in_flight: int = 0
    hold: asyncio.Event = field(default_factory=asyncio.Event)  # what held() answers wait for
    _changed: asyncio.Condition = field(default_factory=asyncio.Condition)
    _runner: web.AppRunner | None = None
    port: int = 0

    @property
    def base_url(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    def script(self, *answers: Handler) -> None:
        self.answers = list(answers)
        self.arrivals.clear()

    async def start(self) -> None:
        app = web.Application()
        app.router.add_route("*", "/{tail:.*}", self._handle)
        # No access log: it would write query strings into caplog and blur what the client logs.
        self._runner = web.AppRunner(app, handler_cancellation=True, shutdown_timeout=0.5, access_log=None)
        await self._runner.setup()
        site = web.TCPSite(self._runner, "127.0.0.1", 0)
        await site.start()
        self.port = int(self._runner.addresses[0][1])

    async def stop(self) -> None:
        self.hold.set()
        if self._runner is not None:
            await self._runner.cleanup()

    async def wait_in_flight(self, count: int) -> None:
        async with asyncio.timeout(5), self._changed:
            await self._changed.wait_for(lambda: self.in_flight >= count)

    async def _handle(self, request: web.Request) -> web.StreamResponse:
        index = len(self.arrivals)
        self.arrivals.append(Arrival(asyncio.get_running_loop().time(), request.method, request.path,
                                     dict(request.query), CIMultiDict(request.headers), await request.read()))
        answer = self.answers[min(index, len(self.answers) - 1)] if self.answers else ok({"ok": True})
        async with self._changed:
            self.in_flight += 1
            self.peak_in_flight = max(self.peak_in_flight, self.in_flight)
            self._changed.notify_all()
        try:
            return await answer(request)
        finally:
            async with self._changed:
                self.in_flight -= 1
                self._changed.notify_all()


def ok(data: Any, status: int = 200) -> Handler:
    async def answer(request: web.Request) -> web.StreamResponse:
        return web.json_response(data, status=status)
    return answer


def raw(body: bytes, status: int = 200, headers: dict[str, str] | None = None) -> Handler:
    async def answer(request: web.Request) -> web.StreamResponse:
        return web.Response(body=body, status=status, headers=headers, content_type="application/json")
    return answer


def held(backend: Backend, data: Any) -> Handler:
    """Answers only when the test sets ``backend.hold``."""
    async def answer(request: web.Request) -> web.StreamResponse:
        await backend.hold.wait()
        return web.json_response(data)
    return answer


def hang() -> Handler:
    async def answer(request: web.Request) -> web.StreamResponse:
        await asyncio.Event().wait()  # until the client gives up (the handler is cancelled) or the server stops
        raise AssertionError("unreachable")
    return answer


@pytest_asyncio.fixture(loop_scope="session")
async def backend() -> AsyncIterator[Backend]:
    server = Backend()
    await server.start()
    yield server
    await server.stop()


def endpoint(base_url: str, **overrides: Any) -> EndpointSettings:
    """Fast settings for tests: small backoffs, short timeouts."""
    values: dict[str, Any] = {"base_url": base_url, "timeout_ms": 1000, "backoff_base_ms": 5, "backoff_max_ms": 20,
                              "total_budget_ms": 5000, "queue_wait_ms": 3000}
    values.update(overrides)
    return EndpointSettings(**values)


def free_port() -> int:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


# --- answers --------------------------------------------------------------------------------------------------


async def test_ok_json_with_headers_and_params(backend: Backend) -> None:
    backend.script(ok({"name": "Grace", "slots": [1, 2]}))
    settings = endpoint(backend.base_url, headers={"Authorization": "Bearer t0k", "X-Tenant": "demo"})
    async with IntegrationClient({"crm": settings}) as client:
        result = await client.request("crm", "get", "/customers", params={"phone": "5550100", "n": 2})
        stats = client.stats("crm")
        await client.request("crm", "GET", "/customers", headers={"x-tenant": "other"})
    assert result.outcome is Outcome.OK and result.ok and result.usable
    assert (result.reason, result.status, result.attempts) == ("ok", 200, 1)
    assert result.data == {"name": "Grace", "slots": [1, 2]}
    assert result.elapsed_ms > 0 and result.stale_ms is None
    arrival, replaced = backend.arrivals
    assert (arrival.method, arrival.path, arrival.query) == ("GET", "/customers", {"phone": "5550100", "n": "2"})
    assert arrival.headers["Authorization"] == "Bearer t0k" and arrival.headers["X-Tenant"] == "demo"
    assert replaced.headers["X-Tenant"] == "other" and replaced.headers["Authorization"] == "Bearer t0k"
    assert arrival.headers["Accept"] == "application/json"
    assert "Idempotency-Key" not in arrival.headers
    assert (stats.requests, stats.ok, stats.retries, stats.in_flight, stats.failed) == (1, 1, 0, 0, {})


async def test_empty_2xx_body_is_ok_without_data(backend: Backend) -> None:
    backend.script(raw(b"", status=204))
    async with IntegrationClient({"crm": endpoint(backend.base_url)}) as client:
        result = await client.request("crm", "DELETE", "/holds/1")
    assert (result.outcome, result.status, result.data) == (Outcome.OK, 204, None)


async def test_429_retry_after_seconds_is_honoured_and_pauses_the_whole_endpoint(backend: Backend) -> None:
    backend.script(raw(b'{"error": "slow down"}', status=429, headers={"Retry-After": "1"}), ok({"ok": True}))
    async with IntegrationClient({"crm": endpoint(backend.base_url, max_in_flight=1)}) as client:
        first = asyncio.create_task(client.request("crm", "GET", "/a"))
        second = asyncio.create_task(client.request("crm", "GET", "/b"))  # queued behind /a
        results = await asyncio.gather(first, second)
        stats = client.stats("crm")
    assert [result.outcome for result in results] == [Outcome.OK, Outcome.OK]
    assert (results[0].attempts, results[1].attempts) == (2, 1)
    rejected, *later = backend.arrivals
    assert rejected.path == "/a" and sorted(arrival.path for arrival in later) == ["/a", "/b"]
    for arrival in later:
        # The retry waited the Retry-After; /b, which had nothing to do with the 429, waited too (the pause).
        assert arrival.at - rejected.at >= 0.99, arrival.path
    assert results[1].waited_ms >= 900  # /b spent the pause in the queue
    assert stats.retries == 1 and stats.peak_queued == 1


async def test_429_retry_after_http_date_is_read_and_capped(backend: Backend) -> None:
    when = email.utils.formatdate(time.time() + 4, usegmt=True)  # 3 to 4 s ahead (whole seconds)
    backend.script(raw(b"{}", status=429, headers={"Retry-After": when}), ok({"ok": True}))
    async with IntegrationClient({"crm": endpoint(backend.base_url, retry_after_max_ms=400)}) as client:
        result = await client.request("crm", "GET", "/slots")
    assert (result.outcome, result.attempts) == (Outcome.OK, 2)
    gap = backend.arrivals[1].at - backend.arrivals[0].at
    assert 0.39 <= gap < 2.0  # the date was read (the 5-20 ms backoff would be far shorter) and capped at 400 ms


async def test_429_without_retry_after_pauses_the_endpoint_for_the_backoff_ceiling(backend: Backend) -> None:
    backend.script(raw(b"{}", status=429), ok({}))
    settings = endpoint(backend.base_url, max_in_flight=1, backoff_base_ms=200, backoff_max_ms=200)
    async with IntegrationClient({"crm": settings}) as client:
        results = await asyncio.gather(client.request("crm", "GET", "/a"), client.request("crm", "GET", "/b"))
    assert all(result.ok for result in results)
    rejected, *later = backend.arrivals
    assert rejected.path == "/a" and sorted(arrival.path for arrival in later) == ["/a", "/b"]
    # /b, queued behind the 429, waited out the ceiling (200 ms), and so did /a's retry: its own jittered delay
    # may be next to nothing, but by then /b is ahead of it in the queue.
    assert all(arrival.at - rejected.at >= 0.19 for arrival in later)


async def test_429_past_its_cap_of_retries_is_rate_limited(backend: Backend) -> None:
    backend.script(raw(b"{}", status=429, headers={"Retry-After": "0"}))
    async with IntegrationClient({"crm": endpoint(backend.base_url, retries=2)}) as client:
        result = await client.request("crm", "GET", "/slots")
        stats = client.stats("crm")
    assert (result.outcome, result.reason, result.status, result.attempts) == (Outcome.FAILED, "rate_limited", 429, 3)
    assert stats.circuit is CircuitState.CLOSED and stats.failed == {"rate_limited": 1}


async def test_503_is_retried_and_its_retry_after_honoured(backend: Backend) -> None:
    backend.script(raw(b"{}", status=503), raw(b"{}", status=503, headers={"Retry-After": "0.3"}),
                   ok({"slot": "10:30"}))
    async with IntegrationClient({"crm": endpoint(backend.base_url)}) as client:
        result = await client.request("crm", "GET", "/slots")
        stats = client.stats("crm")
    assert (result.outcome, result.data, result.attempts, result.status) == (Outcome.OK, {"slot": "10:30"}, 3, 200)
    assert len(backend.arrivals) == 3 and stats.retries == 2
    assert backend.arrivals[2].at - backend.arrivals[1].at >= 0.29


async def test_a_backend_that_hangs_times_out_per_attempt(backend: Backend) -> None:
    backend.script(hang())
    async with IntegrationClient({"crm": endpoint(backend.base_url, timeout_ms=100, retries=1)}) as client:
        result = await client.request("crm", "GET", "/slow")
    assert (result.outcome, result.reason, result.status, result.attempts) == (Outcome.FAILED, "timeout", None, 2)
    assert len(backend.arrivals) == 2
    assert 200 <= result.elapsed_ms < 1500


async def test_invalid_json_is_retried_like_a_server_error(backend: Backend) -> None:
    backend.script(raw(b"<html>oops</html>"), ok({"fine": True}))
    async with IntegrationClient({"crm": endpoint(backend.base_url)}) as client:
        recovered = await client.request("crm", "GET", "/x")
        backend.script(raw(b"{not json"))
        broken = await client.request("crm", "GET", "/y")
    assert (recovered.outcome, recovered.attempts, recovered.data) == (Outcome.OK, 2, {"fine": True})
    assert (broken.outcome, broken.reason, broken.status, broken.attempts, broken.data) == (
        Outcome.FAILED, "invalid_json", 200, 3, None)


async def test_connection_refused(backend: Backend) -> None:
    async with IntegrationClient({"gone": endpoint(f"http://127.0.0.1:{free_port()}", retries=2)}) as client:
        result = await client.request("gone", "POST", "/bookings", json={"slot": 1})
        stats = client.stats("gone")
    # Refused means never received, so even a POST without an idempotency key is retried.
    assert (result.outcome, result.reason, result.status, result.attempts) == (Outcome.FAILED, "connection", None, 3)
    assert stats.failed == {"connection": 1} and stats.retries == 2


async def test_4xx_is_a_definite_answer_with_its_body_and_no_breaker_count(backend: Backend) -> None:
    backend.script(ok({"hours": "9-17"}))
    settings = endpoint(backend.base_url, circuit_failures=2, retries=2)
    async with IntegrationClient({"crm": settings}) as client:
        warm = await client.request("crm", "GET", "/hours")
        backend.script(ok({"error": "taken"}, status=409))
        taken = await client.request("crm", "POST", "/bookings", json={"slot": 3})
        backend.script(ok({"error": "no such thing"}, status=404))
        missing = [await client.request("crm", "GET", "/hours") for _ in range(3)]
        backend.script(ok({"hours": "9-18"}))
        after = await client.request("crm", "GET", "/hours")
        stats = client.stats("crm")
    assert warm.ok
    assert (taken.outcome, taken.reason, taken.status, taken.attempts, taken.data) == (
        Outcome.FAILED, "client_error", 409, 1, {"error": "taken"})
    for result in missing:
        # A 404 is the backend's answer: not retried, and the cached /hours is not served in its place.
        assert (result.outcome, result.status, result.attempts, result.data) == (
            Outcome.FAILED, 404, 1, {"error": "no such thing"})
    assert after.ok and after.data == {"hours": "9-18"}  # four 4xx did not open a 2-failure breaker
    assert stats.circuit is CircuitState.CLOSED and stats.circuit_opened == 0
    assert stats.failed == {"client_error": 4}


# --- the in-flight bound, its queue, the rate, the pause --------------------------------------------------------


async def test_30_concurrent_requests_with_3_in_flight_and_a_bounded_queue(backend: Backend) -> None:
    settings = endpoint(backend.base_url, max_in_flight=3, queue_max=10)
    async with IntegrationClient({"crm": settings}) as client:
        backend.script(ok({"slots": ["09:00"]}))
        warm = await client.request("crm", "GET", "/slots")
        backend.script(held(backend, {"slots": ["10:00"]}))
        tasks = [asyncio.create_task(client.request("crm", "GET", "/slots")) for _ in range(30)]
        await backend.wait_in_flight(3)
        during = client.stats("crm")
        refused = [task.result() for task in tasks if task.done()]
        backend.hold.set()
        results = await asyncio.gather(*tasks)
        stats = client.stats("crm")
    assert warm.ok
    assert (during.in_flight, during.queued) == (3, 10)
    assert len(refused) == 17
    for result in refused:
        # Refused at once, served the warm-up's answer.
        assert (result.outcome, result.reason, result.attempts, result.data) == (
            Outcome.CACHED, "queue_full", 0, {"slots": ["09:00"]})
        assert result.stale_ms is not None and result.stale_ms >= 0
    answered = [result for result in results if result.outcome is Outcome.OK]
    assert len(answered) == 13 and all(result.data == {"slots": ["10:00"]} for result in answered)
    assert backend.peak_in_flight <= 3 and len(backend.arrivals) == 13
    assert (stats.peak_in_flight, stats.peak_queued, stats.in_flight, stats.queued) == (3, 10, 0, 0)
    assert (stats.requests, stats.ok, stats.cached, stats.cached_by_reason) == (31, 14, 17, {"queue_full": 17})


async def test_queue_full_without_a_cache_fails_at_once(backend: Backend) -> None:
    backend.script(held(backend, {}))
    async with IntegrationClient({"crm": endpoint(backend.base_url, max_in_flight=1, queue_max=0)}) as client:
        holder = asyncio.create_task(client.request("crm", "POST", "/bookings"))
        await backend.wait_in_flight(1)
        refused = await client.request("crm", "POST", "/bookings")
        backend.hold.set()
        assert (await holder).ok
    assert (refused.outcome, refused.reason, refused.attempts, refused.data) == (Outcome.FAILED, "queue_full", 0, None)


async def test_queue_timeout(backend: Backend) -> None:
    backend.script(held(backend, {}))
    async with IntegrationClient({"crm": endpoint(backend.base_url, max_in_flight=1, queue_wait_ms=100)}) as client:
        holder = asyncio.create_task(client.request("crm", "GET", "/a"))
        await backend.wait_in_flight(1)
        late = await client.request("crm", "GET", "/b")
        stats = client.stats("crm")
        backend.hold.set()
        await holder
    assert (late.outcome, late.reason, late.attempts) == (Outcome.FAILED, "queue_timeout", 0)
    assert 95 <= late.waited_ms < 1000
    assert stats.queued == 0 and len(backend.arrivals) == 1


async def test_backoff_does_not_hold_an_in_flight_slot(backend: Backend) -> None:
    async def by_path(request: web.Request) -> web.StreamResponse:
        if request.path == "/flaky" and sum(arrival.path == "/flaky" for arrival in backend.arrivals) == 1:
            return web.json_response({}, status=503, headers={"Retry-After": "0.3"})
        return web.json_response({"path": request.path})

    backend.script(by_path)
    async with IntegrationClient({"crm": endpoint(backend.base_url, max_in_flight=1)}) as client:
        flaky = asyncio.create_task(client.request("crm", "GET", "/flaky"))
        other = asyncio.create_task(client.request("crm", "GET", "/other"))  # queued behind /flaky's first try
        results = await asyncio.gather(flaky, other)
    assert [result.attempts for result in results] == [2, 1]
    assert [arrival.path for arrival in backend.arrivals] == ["/flaky", "/other", "/flaky"]
    # /other was served while /flaky slept its 300 ms, not after it.
    assert backend.arrivals[1].at - backend.arrivals[0].at < 0.2
    assert backend.arrivals[2].at - backend.arrivals[0].at >= 0.29


async def test_rate_per_s_spaces_the_attempts(backend: Backend) -> None:
    backend.script(ok({}))
    async with IntegrationClient({"crm": endpoint(backend.base_url, max_in_flight=10, rate_per_s=20)}) as client:
        results = await asyncio.gather(*(client.request("crm", "GET", f"/r{index}") for index in range(6)))
    assert all(result.ok for result in results)
    times = sorted(arrival.at for arrival in backend.arrivals)
    # 20 a second: sent 50 ms apart (unthrottled, all six would arrive within a few ms). The server's own
    # scheduling between the socket and the handler may delay one arrival toward the next, so the check is
    # over two intervals (100 ms sent) and the whole run (250 ms sent), with room for that.
    assert all(times[index + 2] - times[index] >= 0.05 for index in range(len(times) - 2))
    assert times[-1] - times[0] >= 0.2


async def test_a_cancelled_request_leaves_no_slot_and_no_queue_entry(backend: Backend) -> None:
    backend.script(held(backend, {"ok": True}))
    async with IntegrationClient({"crm": endpoint(backend.base_url, max_in_flight=1)}) as client:
        running = asyncio.create_task(client.request("crm", "GET", "/a"))
        await backend.wait_in_flight(1)
        waiting = asyncio.create_task(client.request("crm", "GET", "/b"))
        await asyncio.sleep(0)  # let it queue
        assert client.stats("crm").queued == 1
        waiting.cancel()
        running.cancel()
        outcomes = await asyncio.gather(running, waiting, return_exceptions=True)
        assert all(isinstance(outcome, asyncio.CancelledError) for outcome in outcomes)
        stats = client.stats("crm")
        backend.hold.set()
        again = await client.request("crm", "GET", "/c")
    assert (stats.in_flight, stats.queued) == (0, 0)
    assert again.ok and again.waited_ms < 100


# --- the circuit breaker ------------------------------------------------------------------------------------------


async def test_circuit_opens_after_consecutive_failures_and_half_opens_for_one_probe(backend: Backend) -> None:
    settings = endpoint(backend.base_url, circuit_failures=3, circuit_open_ms=300, retries=0)
    async with IntegrationClient({"crm": settings}) as client:
        backend.script(ok({"hours": "9-17"}))
        assert (await client.request("crm", "GET", "/hours")).ok
        backend.script(raw(b"{}", status=500))
        failures = [await client.request("crm", "GET", "/hours") for _ in range(3)]
        assert [result.reason for result in failures] == ["server_error"] * 3
        assert client.stats("crm").circuit is CircuitState.OPEN
        fast = await client.request("crm", "GET", "/hours")
        assert (fast.outcome, fast.reason, fast.attempts, fast.data) == (
            Outcome.CACHED, "circuit_open", 0, {"hours": "9-17"})
        assert len(backend.arrivals) == 3  # the open circuit asked nothing of the backend
        assert fast.elapsed_ms < 50

        await asyncio.sleep(0.35)  # the configured open interval passes
        assert client.stats("crm").circuit is CircuitState.HALF_OPEN
        failed_probe = await client.request("crm", "GET", "/hours")
        assert (failed_probe.reason, failed_probe.attempts) == ("server_error", 1)
        assert client.stats("crm").circuit is CircuitState.OPEN  # one failed probe opens it again

        await asyncio.sleep(0.35)
        backend.script(held(backend, {"hours": "9-18"}))
        probe = asyncio.create_task(client.request("crm", "GET", "/hours"))
        await backend.wait_in_flight(1)
        bystander = await client.request("crm", "GET", "/hours")  # while the probe is out
        assert (bystander.reason, bystander.attempts) == ("circuit_open", 0)
        backend.hold.set()
        assert (await probe).data == {"hours": "9-18"}
        stats = client.stats("crm")
        assert stats.circuit is CircuitState.CLOSED and stats.circuit_opened == 2
        assert (await client.request("crm", "GET", "/hours")).ok
    assert len(backend.arrivals) == 2  # the probe and the last request (script() cleared the earlier ones)


async def test_a_retrying_request_stops_when_the_circuit_opens(backend: Backend) -> None:
    backend.script(raw(b"{}", status=502))
    settings = endpoint(backend.base_url, circuit_failures=2, retries=5)
    async with IntegrationClient({"crm": settings}) as client:
        result = await client.request("crm", "GET", "/x")
    assert (result.outcome, result.reason, result.attempts, result.status) == (Outcome.FAILED, "circuit_open", 2, 502)
    assert len(backend.arrivals) == 2


# --- idempotency, budget, cache ---------------------------------------------------------------------------------


async def test_the_idempotency_key_is_the_same_on_every_attempt(backend: Backend) -> None:
    backend.script(raw(b"{}", status=500), raw(b"", status=502), ok({"booking": "B-17"}, status=201))
    key = new_idempotency_key()
    async with IntegrationClient({"crm": endpoint(backend.base_url)}) as client:
        result = await client.request("crm", "POST", "/bookings", json={"slot": "10:30"}, idempotency_key=key,
                                      headers={"X-Call": "c-1"})
    assert (result.outcome, result.status, result.attempts, result.data) == (Outcome.OK, 201, 3, {"booking": "B-17"})
    assert [arrival.headers.get("Idempotency-Key") for arrival in backend.arrivals] == [key] * 3
    assert all(arrival.headers.get("X-Call") == "c-1" for arrival in backend.arrivals)
    assert all(json.loads(arrival.body) == {"slot": "10:30"} for arrival in backend.arrivals)
    assert uuid.UUID(key) and new_idempotency_key() != key


async def test_a_post_without_a_key_is_retried_only_when_the_backend_did_not_act(backend: Backend) -> None:
    async with IntegrationClient({"crm": endpoint(backend.base_url)}) as client:
        backend.script(raw(b"{}", status=500))
        maybe_applied = await client.request("crm", "POST", "/bookings", json={"slot": 1})
        assert len(backend.arrivals) == 1
        backend.script(raw(b"{}", status=503), ok({"booking": 1}))
        not_applied = await client.request("crm", "POST", "/bookings", json={"slot": 1})
    assert (maybe_applied.outcome, maybe_applied.reason, maybe_applied.attempts) == (Outcome.FAILED, "server_error", 1)
    assert (not_applied.outcome, not_applied.attempts) == (Outcome.OK, 2)


async def test_the_budget_bounds_the_whole_request(backend: Backend) -> None:
    backend.script(hang())
    async with IntegrationClient({"crm": endpoint(backend.base_url, timeout_ms=3000, total_budget_ms=300)}) as client:
        cut = await client.request("crm", "GET", "/slow")
        backend.script(raw(b"{}", status=503, headers={"Retry-After": "2"}))
        hopeless = await client.request("crm", "GET", "/busy")
    assert (cut.outcome, cut.reason, cut.attempts) == (Outcome.FAILED, "budget_exceeded", 1)
    assert 290 <= cut.elapsed_ms < 1000
    # A 2 s Retry-After cannot fit in a 300 ms budget: the request ends at once with what it knows.
    assert (hopeless.reason, hopeless.attempts, hopeless.status) == ("server_error", 1, 503)
    assert hopeless.elapsed_ms < 200


async def test_the_budget_bounds_the_wait_in_the_queue(backend: Backend) -> None:
    backend.script(raw(b"{}", status=429, headers={"Retry-After": "5"}), ok({}))
    settings = endpoint(backend.base_url, queue_wait_ms=5000, total_budget_ms=150)
    async with IntegrationClient({"crm": settings}) as client:
        limited = await client.request("crm", "GET", "/a")  # pauses the endpoint for 5 s
        late = await client.request("crm", "GET", "/b")
    assert (limited.reason, limited.attempts) == ("rate_limited", 1)
    assert limited.elapsed_ms < 100  # no sleeping into a deadline it cannot make
    assert (late.reason, late.attempts) == ("budget_exceeded", 0)
    assert 140 <= late.elapsed_ms < 1000 and late.waited_ms >= 140
    assert len(backend.arrivals) == 1


async def test_cached_fallback_rules(backend: Backend) -> None:
    async with IntegrationClient({"crm": endpoint(backend.base_url, retries=0)}) as client:
        backend.script(ok({"balance": 12, "items": [1]}))
        fresh = await client.request("crm", "GET", "/balance", params={"account": "1"})
        posted = await client.request("crm", "POST", "/quote", json={})
        keyed = await client.request("crm", "POST", "/search", json={"q": 1}, cache_key="search:1")
        fresh.data["items"].append(2)  # a flow changing its copy must not change the cache
        backend.script(raw(b"{}", status=500))
        fallback = await client.request("crm", "GET", "/balance", params={"account": "1"})
        other_params = await client.request("crm", "GET", "/balance", params={"account": "2"})
        uncached_post = await client.request("crm", "POST", "/quote", json={})
        keyed_fallback = await client.request("crm", "POST", "/search", json={"q": 1}, cache_key="search:1")
        stats = client.stats("crm")
    assert fresh.ok and posted.ok and keyed.ok
    assert (fallback.outcome, fallback.reason, fallback.status, fallback.data) == (
        Outcome.CACHED, "server_error", 500, {"balance": 12, "items": [1]})
    assert fallback.usable and not fallback.ok and fallback.stale_ms is not None and fallback.stale_ms > 0
    assert other_params.outcome is Outcome.FAILED and other_params.data is None
    assert uncached_post.outcome is Outcome.FAILED
    assert keyed_fallback.outcome is Outcome.CACHED
    assert stats.cached_by_reason == {"server_error": 2} and stats.failed == {"server_error": 2}


async def test_cache_first_serves_the_cached_answer_at_the_first_failure(backend: Backend) -> None:
    """A caller on the line gets the cached answer after one failed attempt instead of waiting for the retries;
    without a cached answer the request retries as usual."""
    async with IntegrationClient({"crm": endpoint(backend.base_url, retries=3)}) as client:
        backend.script(ok({"balance": 7}))
        assert (await client.request("crm", "GET", "/balance")).ok
        backend.script(raw(b"{}", status=503, headers={"Retry-After": "1"}))
        quick = await client.request("crm", "GET", "/balance", cache_first=True)
        assert (quick.outcome, quick.attempts, quick.data) == (Outcome.CACHED, 1, {"balance": 7})
        backend.script(raw(b"{}", status=500))
        uncached = await client.request("crm", "GET", "/other", cache_first=True)
        assert uncached.outcome is Outcome.FAILED and uncached.attempts == 4  # nothing cached: it retried


async def test_cache_first_still_waits_out_a_429_within_the_budget(backend: Backend) -> None:
    """A backend that says "come back in a moment" is up: the caller gets its fresh answer, not the cache."""
    async with IntegrationClient({"crm": endpoint(backend.base_url, retries=3)}) as client:
        backend.script(ok({"balance": 7}))
        assert (await client.request("crm", "GET", "/balance")).ok
        backend.script(raw(b"{}", status=429, headers={"Retry-After": "0"}), ok({"balance": 8}))
        waited = await client.request("crm", "GET", "/balance", cache_first=True)
        assert (waited.outcome, waited.attempts, waited.data) == (Outcome.OK, 2, {"balance": 8})


async def test_cache_ttl_zero_serves_no_fallback(backend: Backend) -> None:
    async with IntegrationClient({"crm": endpoint(backend.base_url, retries=0, cache_ttl_ms=0)}) as client:
        backend.script(ok({"hours": 1}))
        assert (await client.request("crm", "GET", "/hours")).ok
        backend.script(raw(b"{}", status=500))
        result = await client.request("crm", "GET", "/hours")
    assert (result.outcome, result.data) == (Outcome.FAILED, None)


async def test_no_blocking_call_on_the_event_loop(backend: Backend) -> None:
    """blockbuster raises on blocking I/O made from the integrations package on the loop's thread."""
    backend.script(raw(b"{}", status=503), ok({"ok": True}))
    with blockbuster_ctx(["asterisk_agent.integrations"]):
        async with IntegrationClient({"crm": endpoint(backend.base_url, max_in_flight=2, rate_per_s=500)}) as client:
            results = await asyncio.gather(*(client.request("crm", "GET", f"/x{index}") for index in range(6)))
    assert all(result.ok for result in results) and len(backend.arrivals) == 7


# --- secrets --------------------------------------------------------------------------------------------------


async def test_headers_params_and_bodies_never_reach_the_logs(backend: Backend, caplog: pytest.LogCaptureFixture
                                                              ) -> None:
    token = "Bearer sekret-token-4711"
    pin, account = "97531", "8765432109"
    settings = endpoint(backend.base_url, headers={"Authorization": token}, circuit_failures=3)
    caplog.set_level(logging.DEBUG)
    async with IntegrationClient({"bank": settings}) as client:
        backend.script(ok({"balance": 12, "account": account}))
        good = await client.request("bank", "GET", f"/v1/accounts/{account}/balance", params={"pin": pin})
        backend.script(raw(b"{}", status=503), ok({"error": f"pin {pin} wrong"}, status=401))
        refused = await client.request("bank", "POST", f"/v1/accounts/{account}/verify", json={"pin": pin},
                                       idempotency_key="idem-k3y", headers={"X-Caller-Pin": pin})
        backend.script(raw(f'{{"echo": "{pin}"}}'.encode(), status=500))
        failed = await client.request("bank", "GET", f"/v1/accounts/{account}/balance", params={"pin": pin})
        fast = await client.request("bank", "GET", f"/v1/accounts/{account}/balance", params={"pin": pin})
    assert good.ok and refused.reason == "client_error" and failed.outcome is Outcome.CACHED
    assert fast.reason == "circuit_open"
    assert all(arrival.headers["Authorization"] == token for arrival in backend.arrivals)  # it was sent
    text = caplog.text
    assert "bank GET /v1/accounts/*/balance: ok ok (200) after 1 attempt(s)" in text
    assert "bank POST /v1/accounts/*/verify: failed client_error (401) after 2 attempt(s)" in text
    assert "circuit open" in text and "cached circuit_open" in text
    for secret in ("sekret", token, pin, account, "idem-k3y", "balance\": 12"):
        assert secret not in text, secret
    for shown in (repr(settings), str(settings), repr(client), repr(good), repr(failed), str(refused)):
        for secret in ("sekret", pin, account):
            assert secret not in shown, (secret, shown)


def test_a_bad_header_is_refused_without_echoing_it() -> None:
    with pytest.raises(ValidationError) as caught:
        EndpointSettings(base_url="https://crm.example", headers={"Authorization": "Bearer sekret\r\nX: 1"})
    assert "sekret" not in str(caught.value)


def test_paths_are_logged_without_identifiers() -> None:
    assert loggable_path("/v1/accounts/12345678/balance") == "/v1/accounts/*/balance"
    assert loggable_path("/customers/grace@example.com") == "/customers/*"
    assert loggable_path("/slots") == "/slots"
    assert loggable_path("/bookings/B-17/") == "/bookings/*/"


# --- settings and programming errors -----------------------------------------------------------------------------


def test_settings_validation() -> None:
    good = EndpointSettings(base_url="https://crm.example/api/")
    assert good.base_url == "https://crm.example/api"
    assert (good.max_in_flight, good.queue_max, good.total_budget_ms, good.circuit_failures) == (4, 32, 6000, 5)
    for bad in ({"base_url": "ftp://crm.example"}, {"base_url": "crm.example"},
                {"base_url": "https://crm.example/?key=1"}, {"base_url": "https://user:pw@crm.example"},
                {"base_url": "https://crm.example", "max_in_flight": 0},
                {"base_url": "https://crm.example", "queue_max": -1},
                {"base_url": "https://crm.example", "backoff_base_ms": 500, "backoff_max_ms": 100},
                {"base_url": "https://crm.example", "headers": {"Idempotency-Key": "x"}},
                {"base_url": "https://crm.example", "unknown": 1}):
        with pytest.raises(ValidationError):
            EndpointSettings(**bad)
    with pytest.raises(ValidationError):
        good.timeout_ms = 5  # frozen


async def test_programming_errors_raise(backend: Backend) -> None:
    async with IntegrationClient({"crm": endpoint(backend.base_url)}) as client:
        with pytest.raises(UnknownEndpointError, match="nope"):
            await client.request("nope", "GET", "/x")
        with pytest.raises(ValueError, match="params"):
            await client.request("crm", "GET", "/x?pin=1")
        with pytest.raises(ValueError, match="path"):
            await client.request("crm", "GET", "x")
        with pytest.raises(ValueError, match="idempotency_key="):
            await client.request("crm", "POST", "/x", headers={"idempotency-key": "k"})
        with pytest.raises(TypeError):
            await client.request("crm", "POST", "/x", json={"when": object()})
        assert client.stats("crm").in_flight == 0  # the failed serialisation gave its slot back
    with pytest.raises(RuntimeError, match="closed"):
        await client.request("crm", "GET", "/x")
    assert backend.arrivals == []


async def test_a_given_session_is_used_and_left_open(backend: Backend) -> None:
    import aiohttp

    backend.script(ok({"ok": True}))
    async with aiohttp.ClientSession() as session:
        async with IntegrationClient({"crm": endpoint(backend.base_url)}, session=session) as client:
            result: IntegrationResult = await client.request("crm", "GET", "/x")
        assert result.ok and not session.closed
