"""In-process admission: counters per limit and the slots that hold them, as leases.

A slot is taken when a call is admitted and released exactly once, from whichever path ends the call first
(the session ending, the dialplan's ``h`` extension through FastAGI, a sweep of expired leases). A call
admitted by FastAGI carries its slot's token into Stasis, where the session takes the slot over instead of
counting the call again. Every decision is a few dictionary operations (well under a millisecond).
"""

from __future__ import annotations

import secrets
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field

from asterisk_agent.admission.limits import Limit


@dataclass
class Slot:
    token: str
    keys: tuple[str, ...]  # the limits it counts against
    holder: str  # "agi" until a session takes it over, then "session"
    expires_at: float
    channel_id: str | None = None


@dataclass(frozen=True)
class Decision:
    slot: Slot | None  # None: refused
    refused_by: Limit | None = None

    @property
    def admitted(self) -> bool:
        return self.slot is not None


@dataclass
class AdmissionStats:
    admitted: dict[str, int] = field(default_factory=dict)  # per limit key ("" for calls without limits)
    refused: dict[str, int] = field(default_factory=dict)
    expired: int = 0
    released: int = 0
    taken_over: int = 0


class LocalAdmission:
    """Slots of one worker process. ``clock`` is seconds (monotonic), injectable for tests."""

    def __init__(self, clock: Callable[[], float] = time.monotonic) -> None:
        self._clock = clock
        self._slots: dict[str, Slot] = {}
        self._in_use: dict[str, int] = {}
        self.stats = AdmissionStats()

    def in_use(self, key: str) -> int:
        self._expire()
        return self._in_use.get(key, 0)

    def admit(self, limits: Sequence[Limit], *, lease_ms: int, holder: str, channel_id: str | None = None,
              force: bool = False) -> Decision:
        """A slot when every limit has room (``force``: count the call even over its limits, for a call
        already answered that a restarted worker adopts); otherwise the first limit that is full."""
        self._expire()
        if not force:
            for limit in limits:
                if self._in_use.get(limit.key, 0) >= limit.maximum:
                    self.stats.refused[limit.key] = self.stats.refused.get(limit.key, 0) + 1
                    return Decision(None, limit)
        slot = Slot(secrets.token_hex(8), tuple(limit.key for limit in limits), holder,
                    self._clock() + lease_ms / 1000, channel_id)
        self._slots[slot.token] = slot
        for key in slot.keys:
            self._in_use[key] = self._in_use.get(key, 0) + 1
        for key in slot.keys or ("",):
            self.stats.admitted[key] = self.stats.admitted.get(key, 0) + 1
        return Decision(slot)

    def take_over(self, token: str, *, channel_id: str, lease_ms: int) -> Slot | None:
        """The slot FastAGI took for this call, now held by its session; ``None`` when the token is unknown,
        already released or expired (the call is then admitted afresh)."""
        self._expire()
        slot = self._slots.get(token)
        if slot is None or (slot.channel_id is not None and slot.channel_id != channel_id):
            return None
        slot.holder, slot.channel_id = "session", channel_id
        slot.expires_at = self._clock() + lease_ms / 1000
        self.stats.taken_over += 1
        return slot

    def renew(self, token: str, lease_ms: int) -> bool:
        slot = self._slots.get(token)
        if slot is None:
            return False
        slot.expires_at = max(slot.expires_at, self._clock() + lease_ms / 1000)
        return True

    def release(self, token: str) -> bool:
        """Free the slot; ``True`` only the first time (every later release of the same token does nothing)."""
        slot = self._slots.pop(token, None)
        if slot is None:
            return False
        self._free(slot)
        self.stats.released += 1
        return True

    def _expire(self) -> None:
        now = self._clock()
        for slot in [slot for slot in self._slots.values() if slot.expires_at <= now]:
            del self._slots[slot.token]
            self._free(slot)
            self.stats.expired += 1

    def _free(self, slot: Slot) -> None:
        for key in slot.keys:
            left = self._in_use[key] - 1
            if left:
                self._in_use[key] = left
            else:
                del self._in_use[key]
