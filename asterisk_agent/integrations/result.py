"""What a backend request comes back with, and the per-endpoint counters.

A flow never gets an exception for backend trouble: it gets an :class:`IntegrationResult` and decides what to
say to the caller. ``reason`` is one of the ``REASON_*`` strings below (machine-readable, stable, safe to log and
to use as a metrics label).
"""

from __future__ import annotations

from dataclasses import dataclass, field
from enum import Enum
from typing import Any

REASON_OK = "ok"
REASON_RATE_LIMITED = "rate_limited"  # 429 (the endpoint pauses until its Retry-After)
REASON_SERVER_ERROR = "server_error"  # 5xx
REASON_TIMEOUT = "timeout"  # no whole answer within timeout_ms, or a 408
REASON_CONNECTION = "connection"  # refused, reset, DNS, TLS
REASON_INVALID_JSON = "invalid_json"  # a 2xx whose body is not JSON
REASON_QUEUE_FULL = "queue_full"  # queue_max requests already waiting: refused at once
REASON_QUEUE_TIMEOUT = "queue_timeout"  # no slot within queue_wait_ms
REASON_CIRCUIT_OPEN = "circuit_open"  # the endpoint failed too often lately: not asked
REASON_BUDGET_EXCEEDED = "budget_exceeded"  # total_budget_ms ran out in the queue or during an attempt
REASON_CLIENT_ERROR = "client_error"  # a definite 4xx (or 3xx) answer; body in ``data``

REASONS = (
    REASON_OK, REASON_RATE_LIMITED, REASON_SERVER_ERROR, REASON_TIMEOUT, REASON_CONNECTION, REASON_INVALID_JSON,
    REASON_QUEUE_FULL, REASON_QUEUE_TIMEOUT, REASON_CIRCUIT_OPEN, REASON_BUDGET_EXCEEDED, REASON_CLIENT_ERROR,
)


class Outcome(Enum):
    OK = "ok"  # the backend answered 2xx now; ``data`` is its JSON (None for an empty body)
    CACHED = "cached"  # the backend failed; ``data`` is an earlier good answer, ``stale_ms`` old
    FAILED = "failed"  # no usable answer; for client_error, ``data`` is the backend's refusal


class CircuitState(Enum):
    CLOSED = "closed"
    OPEN = "open"  # requests fail fast with circuit_open
    HALF_OPEN = "half_open"  # the interval is over: the next attempt is a probe


@dataclass(frozen=True, slots=True)
class IntegrationResult:
    """The end of one ``request()``. ``data`` is the parsed JSON (any JSON value) or None; it is never the raw
    body, so a flow cannot log a backend's answer by accident through this object's repr."""

    outcome: Outcome
    reason: str
    status: int | None = None  # the last HTTP status seen, None when no answer came
    data: Any = field(default=None, repr=False)  # answers carry account numbers: not in reprs
    attempts: int = 0  # requests actually sent
    waited_ms: float = 0.0  # time spent waiting for a slot (all attempts)
    elapsed_ms: float = 0.0  # the whole request() call
    stale_ms: float | None = None  # age of ``data`` when CACHED

    @property
    def ok(self) -> bool:
        return self.outcome is Outcome.OK

    @property
    def usable(self) -> bool:
        """Data the flow may use: a fresh or a cached answer."""
        return self.outcome is not Outcome.FAILED


@dataclass(frozen=True, slots=True)
class EndpointStats:
    """A snapshot of one endpoint's counters since the client was made (in_flight and queued are current)."""

    requests: int
    ok: int
    cached: int  # fallbacks served; why in ``cached_by_reason``
    failed: dict[str, int]  # FAILED results by reason
    cached_by_reason: dict[str, int]
    retries: int  # attempts after a request's first
    in_flight: int
    peak_in_flight: int
    queued: int
    peak_queued: int
    circuit: CircuitState
    circuit_opened: int  # times the circuit opened
