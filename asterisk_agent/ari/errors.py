"""Errors raised by the ARI client, each with the request and what Asterisk said."""

from __future__ import annotations


class AriError(Exception):
    """An ARI request failed. ``status`` is the HTTP status (0 when no answer came)."""

    def __init__(self, method: str, path: str, status: int, message: str) -> None:
        self.method = method
        self.path = path
        self.status = status
        self.message = message
        where = f"{method} {path}"
        super().__init__(f"ARI {where}: {status} {message}" if status else f"ARI {where}: {message}")


class AriNotFound(AriError):
    """404: the resource is gone (for a delete: already done)."""


class AriConflict(AriError):
    """409 or 422: the resource is not in a state that allows the request (e.g. channel not in Stasis)."""


class AriAuthError(AriError):
    """401: wrong ARI user or password."""


class AriTimeout(AriError):
    """Asterisk did not answer within the request timeout."""


class AriUnavailable(AriError):
    """No connection to Asterisk's HTTP server."""


class ApplicationReplaced(Exception):
    """Another client connected to our Stasis application and took it over."""
