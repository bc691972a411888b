"""CallRecorder: two-channel WAV by content (tone per channel, click alignment), muting, crash-readable files,
idempotent close, failures that never reach the call, a stalled writer that drops instead of blocking, paths."""

from __future__ import annotations

import asyncio
import datetime as dt
import errno
import hashlib
import logging
import shutil
import stat
import struct
import threading
import time
import wave
from collections.abc import Iterator
from pathlib import Path

import numpy as np
import pytest
from blockbuster import blockbuster_ctx

from asterisk_agent.media import recorder as recorder_module
from asterisk_agent.media.frames import FRAME_SAMPLES, SAMPLE_RATE
from asterisk_agent.media.recorder import CallRecorder, MutedSpan, recording_path

STARTED = dt.datetime(2024, 5, 6, 10, 30)
CALLER_HZ, AGENT_HZ = 440, 1000


@pytest.fixture(autouse=True)
def no_blocking_calls() -> Iterator[None]:
    """Every test fails if the recorder makes a blocking call (file I/O, sleeps) on the event loop's thread."""
    with blockbuster_ctx(["asterisk_agent.media.recorder"]):
        yield


def tone(hz: float, frames: int, amplitude: int = 3000) -> np.ndarray:
    t = np.arange(frames * FRAME_SAMPLES) / SAMPLE_RATE
    return (amplitude * np.sin(2 * np.pi * hz * t)).astype(np.int16)


def frame(samples: np.ndarray, index: int) -> np.ndarray:
    return samples[index * FRAME_SAMPLES:(index + 1) * FRAME_SAMPLES]


def feed(recorder: CallRecorder, caller: np.ndarray, agent: np.ndarray, first: int, count: int) -> None:
    for index in range(first, first + count):
        recorder.add(frame(caller, index), frame(agent, index))


def read_wav(path: Path) -> tuple[wave._wave_params, np.ndarray]:
    """The file as ``wave`` reads it: its parameters and the samples as (n, 2)."""
    with wave.open(str(path), "rb") as wav:
        params = wav.getparams()
        data = np.frombuffer(wav.readframes(params.nframes), dtype="<i2")
    return params, data.reshape(-1, params.nchannels)


def peak_hz(samples: np.ndarray) -> float:
    spectrum = np.abs(np.fft.rfft(samples.astype(np.float64) * np.hanning(len(samples))))
    return float(np.fft.rfftfreq(len(samples), 1 / SAMPLE_RATE)[int(np.argmax(spectrum))])


async def wait_written(recorder: CallRecorder, frames: int) -> None:
    deadline = time.monotonic() + 2
    while recorder.written_frames < frames:
        assert time.monotonic() < deadline, f"only {recorder.written_frames} of {frames} frames written"
        await asyncio.sleep(0.002)


def mode(path: Path) -> int:
    return stat.S_IMODE(path.stat().st_mode)


# --- content -----------------------------------------------------------------------------------------------------


async def test_two_tones_on_their_own_channels_aligned(tmp_path: Path) -> None:
    path = recording_path(tmp_path, "acme", "call-1", STARTED)
    recorder = await CallRecorder.open(path)
    frames = 150  # 3 s
    caller, agent = tone(CALLER_HZ, frames), tone(AGENT_HZ, frames)
    click = 100 * FRAME_SAMPLES + 37
    caller[click] = agent[click] = 30000
    feed(recorder, caller, agent, 0, frames)
    assert (recorder.frames, recorder.duration_ms, recorder.offset_ms()) == (150, 3000, 3000)
    summary = await recorder.close()

    params, data = read_wav(path)
    assert (params.nchannels, params.sampwidth, params.framerate, params.nframes) == (2, 2, 8000, 24000)
    assert abs(peak_hz(data[:, 0]) - CALLER_HZ) < 5 and abs(peak_hz(data[:, 1]) - AGENT_HZ) < 5
    assert np.array_equal(data[:, 0], caller) and np.array_equal(data[:, 1], agent)
    assert np.flatnonzero(data[:, 0] > 20000).tolist() == [click] == np.flatnonzero(data[:, 1] > 20000).tolist()

    raw = path.read_bytes()
    riff, wave_size, fmt_tag, data_size = (*struct.unpack_from("<4sI", raw), struct.unpack_from("<H", raw, 20)[0],
                                           struct.unpack_from("<I", raw, 40)[0])
    assert (riff, wave_size, fmt_tag, data_size) == (b"RIFF", len(raw) - 8, 1, len(raw) - 44)
    assert summary.ok and summary.error is None
    assert (summary.path, summary.frames, summary.duration_ms, summary.channels, summary.sample_rate) == (
        path, 150, 3000, 2, 8000)
    assert summary.bytes == len(raw) == 44 + 150 * 640
    assert summary.sha256 == hashlib.sha256(raw).hexdigest()
    assert (summary.dropped, summary.ignored, summary.muted_spans) == (0, 0, ())
    assert mode(path) == 0o640
    assert [mode(folder) for folder in (path.parent, path.parents[1], path.parents[2], path.parents[3])] == [0o750] * 4
    assert path.relative_to(tmp_path).parts == ("acme", "2024", "05", "06", "call-1.wav")


async def test_muted_span_is_digital_silence_on_both_channels(tmp_path: Path, caplog: pytest.LogCaptureFixture
                                                              ) -> None:
    path = tmp_path / "muted.wav"
    recorder = await CallRecorder.open(path, flush_frames=20)
    caller, agent = tone(CALLER_HZ, 150), tone(AGENT_HZ, 150)
    feed(recorder, caller, agent, 0, 50)
    recorder.mute("pin")
    feed(recorder, caller, agent, 50, 25)
    recorder.mute("card")  # already muted: keeps the first start and reason
    assert recorder.muted and recorder.muted_spans == ((1000, 1500, "pin"),)  # open span, up to now
    feed(recorder, caller, agent, 75, 25)
    recorder.unmute()
    recorder.unmute()
    feed(recorder, caller, agent, 100, 25)
    recorder.mute("card")
    feed(recorder, caller, agent, 125, 25)  # still muted when the call ends
    summary = await recorder.close()

    assert summary.muted_spans == (MutedSpan(1000, 2000, "pin"), MutedSpan(2500, 3000, "card"))
    assert list(recorder.muted_spans) == list(summary.muted_spans) and not recorder.muted
    _, data = read_wav(path)
    for start, end, _reason in summary.muted_spans:
        span = data[start * 8:end * 8]
        assert not span.any(), "muted audio must be exact zeros on both channels"
    assert np.array_equal(data[:8000, 0], caller[:8000]) and np.array_equal(data[:8000, 1], agent[:8000])
    assert np.array_equal(data[16000:20000], np.column_stack([caller, agent])[16000:20000])
    assert "pin" not in caplog.text


async def test_empty_mute_leaves_no_span_and_mute_after_close_is_ignored(tmp_path: Path) -> None:
    recorder = await CallRecorder.open(tmp_path / "r.wav")
    recorder.mute("pin")
    recorder.unmute()
    summary = await recorder.close()
    recorder.mute("pin")
    assert summary.muted_spans == () and not recorder.muted
    assert (summary.frames, summary.bytes) == (0, 44)
    params, _ = read_wav(tmp_path / "r.wav")
    assert params.nframes == 0


async def test_a_file_left_without_close_is_readable_up_to_the_last_batch(tmp_path: Path) -> None:
    path = tmp_path / "crash.wav"
    recorder = await CallRecorder.open(path, flush_frames=10)
    caller, agent = tone(CALLER_HZ, 25), tone(AGENT_HZ, 25)
    feed(recorder, caller, agent, 0, 25)
    await wait_written(recorder, 20)
    await asyncio.sleep(0.01)
    assert recorder.written_frames == 20  # the last 5 frames wait for their batch
    params, data = read_wav(path)  # as a crash would leave it: no close
    assert params.nframes == 20 * FRAME_SAMPLES
    assert np.array_equal(data[:, 0], caller[:3200]) and np.array_equal(data[:, 1], agent[:3200])
    summary = await recorder.close()
    assert summary.frames == 25 and read_wav(path)[0].nframes == 25 * FRAME_SAMPLES


async def test_frames_of_another_length_are_cut_or_padded_and_garbage_is_silence(
        tmp_path: Path, caplog: pytest.LogCaptureFixture) -> None:
    recorder = await CallRecorder.open(tmp_path / "odd.wav")
    recorder.add(np.full(159, 7, dtype=np.int16), np.full(161, 9, dtype=np.int16))
    recorder.add(np.ones((2, 160), dtype=np.int16), np.ones(160, dtype=np.int16))  # not one frame: never raises
    recorder.add(np.ones((2, 160), dtype=np.int16), np.ones(160, dtype=np.int16))
    await recorder.close()
    _, data = read_wav(tmp_path / "odd.wav")
    assert data.shape == (480, 2)
    assert data[:159, 0].tolist() == [7] * 159 and data[159, 0] == 0 and (data[:160, 1] == 9).all()
    assert not data[160:].any()
    assert len(caplog.records) == 1 and "odd.wav" in caplog.text


# --- close ---------------------------------------------------------------------------------------------------------


async def test_close_is_idempotent_and_add_after_close_is_ignored(tmp_path: Path) -> None:
    path = tmp_path / "twice.wav"
    recorder = await CallRecorder.open(path)
    feed(recorder, tone(CALLER_HZ, 30), tone(AGENT_HZ, 30), 0, 30)
    first, second = await asyncio.gather(recorder.close(), recorder.close())
    before = path.read_bytes()
    recorder.add(tone(CALLER_HZ, 1), tone(AGENT_HZ, 1))
    recorder.add(tone(CALLER_HZ, 1), tone(AGENT_HZ, 1))
    third = await recorder.close()
    assert first == second == third and third.frames == 30
    assert (recorder.frames, recorder.ignored) == (30, 2)  # counted on the recorder; the summary stays fixed
    assert path.read_bytes() == before


async def test_a_tick_between_close_and_its_task_is_ignored(tmp_path: Path) -> None:
    recorder = await CallRecorder.open(tmp_path / "race.wav")
    feed(recorder, tone(CALLER_HZ, 3), tone(AGENT_HZ, 3), 0, 3)
    closing = asyncio.ensure_future(recorder.close())
    await asyncio.sleep(0)
    recorder.add(tone(CALLER_HZ, 1), tone(AGENT_HZ, 1))
    summary = await closing
    assert (summary.frames, summary.ignored) == (3, 1)


# --- failures ------------------------------------------------------------------------------------------------------


async def test_a_removed_folder_fails_the_recording_not_the_call(tmp_path: Path, caplog: pytest.LogCaptureFixture
                                                                 ) -> None:
    path = recording_path(tmp_path, "acme", "gone-1", STARTED)
    recorder = await CallRecorder.open(path, flush_frames=10)
    caller, agent = tone(CALLER_HZ, 60), tone(AGENT_HZ, 60)
    feed(recorder, caller, agent, 0, 10)
    await wait_written(recorder, 10)
    shutil.rmtree(tmp_path / "acme")
    with caplog.at_level(logging.WARNING, logger=recorder_module.__name__):
        feed(recorder, caller, agent, 10, 50)  # five more batches: one fails, the rest are never written
        summary = await recorder.close()
    recorder.add(frame(caller, 0), frame(agent, 0))
    assert summary.error is not None and "removed" in summary.error and not summary.ok
    assert summary.sha256 is None and summary.frames == 10 and summary.bytes == 0  # nothing left on disk
    assert recorder.error == summary.error and recorder.ignored > 0
    errors = [record for record in caplog.records if record.levelno >= logging.ERROR]
    assert len(errors) == 1 and "gone-1.wav" in errors[0].getMessage()
    assert str(tmp_path) not in caplog.text and "acme" not in caplog.text


async def test_a_write_error_keeps_the_file_valid_up_to_the_last_good_batch(
        tmp_path: Path, monkeypatch: pytest.MonkeyPatch, caplog: pytest.LogCaptureFixture) -> None:
    path = tmp_path / "full.wav"
    original = recorder_module._WavFile.append
    calls = 0

    def disk_full_after_one(self: recorder_module._WavFile, data: bytes) -> None:
        nonlocal calls
        calls += 1
        if calls > 1:
            raise OSError(errno.ENOSPC, "No space left on device", str(path))
        original(self, data)

    monkeypatch.setattr(recorder_module._WavFile, "append", disk_full_after_one)
    recorder = await CallRecorder.open(path, flush_frames=10)
    caller, agent = tone(CALLER_HZ, 40), tone(AGENT_HZ, 40)
    feed(recorder, caller, agent, 0, 40)
    summary = await recorder.close()
    assert summary.error == "No space left on device (ENOSPC)"
    assert (summary.frames, summary.bytes, summary.sha256) == (10, 44 + 10 * 640, None)
    params, data = read_wav(path)
    assert params.nframes == 1600 and np.array_equal(data[:, 0], caller[:1600])
    assert [record.levelno for record in caplog.records] == [logging.ERROR]
    assert str(path) not in caplog.text and "full.wav" in caplog.text


async def test_a_folder_that_cannot_be_made_gives_a_failed_recorder(tmp_path: Path,
                                                                    caplog: pytest.LogCaptureFixture) -> None:
    blocker = tmp_path / "acme"
    blocker.write_bytes(b"a file where the account folder should be")
    recorder = await CallRecorder.open(recording_path(tmp_path, "acme", "call-2", STARTED))
    feed(recorder, tone(CALLER_HZ, 60), tone(AGENT_HZ, 60), 0, 60)
    summary = await recorder.close()
    assert summary.error is not None and "ENOTDIR" in summary.error
    assert (summary.frames, summary.bytes, summary.sha256, summary.ignored) == (0, 0, None, 60)
    assert len(caplog.records) == 1 and "call-2.wav" in caplog.text and str(tmp_path) not in caplog.text


async def test_an_existing_recording_is_never_overwritten(tmp_path: Path) -> None:
    path = tmp_path / "same.wav"
    first = await CallRecorder.open(path)
    second = await CallRecorder.open(path)
    feed(first, tone(CALLER_HZ, 5), tone(AGENT_HZ, 5), 0, 5)
    feed(second, tone(AGENT_HZ, 5), tone(CALLER_HZ, 5), 0, 5)
    kept, refused = await first.close(), await second.close()
    assert kept.ok and kept.frames == 5
    assert refused.error is not None and "EEXIST" in refused.error
    assert hashlib.sha256(path.read_bytes()).hexdigest() == kept.sha256


async def test_an_open_cancelled_while_creating_closes_the_file_it_made(
        tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    entered, release = threading.Event(), threading.Event()
    create, abandon = recorder_module._WavFile.create, recorder_module._WavFile.abandon
    abandoned: list[recorder_module._WavFile] = []

    def slow_create(path: Path, sample_rate: int) -> recorder_module._WavFile:
        entered.set()
        release.wait(5)
        return create(path, sample_rate)

    def recording_abandon(self: recorder_module._WavFile) -> None:
        abandoned.append(self)
        abandon(self)

    monkeypatch.setattr(recorder_module._WavFile, "create", staticmethod(slow_create))
    monkeypatch.setattr(recorder_module._WavFile, "abandon", recording_abandon)
    opening = asyncio.ensure_future(CallRecorder.open(tmp_path / "cancelled.wav"))
    try:
        assert await asyncio.to_thread(entered.wait, 2)
        opening.cancel()
        with pytest.raises(asyncio.CancelledError):
            await opening
    finally:
        release.set()
    deadline = time.monotonic() + 2
    while not abandoned:
        assert time.monotonic() < deadline, "the descriptor of the cancelled open was never closed"
        await asyncio.sleep(0.002)
    assert read_wav(tmp_path / "cancelled.wav")[0].nframes == 0


# --- a slow disk ---------------------------------------------------------------------------------------------------


async def test_a_stalled_writer_drops_counted_frames_and_never_blocks_the_tick(
        tmp_path: Path, monkeypatch: pytest.MonkeyPatch, caplog: pytest.LogCaptureFixture) -> None:
    path = tmp_path / "slow.wav"
    entered, release = threading.Event(), threading.Event()
    original = recorder_module._WavFile.append

    def stalled(self: recorder_module._WavFile, data: bytes) -> None:
        entered.set()
        assert release.wait(5), "the test never released the writer"
        original(self, data)

    monkeypatch.setattr(recorder_module._WavFile, "append", stalled)
    recorder = await CallRecorder.open(path, flush_frames=5, max_pending_batches=2)
    caller, agent = tone(CALLER_HZ, 110), tone(AGENT_HZ, 110)
    slowest = 0.0
    try:
        for index in range(100):  # twenty batches, one tick at a time
            began = time.perf_counter()
            recorder.add(frame(caller, index), frame(agent, index))
            slowest = max(slowest, time.perf_counter() - began)
            await asyncio.sleep(0)
        assert await asyncio.to_thread(entered.wait, 2), "the writer never reached the disk"
        assert recorder.written_frames == 0 and slowest < 1.0  # a blocked tick would wait out the 5 s stall
        assert recorder.dropped == 90  # two batches held (one in the writer's hands), eighteen dropped
        assert recorder.frames == 100 and recorder.offset_ms() == 2000  # the timeline goes on
        assert len(recorder._pending) <= 3  # two batches and one run of silence: bounded
    finally:
        release.set()
    await wait_written(recorder, 100)
    feed(recorder, caller, agent, 100, 10)  # caught up: audio is kept again
    summary = await recorder.close()

    assert (summary.frames, summary.dropped) == (110, 90) and summary.ok
    _, data = read_wav(path)
    both = np.column_stack([caller, agent])
    assert np.array_equal(data[:1600], both[:1600])
    assert not data[1600:16000].any()  # dropped audio is silence, so later offsets stay true
    assert np.array_equal(data[16000:], both[16000:])
    warnings = [record for record in caplog.records if record.levelno == logging.WARNING]
    assert len(warnings) == 1 and "slow.wav" in warnings[0].getMessage()


async def test_the_wav_size_limit_stops_the_recording_with_a_correct_header(
        tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(recorder_module, "MAX_DATA_BYTES", 10 * 640 + 100)
    path = tmp_path / "long.wav"
    recorder = await CallRecorder.open(path, flush_frames=4)
    feed(recorder, tone(CALLER_HZ, 15), tone(AGENT_HZ, 15), 0, 15)
    summary = await recorder.close()
    assert (summary.frames, summary.ignored, recorder.frames) == (10, 5, 10)
    raw = path.read_bytes()
    assert struct.unpack_from("<I", raw, 4)[0] == len(raw) - 8 and struct.unpack_from("<I", raw, 40)[0] == 6400
    assert read_wav(path)[0].nframes == 1600


async def test_bad_arguments_are_refused(tmp_path: Path) -> None:
    with pytest.raises(ValueError, match="flush_frames"):
        await CallRecorder.open(tmp_path / "x.wav", flush_frames=0)
    with pytest.raises(ValueError, match="sample rate"):
        await CallRecorder.open(tmp_path / "x.wav", sample_rate=8001)
    assert not (tmp_path / "x.wav").exists()


async def test_wideband_frames(tmp_path: Path) -> None:
    recorder = await CallRecorder.open(tmp_path / "wide.wav", sample_rate=16000)
    recorder.add(np.ones(320, dtype=np.int16), np.full(320, 2, dtype=np.int16))
    summary = await recorder.close()
    params, data = read_wav(tmp_path / "wide.wav")
    assert (params.framerate, params.nframes, summary.duration_ms) == (16000, 320, 20)
    assert (data == [1, 2]).all()


# --- paths ---------------------------------------------------------------------------------------------------------


def test_recording_path_layout() -> None:
    root = Path("recordings")
    assert recording_path(root, "acme_2", "aa-ch-0f3A_9", STARTED) == root / "acme_2/2024/05/06/aa-ch-0f3A_9.wav"
    late_evening = dt.datetime(2024, 12, 31, 23, 30, tzinfo=dt.timezone(dt.timedelta(hours=-2)))
    assert recording_path(root, "acme", "c", late_evening) == root / "acme/2025/01/01/c.wav"


@pytest.mark.parametrize("bad", ["", "..", "../etc", "a/b", "a\\b", "a.b", "/abs", "a b", "caf\u00e9", "x\n",
                                 "a\x00", "x" * 129])
def test_recording_path_refuses_unsafe_names(bad: str) -> None:
    with pytest.raises(ValueError, match="recording path"):
        recording_path(Path("r"), bad, "call", STARTED)
    with pytest.raises(ValueError, match="recording path"):
        recording_path(Path("r"), "acme", bad, STARTED)
