"""The resource ledger: every Asterisk resource a session creates, recorded before the request is sent.

Teardown walks it in reverse, once; a 404 means the resource is already gone.
"""

from __future__ import annotations

import logging
from dataclasses import dataclass
from enum import Enum

from asterisk_agent.ari import requests as ari
from asterisk_agent.ari.client import AriClient
from asterisk_agent.ari.errors import AriError

log = logging.getLogger(__name__)


class Kind(Enum):
    CHANNEL = "channel"
    BRIDGE = "bridge"
    PLAYBACK = "playback"
    RECORDING = "recording"


@dataclass
class Resource:
    kind: Kind
    id: str
    role: str
    released: bool = False
    hangup_reason: str = "normal"  # for channels: the cause the far end is told


class Ledger:
    def __init__(self) -> None:
        self._resources: list[Resource] = []

    def record(self, kind: Kind, resource_id: str, role: str) -> Resource:
        resource = Resource(kind, resource_id, role)
        self._resources.append(resource)
        return resource

    def mark_released(self, resource_id: str) -> None:
        for resource in self._resources:
            if resource.id == resource_id:
                resource.released = True

    def live(self) -> list[Resource]:
        return [r for r in self._resources if not r.released]

    def ids(self) -> set[str]:
        return {r.id for r in self._resources if not r.released}

    async def release_all(self, client: AriClient) -> list[str]:
        """Remove every live resource, newest first. Returns the errors (other than 'already gone')."""
        errors: list[str] = []
        for resource in reversed(self._resources):
            if resource.released:
                continue
            request = _release_request(resource)
            try:
                await client.delete_quietly(request)
            except AriError as exc:
                if resource.kind is Kind.PLAYBACK and exc.status == 500:
                    resource.released = True  # "Could not stop playback": it finished while we asked
                    continue
                errors.append(f"{resource.kind.value} {resource.role}: {exc}")
                log.warning("teardown: could not remove %s %s: %s", resource.kind.value, resource.role, exc)
                continue
            resource.released = True
        return errors


def _release_request(resource: Resource) -> ari.AriRequest:
    if resource.kind is Kind.CHANNEL:
        return ari.hangup(resource.id, reason=resource.hangup_reason)
    if resource.kind is Kind.BRIDGE:
        return ari.destroy_bridge(resource.id)
    if resource.kind is Kind.PLAYBACK:
        return ari.stop_playback(resource.id)
    return ari.stop_live_recording(resource.id)
