"""One logged-in AMI connection, over panoramisk's protocol.

panoramisk frames AMI messages (``AMIProtocol``), pairs answers with actions by ActionID and gathers list
answers (``Action``), and parses headers (``Message``). Its ``Manager`` is not used: it reconnects on its own
with an uncancellable ``call_later`` at a fixed whole number of seconds, re-sends actions of a dead connection
on the next one (their futures never resolve), and pings with no timeout. Here a connection lives once: it
is opened, logged in, used, and reports its end through :attr:`AmiConnection.closed`; whoever owns it decides
whether and when to connect again.

Traps of panoramisk 1.4 worked around here:

* ``Action.multi`` takes a ``QueueAdd`` answer ("Added interface to queue") for the start of a list and waits
  forever for its end: every action is sent with ``as_list`` said explicitly.
* An action whose connection drops after part of its list arrived is forgotten by the protocol with its future
  still pending: :meth:`AmiConnection.send` bounds every wait, and a lost connection fails every future in
  flight.
* The protocol logs a failed send with the whole action, which for Login holds the secret: its logger here
  removes the secret from every line.
"""

from __future__ import annotations

import asyncio
import collections
import contextlib
import logging
from collections.abc import Callable, MutableMapping
from typing import Any

from panoramisk.actions import Action
from panoramisk.ami_protocol import AMIProtocol
from panoramisk.message import Message

log = logging.getLogger(__name__)

# The event classes the availability view needs: DeviceStateChange is "call", the queue events "agent".
AVAILABILITY_EVENTS = "call,agent"


class AmiError(Exception):
    """An AMI connection or action failed (the message never holds the secret)."""


class AmiAuthError(AmiError):
    """Asterisk refused the user or secret."""


class AmiConnectionLost(AmiError):
    pass


class _Redacting(logging.LoggerAdapter):  # type: ignore[type-arg]
    """panoramisk's protocol logs through this: the secret is cut out of every message before it is logged."""

    def __init__(self, logger: logging.Logger, secret: str) -> None:
        super().__init__(logger, {})
        self._secret = secret

    def process(self, msg: Any, kwargs: MutableMapping[str, Any]) -> tuple[Any, MutableMapping[str, Any]]:
        text = str(msg)
        if self._secret and self._secret in text:
            text = text.replace(self._secret, "***")
        return text, kwargs

    def log(self, level: int, msg: object, *args: object, **kwargs: Any) -> None:
        if not self.isEnabledFor(level):
            return
        if args:  # format first, so the secret is cut from the arguments too
            try:
                msg = str(msg) % args
            except (TypeError, ValueError):
                msg = f"{msg} {args!r}"
        super().log(level, msg, **kwargs)


class _Factory:
    """What panoramisk's protocol calls back into (the part of ``Manager`` it uses)."""

    save_stream = None
    forgetable_actions = ("ping", "login")

    def __init__(self, connection: AmiConnection) -> None:
        self._connection = connection
        self.awaiting_actions: collections.deque[Any] = collections.deque()  # never re-sent: see the module

    def dispatch(self, message: Any) -> None:
        self._connection._dispatch(message)

    def connection_lost(self, exc: object) -> None:
        self._connection._lost(exc)


class AmiConnection:
    """A TCP connection to AMI, logged in as one user. Events go to ``on_event`` (a header dict each), in the
    order Asterisk sent them, synchronously from the protocol: nothing reorders them."""

    def __init__(
        self,
        host: str,
        port: int,
        username: str,
        secret: str,
        *,
        on_event: Callable[[dict[str, object]], None],
        events: str = AVAILABILITY_EVENTS,
        action_timeout_ms: int = 5000,
    ) -> None:
        self.host = host
        self.port = port
        self.username = username
        self._secret = secret
        self._on_event = on_event
        self._events = events
        self._action_timeout = action_timeout_ms / 1000
        self._protocol: Any = None
        self._factory = _Factory(self)
        self._in_flight: set[asyncio.Future[Any]] = set()
        self.closed: asyncio.Future[str] = asyncio.get_running_loop().create_future()  # the reason, once
        self.version = ""

    def __repr__(self) -> str:
        return f"<AmiConnection {self.username}@{self.host}:{self.port}{' closed' if self.closed.done() else ''}>"

    async def open(self, timeout_s: float) -> None:
        """Connect and log in within ``timeout_s``; raise AmiAuthError or AmiError (closed on failure)."""
        loop = asyncio.get_running_loop()
        try:
            async with asyncio.timeout(timeout_s):
                _, protocol = await loop.create_connection(AMIProtocol, self.host, self.port)
                self._protocol = protocol
                protocol.factory = self._factory
                protocol.encoding = "utf-8"
                protocol.log = _Redacting(logging.getLogger("asterisk_agent.ami.protocol"), self._secret)
                answer = await self._send(
                    {"Action": "Login", "Username": self.username, "Secret": self._secret, "Events": self._events},
                    as_list=False,
                )
        except (OSError, TimeoutError) as exc:
            why = str(exc) or f"no answer within {round(timeout_s * 1000)} ms"
            self.close(f"cannot connect: {why}")
            raise AmiError(f"AMI at {self.host}:{self.port}: cannot connect or log in: {why}") from None
        if not answer.success:
            self.close("login refused")
            raise AmiAuthError(
                f"AMI at {self.host}:{self.port}: login refused for user {self.username!r} "
                f"({answer.get('Message', '')}); check the user and secret in manager.conf"
            )
        self.version = protocol.version or ""

    async def send(self, action: dict[str, str], *, expect_list: bool) -> Any:
        """Send one action and wait for its whole answer: a Message, or for an action answered by a list
        (``expect_list``) the list of messages, the Response first and the ...Complete event last; a list
        action that is refused answers one Message. Raise AmiError on timeout or loss."""
        # as_list None lets panoramisk tell a list (EventList: start) from a refusal; True would wait for the
        # end of a list that never starts. False for the rest: see the module's note on QueueAdd.
        try:
            async with asyncio.timeout(self._action_timeout):
                return await self._send(action, as_list=None if expect_list else False)
        except TimeoutError:
            raise AmiError(f"AMI action {action.get('Action')} had no answer within "
                           f"{round(self._action_timeout * 1000)} ms") from None

    async def _send(self, action: dict[str, str], *, as_list: bool | None) -> Any:
        if self.closed.done() or self._protocol is None:
            raise AmiConnectionLost(f"AMI connection closed ({self.closed.result() if self.closed.done() else ''})")
        future = self._protocol.send(Action(action, as_list=as_list), as_list=as_list)
        self._in_flight.add(future)
        try:
            return await asyncio.shield(future)  # a timeout must not cancel panoramisk's own future
        finally:
            self._in_flight.discard(future)

    def close(self, reason: str = "closed by us") -> None:
        """Close the socket (idempotent). Pending actions fail with AmiConnectionLost."""
        if self._protocol is not None and not self._protocol.closed:
            self._protocol.close()
        self._lost(reason)

    def _dispatch(self, message: Message) -> None:
        self._on_event({key: value for key, value in message.items() if key != "content"})

    def _lost(self, exc: object) -> None:
        if isinstance(exc, Message):
            reason = f"Asterisk said {exc.get('Event', '')}"
        elif exc is None:
            reason = "closed by Asterisk"
        else:
            reason = str(exc) or type(exc).__name__
        if not self.closed.done():
            self.closed.set_result(reason)
        for future in list(self._in_flight):
            if not future.done():
                future.set_exception(AmiConnectionLost(f"AMI connection lost: {reason}"))
                with contextlib.suppress(BaseException):
                    future.exception()  # retrieved: the awaiting side may already be gone
        self._in_flight.clear()
        self._factory.awaiting_actions.clear()
