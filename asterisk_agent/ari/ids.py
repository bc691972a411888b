"""Ids for every Asterisk resource we create: assigned by us, before the request, with an instance prefix.

The prefix tells our channels, bridges and playbacks from everyone else's, so a restarted worker can sweep
what an earlier run of the same instance left behind and never touch another worker's resources.
"""

from __future__ import annotations

import secrets


class IdFactory:
    def __init__(self, prefix: str) -> None:
        self.prefix = prefix

    def new(self, kind: str) -> str:
        return f"{self.prefix}-{kind}-{secrets.token_hex(6)}"

    def owns(self, resource_id: str) -> bool:
        return resource_id.startswith(self.prefix + "-")
