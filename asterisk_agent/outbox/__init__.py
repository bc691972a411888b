"""The durable outbox: webhook messages stored with the call they describe, delivered at least once by a
background sender, signed with HMAC-SHA256 and carrying an idempotency key (docs/webhooks.md)."""

from asterisk_agent.outbox.queue import OutboxCounts, counts
from asterisk_agent.outbox.sender import OutboxSender, SenderStats
from asterisk_agent.outbox.settings import OutboxSettings, WebhookSettings
from asterisk_agent.outbox.signing import (
    EVENT_HEADER,
    IDEMPOTENCY_HEADER,
    SIGNATURE_HEADER,
    TIMESTAMP_HEADER,
    sign,
    verify_signature,
)
from asterisk_agent.store.messages import CALL_ENDED, CALL_STARTED

__all__ = [
    "CALL_ENDED",
    "CALL_STARTED",
    "EVENT_HEADER",
    "IDEMPOTENCY_HEADER",
    "SIGNATURE_HEADER",
    "TIMESTAMP_HEADER",
    "OutboxCounts",
    "OutboxSender",
    "OutboxSettings",
    "SenderStats",
    "WebhookSettings",
    "counts",
    "sign",
    "verify_signature",
]
