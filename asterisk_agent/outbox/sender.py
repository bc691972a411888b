"""The background sender: delivers the outbox to each account's webhook, at least once, never dropping one.

One asyncio task, owned by the sender (:meth:`OutboxSender.start` and :meth:`OutboxSender.stop` are
idempotent), loops: claim due messages under a lease (:mod:`.queue`), POST them concurrently, record each
result, then wait until the next message is due (or a new one is written in this process, or ``poll_ms``).

- 2xx: delivered. Anything else (another status, a refused connection, a timeout) is retried, forever, with
  exponential backoff and full jitter (``backoff_base_ms`` doubling to ``backoff_max_ms``); a 429 or 503
  with ``Retry-After`` waits that long instead (up to ``retry_after_max_ms``). Each failure records the
  attempt's status and error in the row.
- Redirects are not followed: a webhook URL that moved is a configuration to fix, and following it would send
  the signed body somewhere nobody configured.
- A sender that dies mid-send leaves its leases; another sender (or the restarted worker) claims those
  messages once they pass. The receiver may so see a message twice: it de-duplicates on ``Idempotency-Key``.
- A database that is away is waited for: the loop logs and tries again after ``poll_ms``.

Logs name the account, the message kind and key, the webhook's scheme and host, the status and the attempt;
never the secret, the signature, the body (it carries the caller's number) or the URL's path and query.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import random
import uuid
from collections.abc import Mapping
from dataclasses import dataclass

import aiohttp
from sqlalchemy.exc import SQLAlchemyError

from asterisk_agent.integrations.retry import backoff_s, parse_retry_after
from asterisk_agent.outbox.queue import Claimed, claim_due, mark_delivered, mark_failed, next_due, release_leases
from asterisk_agent.outbox.settings import OutboxSettings, WebhookSettings
from asterisk_agent.outbox.signing import signed_headers
from asterisk_agent.store.store import Store
from asterisk_agent.store.types import utcnow

log = logging.getLogger(__name__)

RETRY_AFTER_STATUSES = frozenset({429, 503})
_DATABASE_ERRORS = (SQLAlchemyError, OSError)
_MIN_IDLE_S = 0.005  # a message due now that another sender is still claiming: do not spin on it


@dataclass(slots=True)
class SenderStats:
    attempts: int = 0
    delivered: int = 0
    failed: int = 0  # attempts that will be retried
    database_errors: int = 0


@dataclass(frozen=True, slots=True)
class _Result:
    status: int | None
    error: str
    retry_after_s: float | None = None

    @property
    def ok(self) -> bool:
        return self.status is not None and 200 <= self.status < 300


class OutboxSender:
    """Delivers ``store``'s outbox to the webhooks in ``targets`` (account name -> webhook). Messages of
    accounts without a target stay queued until one is configured."""

    def __init__(self, store: Store, targets: Mapping[str, WebhookSettings], settings: OutboxSettings, *,
                 owner: str | None = None, session: aiohttp.ClientSession | None = None,
                 rng: random.Random | None = None) -> None:
        self.store = store
        self.targets = dict(targets)
        self.settings = settings
        self.owner = owner or f"sender-{uuid.uuid4().hex[:12]}"
        self.stats = SenderStats()
        self._session = session
        self._owns_session = session is None
        self._rng = rng or random.Random()
        self._wake = asyncio.Event()
        # A batch's POSTs go out together, but their results are written one at a time: concurrent writes would
        # each take a connection of their own (opening one per message once the pool's few are busy) and, on
        # SQLite, queue on its single write lock anyway.
        self._writing = asyncio.Lock()
        self._stopping = False
        self._task: asyncio.Task[None] | None = None

    def __repr__(self) -> str:  # never the targets' URLs or secrets
        return f"<OutboxSender {self.owner} accounts={sorted(self.targets)}>"

    @property
    def task(self) -> asyncio.Task[None] | None:
        """The sender's task while it runs (cancelling it is what a crash looks like: leases are kept)."""
        return self._task

    @property
    def running(self) -> bool:
        return self._task is not None and not self._task.done()

    async def start(self) -> None:
        """Start delivering (a no-op while running)."""
        if self.running:
            return
        if self._session is None or self._session.closed:
            self._session = aiohttp.ClientSession(cookie_jar=aiohttp.DummyCookieJar())
            self._owns_session = True
        self._stopping = False
        self.store.add_outbox_listener(self.wake)
        self._task = asyncio.create_task(self._run(), name=f"outbox-{self.owner}")

    async def stop(self, *, release: bool = True) -> None:
        """Stop (a no-op when stopped). Attempts in flight may finish and be recorded (up to ``timeout_ms``
        more), so a clean stop does not make the receiver see them twice; then the task is cancelled and,
        with ``release``, any lease it still holds is given back so another sender can take the message at
        once (without, it waits for the lease to pass)."""
        self.store.remove_outbox_listener(self.wake)
        task, self._task = self._task, None
        if task is not None:
            self._stopping = True
            self._wake.set()
            if not task.done():
                await asyncio.wait({task}, timeout=self.settings.timeout_ms / 1000 + 1)
            task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await task
        if release:
            try:
                await release_leases(self.store.engine, self.owner)
            except _DATABASE_ERRORS as exc:
                log.warning("outbox %s: could not release leases (%s); they pass by themselves",
                            self.owner, type(exc).__name__)
        if self._owns_session and self._session is not None:
            await self._session.close()
            self._session = None

    def wake(self) -> None:
        """Look at the outbox now (a message was just written)."""
        self._wake.set()

    # --- the loop -----------------------------------------------------------------------------------------

    async def _run(self) -> None:
        while not self._stopping:
            try:
                more = await self._round()
            except _DATABASE_ERRORS as exc:
                self.stats.database_errors += 1
                log.warning("outbox %s: database unavailable (%s); retrying", self.owner, type(exc).__name__)
                await self._idle(self.settings.poll_ms / 1000)
            except Exception:
                # A bug must not end delivery for good: log it and go on, as after a database error.
                log.exception("outbox %s: unexpected error; retrying", self.owner)
                await self._idle(self.settings.poll_ms / 1000)
            else:
                if not more and not self._stopping:
                    await self._idle(max(_MIN_IDLE_S, await self._wait_s()))

    async def _round(self) -> bool:
        """Claim and send one batch; True when a full batch was claimed (more may be due)."""
        self._wake.clear()
        claimed = await claim_due(self.store.engine, self.owner, self.targets, limit=self.settings.batch,
                                  lease_ms=self.settings.lease_ms)
        if claimed:
            await asyncio.gather(*(self._deliver(message) for message in claimed))
        return len(claimed) == self.settings.batch

    async def _wait_s(self) -> float:
        longest = self.settings.poll_ms / 1000
        try:
            due = await next_due(self.store.engine, self.targets)
        except _DATABASE_ERRORS:
            return longest
        if due is None:
            return longest
        return min(longest, max(0.0, (due - utcnow()).total_seconds()))

    async def _idle(self, seconds: float) -> None:
        if seconds <= 0 or self._wake.is_set():
            return
        with contextlib.suppress(TimeoutError):
            async with asyncio.timeout(seconds):
                await self._wake.wait()

    async def _deliver(self, message: Claimed) -> None:
        target = self.targets[message.account]
        self.stats.attempts += 1
        result = await self._post(target, message)
        try:
            if result.ok:
                assert result.status is not None
                async with self._writing:
                    await mark_delivered(self.store.engine, message.id, status=result.status)
                self.stats.delivered += 1
                log.info("outbox: %s %s %s delivered to %s (%d, attempt %d)", message.account, message.kind,
                         message.key, target.where, result.status, message.attempts)
                return
            retry_s = self._retry_s(message, result)
            async with self._writing:
                kept = await mark_failed(self.store.engine, message.id, self.owner, status=result.status,
                                         error=result.error, retry_in_ms=retry_s * 1000)
        except _DATABASE_ERRORS as exc:
            # The result is lost; the lease passes and the message is sent again (at least once).
            self.stats.database_errors += 1
            log.warning("outbox %s: could not record the result for %s (%s)", self.owner, message.key,
                        type(exc).__name__)
            return
        self.stats.failed += 1
        log.warning("outbox: %s %s %s to %s failed (%s, attempt %d)%s", message.account, message.kind, message.key,
                    target.where, result.error, message.attempts,
                    f"; retry in {retry_s * 1000:.0f} ms" if kept else "; lease lost, another sender has it")

    def _retry_s(self, message: Claimed, result: _Result) -> float:
        if result.retry_after_s is not None:
            return min(result.retry_after_s, self.settings.retry_after_max_ms / 1000)
        return backoff_s(message.attempts, self.settings.backoff_base_ms, self.settings.backoff_max_ms, self._rng)

    async def _post(self, target: WebhookSettings, message: Claimed) -> _Result:
        assert self._session is not None
        headers = signed_headers(target.secret, body=message.body, key=message.key, kind=message.kind)
        timeout = aiohttp.ClientTimeout(total=self.settings.timeout_ms / 1000)
        try:
            async with self._session.post(target.url, data=message.body, headers=headers, timeout=timeout,
                                          allow_redirects=False) as response:
                await response.read()
                retry_after = None
                if response.status in RETRY_AFTER_STATUSES:
                    retry_after = parse_retry_after(response.headers.get("Retry-After"))
                return _Result(response.status, f"HTTP {response.status}", retry_after)
        except TimeoutError:
            return _Result(None, "timeout")
        except aiohttp.ClientError as exc:
            return _Result(None, type(exc).__name__)
