"""Where an account's webhook messages go, and how the sender paces its attempts.

Every timer is in milliseconds, as in the rest of the configuration, so tests can run them small. The secret
signs every message (:mod:`.signing`): it is left out of reprs and validation errors, and never logged.
"""

from __future__ import annotations

from urllib.parse import urlsplit

from pydantic import BaseModel, ConfigDict, Field, field_validator, model_validator


class WebhookSettings(BaseModel):
    """One account's webhook: the URL its call context and outcome are POSTed to and the shared secret."""

    # hide_input_in_errors: a validation error must not echo the secret (or a token in the URL) into a log.
    model_config = ConfigDict(extra="forbid", frozen=True, hide_input_in_errors=True)

    url: str = Field(repr=False)
    secret: str = Field(min_length=16, max_length=512, repr=False)

    @field_validator("url")
    @classmethod
    def _http_url(cls, value: str) -> str:
        parts = urlsplit(value)
        if parts.scheme not in ("http", "https") or not parts.hostname:
            raise ValueError("must be an http:// or https:// URL with a host, e.g. https://crm.example/hooks/calls")
        if parts.username or parts.password:
            raise ValueError("must not carry credentials: messages are signed with the secret instead")
        if any(ch.isspace() for ch in value):
            raise ValueError("must not contain spaces")
        return value

    @property
    def where(self) -> str:
        """The URL fit for a log: scheme and host only (a path or query may carry a token)."""
        parts = urlsplit(self.url)
        return f"{parts.scheme}://{parts.netloc}"


class OutboxSettings(BaseModel):
    """How the sender delivers: a few messages at a time, each under a lease long enough for one attempt."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    batch: int = Field(default=16, ge=1, le=500)  # messages claimed and sent at once
    poll_ms: int = Field(default=1000, ge=1)  # longest idle wait between looks at the outbox
    lease_ms: int = Field(default=30_000, ge=10)  # a claimed message is this sender's for this long
    timeout_ms: int = Field(default=10_000, ge=1)  # one attempt, from connecting to the whole answer
    backoff_base_ms: int = Field(default=1000, ge=0)  # the first retry waits up to this long (full jitter)
    backoff_max_ms: int = Field(default=300_000, ge=0)  # and no retry longer than this
    retry_after_max_ms: int = Field(default=3_600_000, ge=0)  # a receiver's Retry-After is honoured up to this

    @model_validator(mode="after")
    def _order(self) -> OutboxSettings:
        if self.lease_ms <= self.timeout_ms:
            raise ValueError("lease_ms must be greater than timeout_ms (a lease must outlast one attempt; "
                             "twice timeout_ms leaves room)")
        if self.backoff_max_ms < self.backoff_base_ms:
            raise ValueError("backoff_max_ms must be at least backoff_base_ms")
        return self
