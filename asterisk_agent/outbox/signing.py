"""Signing webhook messages, and checking them on the receiving side.

Each attempt carries the Unix time it was sent (``X-Asterisk-Agent-Timestamp``) and
``X-Asterisk-Agent-Signature: v1=<hex HMAC-SHA256(secret, timestamp + "." + body)>``. Signing the timestamp with
the body lets a receiver refuse a captured request replayed later (:func:`verify_signature` allows five minutes
by default); a retry is signed afresh. ``Idempotency-Key`` is the same on every attempt of one message, so a
receiver can drop repeats. docs/webhooks.md describes the scheme for receivers.
"""

from __future__ import annotations

import hashlib
import hmac
import time

TIMESTAMP_HEADER = "X-Asterisk-Agent-Timestamp"
SIGNATURE_HEADER = "X-Asterisk-Agent-Signature"
IDEMPOTENCY_HEADER = "Idempotency-Key"
EVENT_HEADER = "X-Asterisk-Agent-Event"
SCHEME = "v1"
DEFAULT_TOLERANCE_S = 300


def _bytes(value: str | bytes) -> bytes:
    return value.encode("utf-8") if isinstance(value, str) else value


def sign(secret: str | bytes, timestamp: str | int, body: str | bytes) -> str:
    """The signature header's value for ``body`` sent at ``timestamp`` (Unix seconds)."""
    message = str(timestamp).encode("ascii") + b"." + _bytes(body)
    return f"{SCHEME}=" + hmac.new(_bytes(secret), message, hashlib.sha256).hexdigest()


def verify_signature(secret: str | bytes, timestamp: str | int, body: str | bytes, signature: str, *,
                     tolerance_s: float | None = DEFAULT_TOLERANCE_S, now: float | None = None) -> bool:
    """True when ``signature`` (the header's value) signs exactly ``body`` (the raw bytes received) and
    ``timestamp`` (the timestamp header) with ``secret``, and the timestamp is within ``tolerance_s`` of
    ``now`` (the wall clock; None: any age). Compared in constant time."""
    text = str(timestamp).strip()
    if not text.isdigit():
        return False
    if tolerance_s is not None and abs((time.time() if now is None else now) - int(text)) > tolerance_s:
        return False
    return hmac.compare_digest(sign(secret, text, body), signature.strip())


def signed_headers(secret: str | bytes, *, body: bytes, key: str, kind: str,
                   timestamp: int | None = None) -> dict[str, str]:
    """Every header of one attempt (the sender's; a test may call it too)."""
    stamp = str(int(time.time()) if timestamp is None else timestamp)
    return {
        "Content-Type": "application/json",
        TIMESTAMP_HEADER: stamp,
        SIGNATURE_HEADER: sign(secret, stamp, body),
        IDEMPOTENCY_HEADER: key,
        EVENT_HEADER: kind,
    }
