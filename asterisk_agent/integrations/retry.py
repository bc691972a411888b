"""When to try again: exponential backoff with full jitter, and the backend's own ``Retry-After``.

Full jitter (a uniform draw between 0 and the exponential ceiling) spreads the retries of many calls that
failed together, so a backend coming back is not hit by all of them in the same millisecond.
"""

from __future__ import annotations

import math
import random
import time
from email.utils import parsedate_to_datetime


def backoff_s(retry: int, base_ms: int, max_ms: int, rng: random.Random | None = None) -> float:
    """Seconds to wait before retry number ``retry`` (1 for the first)."""
    ceiling = min(max_ms, base_ms << max(0, retry - 1))
    return (rng or random).uniform(0.0, ceiling) / 1000.0


def parse_retry_after(value: str | None, now: float | None = None) -> float | None:
    """``Retry-After`` in seconds from now: delta-seconds (``"120"``) or an HTTP-date
    (``"Wed, 21 Oct 2015 07:28:00 GMT"``; ``now`` is the wall clock, :func:`time.time` by default). A date in
    the past is 0; anything unreadable is None (the backoff applies)."""
    if value is None:
        return None
    text = value.strip()
    if not text:
        return None
    try:
        seconds = float(text)
    except ValueError:
        pass
    else:
        return None if math.isnan(seconds) else max(0.0, seconds)
    try:
        when = parsedate_to_datetime(text)
    except (TypeError, ValueError, IndexError):
        return None
    if when.tzinfo is None:
        return None  # not an HTTP-date (those are always GMT)
    return max(0.0, when.timestamp() - (time.time() if now is None else now))
