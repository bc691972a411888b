"""FastAGI: the protocol (pure, over bytes) and an asyncio server whose routes admit and release callers for
dialplans that use ``AGI(agi://HOST:PORT/ROUTE?...)``."""

from asterisk_agent.agi.errors import AgiCommandError, AgiError, AgiHangup, AgiProtocolError
from asterisk_agent.agi.protocol import AgiEnvironment, AgiReply, format_command, parse_environment, parse_reply
from asterisk_agent.agi.request import AgiRequest
from asterisk_agent.agi.server import AgiCounters, FastAgiServer, Handler

__all__ = [
    "AgiCommandError",
    "AgiCounters",
    "AgiEnvironment",
    "AgiError",
    "AgiHangup",
    "AgiProtocolError",
    "AgiReply",
    "AgiRequest",
    "FastAgiServer",
    "Handler",
    "format_command",
    "parse_environment",
    "parse_reply",
]
