"""The store's tables, as SQLAlchemy 2 typed ORM models.

One row per call (``sessions``) with its turns, events, outcome and recordings; callbacks promised to callers;
and the ``outbox``: webhook messages written in the same transaction as the call row they describe, so a call
that is recorded is also announced, and one that is not is not (the sender in :mod:`asterisk_agent.outbox`
delivers them later). Every row that belongs to a call names its account, directly or through its session, so
queries can always be scoped to one tenant.

Timestamps are aware UTC (:class:`~asterisk_agent.store.types.UtcDateTime`); ids of integer rows are 64-bit on
PostgreSQL and SQLite's rowid on SQLite. The schema itself is created by the Alembic migrations in
``migrations/versions`` (a test checks that they match these models).
"""

from __future__ import annotations

import datetime as dt
from typing import Any

from sqlalchemy import JSON, BigInteger, Float, ForeignKey, Index, Integer, MetaData, String, Text
from sqlalchemy.dialects.postgresql import JSONB
from sqlalchemy.orm import DeclarativeBase, Mapped, mapped_column

from asterisk_agent.store.types import UtcDateTime, utcnow

# Named constraints, so migrations can refer to them on every database.
NAMING = {
    "ix": "ix_%(column_0_label)s",
    "uq": "uq_%(table_name)s_%(column_0_name)s",
    "ck": "ck_%(table_name)s_%(constraint_name)s",
    "fk": "fk_%(table_name)s_%(column_0_name)s_%(referred_table_name)s",
    "pk": "pk_%(table_name)s",
}

RowId = BigInteger().with_variant(Integer(), "sqlite")  # SQLite autoincrements only an INTEGER primary key
Json = JSON().with_variant(JSONB(), "postgresql")

SESSION_ACTIVE = "active"
SESSION_ENDED = "ended"
CALLBACK_PENDING = "pending"


class Base(DeclarativeBase):
    metadata = MetaData(naming_convention=NAMING)


class Account(Base):
    """A tenant, named as in the configuration (``accounts:``); created on its first call."""

    __tablename__ = "accounts"

    name: Mapped[str] = mapped_column(String(64), primary_key=True)
    created_at: Mapped[dt.datetime] = mapped_column(UtcDateTime(), default=utcnow)


class CallRecord(Base):
    """One call (the worker's Session): who called which number, when, and how it ended."""

    __tablename__ = "sessions"
    __table_args__ = (
        Index("ix_sessions_account_started_at", "account", "started_at"),
        Index("ix_sessions_account_state", "account", "state"),
    )

    id: Mapped[str] = mapped_column(String(64), primary_key=True)
    account: Mapped[str] = mapped_column(ForeignKey("accounts.name"))
    did: Mapped[str] = mapped_column(String(64))
    caller_number: Mapped[str | None] = mapped_column(String(64))
    caller_name: Mapped[str | None] = mapped_column(String(128))
    channel_id: Mapped[str | None] = mapped_column(String(128))
    flow: Mapped[str | None] = mapped_column(String(64))
    state: Mapped[str] = mapped_column(String(16), default=SESSION_ACTIVE)
    started_at: Mapped[dt.datetime] = mapped_column(UtcDateTime())
    ended_at: Mapped[dt.datetime | None] = mapped_column(UtcDateTime())
    end_reason: Mapped[str | None] = mapped_column(String(32))


class TurnRecord(Base):
    """One turn of the conversation; ``start_ms``/``end_ms`` are offsets into the call's recording."""

    __tablename__ = "turns"

    id: Mapped[int] = mapped_column(RowId, primary_key=True, autoincrement=True)
    session_id: Mapped[str] = mapped_column(ForeignKey("sessions.id", ondelete="CASCADE"), index=True)
    speaker: Mapped[str] = mapped_column(String(16))
    text: Mapped[str] = mapped_column(Text)
    confidence: Mapped[float | None] = mapped_column(Float)
    start_ms: Mapped[int | None] = mapped_column(Integer)
    end_ms: Mapped[int | None] = mapped_column(Integer)
    created_at: Mapped[dt.datetime] = mapped_column(UtcDateTime(), default=utcnow)


class EventRecord(Base):
    """Something that happened on a call (an escalation, a limit, an integration failure...)."""

    __tablename__ = "events"

    id: Mapped[int] = mapped_column(RowId, primary_key=True, autoincrement=True)
    session_id: Mapped[str] = mapped_column(ForeignKey("sessions.id", ondelete="CASCADE"), index=True)
    at: Mapped[dt.datetime] = mapped_column(UtcDateTime(), default=utcnow)
    kind: Mapped[str] = mapped_column(String(32))
    reason: Mapped[str] = mapped_column(String(64), default="")
    data: Mapped[dict[str, Any] | None] = mapped_column(Json)


class OutcomeRecord(Base):
    """How a call ended, for the customer: the flow's outcome, the end reason and its details."""

    __tablename__ = "outcomes"

    session_id: Mapped[str] = mapped_column(ForeignKey("sessions.id", ondelete="CASCADE"), primary_key=True)
    outcome: Mapped[str] = mapped_column(String(64))
    end_reason: Mapped[str] = mapped_column(String(32))
    data: Mapped[dict[str, Any] | None] = mapped_column(Json)
    created_at: Mapped[dt.datetime] = mapped_column(UtcDateTime(), default=utcnow)


class RecordingRecord(Base):
    """A call's recording file (its path as the worker wrote it), so retention can find and delete it."""

    __tablename__ = "recordings"

    id: Mapped[int] = mapped_column(RowId, primary_key=True, autoincrement=True)
    session_id: Mapped[str] = mapped_column(ForeignKey("sessions.id", ondelete="CASCADE"), index=True)
    account: Mapped[str] = mapped_column(ForeignKey("accounts.name"), index=True)
    path: Mapped[str] = mapped_column(Text)
    duration_ms: Mapped[int] = mapped_column(Integer)
    channels: Mapped[int] = mapped_column(Integer)
    created_at: Mapped[dt.datetime] = mapped_column(UtcDateTime(), default=utcnow)


class CallbackRecord(Base):
    """A callback promised to a caller no human could take."""

    __tablename__ = "callbacks"

    id: Mapped[int] = mapped_column(RowId, primary_key=True, autoincrement=True)
    account: Mapped[str] = mapped_column(ForeignKey("accounts.name"), index=True)
    session_id: Mapped[str | None] = mapped_column(ForeignKey("sessions.id", ondelete="SET NULL"), index=True)
    number: Mapped[str] = mapped_column(String(64))
    preferred_at: Mapped[dt.datetime | None] = mapped_column(UtcDateTime())
    reason: Mapped[str] = mapped_column(String(128), default="")
    status: Mapped[str] = mapped_column(String(16), default=CALLBACK_PENDING)
    attempts: Mapped[int] = mapped_column(Integer, default=0)
    created_at: Mapped[dt.datetime] = mapped_column(UtcDateTime(), default=utcnow)
    updated_at: Mapped[dt.datetime] = mapped_column(UtcDateTime(), default=utcnow)


class OutboxRecord(Base):
    """A webhook message waiting for delivery (or delivered). ``body`` is the exact JSON sent on every attempt
    and ``key`` its idempotency key, both fixed when the row is written. A sender owns a row while
    ``lease_until`` is in the future; ``attempts`` counts claims, so a sender that died mid-send is counted."""

    __tablename__ = "outbox"
    __table_args__ = (Index("ix_outbox_pending", "delivered_at", "due_at"),)

    id: Mapped[int] = mapped_column(RowId, primary_key=True, autoincrement=True)
    key: Mapped[str] = mapped_column(String(64), unique=True)
    account: Mapped[str] = mapped_column(ForeignKey("accounts.name"), index=True)
    session_id: Mapped[str | None] = mapped_column(ForeignKey("sessions.id", ondelete="CASCADE"), index=True)
    kind: Mapped[str] = mapped_column(String(32))
    body: Mapped[str] = mapped_column(Text)
    created_at: Mapped[dt.datetime] = mapped_column(UtcDateTime(), default=utcnow)
    due_at: Mapped[dt.datetime] = mapped_column(UtcDateTime())
    attempts: Mapped[int] = mapped_column(Integer, default=0)
    lease_owner: Mapped[str | None] = mapped_column(String(64))
    lease_until: Mapped[dt.datetime | None] = mapped_column(UtcDateTime())
    last_status: Mapped[int | None] = mapped_column(Integer)
    last_error: Mapped[str | None] = mapped_column(String(200))
    delivered_at: Mapped[dt.datetime | None] = mapped_column(UtcDateTime())
