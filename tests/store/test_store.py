"""The store on SQLite and PostgreSQL: migrations, what a call writes (with its webhook messages in the same
transaction), reading back scoped to one tenant, and callbacks."""

from __future__ import annotations

import datetime as dt
import json

import pytest
from alembic.autogenerate import compare_metadata
from alembic.runtime.migration import MigrationContext
from sqlalchemy import Connection, func, inspect, select
from sqlalchemy.exc import IntegrityError

from asterisk_agent.outbox import CALL_ENDED, CALL_STARTED
from asterisk_agent.store import Store, StoreError, UnknownSession, head_revision, parse_store_url
from asterisk_agent.store.engine import current_revision
from asterisk_agent.store.models import Base, CallRecord, OutboxRecord

TABLES = {"accounts", "sessions", "turns", "events", "outcomes", "recordings", "callbacks", "outbox",
          "alembic_version"}
T0 = dt.datetime(2025, 3, 4, 10, 0, tzinfo=dt.UTC)


async def outbox_rows(store: Store) -> list[OutboxRecord]:
    async with store.transaction() as tx:
        return list((await tx.db.scalars(select(OutboxRecord).order_by(OutboxRecord.id))).all())


async def count_calls(store: Store) -> int:
    async with store.transaction() as tx:
        return int(await tx.db.scalar(select(func.count()).select_from(CallRecord)) or 0)


# --- migrations -------------------------------------------------------------------------------------------

async def test_open_migrates_to_head_and_reopening_is_a_no_op(store_url: str) -> None:
    first = await Store.open(store_url)
    try:
        await first.start_session(session_id="c1", account="a", did="100")
        async with first.engine.connect() as connection:
            assert await connection.run_sync(current_revision) == head_revision()
            tables = await connection.run_sync(lambda sync: set(inspect(sync).get_table_names()))
        assert tables == TABLES
    finally:
        await first.close()
    again = await Store.open(store_url)
    try:
        async with again.engine.connect() as connection:
            assert await connection.run_sync(current_revision) == head_revision()
        assert [call.id for call in await again.admin().list_sessions()] == ["c1"]
    finally:
        await again.close()


def _differences(connection: Connection) -> list[object]:
    context = MigrationContext.configure(connection, opts={"compare_type": True})
    return list(compare_metadata(context, Base.metadata))


async def test_migrations_build_exactly_the_models(store: Store) -> None:
    async with store.engine.connect() as connection:
        assert await connection.run_sync(_differences) == []


def test_store_urls_are_checked_without_echoing_passwords() -> None:
    assert parse_store_url("sqlite:///x.db").drivername == "sqlite+aiosqlite"
    assert parse_store_url("postgresql://u:p@h/db").drivername == "postgresql+asyncpg"
    for bad in ("mysql://u:hunter2@h/db", "not a url", "sqlite://", "sqlite+aiosqlite:///:memory:"):
        with pytest.raises(StoreError) as caught:
            parse_store_url(bad)
        assert "hunter2" not in str(caught.value)


async def test_repr_hides_the_password(postgres_url: str) -> None:
    url = postgres_url.replace("postgres@", "postgres:hunter2@")
    store = await Store.open(url)  # trust authentication ignores the password
    try:
        assert "hunter2" not in repr(store)
    finally:
        await store.close()


# --- writing a call ---------------------------------------------------------------------------------------

async def test_a_call_writes_its_context_and_outcome_messages(store: Store) -> None:
    key = await store.start_session(session_id="c1", account="sales", did="2000", caller_number="+15550001",
                                    caller_name="Alice", channel_id="aa-ch-1", flow="clinic", started_at=T0,
                                    context={"trunk": "carrier"})
    await store.add_turn("c1", speaker="agent", text="Hello", start_ms=0, end_ms=900)
    await store.add_turn("c1", speaker="caller", text="Book Wednesday", confidence=0.82, start_ms=1200, end_ms=2400)
    await store.add_event("c1", kind="integration", reason="cached", data={"endpoint": "scheduler"})
    await store.add_recording("c1", path="sales/c1.wav", duration_ms=65_000, channels=2)
    assert await store.finish_session("c1", outcome="booked", end_reason="completed", data={"day": "Wednesday"},
                                      ended_at=T0 + dt.timedelta(seconds=65))

    rows = await outbox_rows(store)
    assert [row.kind for row in rows] == [CALL_STARTED, CALL_ENDED]
    assert rows[0].key == key
    started, ended = (json.loads(row.body) for row in rows)
    assert started["id"] == key
    assert started == {"id": key, "type": "call.started", "account": "sales", "session_id": "c1",
                       "occurred_at": "2025-03-04T10:00:00.000000Z",
                       "data": {"did": "2000", "caller_number": "+15550001", "caller_name": "Alice",
                                "channel_id": "aa-ch-1", "flow": "clinic", "started_at": "2025-03-04T10:00:00.000000Z",
                                "trunk": "carrier"}}
    assert ended["type"] == "call.ended" and ended["id"] == rows[1].key != key
    assert ended["data"] == {"outcome": "booked", "end_reason": "completed", "did": "2000",
                             "caller_number": "+15550001", "started_at": "2025-03-04T10:00:00.000000Z",
                             "ended_at": "2025-03-04T10:01:05.000000Z", "duration_ms": 65_000, "turns": 2,
                             "details": {"day": "Wednesday"}}
    assert all(row.delivered_at is None and row.attempts == 0 for row in rows)

    detail = await store.for_account("sales").get_session("c1")
    assert detail is not None
    assert detail.call.state == "ended" and detail.call.end_reason == "completed"
    assert detail.call.started_at == T0 and detail.call.ended_at == T0 + dt.timedelta(seconds=65)
    assert [(t.speaker, t.text, t.confidence, t.start_ms, t.end_ms) for t in detail.turns] == [
        ("agent", "Hello", None, 0, 900), ("caller", "Book Wednesday", 0.82, 1200, 2400)]
    assert [(e.kind, e.reason, e.data) for e in detail.events] == [("integration", "cached", {"endpoint": "scheduler"})]
    assert detail.outcome is not None
    assert (detail.outcome.outcome, detail.outcome.data) == ("booked", {"day": "Wednesday"})
    assert [(r.path, r.duration_ms, r.channels) for r in detail.recordings] == [("sales/c1.wav", 65_000, 2)]


async def test_finishing_twice_writes_once_and_an_unknown_call_is_an_error(store: Store) -> None:
    await store.start_session(session_id="c1", account="sales", did="2000")
    assert await store.finish_session("c1", outcome="done", end_reason="caller_hangup")
    assert not await store.finish_session("c1", outcome="other", end_reason="error")
    assert [row.kind for row in await outbox_rows(store)] == [CALL_STARTED, CALL_ENDED]
    with pytest.raises(UnknownSession):
        await store.finish_session("nope", outcome="done", end_reason="completed")
    with pytest.raises(UnknownSession):
        await store.add_recording("nope", path="x.wav", duration_ms=1, channels=2)


async def test_without_notify_no_message_is_queued(store: Store) -> None:
    assert await store.start_session(session_id="c1", account="quiet", did="1", notify=False) is None
    await store.finish_session("c1", outcome="done", end_reason="completed", notify=False)
    assert await outbox_rows(store) == []


async def test_a_failure_inside_the_transaction_leaves_neither_the_call_nor_its_message(store: Store) -> None:
    class Boom(Exception):
        pass

    with pytest.raises(Boom):
        async with store.transaction() as tx:
            await tx.start_session(session_id="c1", account="sales", did="2000")
            # Both rows are written (flushed) inside the transaction...
            assert await tx.db.scalar(select(func.count()).select_from(OutboxRecord)) == 1
            assert await tx.db.get(CallRecord, "c1") is not None
            raise Boom  # ...and the transaction fails before it commits
    assert await count_calls(store) == 0
    assert await outbox_rows(store) == []


async def test_a_call_row_that_cannot_be_written_takes_its_message_with_it(store: Store) -> None:
    await store.start_session(session_id="c1", account="sales", did="2000")
    with pytest.raises(IntegrityError):
        await store.start_session(session_id="c1", account="sales", did="2001")  # the same call id again
    assert await count_calls(store) == 1
    assert len(await outbox_rows(store)) == 1
    # A finish refused before it writes leaves the call active and queues nothing.
    await store.start_session(session_id="c2", account="sales", did="2000")
    with pytest.raises(ValueError, match="outcome"):
        await store.finish_session("c2", outcome="x" * 65, end_reason="completed")
    detail = await store.admin().get_session("c2")
    assert detail is not None and detail.call.state == "active" and detail.outcome is None
    assert len(await outbox_rows(store)) == 2


async def test_values_are_checked_alike_on_both_databases(store: Store) -> None:
    with pytest.raises(ValueError, match="did"):
        await store.start_session(session_id="c1", account="sales", did="9" * 65)
    with pytest.raises(ValueError, match="timezone-aware"):
        await store.start_session(session_id="c1", account="sales", did="1", started_at=dt.datetime(2025, 1, 1))
    with pytest.raises(ValueError, match="account"):
        await store.start_session(session_id="c1", account="", did="1")
    assert await count_calls(store) == 0


# --- reading, one tenant at a time ------------------------------------------------------------------------

async def _two_tenants(store: Store) -> None:
    for index in range(3):
        await store.start_session(session_id=f"a{index}", account="acme", did="100",
                                  started_at=T0 + dt.timedelta(minutes=index))
        await store.start_session(session_id=f"b{index}", account="bolt", did="200",
                                  started_at=T0 + dt.timedelta(minutes=index))
    await store.add_turn("b0", speaker="caller", text="my secret business")
    await store.finish_session("a0", outcome="done", end_reason="completed")


async def test_an_account_sees_only_its_own_calls(store: Store) -> None:
    await _two_tenants(store)
    acme = store.for_account("acme")
    assert [call.id for call in await acme.list_sessions()] == ["a2", "a1", "a0"]  # newest first
    assert await acme.get_session("b0") is None  # another tenant's call reads as no such call
    bolt_detail = await store.for_account("bolt").get_session("b0")
    assert bolt_detail is not None and bolt_detail.turns[0].text == "my secret business"
    assert [call.id for call in await acme.list_sessions(state="ended")] == ["a0"]
    assert [call.id for call in await acme.list_sessions(state="active")] == ["a2", "a1"]
    assert [call.id for call in await acme.list_sessions(since=T0 + dt.timedelta(minutes=1),
                                                         until=T0 + dt.timedelta(minutes=2))] == ["a1"]
    assert [call.id for call in await acme.list_sessions(limit=1)] == ["a2"]
    assert await store.for_account("nobody").list_sessions() == []
    for missing in ("", None):
        with pytest.raises(ValueError, match="account"):
            store.for_account(missing)  # type: ignore[arg-type]
    with pytest.raises(ValueError, match="limit"):
        await acme.list_sessions(limit=0)


async def test_the_admin_reader_spans_accounts_only_when_asked(store: Store) -> None:
    await _two_tenants(store)
    admin = store.admin()
    assert sorted(call.id for call in await admin.list_sessions()) == ["a0", "a1", "a2", "b0", "b1", "b2"]
    assert sorted(call.id for call in await admin.list_sessions(account="bolt")) == ["b0", "b1", "b2"]
    detail = await admin.get_session("b0")
    assert detail is not None and detail.call.account == "bolt"


async def test_callbacks_are_kept_per_account(store: Store) -> None:
    await store.start_session(session_id="c1", account="acme", did="100")
    first = await store.add_callback("acme", number="+15550002", session_id="c1", reason="no agent",
                                     preferred_at=T0 + dt.timedelta(days=1))
    await store.add_callback("bolt", number="+15550003")
    acme = store.for_account("acme")
    [callback] = await acme.list_callbacks()
    assert (callback.id, callback.number, callback.status, callback.attempts) == (first, "+15550002", "pending", 0)
    assert callback.preferred_at == T0 + dt.timedelta(days=1)
    assert not await store.set_callback_status("bolt", first, status="done")  # not bolt's callback
    assert await store.set_callback_status("acme", first, status="calling", attempted=True)
    [callback] = await acme.list_callbacks(status="calling")
    assert callback.attempts == 1
    assert len(await store.admin().list_callbacks()) == 2
