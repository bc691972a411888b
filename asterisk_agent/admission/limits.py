"""Which limits a call counts against: its account's, and every trunk or number group it arrives on.

Pure functions over the configuration and what Asterisk tells about the call (the dialled number, the caller
channel's name), so the same answer comes from the Stasis path and the AGI path.
"""

from __future__ import annotations

import re
from dataclasses import dataclass

from asterisk_agent.config import OverflowConfig, Settings, match_pattern

# "PJSIP/carrier-0000001a" -> "carrier"; "SIP/trunk-00000003" -> "trunk". Local and other channels: no endpoint.
_CHANNEL_NAME = re.compile(r"^(?:PJSIP|SIP|IAX2)/(?P<endpoint>.+)-[0-9a-f]{8}$")


def endpoint_of(channel_name: str) -> str | None:
    """The SIP endpoint a channel came in on, from its name; ``None`` when the name carries none."""
    match = _CHANNEL_NAME.match(channel_name)
    return match.group("endpoint") if match else None


@dataclass(frozen=True)
class Limit:
    key: str  # "account:clinic", "trunk:carrier"
    maximum: int
    overflow: OverflowConfig  # what a caller refused by this limit gets


def limits_for(settings: Settings, account: str, did: str, channel_name: str) -> tuple[Limit, ...]:
    """The limits a call to ``did`` on channel ``channel_name`` for ``account`` counts against (none: no
    limit applies)."""
    conf = settings.accounts[account]
    limits: list[Limit] = []
    if conf.max_concurrent_calls is not None:
        limits.append(Limit(f"account:{account}", conf.max_concurrent_calls, conf.overflow))
    endpoint = endpoint_of(channel_name)
    for name, trunk in settings.trunks.items():
        on_trunk = endpoint is not None and endpoint in trunk.endpoints
        if on_trunk or any(match_pattern(pattern, did) for pattern in trunk.numbers):
            limits.append(Limit(f"trunk:{name}", trunk.max_concurrent_calls, trunk.overflow or conf.overflow))
    return tuple(limits)
