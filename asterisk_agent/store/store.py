"""The store the worker writes every call into, and the API it calls to do so.

``await Store.open(url)`` connects (SQLite file by default, PostgreSQL by URL) and upgrades the schema to the
newest migration; opening an up-to-date database again changes nothing. The worker then calls
:meth:`Store.start_session` when a call is admitted, :meth:`Store.add_turn` / :meth:`Store.add_event` while it
lasts, and :meth:`Store.finish_session` when it ends.

Starting and finishing a call each write their webhook message (the call's context, then its outcome) into the
outbox **in the same transaction** as the call's row: either both are stored or neither is, so a recorded call
is always announced and nothing is announced that was not recorded. The sender
(:mod:`asterisk_agent.outbox`) delivers them afterwards. Several writes can share one transaction through
:meth:`Store.transaction`.

What is written is what the caller of this API gives: sensitive slots must already be masked (the dialog
engine masks them). The URL may carry a password: the store's repr and its errors never show it.
"""

from __future__ import annotations

import asyncio
import contextlib
import datetime as dt
import functools
import logging
from collections.abc import AsyncIterator, Awaitable, Callable, Mapping
from pathlib import Path
from types import TracebackType
from typing import Any, Concatenate, ParamSpec, TypeVar

from sqlalchemy import func, select
from sqlalchemy.dialects.postgresql import insert as pg_insert
from sqlalchemy.dialects.sqlite import insert as sqlite_insert
from sqlalchemy.engine import URL
from sqlalchemy.ext.asyncio import AsyncEngine, AsyncSession, async_sessionmaker

from asterisk_agent.store.engine import StoreError, create_engine, parse_store_url, sqlite_file, upgrade_to_head
from asterisk_agent.store.messages import CALL_ENDED, CALL_STARTED, iso, new_message
from asterisk_agent.store.models import (
    SESSION_ACTIVE,
    SESSION_ENDED,
    Account,
    CallbackRecord,
    CallRecord,
    EventRecord,
    OutboxRecord,
    OutcomeRecord,
    RecordingRecord,
    TurnRecord,
)
from asterisk_agent.store.records import AccountRecords, AdminRecords
from asterisk_agent.store.retention import PurgeResult, purge
from asterisk_agent.store.types import utcnow

log = logging.getLogger(__name__)
P = ParamSpec("P")
R = TypeVar("R")


class UnknownSession(StoreError):
    """No call with that id is in the store."""


def _bounded(name: str, value: str | None, most: int, *, required: bool = False) -> str | None:
    """The same limits on SQLite (which would store anything) as on PostgreSQL (which would refuse)."""
    if value is None:
        if required:
            raise ValueError(f"{name} is required")
        return None
    if not isinstance(value, str) or (required and not value) or len(value) > most:
        raise ValueError(f"{name} must be a string of {'1' if required else '0'}-{most} characters")
    return value


def _aware(name: str, value: dt.datetime | None) -> dt.datetime:
    if value is None:
        return utcnow()
    if value.tzinfo is None:
        raise ValueError(f"{name} must be timezone-aware")
    return value


class StoreTransaction:
    """Writes that commit together (made by :meth:`Store.transaction`; the methods of the same names on the
    store open one transaction each)."""

    def __init__(self, db: AsyncSession, dialect: str) -> None:
        self.db = db
        self.dialect = dialect
        self.wrote_outbox = False

    async def _ensure_account(self, account: str) -> None:
        insert = pg_insert if self.dialect == "postgresql" else sqlite_insert
        await self.db.execute(insert(Account).values(name=account, created_at=utcnow())
                              .on_conflict_do_nothing(index_elements=["name"]))

    def _queue(self, kind: str, account: str, session_id: str, occurred_at: dt.datetime,
               data: Mapping[str, Any]) -> str:
        message = new_message(kind, account=account, session_id=session_id, occurred_at=occurred_at, data=data)
        self.db.add(OutboxRecord(key=message.key, account=account, session_id=session_id, kind=kind,
                                 body=message.body, created_at=occurred_at, due_at=occurred_at, attempts=0))
        self.wrote_outbox = True
        return message.key

    async def start_session(self, *, session_id: str, account: str, did: str, caller_number: str | None = None,
                            caller_name: str | None = None, channel_id: str | None = None,
                            flow: str | None = None, started_at: dt.datetime | None = None,
                            context: Mapping[str, Any] | None = None, notify: bool = True) -> str | None:
        """Record a new call; with ``notify`` (the account has a webhook) queue its ``call.started`` message
        carrying the call's context (and ``context``, extra JSON fields). Returns the message's idempotency key
        (None without ``notify``). A call id already stored raises ``IntegrityError``."""
        _bounded("session_id", session_id, 64, required=True)
        _bounded("account", account, 64, required=True)
        _bounded("did", did, 64, required=True)
        _bounded("caller_number", caller_number, 64)
        _bounded("caller_name", caller_name, 128)
        _bounded("channel_id", channel_id, 128)
        _bounded("flow", flow, 64)
        started = _aware("started_at", started_at)
        await self._ensure_account(account)
        self.db.add(CallRecord(id=session_id, account=account, did=did, caller_number=caller_number,
                               caller_name=caller_name, channel_id=channel_id, flow=flow, state=SESSION_ACTIVE,
                               started_at=started))
        key = None
        if notify:
            data = {"did": did, "caller_number": caller_number, "caller_name": caller_name,
                    "channel_id": channel_id, "flow": flow, "started_at": iso(started), **(context or {})}
            key = self._queue(CALL_STARTED, account, session_id, started, data)
        await self.db.flush()
        return key

    async def finish_session(self, session_id: str, *, outcome: str, end_reason: str,
                             data: Mapping[str, Any] | None = None, ended_at: dt.datetime | None = None,
                             notify: bool = True) -> bool:
        """Record how the call ended (its outcome row and the call's end) and, with ``notify``, queue its
        ``call.ended`` message. False (and nothing written) when the call was already finished: a teardown may
        run more than once. An unknown call raises :class:`UnknownSession`."""
        _bounded("outcome", outcome, 64, required=True)
        _bounded("end_reason", end_reason, 32, required=True)
        ended = _aware("ended_at", ended_at)
        row = await self.db.get(CallRecord, session_id, with_for_update=True)
        if row is None:
            raise UnknownSession(f"no call {session_id!r} in the store")
        if row.state == SESSION_ENDED:
            return False
        row.state = SESSION_ENDED
        row.ended_at = ended
        row.end_reason = end_reason
        details = dict(data or {})
        self.db.add(OutcomeRecord(session_id=session_id, outcome=outcome, end_reason=end_reason,
                                  data=details or None, created_at=ended))
        if notify:
            turns = await self.db.scalar(select(func.count()).select_from(TurnRecord)
                                         .where(TurnRecord.session_id == session_id))
            duration_ms = max(0, round((ended - row.started_at).total_seconds() * 1000))
            self._queue(CALL_ENDED, row.account, session_id, ended, {
                "outcome": outcome, "end_reason": end_reason, "did": row.did, "caller_number": row.caller_number,
                "started_at": iso(row.started_at), "ended_at": iso(ended), "duration_ms": duration_ms,
                "turns": turns or 0, "details": details})
        await self.db.flush()
        return True

    async def notify(self, kind: str, account: str, session_id: str, data: Mapping[str, Any]) -> str:
        """Queue one more webhook message about a call (a handoff's screen-pop, a callback request) in this
        transaction; returns its idempotency key."""
        _bounded("kind", kind, 32, required=True)
        key = self._queue(kind, account, session_id, utcnow(), data)
        await self.db.flush()
        return key

    async def add_turn(self, session_id: str, *, speaker: str, text: str, confidence: float | None = None,
                       start_ms: int | None = None, end_ms: int | None = None) -> int:
        """One turn (``start_ms``/``end_ms``: offsets into the call's recording). Returns the turn's id."""
        _bounded("speaker", speaker, 16, required=True)
        turn = TurnRecord(session_id=session_id, speaker=speaker, text=text, confidence=confidence,
                          start_ms=start_ms, end_ms=end_ms, created_at=utcnow())
        self.db.add(turn)
        await self.db.flush()
        return turn.id

    async def add_event(self, session_id: str, *, kind: str, reason: str = "",
                        data: Mapping[str, Any] | None = None, at: dt.datetime | None = None) -> int:
        _bounded("kind", kind, 32, required=True)
        _bounded("reason", reason, 64)
        event = EventRecord(session_id=session_id, kind=kind, reason=reason, data=dict(data) if data else None,
                            at=_aware("at", at))
        self.db.add(event)
        await self.db.flush()
        return event.id

    async def add_recording(self, session_id: str, *, path: str, duration_ms: int, channels: int) -> int:
        """A call's recording file; the account is the call's, so retention finds the file with its rows."""
        account = await self.db.scalar(select(CallRecord.account).where(CallRecord.id == session_id))
        if account is None:
            raise UnknownSession(f"no call {session_id!r} in the store")
        recording = RecordingRecord(session_id=session_id, account=account, path=path, duration_ms=duration_ms,
                                    channels=channels, created_at=utcnow())
        self.db.add(recording)
        await self.db.flush()
        return recording.id

    async def add_callback(self, account: str, *, number: str, session_id: str | None = None,
                           preferred_at: dt.datetime | None = None, reason: str = "") -> int:
        _bounded("account", account, 64, required=True)
        _bounded("number", number, 64, required=True)
        _bounded("reason", reason, 128)
        if preferred_at is not None:
            _aware("preferred_at", preferred_at)
        await self._ensure_account(account)
        now = utcnow()
        callback = CallbackRecord(account=account, session_id=session_id, number=number, preferred_at=preferred_at,
                                  reason=reason, status="pending", attempts=0, created_at=now, updated_at=now)
        self.db.add(callback)
        await self.db.flush()
        return callback.id

    async def set_callback_status(self, account: str, callback_id: int, *, status: str,
                                  attempted: bool = False) -> bool:
        """Move one of ``account``'s callbacks on (``attempted``: count a call attempt). False when it has no
        such callback."""
        _bounded("status", status, 16, required=True)
        row = await self.db.get(CallbackRecord, callback_id, with_for_update=True)
        if row is None or row.account != account:
            return False
        row.status = status
        row.attempts += 1 if attempted else 0
        row.updated_at = utcnow()
        await self.db.flush()
        return True


def _own_transaction(
    method: Callable[Concatenate[StoreTransaction, P], Awaitable[R]],
) -> Callable[Concatenate[Store, P], Awaitable[R]]:
    """A :class:`StoreTransaction` write as a :class:`Store` method that commits on its own."""

    @functools.wraps(method)
    async def write(store: Store, /, *args: P.args, **kwargs: P.kwargs) -> R:
        async with store.transaction() as tx:
            return await method(tx, *args, **kwargs)

    return write


class Store:
    """The database: open with :meth:`open`, close with :meth:`close` (or ``async with``)."""

    def __init__(self, engine: AsyncEngine, url: URL) -> None:
        self.engine = engine
        self.url = url
        self._sessions = async_sessionmaker(engine, expire_on_commit=False)
        self._outbox_listeners: list[Callable[[], None]] = []

    @classmethod
    async def open(cls, url: str, *, echo: bool = False) -> Store:
        """Connect and apply every migration the database lacks (a no-op when it is at the newest).
        An SQLite file's folder is created."""
        parsed = parse_store_url(url)
        path = sqlite_file(parsed)
        if path is not None:
            await asyncio.to_thread(Path(path).parent.mkdir, parents=True, exist_ok=True)
        engine = create_engine(parsed, echo=echo)
        try:
            await upgrade_to_head(engine)
        except BaseException:
            await engine.dispose()
            raise
        log.info("store open: %s", parsed.render_as_string(hide_password=True))
        return cls(engine, parsed)

    def __repr__(self) -> str:
        return f"<Store {self.url.render_as_string(hide_password=True)}>"

    @property
    def dialect(self) -> str:
        """``sqlite`` or ``postgresql``."""
        return self.engine.dialect.name

    async def close(self) -> None:
        await self.engine.dispose()

    async def __aenter__(self) -> Store:
        return self

    async def __aexit__(self, exc_type: type[BaseException] | None, exc: BaseException | None,
                        tb: TracebackType | None) -> None:
        await self.close()

    # --- writing --------------------------------------------------------------------------------------------

    @contextlib.asynccontextmanager
    async def transaction(self) -> AsyncIterator[StoreTransaction]:
        """One transaction: committed when the block ends, rolled back (nothing written) when it raises."""
        async with self._sessions() as db, db.begin():
            tx = StoreTransaction(db, self.dialect)
            yield tx
        if tx.wrote_outbox:
            for listener in list(self._outbox_listeners):
                listener()

    def add_outbox_listener(self, listener: Callable[[], None]) -> None:
        """Call ``listener`` after each commit that queued a webhook message (a sender in this process wakes)."""
        self._outbox_listeners.append(listener)

    def remove_outbox_listener(self, listener: Callable[[], None]) -> None:
        with contextlib.suppress(ValueError):
            self._outbox_listeners.remove(listener)

    # Each write in a transaction of its own, with the signature and docstring of StoreTransaction's.
    start_session = _own_transaction(StoreTransaction.start_session)
    finish_session = _own_transaction(StoreTransaction.finish_session)
    add_turn = _own_transaction(StoreTransaction.add_turn)
    add_event = _own_transaction(StoreTransaction.add_event)
    add_recording = _own_transaction(StoreTransaction.add_recording)
    add_callback = _own_transaction(StoreTransaction.add_callback)
    set_callback_status = _own_transaction(StoreTransaction.set_callback_status)

    # --- reading --------------------------------------------------------------------------------------------

    def for_account(self, account: str) -> AccountRecords:
        """A reader of one tenant's records that cannot reach any other tenant's."""
        return AccountRecords(self._sessions, account)

    def admin(self) -> AdminRecords:
        """A reader across every tenant, for the deployment's operator only."""
        return AdminRecords(self._sessions)

    # --- retention ------------------------------------------------------------------------------------------

    async def purge_older_than(self, account: str, days: int, *, now: dt.datetime | None = None) -> PurgeResult:
        """Delete ``account``'s calls that started more than ``days`` days ago, with everything about them
        (turns, events, outcome, recordings, callbacks, webhook messages, delivered or not). Returns the
        recording files to delete (:func:`asterisk_agent.store.retention.delete_recording_files`)."""
        _bounded("account", account, 64, required=True)
        if isinstance(days, bool) or not isinstance(days, int) or days < 0:
            raise ValueError("days must be a whole number, 0 or more")
        cutoff = _aware("now", now) - dt.timedelta(days=days)
        async with self.transaction() as tx:
            result = await purge(tx.db, account, cutoff)
        if result.undelivered:
            log.warning("retention for %s removed %d webhook messages never delivered", account, result.undelivered)
        log.info("retention for %s: %d calls, %d callbacks, %d webhook messages, %d recordings removed", account,
                 result.sessions, result.callbacks, result.outbox, len(result.recording_paths))
        return result
