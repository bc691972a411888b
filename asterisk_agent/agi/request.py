"""One FastAGI request as its handler sees it: the environment and a command channel to Asterisk.

Replies come in the order of the commands, one each; the ``HANGUP`` line is extra, sent between two commands,
and the reply to the command it overtook still follows. So a ``HANGUP`` read in place of a reply leaves that
reply owed, and the next command first reads it: a handler that goes on after :class:`AgiHangup` (to set a
variable on the dead channel, say) never gets the answer meant for an earlier command. After a timeout or a
malformed reply the stream is out of step for good and every further command is refused.
"""

from __future__ import annotations

import asyncio
import logging

from asterisk_agent.agi.errors import AgiCommandError, AgiHangup, AgiProtocolError
from asterisk_agent.agi.protocol import (
    MAX_REPLY_BYTES,
    AgiEnvironment,
    AgiReply,
    format_command,
    parse_reply,
    reply_terminator,
)

log = logging.getLogger(__name__)


class AgiRequest:
    """Handed to a route's handler. Commands run one at a time (concurrent calls queue on a lock)."""

    def __init__(
        self,
        env: AgiEnvironment,
        reader: asyncio.StreamReader,
        writer: asyncio.StreamWriter,
        *,
        command_timeout_ms: int,
    ) -> None:
        self.env = env
        self._reader = reader
        self._writer = writer
        self._timeout = command_timeout_ms / 1000
        self._lock = asyncio.Lock()
        self._owed = 0  # replies still due for commands a HANGUP line overtook
        self._broken: str | None = None  # why the reply stream is out of step, once it is
        self.hung_up = False  # Asterisk said HANGUP or 511, or closed the connection
        self.commands = 0  # sent so far

    @property
    def route(self) -> str:
        return self.env.script

    async def command(self, name: str, *args: str, timeout_ms: int | None = None) -> AgiReply:
        """Send one command and return Asterisk's reply (200, or 510/520 for a mistake of ours).

        Raise :class:`AgiHangup` when the channel hung up (``HANGUP``, 511, or the connection closed),
        :class:`AgiProtocolError` for a malformed reply or an unsendable command, :class:`TimeoutError` when no
        reply came within ``timeout_ms`` (default: the server's ``command_timeout_ms``)."""
        line = format_command(name, *args)  # refused before anything is sent
        timeout = self._timeout if timeout_ms is None else timeout_ms / 1000
        async with self._lock:
            if self._broken is not None:
                raise AgiProtocolError(f"AGI {name} not sent: the connection is out of step ({self._broken})")
            try:
                async with asyncio.timeout(timeout):
                    while self._owed:
                        reply = await self._read_reply()
                        if not reply.hangup:
                            self._owed -= 1
                    await self._send(line)
                    self.commands += 1
                    reply = await self._read_reply()
            except TimeoutError:
                self._broken = f"AGI {name} got no reply within {round(timeout * 1000)} ms"
                raise TimeoutError(self._broken) from None
            except AgiProtocolError as exc:
                self._broken = str(exc)
                raise
            if reply.hangup:
                self.hung_up = True
                self._owed += 1
                raise AgiHangup(f"AGI {name}: the channel hung up")
            if reply.dead:
                self.hung_up = True
                raise AgiHangup(f"AGI {name}: {reply.message or 'the channel is dead'}")
            return reply

    async def set_variable(self, name: str, value: str) -> None:
        """Set a channel variable for the dialplan (``SET VARIABLE``; works on a dead channel too)."""
        await self._expect_success("SET VARIABLE", name, value)

    async def verbose(self, text: str, level: int = 1) -> None:
        """Write ``text`` to Asterisk's console at verbosity ``level`` (``VERBOSE``)."""
        await self._expect_success("VERBOSE", text, str(level))

    async def get_variable(self, name: str) -> str | None:
        """A channel variable's value, None when it is not set (``GET VARIABLE``)."""
        reply = await self.command("GET VARIABLE", name)
        if not reply.ok or reply.result not in ("0", "1"):
            raise AgiCommandError("GET VARIABLE", reply)
        return reply.data if reply.result == "1" else None

    async def _expect_success(self, name: str, *args: str) -> AgiReply:
        reply = await self.command(name, *args)
        if not reply.ok or reply.result != "1":
            raise AgiCommandError(name, reply)
        return reply

    async def _send(self, line: bytes) -> None:
        if self._writer.is_closing():
            self.hung_up = True
            raise AgiHangup("the AGI connection is closed")
        try:
            self._writer.write(line)
            await self._writer.drain()
        except (ConnectionError, OSError) as exc:
            self.hung_up = True
            raise AgiHangup(f"Asterisk closed the AGI connection ({type(exc).__name__})") from None

    async def _readline(self) -> bytes:
        try:
            line = await self._reader.readline()
        except ValueError:  # StreamReader's limit: a line longer than any reply
            raise AgiProtocolError(f"reply line over the limit of {MAX_REPLY_BYTES} bytes") from None
        except (ConnectionError, OSError) as exc:
            self.hung_up = True
            raise AgiHangup(f"Asterisk closed the AGI connection ({type(exc).__name__})") from None
        if not line.endswith(b"\n"):  # end of stream, possibly in the middle of a line
            self.hung_up = True
            raise AgiHangup("Asterisk closed the AGI connection")
        return line

    async def _read_reply(self) -> AgiReply:
        block = await self._readline()
        terminator = reply_terminator(block)
        if terminator is not None:
            lines = [block]
            while not lines[-1].startswith(terminator):
                lines.append(await self._readline())
                if sum(map(len, lines)) > MAX_REPLY_BYTES:
                    raise AgiProtocolError(f"multi-line reply over the limit of {MAX_REPLY_BYTES} bytes")
            block = b"".join(lines)
        return parse_reply(block)
