"""Each call's record, written to the store: the call when it starts (with its ``call.started`` webhook message,
in one transaction), then, when it ends, its turns, events, recording and outcome with ``call.ended``, again in
one transaction. Also the recording itself (a two-channel WAV per call, under the account's folder) and the
purge of records past each account's retention.

The worker owns one :class:`CallRecords`; every session hands it its start and its end. A store that fails
costs the record (logged with the session id), never the call. A call that a restarted worker adopts keeps
its session id (derived from the caller's channel), so its record goes on where it stopped: the start is
found already written, and the end is written once.
"""

from __future__ import annotations

import asyncio
import contextlib
import datetime as dt
import logging
import uuid
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any

from sqlalchemy.exc import IntegrityError

from asterisk_agent.config import Settings
from asterisk_agent.handoff.callback import CallbackRequest
from asterisk_agent.handoff.summary import screen_pop
from asterisk_agent.media.recorder import CallRecorder, RecordingSummary, recording_path
from asterisk_agent.store.engine import StoreError
from asterisk_agent.store.messages import iso
from asterisk_agent.store.retention import delete_recording_files
from asterisk_agent.store.store import Store

if TYPE_CHECKING:
    from asterisk_agent.calls.session import Session

log = logging.getLogger(__name__)

RECORDINGS = "recordings"
_SESSION_IDS = uuid.UUID("6f1c0e0a-3d0b-4f57-9a52-2b6f4f3a0c11")


def session_id_for(channel_id: str) -> str:
    """A call's session id, the same for the same caller channel: a worker that adopts a call after a restart
    goes on with its record instead of starting a second one."""
    return uuid.uuid5(_SESSION_IDS, channel_id).hex


@dataclass
class _Open:
    """What a live call's record needs until it ends."""

    start: asyncio.Task[None]
    resumed: bool = False
    writes: set[asyncio.Task[None]] = field(default_factory=set)  # screen-pops in flight
    recorder: CallRecorder | None = None
    recording_from_ms: int = 0  # the tap offset where the recording begins (after a consent announcement)


@dataclass
class RecordsStats:
    started: int = 0
    resumed: int = 0
    finished: int = 0
    failed: int = 0
    purged_sessions: int = 0
    purged_files: int = 0
    recordings: int = 0


@dataclass
class CallRecords:
    store: Store
    settings: Settings
    stats: RecordsStats = field(default_factory=RecordsStats)

    def __post_init__(self) -> None:
        self._open: dict[str, _Open] = {}
        self._purger: asyncio.Task[None] | None = None
        self.recordings_root = Path(self.settings.data_dir) / RECORDINGS

    # --- a call's start and end -----------------------------------------------------------------------

    def begin(self, session: Session) -> None:
        """The call was admitted: write its start in the background (the caller is not kept waiting)."""
        if session.id in self._open:
            return
        task = asyncio.get_running_loop().create_task(self._write_start(session), name=f"record-{session.id[:12]}")
        self._open[session.id] = _Open(task)

    async def _write_start(self, session: Session) -> None:
        account = self.settings.accounts[session.account]
        flow = session.flow.flow.name if session.flow is not None else None
        try:
            async with self.store.transaction() as tx:
                await tx.start_session(
                    session_id=session.id, account=session.account, did=session.did,
                    caller_number=session.caller.caller_number or None, caller_name=session.caller.caller_name or None,
                    channel_id=session.caller.id, flow=flow, started_at=session.started_at,
                    notify=account.webhook is not None)
            self.stats.started += 1
        except IntegrityError:
            # Already written: a restarted worker adopted this call, and its record goes on.
            self._open[session.id].resumed = True
            self.stats.resumed += 1
            log.info("session %s: record resumed after adoption", session.id)

    async def start_recording(self, session: Session, tap_offset_ms: Callable[[], int]) -> CallRecorder | None:
        """The call's recording, from now on (after any consent announcement); ``None`` when off or failed.
        ``tap_offset_ms`` tells where on the call's timeline the file begins, once it is open."""
        entry = self._open.get(session.id)
        if entry is None or not self.settings.records.recordings:
            return None
        await asyncio.shield(entry.start)  # resumed or not decides the file's name
        name = f"{session.id}-{int(dt.datetime.now(dt.UTC).timestamp())}" if entry.resumed else session.id
        try:
            path = recording_path(self.recordings_root, session.account, name, session.started_at)
            entry.recorder = await CallRecorder.open(path)
        except ValueError as exc:
            log.error("session %s: the recording could not start: %s", session.id, exc)
            return None
        if entry.recorder.error is not None:
            return None  # logged by the recorder; the call goes on unrecorded
        entry.recording_from_ms = tap_offset_ms()
        return entry.recorder

    async def finish(self, session: Session) -> None:
        """The call ended: close its recording and write everything else with its outcome, once."""
        entry = self._open.pop(session.id, None)
        if entry is None:
            return
        summary: RecordingSummary | None = None
        try:
            async with asyncio.timeout(self.settings.records.write_timeout_ms / 1000):
                if entry.recorder is not None:
                    summary = await entry.recorder.close()
                if entry.writes:
                    await asyncio.gather(*entry.writes, return_exceptions=True)
                await asyncio.shield(entry.start)
                await self._write_end(session, entry, summary)
            self.stats.finished += 1
        except Exception as exc:  # a store error, a full disk, a timeout: the record is lost, never the call
            self.stats.failed += 1
            log.error("session %s: its record could not be written: %s", session.id, type(exc).__name__)
        finally:
            if not entry.start.done():
                entry.start.cancel()
                with contextlib.suppress(asyncio.CancelledError, Exception):
                    await entry.start

    async def _write_end(self, session: Session, entry: _Open, summary: RecordingSummary | None) -> None:
        account = self.settings.accounts[session.account]
        started = session.started_at
        shift = entry.recording_from_ms
        async with self.store.transaction() as tx:
            for turn in session.transcript:
                await tx.add_turn(session.id, speaker=turn.speaker, text=turn.text, confidence=turn.confidence,
                                  start_ms=turn.start_ms - shift if summary else None,
                                  end_ms=(turn.end_ms - shift) if summary and turn.end_ms is not None else None)
            for event in session.history:
                await tx.add_event(session.id, kind=event.what[:32], reason=event.detail[:64],
                                   at=started + dt.timedelta(seconds=event.at))
            if session.dialog is not None:
                for dialog_event in session.dialog.events:
                    await tx.add_event(session.id, kind=f"flow.{dialog_event.kind}"[:32],
                                       reason=dialog_event.reason[:64], data={"state": dialog_event.state})
            if summary is not None and summary.bytes > 0:  # a failed one keeps its audio up to the failure
                await tx.add_recording(session.id, path=str(summary.path), duration_ms=summary.duration_ms,
                                       channels=summary.channels)
                self.stats.recordings += 1
            end_reason = session.end_reason.value if session.end_reason else "error"
            outcome = (session.dialog.outcome if session.dialog is not None and session.dialog.outcome
                       else end_reason)
            await tx.finish_session(session.id, outcome=outcome[:64], end_reason=end_reason,
                                    data=self._outcome_data(session, summary), notify=account.webhook is not None)

    @staticmethod
    def _outcome_data(session: Session, summary: RecordingSummary | None) -> dict[str, Any]:
        """What the CRM hears about the call's end: the flow's outcome, escalation, slots (sensitive ones
        masked by the flow) and the recording's length; never a sensitive value."""
        data: dict[str, Any] = {"setup_ms": session.setup_ms}
        run = session.dialog
        if run is not None:
            data["flow"] = run.flow.name
            data["state"] = run.state
            data["slots"] = run.masked_values()
            if run.escalation is not None:
                data["escalation"] = {"reason": run.escalation.reason, "detail": run.escalation.detail}
        if session.transfer is not None:
            record = session.transfer.record
            data["handoff"] = {
                "outcome": record.outcome, "answered_by": record.answered_by, "hold_ms": record.hold_ms,
                "whisper_ms": record.whisper_ms, "bridged_ms": record.bridged_ms, "ended_by": record.ended_by,
                "attempts": [{"target": a.target, "result": a.result.value if a.result else None,
                              "cause": a.cause, "ring_ms": a.ring_ms} for a in record.attempts]}
        if session.callback is not None:
            data["callback"] = {"requested": True}
        if summary is not None:
            data["recording_ms"] = summary.duration_ms
            if summary.error is not None:
                data["recording_error"] = summary.error
        return data

    # --- handoff ----------------------------------------------------------------------------------------

    def screen_pop(self, session: Session, kind: str, target: str) -> None:
        """The agent desktop's screen-pop (``handoff.ringing``, then ``handoff.answered``), through the outbox;
        written in the background, finished before the call's end is."""
        entry = self._open.get(session.id)
        account = self.settings.accounts[session.account]
        if entry is None or account.webhook is None:
            return
        reason = session.transfer.record.reason if session.transfer is not None else ""
        data = screen_pop(session, kind.removeprefix("handoff."), target, reason)
        task = asyncio.get_running_loop().create_task(self._notify(session, entry, kind, data),
                                                      name=f"screen-pop-{session.id[:12]}")
        entry.writes.add(task)
        task.add_done_callback(entry.writes.discard)

    async def _notify(self, session: Session, entry: _Open, kind: str, data: dict[str, Any]) -> None:
        try:
            await asyncio.shield(entry.start)
            async with self.store.transaction() as tx:
                await tx.notify(kind, session.account, session.id, data)
        except Exception as exc:  # a lost screen-pop must not end the call
            log.error("session %s: %s could not be queued: %s", session.id, kind, type(exc).__name__)

    async def request_callback(self, session: Session, request: CallbackRequest) -> None:
        """Store the caller's callback request and queue its ``callback.requested`` message, together."""
        entry = self._open.get(session.id)
        if entry is None:
            return
        notify = self.settings.accounts[session.account].webhook is not None
        try:
            await asyncio.shield(entry.start)
            async with self.store.transaction() as tx:
                callback_id = await tx.add_callback(session.account, number=request.number, session_id=session.id,
                                                    preferred_at=request.preferred_at, reason=request.reason[:128])
                if notify:
                    await tx.notify("callback.requested", session.account, session.id, {
                        "callback_id": callback_id, "number": request.number, "reason": request.reason,
                        "preferred_at": iso(request.preferred_at) if request.preferred_at else None})
        except Exception as exc:
            log.error("session %s: the callback request could not be stored: %s", session.id, type(exc).__name__)

    # --- retention --------------------------------------------------------------------------------------

    def start_purging(self) -> None:
        if self._purger is None and any(a.retention_days for a in self.settings.accounts.values()):
            self._purger = asyncio.get_running_loop().create_task(self._purge_forever(), name="records-purge")

    async def _purge_forever(self) -> None:
        while True:
            await self.purge_now()
            await asyncio.sleep(self.settings.records.purge_interval_ms / 1000)

    async def purge_now(self, now: dt.datetime | None = None) -> None:
        """Delete every account's records and recordings older than its retention."""
        for name, account in self.settings.accounts.items():
            if not account.retention_days:
                continue
            try:
                result = await self.store.purge_older_than(name, account.retention_days, now=now)
                files = await delete_recording_files(result.recording_paths, self.recordings_root)
            except (StoreError, OSError) as exc:
                log.error("retention for account %s failed: %s", name, type(exc).__name__)
                continue
            self.stats.purged_sessions += result.sessions
            self.stats.purged_files += len(files.deleted)
            if result.sessions:
                log.info("retention: account %s: %d calls and %d recordings deleted", name, result.sessions,
                         len(files.deleted))

    async def close(self) -> None:
        if self._purger is not None:
            self._purger.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._purger
        for entry in list(self._open.values()):
            entry.start.cancel()
            with contextlib.suppress(asyncio.CancelledError, Exception):
                await entry.start
