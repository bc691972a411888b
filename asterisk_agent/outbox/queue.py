"""The outbox table as a work queue shared by every sender on one database.

A sender *claims* due messages by writing its name and a lease end into them, in one ``UPDATE ... RETURNING``
statement: on PostgreSQL its subquery locks the rows it picks and skips rows another sender is claiming
(``FOR UPDATE SKIP LOCKED``), and the outer conditions are checked again on the locked rows; on SQLite the
statement runs under the database's single write lock. So within a lease no two senders hold one message, and
the messages of a sender that died are claimed again once its lease has passed. ``attempts`` counts claims, so
an attempt cut short by a crash is counted too.

A result is written only by the lease holder (a failure) or by anyone while the message is undelivered (a
success: it was delivered, whoever says so). Times are the senders' wall clocks in UTC: keep the clocks of
workers sharing a database in step (NTP), as leases assume.
"""

from __future__ import annotations

import datetime as dt
from collections.abc import Collection
from dataclasses import dataclass

from sqlalchemy import ColumnElement, and_, case, func, or_, select, update
from sqlalchemy.ext.asyncio import AsyncEngine

from asterisk_agent.store.models import OutboxRecord
from asterisk_agent.store.types import utcnow

ERROR_MAX = 200  # last_error's column width


@dataclass(frozen=True, slots=True)
class Claimed:
    id: int
    key: str
    account: str
    kind: str
    body: bytes
    attempts: int  # including this one


@dataclass(frozen=True, slots=True)
class OutboxCounts:
    pending: int
    delivered: int


def _claimable(accounts: Collection[str], now: dt.datetime) -> ColumnElement[bool]:
    return and_(OutboxRecord.delivered_at.is_(None), OutboxRecord.due_at <= now,
                or_(OutboxRecord.lease_until.is_(None), OutboxRecord.lease_until <= now),
                OutboxRecord.account.in_(list(accounts)))


async def claim_due(engine: AsyncEngine, owner: str, accounts: Collection[str], *, limit: int,
                    lease_ms: int) -> list[Claimed]:
    """Lease up to ``limit`` due messages of ``accounts`` to ``owner``, oldest due first."""
    if not accounts:
        return []
    now = utcnow()
    # A materialised CTE, not a plain IN (subquery): PostgreSQL may run a LIMIT ... SKIP LOCKED subquery once
    # per outer row, and so claim more than ``limit`` rows.
    picked = (select(OutboxRecord.id).where(_claimable(accounts, now))
              .order_by(OutboxRecord.due_at, OutboxRecord.id).limit(limit)
              .with_for_update(skip_locked=True).cte("picked").prefix_with("MATERIALIZED"))
    statement = (update(OutboxRecord)
                 .where(OutboxRecord.id.in_(select(picked.c.id)), _claimable(accounts, now))
                 .values(lease_owner=owner, lease_until=now + dt.timedelta(milliseconds=lease_ms),
                         attempts=OutboxRecord.attempts + 1)
                 .returning(OutboxRecord.id, OutboxRecord.key, OutboxRecord.account, OutboxRecord.kind,
                            OutboxRecord.body, OutboxRecord.attempts))
    async with engine.begin() as connection:
        rows = (await connection.execute(statement)).all()
    claimed = [Claimed(row.id, row.key, row.account, row.kind, row.body.encode("utf-8"), row.attempts)
               for row in rows]
    return sorted(claimed, key=lambda message: message.id)


async def mark_delivered(engine: AsyncEngine, message_id: int, *, status: int) -> bool:
    """The receiver took the message. False if it was already marked delivered."""
    statement = (update(OutboxRecord)
                 .where(OutboxRecord.id == message_id, OutboxRecord.delivered_at.is_(None))
                 .values(delivered_at=utcnow(), last_status=status, lease_owner=None, lease_until=None))
    async with engine.begin() as connection:
        result = await connection.execute(statement)
    return bool(result.rowcount)


async def mark_failed(engine: AsyncEngine, message_id: int, owner: str, *, status: int | None, error: str,
                      retry_in_ms: float) -> bool:
    """An attempt failed: due again in ``retry_in_ms``, lease given up. False when ``owner`` no longer held it
    (its lease passed and another sender took over: that one's result counts)."""
    statement = (update(OutboxRecord)
                 .where(OutboxRecord.id == message_id, OutboxRecord.lease_owner == owner,
                        OutboxRecord.delivered_at.is_(None))
                 .values(due_at=utcnow() + dt.timedelta(milliseconds=retry_in_ms), last_status=status,
                         last_error=error[:ERROR_MAX], lease_owner=None, lease_until=None))
    async with engine.begin() as connection:
        result = await connection.execute(statement)
    return bool(result.rowcount)


async def release_leases(engine: AsyncEngine, owner: str) -> int:
    """Give up every lease ``owner`` holds (a sender stopping cleanly), so others need not wait them out."""
    statement = (update(OutboxRecord)
                 .where(OutboxRecord.lease_owner == owner, OutboxRecord.delivered_at.is_(None))
                 .values(lease_owner=None, lease_until=None))
    async with engine.begin() as connection:
        result = await connection.execute(statement)
    return int(result.rowcount or 0)


async def next_due(engine: AsyncEngine, accounts: Collection[str]) -> dt.datetime | None:
    """When the next undelivered message of ``accounts`` can be claimed (due, and any lease passed)."""
    if not accounts:
        return None
    ready = case((OutboxRecord.lease_until > OutboxRecord.due_at, OutboxRecord.lease_until),
                 else_=OutboxRecord.due_at)
    statement = select(func.min(ready)).where(OutboxRecord.delivered_at.is_(None),
                                              OutboxRecord.account.in_(list(accounts)))
    async with engine.connect() as connection:
        value = (await connection.execute(statement)).scalar_one_or_none()
    if value is None:
        return None
    if isinstance(value, str):  # SQLite hands an aggregate back untyped
        value = dt.datetime.fromisoformat(value)
    assert isinstance(value, dt.datetime)
    return value.replace(tzinfo=dt.UTC) if value.tzinfo is None else value


async def counts(engine: AsyncEngine, account: str | None = None) -> OutboxCounts:
    """Messages waiting and delivered (of one account, or all)."""
    delivered = func.count(OutboxRecord.delivered_at)
    statement = select(func.count() - delivered, delivered)
    if account is not None:
        statement = statement.where(OutboxRecord.account == account)
    async with engine.connect() as connection:
        pending, done = (await connection.execute(statement)).one()
    return OutboxCounts(int(pending), int(done))
