"""What a webhook message looks like: a JSON envelope fixed once, when the store writes the outbox row (the
sender in :mod:`asterisk_agent.outbox` only reads it).

The body and its idempotency key are made together and stored as they are, so every attempt sends the same
bytes under the same key, and a receiver can de-duplicate on either. The envelope (docs/webhooks.md)::

    {"id": KEY, "type": "call.started" | "call.ended", "account": ..., "session_id": ...,
     "occurred_at": "2025-01-31T12:00:00.000000Z", "data": {...}}
"""

from __future__ import annotations

import datetime as dt
import json
import uuid
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

CALL_STARTED = "call.started"
CALL_ENDED = "call.ended"


@dataclass(frozen=True, slots=True)
class NewMessage:
    key: str  # the idempotency key, the same on every attempt
    kind: str
    body: str  # the exact JSON text sent


def iso(moment: dt.datetime) -> str:
    """An aware datetime as ISO 8601 UTC with a ``Z``."""
    return moment.astimezone(dt.UTC).strftime("%Y-%m-%dT%H:%M:%S.%fZ")


def new_message(kind: str, *, account: str, session_id: str | None, occurred_at: dt.datetime,
                data: Mapping[str, Any]) -> NewMessage:
    """A message with a fresh idempotency key. ``data`` must be JSON-serialisable (a TypeError otherwise:
    a programming error, raised before anything is written)."""
    key = uuid.uuid4().hex
    envelope = {"id": key, "type": kind, "account": account, "session_id": session_id,
                "occurred_at": iso(occurred_at), "data": dict(data)}
    return NewMessage(key, kind, json.dumps(envelope, ensure_ascii=False, separators=(",", ":"), allow_nan=False))
