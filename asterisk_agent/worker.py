"""The worker: ARI client + event stream + CallManager, run until stopped."""

from __future__ import annotations

import asyncio
import contextlib
import logging
import signal
import uuid

from asterisk_agent.admission.agi_routes import admission_routes
from asterisk_agent.agi.server import FastAgiServer
from asterisk_agent.ami.availability import AgentAvailability
from asterisk_agent.ari.client import AriClient
from asterisk_agent.ari.errors import ApplicationReplaced, AriAuthError
from asterisk_agent.ari.stream import EventStream
from asterisk_agent.calls.manager import CallManager
from asterisk_agent.calls.records import CallRecords
from asterisk_agent.config import Settings
from asterisk_agent.outbox.sender import OutboxSender
from asterisk_agent.store.store import Store

log = logging.getLogger(__name__)


class Worker:
    def __init__(self, settings: Settings) -> None:
        self.settings = settings
        ari = settings.ari
        self.client = AriClient(
            ari.url, ari.username, ari.password, request_timeout_ms=ari.request_timeout_ms,
            connect_timeout_ms=ari.connect_timeout_ms, max_connections=ari.max_connections,
        )
        self.manager = CallManager(self.client, settings)
        self.stream = EventStream(
            self.client, ari.app, self.manager, reconnect_min_ms=ari.reconnect_min_ms,
            reconnect_max_ms=ari.reconnect_max_ms,
        )
        self._task: asyncio.Task[None] | None = None
        self.store: Store | None = None
        self.outbox: OutboxSender | None = None
        admission = settings.admission
        self.agi: FastAgiServer | None = (
            FastAgiServer(admission_routes(self.manager), admission.agi_host, admission.agi_port)
            if admission.agi_enabled else None)
        # Which human agents are free (docs/agents.md); None when ami.enabled is off.
        self.availability = AgentAvailability(settings.ami) if settings.ami.enabled else None
        self.manager.availability = self.availability

    async def start(self) -> None:
        """Check ARI credentials, then start the event stream in the background."""
        await self.client.info()
        await self._open_records()
        await self.manager.load_flows()
        await self.manager.load_speech()
        self._task = asyncio.create_task(self.stream.run(), name="ari-events")
        if self.agi is not None:
            await self.agi.start()
        if self.availability is not None:
            await self.availability.start()  # in the background: AMI being down does not stop the worker

    async def _open_records(self) -> None:
        """The store (schema upgraded), the records writer every session reports to, and the webhook sender
        (which first delivers whatever an earlier run left queued)."""
        if not self.settings.records.enabled or self.store is not None:
            return
        self.store = await Store.open(self.settings.store_url())
        records = CallRecords(self.store, self.settings)
        self.manager.records = records
        records.start_purging()
        self.outbox = OutboxSender(self.store, self.settings.webhooks(), self.settings.outbox,
                                   owner=f"{self.settings.instance_id}-{uuid.uuid4().hex[:8]}")
        await self.outbox.start()

    async def wait_connected(self, timeout_s: float = 10.0) -> None:
        assert self._task is not None
        waiter = asyncio.ensure_future(self.stream.wait_connected())
        done, _ = await asyncio.wait({waiter, self._task}, timeout=timeout_s, return_when=asyncio.FIRST_COMPLETED)
        if waiter not in done:
            waiter.cancel()
            if self._task in done:
                self._task.result()
            raise TimeoutError("the ARI event stream did not connect")

    async def wait(self) -> None:
        """Until the event stream stops (ApplicationReplaced raises here)."""
        assert self._task is not None
        await self._task

    async def stop(self, *, send_callers_on: bool = True) -> None:
        if self.agi is not None:
            await self.agi.close()
        if self.availability is not None:
            await self.availability.stop()
        if self._task is not None:
            self._task.cancel()
            with contextlib.suppress(asyncio.CancelledError, ApplicationReplaced):
                await self._task
        await self.manager.shutdown(send_callers_on=send_callers_on)
        await self.client.close()
        if self.outbox is not None:
            await self.outbox.stop()
        if self.manager.records is not None:
            await self.manager.records.close()
        if self.store is not None:
            await self.store.close()
            self.store = None


async def run_worker(settings: Settings) -> int:
    """The ``asterisk-agent run`` command: 0 on a clean stop, 2 on ApplicationReplaced, 3 on bad credentials."""
    worker = Worker(settings)
    try:
        await worker.start()
    except AriAuthError:
        log.error("ARI refused the user %r: wrong ARI user or password (check ari.conf)", settings.ari.username)
        await worker.client.close()
        return 3
    stop = asyncio.Event()
    loop = asyncio.get_running_loop()
    for signum in (signal.SIGINT, signal.SIGTERM):
        loop.add_signal_handler(signum, stop.set)
    stopper = asyncio.ensure_future(stop.wait())
    runner = asyncio.ensure_future(worker.wait())
    await asyncio.wait({stopper, runner}, return_when=asyncio.FIRST_COMPLETED)
    code = 0
    if runner.done() and isinstance(runner.exception(), ApplicationReplaced):
        log.error("%s", runner.exception())
        code = 2
    stopper.cancel()
    await worker.stop(send_callers_on=True)
    return code
