"""Retention: a call older than its account's retention period is really deleted, rows and recording files.

Rows go first, in one transaction (:func:`purge`), which hands back the paths of the recordings they named;
the files go after (:func:`delete_recording_files`). In that order a failure can leave a file without a row
(found again by sweeping the recordings folder) but never a row pointing at a deleted file. Deletes use
subqueries rather than lists of ids, so a purge of many calls stays one statement per table.

Webhook messages of a purged call are deleted with it, delivered or not: a webhook down for longer than the
retention period loses them (the count is logged), because the caller's data must not outlive its period.
"""

from __future__ import annotations

import asyncio
import datetime as dt
import logging
import os
from collections.abc import Iterable
from dataclasses import dataclass, field
from pathlib import Path

from sqlalchemy import Delete, delete, func, or_, select
from sqlalchemy.ext.asyncio import AsyncSession

from asterisk_agent.store.models import (
    CallbackRecord,
    CallRecord,
    EventRecord,
    OutboxRecord,
    OutcomeRecord,
    RecordingRecord,
    TurnRecord,
)

log = logging.getLogger(__name__)


@dataclass(frozen=True, slots=True)
class PurgeResult:
    sessions: int
    callbacks: int
    outbox: int
    undelivered: int  # of those webhook messages, how many had never been delivered
    recording_paths: tuple[str, ...]  # the files to delete now that their rows are gone


@dataclass(slots=True)
class FileDeletion:
    deleted: list[Path] = field(default_factory=list)
    missing: list[Path] = field(default_factory=list)  # already gone: fine
    refused: list[Path] = field(default_factory=list)  # outside the recordings folder: never touched
    failed: list[tuple[Path, str]] = field(default_factory=list)


async def _count(db: AsyncSession, statement: Delete) -> int:
    result = await db.execute(statement)
    return int(getattr(result, "rowcount", 0) or 0)


async def purge(db: AsyncSession, account: str, cutoff: dt.datetime) -> PurgeResult:
    """Delete, inside ``db``'s transaction, ``account``'s calls started before ``cutoff`` and everything about
    them, its callbacks and webhook messages older than ``cutoff``, and its recordings older than ``cutoff``."""
    old_calls = select(CallRecord.id).where(CallRecord.account == account, CallRecord.started_at < cutoff)
    old_recordings = or_(RecordingRecord.session_id.in_(old_calls), RecordingRecord.created_at < cutoff)
    paths = tuple((await db.scalars(select(RecordingRecord.path).where(
        RecordingRecord.account == account, old_recordings).order_by(RecordingRecord.id))).all())
    old_outbox = (OutboxRecord.account == account) & or_(OutboxRecord.session_id.in_(old_calls),
                                                         OutboxRecord.created_at < cutoff)
    undelivered = await db.scalar(select(func.count()).select_from(OutboxRecord).where(
        old_outbox, OutboxRecord.delivered_at.is_(None)))
    outbox = await _count(db, delete(OutboxRecord).where(old_outbox))
    callbacks = await _count(db, delete(CallbackRecord).where(
        CallbackRecord.account == account,
        or_(CallbackRecord.session_id.in_(old_calls), CallbackRecord.created_at < cutoff)))
    await db.execute(delete(RecordingRecord).where(RecordingRecord.account == account, old_recordings))
    for table in (TurnRecord, EventRecord, OutcomeRecord):
        await db.execute(delete(table).where(table.session_id.in_(old_calls)))
    sessions = await _count(db, delete(CallRecord).where(CallRecord.account == account,
                                                         CallRecord.started_at < cutoff))
    return PurgeResult(sessions, callbacks, outbox, int(undelivered or 0), paths)


def _delete_files(paths: Iterable[str], root: Path) -> FileDeletion:
    result = FileDeletion()
    base = root.resolve()
    for text in paths:
        path = (base / text).resolve()  # a relative path is relative to the recordings folder
        if not path.is_relative_to(base) or path == base:
            result.refused.append(path)
            continue
        try:
            os.unlink(path)
        except FileNotFoundError:
            result.missing.append(path)
        except OSError as exc:
            result.failed.append((path, exc.strerror or type(exc).__name__))
        else:
            result.deleted.append(path)
    return result


async def delete_recording_files(paths: Iterable[str], root: str | os.PathLike[str]) -> FileDeletion:
    """Delete the recording files a purge returned, off the event loop. Only files inside ``root`` (the
    recordings folder) are touched: a path from the database is never trusted to point anywhere else."""
    result = await asyncio.to_thread(_delete_files, list(paths), Path(root))
    if result.refused:
        log.error("retention: %d recording paths outside %s left alone", len(result.refused), root)
    for path, reason in result.failed:
        log.error("retention: could not delete %s: %s", path, reason)
    return result
