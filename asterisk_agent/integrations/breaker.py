"""The circuit breaker: after ``failures`` consecutive failed attempts the endpoint is left alone for
``open_s`` seconds (requests fail fast, so a struggling backend is not kept down by our retries and callers
hear an answer at once instead of waiting out timeouts); then one probe attempt goes through, and its result
closes the circuit or opens it again.

Attempts, not requests, are counted: three attempts of one request that all time out are three failures the
backend had. A 429 is neither a failure nor a success (the backend is alive and the pause deals with it); a 4xx
is a success (the backend is alive and answered definitely). Any success closes the circuit, even one from
an attempt sent before it opened: the backend answered, which is what the probe would have found out.
"""

from __future__ import annotations

from asterisk_agent.integrations.result import CircuitState


class CircuitBreaker:
    def __init__(self, failures: int, open_s: float) -> None:
        self.threshold = failures
        self.open_s = open_s
        self.consecutive = 0
        self.opened = 0  # times opened
        self._state = CircuitState.CLOSED
        self._opened_at = 0.0
        self._probe_out = False

    def state(self, now: float) -> CircuitState:
        if self._state is CircuitState.OPEN and now >= self._opened_at + self.open_s:
            self._state = CircuitState.HALF_OPEN
            self._probe_out = False
        return self._state

    def rejects(self, now: float) -> bool:
        """Would an attempt be refused now? (Claims nothing: a queued request may still lose the probe.)"""
        state = self.state(now)
        return state is CircuitState.OPEN or (state is CircuitState.HALF_OPEN and self._probe_out)

    def admit(self, now: float) -> bool:
        """May an attempt be sent now? In half-open, the first one admitted is the probe; the rest are refused
        until its result is in."""
        if self.rejects(now):
            return False
        if self._state is CircuitState.HALF_OPEN:
            self._probe_out = True
        return True

    def success(self) -> None:
        self.consecutive = 0
        self._state = CircuitState.CLOSED
        self._probe_out = False

    def failure(self, now: float) -> None:
        if self._state is CircuitState.OPEN:
            return  # an attempt admitted before it opened: the open interval stays as it was
        self.consecutive += 1
        if self._state is CircuitState.HALF_OPEN or self.consecutive >= self.threshold:
            self._state = CircuitState.OPEN
            self._opened_at = now
            self._probe_out = False
            self.opened += 1

    def neutral(self) -> None:
        """An attempt that says nothing about the backend's health (a 429, or one abandoned by its caller):
        a probe slot it held is free again."""
        self._probe_out = False
