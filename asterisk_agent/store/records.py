"""Reading calls back, always within one account unless the caller says otherwise.

Tenants must never see each other's calls, so the reader an admin API hands a tenant's request to is made for
that account (:class:`AccountRecords`, from ``store.for_account(name)``): it has no way to name another
account, and a call id of another tenant reads as "no such call". Reading across accounts takes the other,
explicitly named reader (:class:`AdminRecords`, from ``store.admin()``). Both run the same queries below, whose
scope is either one account or the :data:`ALL_ACCOUNTS` marker, never a ``None`` that could mean either.

Results are plain frozen dataclasses, not ORM objects: nothing loads lazily after the database session closed.
"""

from __future__ import annotations

import datetime as dt
import enum
from dataclasses import dataclass
from typing import Any, Final

from sqlalchemy import ColumnElement, Select, select, true
from sqlalchemy.ext.asyncio import AsyncSession, async_sessionmaker

from asterisk_agent.store.models import (
    CallbackRecord,
    CallRecord,
    EventRecord,
    OutcomeRecord,
    RecordingRecord,
    TurnRecord,
)


class _All(enum.Enum):
    ALL = "all accounts"


ALL_ACCOUNTS: Final = _All.ALL
Scope = str | _All
MAX_LIMIT = 1000


@dataclass(frozen=True, slots=True)
class CallSummary:
    id: str
    account: str
    did: str
    caller_number: str | None
    caller_name: str | None
    flow: str | None
    state: str
    started_at: dt.datetime
    ended_at: dt.datetime | None
    end_reason: str | None


@dataclass(frozen=True, slots=True)
class TurnView:
    speaker: str
    text: str
    confidence: float | None
    start_ms: int | None
    end_ms: int | None


@dataclass(frozen=True, slots=True)
class EventView:
    at: dt.datetime
    kind: str
    reason: str
    data: dict[str, Any] | None


@dataclass(frozen=True, slots=True)
class OutcomeView:
    outcome: str
    end_reason: str
    data: dict[str, Any] | None


@dataclass(frozen=True, slots=True)
class RecordingView:
    path: str
    duration_ms: int
    channels: int


@dataclass(frozen=True, slots=True)
class CallDetail:
    call: CallSummary
    turns: tuple[TurnView, ...]
    events: tuple[EventView, ...]
    outcome: OutcomeView | None
    recordings: tuple[RecordingView, ...]


@dataclass(frozen=True, slots=True)
class CallbackView:
    id: int
    account: str
    session_id: str | None
    number: str
    preferred_at: dt.datetime | None
    reason: str
    status: str
    attempts: int
    created_at: dt.datetime


def _summary(row: CallRecord) -> CallSummary:
    return CallSummary(row.id, row.account, row.did, row.caller_number, row.caller_name, row.flow, row.state,
                       row.started_at, row.ended_at, row.end_reason)


def _in_scope(column: Any, scope: Scope) -> ColumnElement[bool]:
    if scope is ALL_ACCOUNTS:
        return true()
    if not isinstance(scope, str) or not scope:
        raise ValueError("an account name is required")
    result: ColumnElement[bool] = column == scope
    return result


def _limit(limit: int) -> int:
    if not 1 <= limit <= MAX_LIMIT:
        raise ValueError(f"limit must be 1-{MAX_LIMIT}")
    return limit


async def list_calls(db: AsyncSession, scope: Scope, *, state: str | None, since: dt.datetime | None,
                     until: dt.datetime | None, limit: int) -> list[CallSummary]:
    query: Select[CallRecord] = select(CallRecord).where(_in_scope(CallRecord.account, scope))
    if state is not None:
        query = query.where(CallRecord.state == state)
    if since is not None:
        query = query.where(CallRecord.started_at >= since)
    if until is not None:
        query = query.where(CallRecord.started_at < until)
    query = query.order_by(CallRecord.started_at.desc(), CallRecord.id.desc()).limit(_limit(limit))
    return [_summary(row) for row in (await db.scalars(query))]


async def get_call(db: AsyncSession, scope: Scope, session_id: str) -> CallDetail | None:
    row = await db.scalar(select(CallRecord).where(CallRecord.id == session_id,
                                                   _in_scope(CallRecord.account, scope)))
    if row is None:
        return None
    turns = await db.scalars(select(TurnRecord).where(TurnRecord.session_id == row.id).order_by(TurnRecord.id))
    events = await db.scalars(select(EventRecord).where(EventRecord.session_id == row.id).order_by(EventRecord.id))
    outcome = await db.get(OutcomeRecord, row.id)
    recordings = await db.scalars(select(RecordingRecord).where(RecordingRecord.session_id == row.id)
                                  .order_by(RecordingRecord.id))
    return CallDetail(
        call=_summary(row),
        turns=tuple(TurnView(t.speaker, t.text, t.confidence, t.start_ms, t.end_ms) for t in turns),
        events=tuple(EventView(e.at, e.kind, e.reason, e.data) for e in events),
        outcome=None if outcome is None else OutcomeView(outcome.outcome, outcome.end_reason, outcome.data),
        recordings=tuple(RecordingView(r.path, r.duration_ms, r.channels) for r in recordings),
    )


async def list_callbacks(db: AsyncSession, scope: Scope, *, status: str | None, limit: int) -> list[CallbackView]:
    query = select(CallbackRecord).where(_in_scope(CallbackRecord.account, scope))
    if status is not None:
        query = query.where(CallbackRecord.status == status)
    query = query.order_by(CallbackRecord.id).limit(_limit(limit))
    return [CallbackView(c.id, c.account, c.session_id, c.number, c.preferred_at, c.reason, c.status, c.attempts,
                         c.created_at) for c in await db.scalars(query)]


class AccountRecords:
    """One tenant's calls and callbacks. Made by ``store.for_account(name)``; it cannot reach another account."""

    def __init__(self, sessions: async_sessionmaker[AsyncSession], account: str) -> None:
        if not isinstance(account, str) or not account:
            raise ValueError("an account name is required")
        self._sessions = sessions
        self.account = account

    def __repr__(self) -> str:
        return f"<AccountRecords {self.account}>"

    async def list_sessions(self, *, state: str | None = None, since: dt.datetime | None = None,
                            until: dt.datetime | None = None, limit: int = 100) -> list[CallSummary]:
        """This account's calls, newest first; ``since``/``until`` bound ``started_at`` (until exclusive)."""
        async with self._sessions() as db, db.begin():
            return await list_calls(db, self.account, state=state, since=since, until=until, limit=limit)

    async def get_session(self, session_id: str) -> CallDetail | None:
        """One call with its turns, events, outcome and recordings; None when it is not this account's."""
        async with self._sessions() as db, db.begin():
            return await get_call(db, self.account, session_id)

    async def list_callbacks(self, *, status: str | None = None, limit: int = 100) -> list[CallbackView]:
        async with self._sessions() as db, db.begin():
            return await list_callbacks(db, self.account, status=status, limit=limit)


class AdminRecords:
    """Every tenant's calls, for the operator of the deployment. Made by ``store.admin()``; never hand it to a
    tenant's request."""

    def __init__(self, sessions: async_sessionmaker[AsyncSession]) -> None:
        self._sessions = sessions

    async def list_sessions(self, *, account: str | None = None, state: str | None = None,
                            since: dt.datetime | None = None, until: dt.datetime | None = None,
                            limit: int = 100) -> list[CallSummary]:
        """Calls of one account or (``account=None``) of all, newest first."""
        scope: Scope = ALL_ACCOUNTS if account is None else account
        async with self._sessions() as db, db.begin():
            return await list_calls(db, scope, state=state, since=since, until=until, limit=limit)

    async def get_session(self, session_id: str) -> CallDetail | None:
        async with self._sessions() as db, db.begin():
            return await get_call(db, ALL_ACCOUNTS, session_id)

    async def list_callbacks(self, *, account: str | None = None, status: str | None = None,
                             limit: int = 100) -> list[CallbackView]:
        scope: Scope = ALL_ACCOUNTS if account is None else account
        async with self._sessions() as db, db.begin():
            return await list_callbacks(db, scope, status=status, limit=limit)
