"""The first schema: accounts, calls (sessions), turns, events, outcomes, recordings, callbacks and the outbox.

Written out by hand rather than imported from the models, so this migration keeps describing the schema it
created whatever the models become. Timestamps are ``timestamptz`` on PostgreSQL (the models convert them to
aware UTC on SQLite too).

Revision ID: 0001
Revises:
Created: first release
"""

from __future__ import annotations

from typing import Any

import sqlalchemy as sa
from alembic import op
from sqlalchemy.dialects import postgresql

revision = "0001"
down_revision = None
branch_labels = None
depends_on = None

ROW_ID = sa.BigInteger().with_variant(sa.Integer(), "sqlite")
JSON = sa.JSON().with_variant(postgresql.JSONB(), "postgresql")


def _time(name: str, *, nullable: bool = False) -> sa.Column[Any]:
    return sa.Column(name, sa.DateTime(timezone=True), nullable=nullable)


def _session_ref(*, nullable: bool = False) -> sa.Column[str]:
    return sa.Column("session_id", sa.String(64), nullable=nullable)


def _session_fk(table: str, ondelete: str = "CASCADE") -> sa.ForeignKeyConstraint:
    return sa.ForeignKeyConstraint(["session_id"], ["sessions.id"], name=f"fk_{table}_session_id_sessions",
                                   ondelete=ondelete)


def _account_fk(table: str) -> sa.ForeignKeyConstraint:
    return sa.ForeignKeyConstraint(["account"], ["accounts.name"], name=f"fk_{table}_account_accounts")


def upgrade() -> None:
    op.create_table(
        "accounts",
        sa.Column("name", sa.String(64), nullable=False),
        _time("created_at"),
        sa.PrimaryKeyConstraint("name", name="pk_accounts"),
    )
    op.create_table(
        "sessions",
        sa.Column("id", sa.String(64), nullable=False),
        sa.Column("account", sa.String(64), nullable=False),
        sa.Column("did", sa.String(64), nullable=False),
        sa.Column("caller_number", sa.String(64), nullable=True),
        sa.Column("caller_name", sa.String(128), nullable=True),
        sa.Column("channel_id", sa.String(128), nullable=True),
        sa.Column("flow", sa.String(64), nullable=True),
        sa.Column("state", sa.String(16), nullable=False),
        _time("started_at"),
        _time("ended_at", nullable=True),
        sa.Column("end_reason", sa.String(32), nullable=True),
        _account_fk("sessions"),
        sa.PrimaryKeyConstraint("id", name="pk_sessions"),
    )
    op.create_index("ix_sessions_account_started_at", "sessions", ["account", "started_at"])
    op.create_index("ix_sessions_account_state", "sessions", ["account", "state"])

    op.create_table(
        "turns",
        sa.Column("id", ROW_ID, autoincrement=True, nullable=False),
        _session_ref(),
        sa.Column("speaker", sa.String(16), nullable=False),
        sa.Column("text", sa.Text(), nullable=False),
        sa.Column("confidence", sa.Float(), nullable=True),
        sa.Column("start_ms", sa.Integer(), nullable=True),
        sa.Column("end_ms", sa.Integer(), nullable=True),
        _time("created_at"),
        _session_fk("turns"),
        sa.PrimaryKeyConstraint("id", name="pk_turns"),
    )
    op.create_index("ix_turns_session_id", "turns", ["session_id"])

    op.create_table(
        "events",
        sa.Column("id", ROW_ID, autoincrement=True, nullable=False),
        _session_ref(),
        _time("at"),
        sa.Column("kind", sa.String(32), nullable=False),
        sa.Column("reason", sa.String(64), nullable=False),
        sa.Column("data", JSON, nullable=True),
        _session_fk("events"),
        sa.PrimaryKeyConstraint("id", name="pk_events"),
    )
    op.create_index("ix_events_session_id", "events", ["session_id"])

    op.create_table(
        "outcomes",
        _session_ref(),
        sa.Column("outcome", sa.String(64), nullable=False),
        sa.Column("end_reason", sa.String(32), nullable=False),
        sa.Column("data", JSON, nullable=True),
        _time("created_at"),
        _session_fk("outcomes"),
        sa.PrimaryKeyConstraint("session_id", name="pk_outcomes"),
    )

    op.create_table(
        "recordings",
        sa.Column("id", ROW_ID, autoincrement=True, nullable=False),
        _session_ref(),
        sa.Column("account", sa.String(64), nullable=False),
        sa.Column("path", sa.Text(), nullable=False),
        sa.Column("duration_ms", sa.Integer(), nullable=False),
        sa.Column("channels", sa.Integer(), nullable=False),
        _time("created_at"),
        _account_fk("recordings"),
        _session_fk("recordings"),
        sa.PrimaryKeyConstraint("id", name="pk_recordings"),
    )
    op.create_index("ix_recordings_account", "recordings", ["account"])
    op.create_index("ix_recordings_session_id", "recordings", ["session_id"])

    op.create_table(
        "callbacks",
        sa.Column("id", ROW_ID, autoincrement=True, nullable=False),
        sa.Column("account", sa.String(64), nullable=False),
        _session_ref(nullable=True),
        sa.Column("number", sa.String(64), nullable=False),
        _time("preferred_at", nullable=True),
        sa.Column("reason", sa.String(128), nullable=False),
        sa.Column("status", sa.String(16), nullable=False),
        sa.Column("attempts", sa.Integer(), nullable=False),
        _time("created_at"),
        _time("updated_at"),
        _account_fk("callbacks"),
        _session_fk("callbacks", ondelete="SET NULL"),
        sa.PrimaryKeyConstraint("id", name="pk_callbacks"),
    )
    op.create_index("ix_callbacks_account", "callbacks", ["account"])
    op.create_index("ix_callbacks_session_id", "callbacks", ["session_id"])

    op.create_table(
        "outbox",
        sa.Column("id", ROW_ID, autoincrement=True, nullable=False),
        sa.Column("key", sa.String(64), nullable=False),
        sa.Column("account", sa.String(64), nullable=False),
        _session_ref(nullable=True),
        sa.Column("kind", sa.String(32), nullable=False),
        sa.Column("body", sa.Text(), nullable=False),
        _time("created_at"),
        _time("due_at"),
        sa.Column("attempts", sa.Integer(), nullable=False),
        sa.Column("lease_owner", sa.String(64), nullable=True),
        _time("lease_until", nullable=True),
        sa.Column("last_status", sa.Integer(), nullable=True),
        sa.Column("last_error", sa.String(200), nullable=True),
        _time("delivered_at", nullable=True),
        _account_fk("outbox"),
        _session_fk("outbox"),
        sa.PrimaryKeyConstraint("id", name="pk_outbox"),
        sa.UniqueConstraint("key", name="uq_outbox_key"),
    )
    op.create_index("ix_outbox_account", "outbox", ["account"])
    op.create_index("ix_outbox_pending", "outbox", ["delivered_at", "due_at"])
    op.create_index("ix_outbox_session_id", "outbox", ["session_id"])


def downgrade() -> None:
    for table in ("outbox", "callbacks", "recordings", "outcomes", "events", "turns", "sessions", "accounts"):
        op.drop_table(table)
