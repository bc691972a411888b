"""Retention deletes an account's old calls, every row about them, and their recording files (real files)."""

from __future__ import annotations

import datetime as dt
from pathlib import Path

import pytest
from sqlalchemy import func, select

from asterisk_agent.store import Store, delete_recording_files
from asterisk_agent.store.models import (
    CallbackRecord,
    CallRecord,
    EventRecord,
    OutboxRecord,
    OutcomeRecord,
    RecordingRecord,
    TurnRecord,
)

NOW = dt.datetime(2025, 6, 1, 12, 0, tzinfo=dt.UTC)
TABLES = (CallRecord, TurnRecord, EventRecord, OutcomeRecord, RecordingRecord, CallbackRecord, OutboxRecord)


async def row_counts(store: Store, account: str) -> dict[str, int]:
    calls = select(CallRecord.id).where(CallRecord.account == account)
    where = {
        "sessions": CallRecord.account == account,
        "turns": TurnRecord.session_id.in_(calls),
        "events": EventRecord.session_id.in_(calls),
        "outcomes": OutcomeRecord.session_id.in_(calls),
        "recordings": RecordingRecord.account == account,
        "callbacks": CallbackRecord.account == account,
        "outbox": OutboxRecord.account == account,
    }
    counts = {}
    async with store.transaction() as tx:
        for table in TABLES:
            query = select(func.count()).select_from(table).where(where[table.__tablename__])
            counts[table.__tablename__] = int(await tx.db.scalar(query) or 0)
    return counts


async def a_call(store: Store, root: Path, account: str, call_id: str, started: dt.datetime) -> Path:
    await store.start_session(session_id=call_id, account=account, did="100", caller_number="+15550009",
                              started_at=started)
    await store.add_turn(call_id, speaker="caller", text="my account number is masked", start_ms=0)
    await store.add_event(call_id, kind="escalation", reason="caller_asked")
    recording = root / account / f"{call_id}.wav"
    recording.parent.mkdir(parents=True, exist_ok=True)
    recording.write_bytes(b"RIFF....WAVE")
    await store.add_recording(call_id, path=str(recording.relative_to(root)), duration_ms=1000, channels=2)
    await store.add_callback(account, number="+15550009", session_id=call_id)
    await store.finish_session(call_id, outcome="done", end_reason="completed",
                               ended_at=started + dt.timedelta(minutes=1))
    return recording


async def test_purge_deletes_old_calls_with_their_rows_and_files(store: Store, tmp_path: Path) -> None:
    root = tmp_path / "recordings"
    old = await a_call(store, root, "acme", "old", NOW - dt.timedelta(days=31))
    recent = await a_call(store, root, "acme", "recent", NOW - dt.timedelta(days=29))
    other = await a_call(store, root, "bolt", "other-old", NOW - dt.timedelta(days=90))
    before_bolt = await row_counts(store, "bolt")

    result = await store.purge_older_than("acme", 30, now=NOW)

    assert (result.sessions, result.callbacks, result.outbox, result.undelivered) == (1, 1, 2, 2)
    assert result.recording_paths == ("acme/old.wav",)
    assert await store.for_account("acme").get_session("old") is None
    assert await store.for_account("acme").get_session("recent") is not None
    assert await row_counts(store, "acme") == {"sessions": 1, "turns": 1, "events": 1, "outcomes": 1,
                                               "recordings": 1, "callbacks": 1, "outbox": 2}
    assert await row_counts(store, "bolt") == before_bolt  # another account's retention is its own

    deletion = await delete_recording_files(result.recording_paths, root)
    assert deletion.deleted == [old.resolve()] and not deletion.failed
    assert not old.exists() and recent.exists() and other.exists()
    # Running it again finds nothing left to do.
    again = await store.purge_older_than("acme", 30, now=NOW)
    assert (again.sessions, again.recording_paths) == (0, ())
    assert (await delete_recording_files(["acme/old.wav"], root)).missing == [old.resolve()]


async def test_zero_days_purges_everything_of_the_account(store: Store, tmp_path: Path) -> None:
    await a_call(store, tmp_path, "acme", "c1", NOW - dt.timedelta(minutes=5))
    result = await store.purge_older_than("acme", 0, now=NOW)
    assert result.sessions == 1
    assert set((await row_counts(store, "acme")).values()) == {0}
    with pytest.raises(ValueError, match="days"):
        await store.purge_older_than("acme", -1)


async def test_file_deletion_stays_inside_the_recordings_folder(tmp_path: Path) -> None:
    root = tmp_path / "recordings"
    root.mkdir()
    inside = root / "acme" / "c1.wav"
    inside.parent.mkdir()
    inside.write_bytes(b"x")
    outside = tmp_path / "precious.txt"
    outside.write_text("keep me")
    deletion = await delete_recording_files([str(inside), "../precious.txt", str(outside), "acme/gone.wav"], root)
    assert deletion.deleted == [inside.resolve()]
    assert deletion.refused == [outside.resolve(), outside.resolve()]
    assert deletion.missing == [(root / "acme" / "gone.wav").resolve()]
    assert outside.read_text() == "keep me" and not inside.exists()
