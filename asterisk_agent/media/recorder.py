"""A call's recording, streamed to a two-channel WAV file while the call runs (channel 1 the caller, channel 2
the agent, 16-bit PCM, interleaved).

The media tick hands :meth:`CallRecorder.add` one 20 ms frame per direction. That path only copies the two
frames into an in-memory batch: it never touches the disk, never waits and never raises. A full batch goes
to the recorder's one writer (an asyncio task that writes each batch with :func:`asyncio.to_thread`, one
batch at a time, so the file is written strictly in order and never from the event loop's thread).

Crash safety: the RIFF header is written when the file is created and its two sizes are patched after every
batch (the data first, then the sizes), so a file left by a worker that died without :meth:`CallRecorder.close`
is a valid WAV holding everything up to the last batch written. :meth:`CallRecorder.close` writes the last
partial batch, patches the header, syncs the file to disk and returns a :class:`RecordingSummary`.

Nothing here may hurt the call: memory is bounded (a writer more than ``max_pending_batches`` behind makes the
recorder drop audio, counted, and write silence in its place so every later offset stays true), and a failure
(disk full, folder removed, file already there) is logged once with the file name only, turns the recorder
into a no-op and is reported in the summary's ``error``. See docs/recordings.md.
"""

from __future__ import annotations

import asyncio
import contextlib
import datetime as dt
import errno
import hashlib
import logging
import os
import re
import struct
from collections import deque
from dataclasses import dataclass
from pathlib import Path
from typing import NamedTuple, TypeAlias

import numpy as np
import numpy.typing as npt

from asterisk_agent.media.codecs import Samples
from asterisk_agent.media.frames import FRAME_MS, SAMPLE_RATE

log = logging.getLogger(__name__)

CHANNELS = 2  # channel 1 the caller, channel 2 the agent
SAMPLE_BYTES = 2  # 16-bit PCM
HEADER_BYTES = 44  # RIFF + fmt (PCM, 16 bytes) + data chunk header
# The RIFF size field (36 + data bytes) is 32 bits: about 37 hours of 8 kHz stereo. Past it, frames are ignored.
MAX_DATA_BYTES = 0xFFFFFFFF - (HEADER_BYTES - 8)
FOLDER_MODE = 0o750
FILE_MODE = 0o640
_WRITE_CHUNK = 1 << 20  # silence standing in for dropped audio is written in pieces of at most this size
_SAFE_NAME = re.compile(r"[A-Za-z0-9_-]{1,128}")

_Batch: TypeAlias = npt.NDArray[np.int16]  # shape (frames, samples per frame, CHANNELS)
_Item: TypeAlias = _Batch | int  # a batch of audio, or a number of silent frames standing in for dropped audio


class MutedSpan(NamedTuple):
    """Where the recording was silenced (offsets in ms from the start of the recording) and why."""

    start_ms: int
    end_ms: int
    reason: str


@dataclass(frozen=True, slots=True)
class RecordingSummary:
    """What :meth:`CallRecorder.close` leaves: a description of the file on disk, for the call's record.

    On a failure ``error`` says what went wrong (never the path), ``sha256`` is None, and ``frames``,
    ``duration_ms`` and ``bytes`` describe what the file held after its last good write: a failed recording
    with ``bytes > 0`` still left a valid, shorter WAV at ``path`` (keep it in the record so retention deletes
    it, or delete it); ``bytes == 0`` means no file is there."""

    path: Path
    duration_ms: int
    frames: int
    channels: int
    sample_rate: int
    bytes: int
    muted_spans: tuple[MutedSpan, ...]
    sha256: str | None
    error: str | None = None
    dropped: int = 0  # frames whose audio was lost to a slow disk (silence in the file instead)
    ignored: int = 0  # frames not in the file at all: after close, after a failure, past the WAV size limit

    @property
    def ok(self) -> bool:
        return self.error is None


def recording_path(root: Path, account: str, session_id: str, started: dt.datetime) -> Path:
    """``root/<account>/<YYYY>/<MM>/<DD>/<session_id>.wav``: one folder per account (retention and access are
    per account) and per day (no folder grows without bound). ``account`` and ``session_id`` become path
    parts, so anything but ``[A-Za-z0-9_-]`` is refused: a crafted name can never leave ``root``. An aware
    ``started`` is taken in UTC, so every worker files a call under the same day."""
    for what, value in (("account", account), ("session id", session_id)):
        if not _SAFE_NAME.fullmatch(value):
            raise ValueError(f"{what} {value!r} is not usable in a recording path (only A-Z a-z 0-9 _ -)")
    day = started.astimezone(dt.UTC) if started.tzinfo is not None else started
    return root / account / f"{day.year:04d}" / f"{day.month:02d}" / f"{day.day:02d}" / f"{session_id}.wav"


class _RemovedError(FileNotFoundError):
    """The file was deleted under the recorder (its folder removed, a retention sweep): writes to it would
    succeed but land nowhere anyone can find."""

    def __init__(self) -> None:
        super().__init__(errno.ENOENT, "recording file was removed")


def _describe(exc: BaseException) -> str:
    """An error's reason without its file name (``str(OSError)`` carries the full path, which may not be logged)."""
    if isinstance(exc, OSError) and exc.strerror:
        code = errno.errorcode.get(exc.errno or 0)
        return f"{exc.strerror} ({code})" if code else exc.strerror
    return type(exc).__name__


def _wav_header(data_bytes: int, sample_rate: int) -> bytes:
    block = CHANNELS * SAMPLE_BYTES
    return struct.pack(
        "<4sI4s4sIHHIIHH4sI",
        b"RIFF", HEADER_BYTES - 8 + data_bytes, b"WAVE",
        b"fmt ", 16, 1, CHANNELS, sample_rate, sample_rate * block, block, 8 * SAMPLE_BYTES,
        b"data", data_bytes,
    )


def _make_folders(folder: Path) -> None:
    """Create ``folder`` and its missing parents, each with exactly FOLDER_MODE (``mkdir(parents=True)`` gives
    the parents the default mode, and the umask trims the rest). Folders that exist are left as they are."""
    missing: list[Path] = []
    while not folder.exists() and folder != folder.parent:
        missing.append(folder)
        folder = folder.parent
    for path in reversed(missing):
        try:
            os.mkdir(path, FOLDER_MODE)
        except FileExistsError:
            continue  # another call of the same day made it first
        os.chmod(path, FOLDER_MODE)


class _WavFile:
    """The file itself; every method runs on the writer's thread, never on the event loop."""

    def __init__(self, fd: int, sample_rate: int) -> None:
        self._fd = fd
        self._sample_rate = sample_rate
        self.data_bytes = 0

    @classmethod
    def create(cls, path: Path, sample_rate: int) -> _WavFile:
        """Create the folders and a new file (never overwriting one: an existing recording is kept) with a
        header for zero frames, so even an empty file is a valid WAV."""
        _make_folders(path.parent)
        flags = os.O_RDWR | os.O_CREAT | os.O_EXCL | getattr(os, "O_CLOEXEC", 0)
        fd = os.open(path, flags, FILE_MODE)
        try:
            os.fchmod(fd, FILE_MODE)  # the umask may have trimmed it
            os.pwrite(fd, _wav_header(0, sample_rate), 0)
        except OSError:
            os.close(fd)
            raise
        return cls(fd, sample_rate)

    def append(self, data: bytes) -> None:
        """Write ``data`` after what is there, then make the header claim it (in that order, so the header
        never describes bytes that are not on disk)."""
        written = 0
        while written < len(data):
            written += os.pwrite(self._fd, data[written:], HEADER_BYTES + self.data_bytes + written)
        if os.fstat(self._fd).st_nlink == 0:
            raise _RemovedError
        self.data_bytes += len(data)
        self._patch_sizes()

    def _patch_sizes(self) -> None:
        header = _wav_header(self.data_bytes, self._sample_rate)
        os.pwrite(self._fd, header[4:8], 4)
        os.pwrite(self._fd, header[40:44], 40)

    def finish(self) -> str:
        """Patch the header once more, sync to disk, close; return the file's SHA-256 (read back from the same
        descriptor, so it is the file we wrote even if something was put at its path since)."""
        try:
            self._patch_sizes()
            os.fsync(self._fd)
            digest = hashlib.sha256()
            offset = 0
            while chunk := os.pread(self._fd, _WRITE_CHUNK, offset):
                digest.update(chunk)
                offset += len(chunk)
            if os.fstat(self._fd).st_nlink == 0:
                raise _RemovedError
            return digest.hexdigest()
        finally:
            self.abandon()

    def abandon(self) -> None:
        """Close without finishing (after a failure); the header still describes the last good write."""
        if self._fd >= 0:
            fd, self._fd = self._fd, -1
            with contextlib.suppress(OSError):
                os.close(fd)


def _close_unused(creating: asyncio.Future[_WavFile]) -> None:
    """A file created for an ``open`` that was cancelled meanwhile: close it (it stays, a valid empty WAV)."""
    if not creating.cancelled() and creating.exception() is None:
        creating.result().abandon()


def _item_frames(item: _Item) -> int:
    return item if isinstance(item, int) else len(item)


def _write_item(file: _WavFile, item: _Item, frame_bytes: int) -> None:
    """Turn a batch (or a run of silent frames) into little-endian bytes and append it; on the writer's thread."""
    if isinstance(item, int):
        remaining = item * frame_bytes
        while remaining:
            size = min(remaining, _WRITE_CHUNK - _WRITE_CHUNK % frame_bytes)
            file.append(bytes(size))
            remaining -= size
    else:
        file.append(item.astype("<i2", copy=False).tobytes())


class CallRecorder:
    """One call's recording. ``add``, ``mute`` and ``unmute`` are called on the event loop's thread (the media
    tick) and never block; ``close`` is awaited once at the end of the call (more calls are harmless)."""

    def __init__(self, path: Path, *, sample_rate: int, flush_frames: int, max_pending_batches: int) -> None:
        if sample_rate <= 0 or sample_rate * FRAME_MS % 1000:
            raise ValueError(f"sample rate {sample_rate} does not divide into {FRAME_MS} ms frames")
        if flush_frames < 1 or max_pending_batches < 1:
            raise ValueError("flush_frames and max_pending_batches must be at least 1")
        self.path = path
        self.sample_rate = sample_rate
        self.flush_frames = flush_frames
        self.max_pending_batches = max_pending_batches
        self._frame_samples = sample_rate * FRAME_MS // 1000
        self._frame_bytes = self._frame_samples * CHANNELS * SAMPLE_BYTES
        self._max_frames = MAX_DATA_BYTES // self._frame_bytes
        self._batch = self._new_batch()
        self._filled = 0  # frames in the batch being filled
        self._frames = 0  # frames in the recording's timeline (written, queued, or dropped to silence)
        self._written = 0  # frames on disk (the header says so)
        self._pending: deque[_Item] = deque()  # handed to the writer, oldest first; the head may be in flight
        self._pending_batches = 0  # audio batches in _pending (runs of silence cost no memory)
        self._wake = asyncio.Event()
        self._file: _WavFile | None = None
        self._writer: asyncio.Task[None] | None = None
        self._closing: asyncio.Task[RecordingSummary] | None = None
        self._closed = False
        self._error: str | None = None
        self._gone = False  # the file was removed under us: nothing is left on disk
        self._mute: tuple[int, str] | None = None  # (start_ms, reason) while muted
        self._spans: list[MutedSpan] = []
        self._full_logged = False
        self._bad_frame_logged = False
        self.dropped = 0
        self.ignored = 0

    @classmethod
    async def open(cls, path: Path, *, sample_rate: int = SAMPLE_RATE, flush_frames: int = 50,
                   max_pending_batches: int = 8) -> CallRecorder:
        """Create the file (and its folders) off the event loop and start the writer. A file that cannot be
        created does not raise: the recorder comes back failed (``error`` set, ``add`` a no-op), because a
        recording problem must never stop the call. Bad arguments do raise ValueError."""
        recorder = cls(path, sample_rate=sample_rate, flush_frames=flush_frames,
                       max_pending_batches=max_pending_batches)
        creating = asyncio.ensure_future(asyncio.to_thread(_WavFile.create, path, sample_rate))
        try:
            recorder._file = await asyncio.shield(creating)
        except OSError as exc:
            recorder._fail(exc)
        except asyncio.CancelledError:
            creating.add_done_callback(_close_unused)  # the thread goes on: do not leak its descriptor
            raise
        else:
            recorder._writer = asyncio.get_running_loop().create_task(
                recorder._write_loop(), name=f"recorder {path.name}")
        return recorder

    # --- the media tick's side: cheap, never blocking, never raising -------------------------------------------

    def add(self, caller: Samples, agent: Samples) -> None:
        """Record one 20 ms frame of each direction (a frame of another length is cut or padded with silence)."""
        if self._closed or self._error is not None:
            self.ignored += 1
            return
        if self._frames >= self._max_frames:
            self._ignore_past_limit()
            return
        row = self._batch[self._filled]
        if self._mute is not None:
            row.fill(0)
        else:
            try:
                self._put(row[:, 0], caller)
                self._put(row[:, 1], agent)
            except (TypeError, ValueError) as exc:  # not a 1-D sample array: a bug upstream, not the call's end
                row.fill(0)
                self._log_bad_frame(exc)
        self._filled += 1
        self._frames += 1
        if self._filled == self.flush_frames:
            self._hand_off()

    def _put(self, column: npt.NDArray[np.int16], samples: Samples) -> None:
        size = len(samples)
        if size == self._frame_samples:
            column[:] = samples
        else:
            kept = min(size, self._frame_samples)
            column[:kept] = samples[:kept]
            column[kept:] = 0

    def _log_bad_frame(self, exc: Exception) -> None:
        if not self._bad_frame_logged:
            self._bad_frame_logged = True
            log.error("recording %s: a frame that is not a sample array (%s) was recorded as silence",
                      self.path.name, type(exc).__name__)

    def _new_batch(self) -> _Batch:
        return np.empty((self.flush_frames, self._frame_samples, CHANNELS), dtype=np.int16)

    def _hand_off(self) -> None:
        """Give the filled batch to the writer, or, when the writer is too far behind, drop its audio (counted)
        and queue that many silent frames instead, so the file keeps the call's timeline."""
        frames = self._filled
        self._filled = 0
        if self._pending_batches >= self.max_pending_batches:
            if self.dropped == 0:
                log.warning("recording %s: the disk is not keeping up; dropping audio (silence in its place)",
                            self.path.name)
            self.dropped += frames
            last = self._pending[-1] if len(self._pending) > 1 else None  # never the head: it may be in flight
            if isinstance(last, int):
                self._pending[-1] = last + frames
            else:
                self._pending.append(frames)
            # the batch buffer is reused: nothing was handed over
        else:
            batch = self._batch if frames == self.flush_frames else self._batch[:frames]
            self._pending.append(batch)
            self._pending_batches += 1
            self._batch = self._new_batch()
        self._wake.set()

    def _ignore_past_limit(self) -> None:
        self.ignored += 1
        if not self._full_logged:
            self._full_logged = True
            log.warning("recording %s: reached the WAV size limit (%d ms); the rest of the call is not recorded",
                        self.path.name, self._frames * FRAME_MS)

    # --- muting ------------------------------------------------------------------------------------------------

    def mute(self, reason: str) -> None:
        """From the next frame on, both channels are recorded as silence (a caller saying or keying a PIN, a
        card number). Muting while muted keeps the first start and reason."""
        if self._mute is None and not self._closed:
            self._mute = (self.offset_ms(), reason)

    def unmute(self) -> None:
        """Record audio again from the next frame; the span is kept in ``muted_spans`` (unless it was empty)."""
        if self._mute is None:
            return
        start, reason = self._mute
        self._mute = None
        if self.offset_ms() > start:
            self._spans.append(MutedSpan(start, self.offset_ms(), reason))

    @property
    def muted(self) -> bool:
        return self._mute is not None

    @property
    def muted_spans(self) -> tuple[MutedSpan, ...]:
        """Every muted span so far; one still open is reported up to the current position."""
        if self._mute is not None and self.offset_ms() > self._mute[0]:
            return (*self._spans, MutedSpan(self._mute[0], self.offset_ms(), self._mute[1]))
        return tuple(self._spans)

    # --- position ----------------------------------------------------------------------------------------------

    @property
    def frames(self) -> int:
        """Frames in the recording so far (including those still on their way to the disk)."""
        return self._frames

    @property
    def duration_ms(self) -> int:
        return self._frames * FRAME_MS

    def offset_ms(self) -> int:
        """The current position in the recording: where the next frame will be, what a transcript turn is
        stamped with."""
        return self._frames * FRAME_MS

    @property
    def written_frames(self) -> int:
        """Frames already on disk and described by the header (what a crash now would leave)."""
        return self._written

    @property
    def error(self) -> str | None:
        return self._error

    # --- the writer --------------------------------------------------------------------------------------------

    async def _write_loop(self) -> None:
        """The one owner of the file: writes the queued items oldest first, one at a time, off the loop."""
        file = self._file
        assert file is not None
        while True:
            if not self._pending:
                if self._closed:
                    return
                self._wake.clear()
                await self._wake.wait()
                continue
            item = self._pending[0]
            try:
                await asyncio.to_thread(_write_item, file, item, self._frame_bytes)
            except Exception as exc:  # any failure ends the recording, never the call
                self._fail(exc)
                return
            self._pending.popleft()
            if not isinstance(item, int):
                self._pending_batches -= 1
            self._written += _item_frames(item)

    def _fail(self, exc: BaseException) -> None:
        """Enter the failed state (once): log the file name and the reason only, forget queued audio."""
        if self._error is not None:
            return
        self._error = _describe(exc)
        self._gone = isinstance(exc, _RemovedError)
        self._pending.clear()
        self._pending_batches = 0
        # A traceback only for what is not an OSError (a bug): an OSError's text carries the full path.
        log.error("recording %s failed: %s; the call goes on without recording", self.path.name, self._error,
                  exc_info=None if isinstance(exc, OSError) else exc)

    # --- the end -----------------------------------------------------------------------------------------------

    async def close(self) -> RecordingSummary:
        """Write what is left, finish the header, sync and close the file; idempotent (every call gets the same
        summary). Cancelling a caller of ``close`` does not interrupt the closing itself."""
        if self._closing is None:
            # Stop taking frames now, not when the closing task first runs: a tick in between is ignored.
            self.unmute()
            if self._filled and self._error is None:
                self._hand_off()
            self._closed = True
            self._wake.set()
            self._closing = asyncio.get_running_loop().create_task(self._finish(), name=f"close {self.path.name}")
        return await asyncio.shield(self._closing)

    async def _finish(self) -> RecordingSummary:
        if self._writer is not None:
            await self._writer
        sha256: str | None = None
        file, self._file = self._file, None
        if file is not None:
            if self._error is None:
                try:
                    sha256 = await asyncio.to_thread(file.finish)
                except OSError as exc:
                    self._fail(exc)
            else:
                await asyncio.to_thread(file.abandon)
        left = file is not None and not self._gone  # 0 bytes: no file was created, or it was removed
        size = HEADER_BYTES + self._written * self._frame_bytes if left else 0
        return RecordingSummary(
            path=self.path, duration_ms=self._written * FRAME_MS, frames=self._written, channels=CHANNELS,
            sample_rate=self.sample_rate, bytes=size,
            muted_spans=tuple(self._spans), sha256=sha256 if self._error is None else None, error=self._error,
            dropped=self.dropped, ignored=self.ignored,
        )
