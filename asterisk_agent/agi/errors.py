"""Errors of the FastAGI protocol and server, apart from the code that raises them so handlers can import them
without pulling in the server."""

from __future__ import annotations

from typing import TYPE_CHECKING

if TYPE_CHECKING:
    from asterisk_agent.agi.protocol import AgiReply


class AgiError(Exception):
    """Base of every FastAGI error."""


class AgiProtocolError(AgiError, ValueError):
    """Bytes that are not what the AGI protocol allows: a malformed environment or reply, or a command that
    cannot be sent safely. The message says what was wrong without echoing the input (it may hold caller data)."""


class AgiHangup(AgiError):
    """The channel hung up (Asterisk sent ``HANGUP`` or answered 511 for a dead channel), or Asterisk ended the
    AGI by closing the connection. The handler should stop; commands allowed on a dead channel (SET VARIABLE,
    VERBOSE, GET VARIABLE) still work after a ``HANGUP`` line while the connection stays open."""


class AgiCommandError(AgiError):
    """A helper's command was refused or failed (510, 520, or a result other than success). ``reply`` is what
    Asterisk answered."""

    def __init__(self, command: str, reply: AgiReply) -> None:
        self.command = command
        self.reply = reply
        super().__init__(f"AGI {command}: {reply.describe()}")
