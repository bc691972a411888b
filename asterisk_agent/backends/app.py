"""What the three reference backends share: the app factory, idempotent answers, field checks and the server.

A service is a :class:`ReferenceService`: its in-memory state, its routes, a :class:`FaultState` and
:class:`Stats`. :meth:`ReferenceService.make_app` wraps the routes in the fault and error middlewares and adds
the ``/_control/*`` routes, so every service misbehaves and counts the same way. :class:`ServiceServer` puts
one app on one TCP port and can stop and start listening on it, for "the backend is gone" scenarios.
"""

from __future__ import annotations

import re
from abc import ABC, abstractmethod
from collections.abc import Callable, Mapping
from datetime import date
from typing import Any, ClassVar

from aiohttp import web

from asterisk_agent.backends.faults import (
    ApiError,
    FaultState,
    Stats,
    control_routes,
    error_middleware,
    fault_middleware,
)

IDEMPOTENCY_HEADER = "Idempotency-Key"
REPLAYED_HEADER = "Idempotent-Replayed"  # "true" on an answer given again for a key already seen
_ISO_DATE = re.compile(r"^\d{4}-\d{2}-\d{2}$")

Answer = tuple[int, dict[str, Any]]


class ReferenceService(ABC):
    """One reference backend: state, routes, faults and counters.

    ``today`` fixes the service's calendar (tests pass one so every answer is predictable); without it the
    service reads the real date on each request, so a demo left running overnight moves on with the clock.
    """

    name: ClassVar[str]

    def __init__(self, *, today: date | None = None, faults: FaultState | None = None) -> None:
        self.faults = faults if faults is not None else FaultState()
        self.stats = Stats()
        self._today = today
        self._answers: dict[tuple[str, str, str], Answer] = {}

    @property
    def today(self) -> date:
        return self._today or date.today()

    @abstractmethod
    def routes(self) -> list[web.RouteDef]:
        """The service's own routes (the control routes are added by :meth:`make_app`)."""

    def make_app(self) -> web.Application:
        app = web.Application(middlewares=[fault_middleware(self.faults, self.stats), error_middleware])
        app.add_routes(control_routes(self.faults, self.stats))
        app.add_routes(self.routes())
        return app

    def idempotent(self, request: web.Request, action: Callable[[], Answer]) -> web.Response:
        """Run ``action`` once per ``Idempotency-Key`` (per method and path) and answer the same again after.

        Only successes are kept: an error changed nothing, so a retry with the same key is judged afresh.
        Synchronous from the look-up to the store, so two concurrent requests with one key cannot both act.
        """
        key = request.headers.get(IDEMPOTENCY_HEADER, "").strip()
        slot = (request.method, request.path, key)
        if key and slot in self._answers:
            status, body = self._answers[slot]
            return web.json_response(body, status=status, headers={REPLAYED_HEADER: "true"})
        status, body = action()
        if key and 200 <= status < 300:
            self._answers[slot] = (status, body)
        return web.json_response(body, status=status)


def text_field(body: Mapping[str, Any], name: str, *, max_length: int = 200) -> str:
    """A required, non-blank string field, stripped; 400 ``missing_field`` or ``bad_field`` naming it."""
    value = body.get(name)
    if value is None or (isinstance(value, str) and not value.strip()):
        raise ApiError(400, "missing_field", field=name)
    if not isinstance(value, str) or len(value) > max_length:
        raise ApiError(400, "bad_field", field=name)
    return value.strip()


def parse_iso_date(text: str) -> date | None:
    """``YYYY-MM-DD`` and nothing else (``date.fromisoformat`` also takes week dates and basic format)."""
    if not _ISO_DATE.match(text):
        return None
    try:
        return date.fromisoformat(text)
    except ValueError:
        return None


def phone_field(body: Mapping[str, Any], name: str = "phone") -> str:
    """A phone number as a caller gives it: digits with optional ``+``, spaces, dashes, dots or brackets."""
    value = text_field(body, name, max_length=32)
    digits = re.sub(r"[\s\-.()]", "", value)
    if not re.fullmatch(r"\+?\d{3,15}", digits):
        raise ApiError(400, "bad_field", field=name)
    return value


class ServiceServer:
    """One service's app on one TCP port. :meth:`stop_listening` makes the backend vanish (connection refused,
    open connections dropped); :meth:`start_listening` brings it back on the same port with its state kept."""

    def __init__(self, service: ReferenceService, host: str = "127.0.0.1", port: int = 0) -> None:
        self.service = service
        self.host = host
        self.port = port
        self._runner: web.AppRunner | None = None
        self._site: web.TCPSite | None = None

    @property
    def url(self) -> str:
        return f"http://{self.host}:{self.port}"

    @property
    def listening(self) -> bool:
        return self._site is not None

    async def start(self) -> None:
        self._runner = web.AppRunner(self.service.make_app(), handle_signals=False, shutdown_timeout=1.0)
        await self._runner.setup()
        try:
            await self.start_listening()
        except BaseException:
            await self._runner.cleanup()
            self._runner = None
            raise

    async def start_listening(self) -> None:
        if self._runner is None:
            raise RuntimeError("start() the server first")
        if self._site is not None:
            return
        site = web.TCPSite(self._runner, self.host, self.port)
        await site.start()
        self._site = site
        self.port = int(self._runner.addresses[-1][1])  # the real port when 0 was asked for

    async def stop_listening(self) -> None:
        if self._site is None or self._runner is None:
            return
        await self._site.stop()
        self._site = None
        if self._runner.server is not None:
            for connection in self._runner.server.connections:
                connection.force_close()

    async def close(self) -> None:
        self.service.faults.release_slow()
        if self._runner is not None:
            await self._runner.cleanup()
            self._runner = None
            self._site = None
