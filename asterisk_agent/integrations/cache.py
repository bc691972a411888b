"""The last good answer per request, kept to serve as a fallback when the backend fails: a caller hears
yesterday's opening hours rather than "the system is down".

Answers are kept as the raw JSON bytes and parsed again when served, so a flow that changes the ``data`` it got
cannot change what another call is served later. Entries older than the TTL are never served; the store holds
at most ``max_entries`` per endpoint (least recently stored dropped first), so per-caller keys cannot grow it
without bound.
"""

from __future__ import annotations

import collections
import json
from collections.abc import Hashable
from typing import Any

MAX_ENTRIES = 10_000


class FallbackCache:
    def __init__(self, ttl_s: float, max_entries: int = MAX_ENTRIES) -> None:
        self.ttl_s = ttl_s
        self.max_entries = max_entries
        self._entries: collections.OrderedDict[Hashable, tuple[float, bytes]] = collections.OrderedDict()

    def __len__(self) -> int:
        return len(self._entries)

    def store(self, key: Hashable, body: bytes, now: float) -> None:
        if self.ttl_s <= 0 or self.max_entries <= 0:
            return
        self._entries[key] = (now, body)
        self._entries.move_to_end(key)
        while len(self._entries) > self.max_entries:
            self._entries.popitem(last=False)

    def get(self, key: Hashable, now: float) -> tuple[Any, float] | None:
        """The data stored under ``key`` and its age in seconds, when younger than the TTL."""
        entry = self._entries.get(key)
        if entry is None:
            return None
        stored_at, body = entry
        age = now - stored_at
        if age >= self.ttl_s:
            del self._entries[key]
            return None
        return (json.loads(body) if body else None), age
