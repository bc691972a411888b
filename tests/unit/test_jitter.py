"""JitterBuffer: order, loss, duplicates, late packets, wraparound, restarts, timestamp jumps, bursts, bounds."""

from __future__ import annotations

import random

import pytest

from asterisk_agent.media.frames import FRAME_SAMPLES, FRAME_SECONDS
from asterisk_agent.media.jitter import (
    Frame,
    FrameKind,
    JitterBuffer,
    JitterStats,
    PushResult,
    constant_silence,
)

SILENCE = b"\xff" * FRAME_SAMPLES
REAL, CONCEALED, QUIET = FrameKind.REAL, FrameKind.CONCEALED, FrameKind.SILENCE


def payload(seq: int) -> bytes:
    return seq.to_bytes(2, "big") * (FRAME_SAMPLES // 2)


def make(**options: object) -> JitterBuffer:
    return JitterBuffer(constant_silence(0xFF), **options)  # type: ignore[arg-type]


class Feed:
    """Drives a buffer like its owner: packets pushed as they arrive, one pop per 20 ms tick."""

    def __init__(self, jb: JitterBuffer, ts0: int = 5000) -> None:
        self.jb = jb
        self.tick = 0
        self.ts0 = ts0
        self.frames: list[Frame] = []

    def push(self, seq: int, *, ts: int | None = None, ssrc: int | None = None) -> PushResult:
        timestamp = (self.ts0 + seq * FRAME_SAMPLES) % (1 << 32) if ts is None else ts
        return self.jb.push(seq % 65536, timestamp, payload(seq % 65536), self.tick * FRAME_SECONDS, ssrc=ssrc)

    def pop(self, n: int = 1) -> list[Frame]:
        out = []
        for _ in range(n):
            out.append(self.jb.pop())
            self.tick += 1
        self.frames.extend(out)
        return out


def real_sequences(frames: list[Frame]) -> list[int]:
    return [f.sequence for f in frames if f.kind is REAL]  # type: ignore[misc]


def kinds(frames: list[Frame]) -> list[FrameKind]:
    return [f.kind for f in frames]


def check_invariants(jb: JitterBuffer, pops: int) -> None:
    s = jb.stats
    assert s.received == s.played + s.dropped + jb.buffered + jb.held
    assert pops == s.played + s.concealed + s.silence
    assert jb.buffered <= jb.capacity


def test_in_order_steady_stream_plays_after_the_depth() -> None:
    feed = Feed(make(depth=3))
    for seq in range(100, 120):
        assert feed.push(seq) is PushResult.BUFFERED
        feed.pop()
    assert kinds(feed.frames[:2]) == [QUIET, QUIET]  # the playout delay: two ticks, then 3 frames are buffered
    assert real_sequences(feed.frames) == list(range(100, 118))
    first = feed.frames[2]
    assert first.payload == payload(100) and first.timestamp == 5000 + 100 * FRAME_SAMPLES and first.is_real
    assert all(f.payload == SILENCE for f in feed.frames[:2])
    assert feed.jb.stats.as_dict() == {**JitterStats().as_dict(), "received": 20, "played": 18, "silence": 2}
    assert feed.jb.level == 2
    check_invariants(feed.jb, 20)


def test_reordering_within_the_depth_is_undone() -> None:
    feed = Feed(make(depth=3))
    order = [0, 2, 1, 3, 5, 4, 7, 6, 8, 10, 9, 11, 12, 14, 13, 15]
    for i, seq in enumerate(order):
        feed.push(seq)
        if i >= 1:
            feed.pop()
    feed.pop()
    assert real_sequences(feed.frames) == list(range(16))
    assert feed.jb.stats.concealed == 0 and feed.jb.stats.dropped == 0
    check_invariants(feed.jb, len(feed.frames))


def test_duplicates_are_dropped_whether_buffered_or_already_played() -> None:
    feed = Feed(make(depth=2))
    feed.push(1)
    assert feed.push(1) is PushResult.DUPLICATE  # still buffered
    feed.push(2)
    feed.push(3)
    feed.pop(2)  # plays 1, 2
    assert feed.push(1) is PushResult.DUPLICATE  # already played
    assert feed.push(3) is PushResult.DUPLICATE
    feed.push(4)
    feed.pop(2)
    assert real_sequences(feed.frames) == [1, 2, 3, 4]
    assert feed.jb.stats.dropped_duplicate == 3 and feed.jb.stats.dropped_late == 0
    check_invariants(feed.jb, 4)


def test_a_late_packet_is_concealed_then_dropped_when_it_arrives() -> None:
    feed = Feed(make(depth=3))
    for seq in range(3):
        feed.push(seq)
    feed.pop()  # 0
    feed.push(3)
    feed.push(4)  # 2 is here, 1 is late (not lost yet)
    feed.pop()  # 1
    feed.push(6)  # 5 delayed
    feed.pop(3)  # 2, 3, 4
    (concealed,) = feed.pop()
    assert concealed.kind is CONCEALED and concealed.sequence == 5 and concealed.payload == payload(4)
    assert feed.push(5) is PushResult.LATE
    feed.pop()
    assert real_sequences(feed.frames) == [0, 1, 2, 3, 4, 6]
    s = feed.jb.stats
    assert (s.dropped_late, s.concealed, s.played) == (1, 1, 6)
    check_invariants(feed.jb, 7)


def test_loss_inside_the_stream_repeats_with_attenuation_then_silence() -> None:
    calls: list[tuple[bytes, int]] = []

    def attenuate(frame: bytes, n: int) -> bytes:
        calls.append((frame, n))
        return bytes(b // (n + 1) for b in frame)

    feed = Feed(make(depth=8, conceal_frames=2, attenuate=attenuate))
    for seq in [*range(0, 3), *range(8, 12)]:  # 3..7 lost, later packets already buffered
        feed.push(seq)
    frames = feed.pop(12)
    assert kinds(frames) == [REAL] * 3 + [CONCEALED] * 5 + [REAL] * 4
    assert [f.sequence for f in frames] == list(range(12))
    last = payload(2)
    assert frames[3].payload == bytes(b // 2 for b in last)
    assert frames[4].payload == bytes(b // 3 for b in last)
    assert all(f.payload == SILENCE for f in frames[5:8])
    assert calls == [(last, 1), (last, 2)]
    assert feed.jb.stats.concealed == 5
    check_invariants(feed.jb, 12)


def test_underrun_conceals_then_goes_silent_and_resumes_at_the_same_delay() -> None:
    """A run of losses at the head (or a sender that pauses): N concealed frames, then silence, then rebuffer."""
    feed = Feed(make(depth=3, conceal_frames=3))
    for tick in range(30):
        if not 10 <= tick < 17:  # 10..16 lost
            feed.push(tick)
        feed.pop()
    frames = feed.frames
    assert kinds(frames[10:20]) == [REAL, REAL] + [CONCEALED] * 3 + [QUIET] * 4 + [REAL]
    assert all(f.payload == payload(9) and f.sequence is None for f in frames[12:15])  # repetition by default
    assert frames[19].sequence == 17  # 17, 18, 19 buffered: same 2-tick delay as at the start
    assert real_sequences(frames) == [*range(10), *range(17, 28)]
    s = feed.jb.stats
    assert (s.underruns, s.concealed, s.silence, s.dropped_late) == (1, 3, 6, 0)
    check_invariants(feed.jb, 30)


def test_sender_pause_with_contiguous_sequence_is_not_late() -> None:
    """Asterisk sends nothing while the other side is silent; the sequence continues where it stopped."""
    feed = Feed(make(depth=2))
    seq = 0
    for tick in range(200):
        if not 50 <= tick < 150:
            assert feed.push(seq) is PushResult.BUFFERED
            seq += 1
        feed.pop()
    assert real_sequences(feed.frames) == list(range(seq - 1))
    s = feed.jb.stats
    assert (s.dropped, s.concealed, s.underruns) == (0, 3, 1)


def test_wraparound_65535_to_0_with_reordering_across_it() -> None:
    feed = Feed(make(depth=3))
    order = [65532, 65533, 65535, 65534, 0, 2, 1, 3, 4, 5]
    for i, seq in enumerate(order):
        assert feed.push(seq) is PushResult.BUFFERED
        if i >= 2:
            feed.pop()
    feed.pop(2)
    assert real_sequences(feed.frames) == [65532, 65533, 65534, 65535, 0, 1, 2, 3, 4, 5]
    assert feed.jb.stats.dropped == 0 and feed.jb.stats.resyncs == 0
    assert feed.push(65535) is PushResult.DUPLICATE  # played before the wrap: recognised, not a jump
    check_invariants(feed.jb, 10)


def test_new_ssrc_resynchronises_at_once() -> None:
    feed = Feed(make(depth=2))
    for seq in range(1000, 1004):
        feed.push(seq, ssrc=111)
    feed.pop()  # plays 1000; 1001..1003 buffered
    assert feed.push(7, ssrc=222) is PushResult.RESYNC
    frames = feed.pop()
    assert frames[0].kind is CONCEALED  # rebuffering: conceals the gap like an underrun
    feed.push(8, ssrc=222)
    feed.push(9, ssrc=222)
    feed.pop(3)
    assert real_sequences(feed.frames) == [1000, 7, 8, 9]
    s = feed.jb.stats
    assert (s.resyncs, s.dropped_flushed, s.concealed, s.dropped_late) == (1, 3, 1, 0)
    check_invariants(feed.jb, 5)


def test_large_sequence_jump_resynchronises_when_confirmed_instead_of_concealing() -> None:
    feed = Feed(make(depth=2))
    for seq in range(10):
        feed.push(seq)
        feed.pop()
    assert feed.push(30000) is PushResult.PROBATION
    assert feed.jb.held == 1
    assert feed.push(30001) is PushResult.RESYNC
    feed.push(30002)
    feed.pop(4)
    assert real_sequences(feed.frames) == [*range(9), 30000, 30001, 30002]
    s = feed.jb.stats
    assert s.resyncs == 1 and s.concealed <= feed.jb.conceal_frames
    assert s.dropped_flushed == 1  # 9 was still buffered
    check_invariants(feed.jb, 14)


def test_one_stray_packet_far_away_does_not_resynchronise() -> None:
    feed = Feed(make(depth=2))
    for seq in range(5):
        feed.push(seq)
    assert feed.push(40000) is PushResult.PROBATION
    assert feed.push(5) is PushResult.BUFFERED
    assert feed.jb.held == 0
    feed.pop(6)
    assert real_sequences(feed.frames) == list(range(6))
    assert (feed.jb.stats.resyncs, feed.jb.stats.dropped_stray) == (0, 1)
    check_invariants(feed.jb, 6)


def test_a_restart_just_behind_the_cursor_resynchronises_after_a_run_of_late_packets() -> None:
    feed = Feed(make(depth=2, late_resync=5))
    for seq in range(100, 120):
        feed.push(seq)
        feed.pop()
    results = [feed.push(seq) for seq in range(90, 95)]  # a new stream (no SSRC given) 30 behind
    assert results == [PushResult.LATE] * 4 + [PushResult.RESYNC]
    for seq in range(95, 98):
        feed.push(seq)
    feed.pop(5)
    assert real_sequences(feed.frames)[-4:] == [94, 95, 96, 97]
    assert feed.jb.stats.resyncs == 1 and feed.jb.stats.dropped_late == 4


def test_timestamp_jumps_without_marker_do_not_break_order() -> None:
    feed = Feed(make(depth=2))
    stamps = {seq: 1000 + seq * 160 for seq in range(10)}
    stamps |= {seq: 9_000_000 + seq * 160 for seq in range(10, 20)}  # jump forward after a prompt
    stamps |= {seq: 500 + seq * 160 for seq in range(20, 30)}  # and backwards
    order = list(range(30))
    order[10], order[11] = order[11], order[10]  # reordered right at the jump
    for i, seq in enumerate(order):
        feed.push(seq, ts=stamps[seq])
        if i >= 1:
            feed.pop()
    feed.pop()
    real = [f for f in feed.frames if f.kind is REAL]
    assert [f.sequence for f in real] == list(range(30))
    assert [f.timestamp for f in real] == [stamps[s] for s in range(30)]
    assert feed.jb.stats.concealed == 0 and feed.jb.stats.resyncs == 0 and feed.jb.stats.dropped == 0


def test_a_burst_at_once_plays_in_order_and_the_delay_shrinks_back() -> None:
    feed = Feed(make(depth=3, shrink_slack=2, shrink_every=5))
    seq = 0
    for tick in range(100):
        if tick < 30 or tick >= 40:
            if tick == 40:  # a network hiccup: 10 ticks of nothing, then everything at once
                for _ in range(10):
                    feed.push(seq)
                    seq += 1
            feed.push(seq)
            seq += 1
        feed.pop()
    real = real_sequences(feed.frames)
    assert real == sorted(real) and len(set(real)) == len(real)
    s = feed.jb.stats
    assert s.dropped_skipped == 6  # level 11 after the burst, brought back to target + slack = 5
    assert feed.jb.level <= feed.jb.target + feed.jb.shrink_slack
    assert s.dropped_late == 0 and s.underruns == 1
    check_invariants(feed.jb, 100)


def test_a_burst_before_playout_plays_entirely_without_shrinking() -> None:
    feed = Feed(make(depth=3, shrink_every=0))
    for seq in range(20):
        feed.push(seq)
    feed.pop(20)
    assert real_sequences(feed.frames) == list(range(20))


def test_a_flood_cannot_grow_the_buffer() -> None:
    jb = make(depth=3, capacity=50)
    for seq in range(10_000):
        jb.push(seq % 65536, seq * 160, b"x", 0.0)
    assert jb.buffered == 50
    assert jb.stats.dropped_overflow == 10_000 - 50
    frames = [jb.pop() for _ in range(3)]
    assert [f.sequence for f in frames] == [9950, 9951, 9952]  # the newest are kept: the delay stays bounded

    rng = random.Random(7)
    for _ in range(20_000):  # garbage sequences while playing
        jb.push(rng.randrange(65536), rng.randrange(1 << 32), b"y", 1.0)
        if rng.random() < 0.05:
            jb.pop()
        assert jb.buffered <= jb.capacity and jb.held <= 1
    assert len(jb._recent) <= jb.capacity
    s = jb.stats
    assert s.received == s.played + s.dropped + jb.buffered + jb.held


def test_counters_are_exact() -> None:
    feed = Feed(make(depth=2, conceal_frames=1))
    for seq in [0, 1, 1, 2, 4, 3, 5]:  # a duplicate, a reorder
        feed.push(seq)
    feed.pop(4)  # 0, 1, 2, 3
    feed.push(7)  # 6 lost
    feed.push(8)
    feed.pop(3)  # 4, 5, 6 concealed (a later packet is here)
    assert feed.push(6) is PushResult.LATE
    assert feed.push(2) is PushResult.DUPLICATE  # of a frame already played
    feed.pop(4)  # 7, 8, underrun: concealed once (the run restarted with 7), then silence
    assert feed.push(20000) is PushResult.PROBATION
    assert feed.push(20001) is PushResult.RESYNC  # the jump confirmed; nothing was buffered to flush
    feed.pop(1)  # 20000: two frames buffered, the depth
    assert feed.push(20002, ssrc=5) is PushResult.BUFFERED  # the first SSRC seen is not a restart
    assert feed.push(1, ssrc=6) is PushResult.RESYNC  # a new one is: 20001 and 20002 flushed
    feed.pop(3)  # rebuffering: concealed once, silence, then 1 (it has waited the depth)
    assert kinds(feed.frames) == [REAL] * 6 + [CONCEALED] + [REAL] * 2 + [CONCEALED, QUIET] + [REAL] + [
        CONCEALED, QUIET, REAL]
    assert real_sequences(feed.frames) == [0, 1, 2, 3, 4, 5, 7, 8, 20000, 1]
    assert feed.jb.stats.as_dict() == {
        "received": 15,
        "played": 10,
        "concealed": 3,
        "silence": 2,
        "dropped_late": 1,
        "dropped_duplicate": 2,
        "dropped_overflow": 0,
        "dropped_skipped": 0,
        "dropped_flushed": 2,
        "dropped_stray": 0,
        "resyncs": 2,
        "underruns": 1,
    }
    check_invariants(feed.jb, 15)


def test_adaptive_depth_follows_the_jitter() -> None:
    steady = make(depth=2, adaptive=True, max_depth=8)
    jittery = make(depth=2, adaptive=True, max_depth=8)
    rng = random.Random(3)
    for seq in range(500):
        steady.push(seq, seq * 160, b"s", seq * FRAME_SECONDS + 0.0001 * rng.random())
        jittery.push(seq, seq * 160, b"j", seq * FRAME_SECONDS + 0.06 * rng.random())
        steady.pop()
        jittery.pop()
    assert steady.target == 2
    assert 4 <= jittery.target <= 8
    assert jittery.jitter > 0.01 > steady.jitter
    fixed = make(depth=2, max_depth=8)
    for seq in range(100):
        fixed.push(seq, seq * 160, b"f", seq * FRAME_SECONDS + 0.06 * rng.random())
    assert fixed.target == 2 and fixed.jitter > 0.01


def test_a_pause_is_not_counted_as_jitter() -> None:
    jb = make(depth=2, adaptive=True)
    for seq in range(100):
        arrival = seq * FRAME_SECONDS + (5.0 if seq >= 50 else 0.0)  # 5 s pause, sequence contiguous
        jb.push(seq, seq * 160, b"p", arrival)
    assert jb.jitter < 0.001 and jb.target == 2


def test_bad_arguments() -> None:
    jb = make()
    with pytest.raises(ValueError, match="sequence"):
        jb.push(65536, 0, b"", 0.0)
    with pytest.raises(ValueError, match="capacity"):
        make(depth=3, max_depth=10, capacity=8)
    with pytest.raises(ValueError):
        make(depth=-1)


def test_silence_before_anything_arrives() -> None:
    jb = JitterBuffer(constant_silence(0xD5, 160))
    frame = jb.pop()
    assert frame == Frame(FrameKind.SILENCE, b"\xd5" * 160, None, None)
    assert not jb.playing and jb.level == 0
