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
        self._live: dict[str, Resource] = {}  # id -> resource, for O(1) ownership checks per event

    def record(self, kind: Kind, resource_id: str, role: str) -> Resource:
        resource = Resource(kind, resource_id, role)
        self._resources.append(resource)
        self._live[resource_id] = resource
        return resource

    def mark_released(self, resource_id: str) -> None:
        resource = self._live.pop(resource_id, None)
        if resource is not None:
            resource.released = True

    def live(self) -> list[Resource]:
        return list(self._live.values())

    def holds(self, resource_id: str) -> bool:
        return resource_id in self._live

    def ids(self) -> set[str]:
        return set(self._live)

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
                    self.mark_released(resource.id)  # "Could not stop playback": it finished while we asked
                    continue
                errors.append(f"{resource.kind.value} {resource.role}: {exc}")
                log.warning("teardown: could not remove %s %s: %s", resource.kind.value, resource.role, exc)
                continue
            self.mark_released(resource.id)
        return errors


def _release_request(resource: Resource) -> ari.AriRequest:
    if resource.kind is Kind.CHANNEL:
        return ari.hangup(resource.id, reason=resource.hangup_reason)
    if resource.kind is Kind.BRIDGE:
        return ari.destroy_bridge(resource.id)
    if resource.kind is Kind.PLAYBACK:
        return ari.stop_playback(resource.id)
    return ari.stop_live_recording(resource.id)
