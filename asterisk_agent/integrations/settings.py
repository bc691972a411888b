"""How the worker may talk to one backend (a CRM, a scheduler, a bank's API): where it is, how hard it may be
pushed, how long a caller may wait for it, and when to stop asking it for a while.

Every timer is in milliseconds, as in the rest of the configuration, so tests can run them small. ``headers``
usually carries a credential: it is left out of the model's repr and out of validation errors, and the client
never logs it.
"""

from __future__ import annotations

from urllib.parse import urlsplit

from pydantic import BaseModel, ConfigDict, Field, field_validator, model_validator


class EndpointSettings(BaseModel):
    """One backend's limits. The defaults suit a backend that answers in a few hundred milliseconds while a
    caller waits on the line: a few requests at once, two retries, six seconds at most end to end."""

    # hide_input_in_errors: a bad header value must not be echoed into a log by a validation error.
    model_config = ConfigDict(extra="forbid", frozen=True, hide_input_in_errors=True)

    base_url: str
    max_in_flight: int = Field(default=4, ge=1, le=1024)  # requests on the wire at once
    rate_per_s: float = Field(default=0.0, ge=0)  # attempts per second, spaced evenly; 0: no limit
    queue_max: int = Field(default=32, ge=0)  # requests waiting for a slot; one more is refused at once
    queue_wait_ms: int = Field(default=2000, ge=0)  # most a request waits for a slot
    timeout_ms: int = Field(default=2000, ge=1)  # one attempt, from sending to the whole answer read
    retries: int = Field(default=2, ge=0, le=10)  # attempts after the first
    backoff_base_ms: int = Field(default=100, ge=0)
    backoff_max_ms: int = Field(default=2000, ge=0)
    retry_after_max_ms: int = Field(default=5000, ge=0)  # a longer Retry-After is honoured only this long
    total_budget_ms: int = Field(default=6000, ge=1)  # one request() end to end: queue, attempts, backoff
    circuit_failures: int = Field(default=5, ge=1)  # consecutive failed attempts that open the circuit
    circuit_open_ms: int = Field(default=5000, ge=1)  # how long an open circuit refuses before one probe
    cache_ttl_ms: int = Field(default=600_000, ge=0)  # how old a good answer may be to serve as a fallback
    headers: dict[str, str] = Field(default_factory=dict, repr=False)  # sent on every request; never logged

    @field_validator("base_url")
    @classmethod
    def _http_url(cls, value: str) -> str:
        parts = urlsplit(value)
        if parts.scheme not in ("http", "https") or not parts.hostname:
            raise ValueError("must be an http:// or https:// URL with a host, e.g. https://crm.example/api")
        if parts.query or parts.fragment:
            raise ValueError("must not carry a query or a fragment (query values would end up in every request)")
        if parts.username or parts.password:
            raise ValueError("must not carry credentials; put them in headers (which are never logged)")
        return value.rstrip("/")

    @field_validator("headers")
    @classmethod
    def _header_names(cls, value: dict[str, str]) -> dict[str, str]:
        for name, text in value.items():
            if not name or any(ch in name for ch in " \t\r\n:") or any(ch in text for ch in "\r\n"):
                raise ValueError("header names must be tokens and values must be single lines")
            if name.lower() == "idempotency-key":
                raise ValueError("Idempotency-Key is set per request (idempotency_key=...), not per endpoint")
        return value

    @model_validator(mode="after")
    def _order(self) -> EndpointSettings:
        if self.backoff_max_ms < self.backoff_base_ms:
            raise ValueError("backoff_max_ms must be at least backoff_base_ms")
        return self
