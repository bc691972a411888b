"""ARI: REST client, typed events, the event stream."""

from asterisk_agent.ari.client import AriClient
from asterisk_agent.ari.errors import AriError, AriNotFound
from asterisk_agent.ari.ids import IdFactory

__all__ = ["AriClient", "AriError", "AriNotFound", "IdFactory"]
