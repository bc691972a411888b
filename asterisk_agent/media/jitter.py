"""A jitter buffer for 20 ms audio frames: pure code, no I/O, no asyncio, no clock of its own.

The owner pushes every RTP packet it receives as plain values (``push(sequence, timestamp, payload, arrival)``)
and calls ``pop()`` exactly once per 20 ms tick; each pop returns one :class:`Frame`, whose ``kind`` says what
it is:

- ``REAL``: the next packet in sequence order.
- ``CONCEALED``: a frame that should have been there and is not. A packet lost inside the stream (a later one
  is already buffered) is always CONCEALED, with the frame's 16-bit ``sequence``; an underrun while playing
  (nothing buffered: loss at the head, or the sender paused) is CONCEALED, without a sequence, for the first
  ``conceal_frames`` ticks only. The payload repeats the last real frame for up to ``conceal_frames``
  consecutive frames (through the optional ``attenuate`` callback), then is the owner's silence.
- ``SILENCE``: nothing to play: before playout starts, and after an underrun that lasted longer than
  ``conceal_frames`` (a caller who stops talking is not counted as loss for ever).

Design choices:

- Ordered by sequence only, never by timestamp: Asterisk 22 passes timestamps through from upstream and jumps
  them after a prompt without the marker bit. Timestamps are carried to the frame, nothing more.
- Sequences are unwrapped to a 64-bit-like extended counter, so 65535 -> 0 is just the next frame.
- Playout starts (and restarts after an underrun) once the buffered span reaches the target depth, or after the
  first buffered packet has waited that many ticks; ``pop()`` counts ticks, so no clock is needed. While the
  buffer is empty the play cursor is held: a sender that pauses (Asterisk sends nothing while the other side
  is silent) resumes where it stopped, and packets lost during an outage are skipped on restart instead of being
  concealed one by one after it.
- Concealment is by repetition by default: the payload is opaque (ulaw, alaw, L16), so the buffer cannot scale
  samples itself. ``attenuate(payload, n)`` (n = 1 for the first concealed frame of a run) lets the owner fade
  it; after ``conceal_frames`` it plays the owner's ``silence()`` bytes (ulaw 0xFF, alaw 0xD5, L16 zeros; see
  :func:`constant_silence`).
- A stream restart resynchronises: a new SSRC at once; a sequence jump beyond ``resync_threshold`` frames once
  a second packet near the first confirms it (one stray packet cannot throw away the buffer); and a run of
  ``late_resync`` consecutive packets older than the play cursor (a restart that landed just behind it).
  Buffered frames of the old stream are flushed (counted), then playout restarts after the target depth.
- Memory is bounded: at most ``capacity`` frames between the play cursor and the newest packet; a newer packet
  pushes the oldest out (counted as overflow), so a flood far ahead can neither grow the buffer nor the delay.
- Latency is held near the target: when more than ``target + shrink_slack`` frames stay buffered (a burst
  after a network hiccup), one frame is skipped every ``shrink_every`` ticks until the level is back
  (``shrink_every=0`` turns it off).
- ``adaptive=True`` moves the target between ``depth`` and ``max_depth`` from an interarrival jitter estimate
  (RFC 3550 style, in arrival order, against the sequence grid rather than the timestamps); fixed otherwise.
  The estimate is kept in both modes (``jitter`` in seconds) for metrics.

Invariant, checked by the tests: ``received == played + dropped + buffered + held`` (``held`` is the one packet
kept on probation after a jump) and ``pops == played + concealed + silence``.
"""

from __future__ import annotations

import enum
import math
from collections.abc import Callable
from dataclasses import dataclass, fields

from asterisk_agent.media.frames import FRAME_SAMPLES, FRAME_SECONDS

_SEQ_MOD = 1 << 16
_HALF = 1 << 15
_PROBE_WINDOW = 4  # a jump is confirmed by a second packet within this many sequence numbers of the first
_JITTER_GAIN = 1 / 16  # RFC 3550 interarrival jitter smoothing
_JITTER_FRAMES = 4.0  # adaptive target covers about 4x the mean jitter


class FrameKind(enum.Enum):
    REAL = "real"
    CONCEALED = "concealed"
    SILENCE = "silence"


@dataclass(frozen=True, slots=True)
class Frame:
    """One 20 ms frame out of the buffer."""

    kind: FrameKind
    payload: bytes
    sequence: int | None = None  # the packet's 16-bit sequence (REAL, and CONCEALED for a known lost packet)
    timestamp: int | None = None  # the packet's RTP timestamp (REAL only)

    @property
    def is_real(self) -> bool:
        return self.kind is FrameKind.REAL


class PushResult(enum.Enum):
    BUFFERED = "buffered"
    DUPLICATE = "duplicate"  # already buffered or already played: dropped
    LATE = "late"  # its turn has passed (concealed or skipped): dropped
    OVERFLOW = "overflow"  # older than the window allows before playout: dropped
    PROBATION = "probation"  # far from the stream: held until a second packet confirms a restart
    RESYNC = "resync"  # the stream restarted (new SSRC or confirmed jump): buffer flushed, packet buffered


@dataclass(slots=True)
class JitterStats:
    """Counters for metrics; every packet pushed ends in exactly one of played / dropped_* / buffered / held."""

    received: int = 0
    played: int = 0
    concealed: int = 0
    silence: int = 0
    dropped_late: int = 0
    dropped_duplicate: int = 0
    dropped_overflow: int = 0  # pushed out of the window by newer packets (bounded memory)
    dropped_skipped: int = 0  # real frames skipped to bring the delay back to the target
    dropped_flushed: int = 0  # buffered frames of a stream that restarted
    dropped_stray: int = 0  # a packet far from the stream that no second packet confirmed
    resyncs: int = 0
    underruns: int = 0

    @property
    def dropped(self) -> int:
        return (self.dropped_late + self.dropped_duplicate + self.dropped_overflow + self.dropped_skipped
                + self.dropped_flushed + self.dropped_stray)

    def as_dict(self) -> dict[str, int]:
        return {f.name: getattr(self, f.name) for f in fields(self)}


def constant_silence(byte: int, size: int = FRAME_SAMPLES) -> Callable[[], bytes]:
    """A silence factory returning one frame of ``byte`` (ulaw 0xFF, alaw 0xD5; L16 is 0x00 with size 320)."""
    frame = bytes([byte]) * size
    return lambda: frame


def _signed16(delta: int) -> int:
    return ((delta + _HALF) % _SEQ_MOD) - _HALF


class JitterBuffer:
    """Reorders, de-duplicates and paces incoming 20 ms frames; see the module docstring for the behaviour."""

    def __init__(
        self,
        silence: Callable[[], bytes],
        *,
        depth: int = 3,
        adaptive: bool = False,
        max_depth: int = 10,
        capacity: int = 50,
        conceal_frames: int = 3,
        attenuate: Callable[[bytes, int], bytes] | None = None,
        resync_threshold: int = 50,
        late_resync: int = 10,
        shrink_slack: int = 2,
        shrink_every: int = 5,
    ) -> None:
        if depth < 0 or conceal_frames < 0 or shrink_slack < 0 or shrink_every < 0:
            raise ValueError("depth, conceal_frames, shrink_slack and shrink_every must not be negative")
        max_depth = max(max_depth, depth)
        if capacity <= max_depth + shrink_slack:
            raise ValueError(f"capacity ({capacity}) must exceed max_depth + shrink_slack ({max_depth + shrink_slack})")
        if resync_threshold < 1 or late_resync < 1:
            raise ValueError("resync_threshold and late_resync must be at least 1")
        self._silence = silence
        self.depth = depth
        self.adaptive = adaptive
        self.max_depth = max_depth
        self.capacity = capacity
        self.conceal_frames = conceal_frames
        self._attenuate = attenuate
        self.resync_threshold = resync_threshold
        self.late_resync = late_resync
        self.shrink_slack = shrink_slack
        self.shrink_every = shrink_every
        self.stats = JitterStats()

        # extended sequence -> (timestamp, payload); every key is >= _next once _next is set
        self._slots: dict[int, tuple[int, bytes]] = {}
        self._highest: int | None = None  # highest extended sequence accepted: the unwrap reference
        self._next: int | None = None  # extended sequence of the next frame to play; older packets are late
        self._playing = False
        self._waited = 0  # pops while buffering with something buffered
        self._ssrc: int | None = None
        self._probe: tuple[int, int, bytes, float] | None = None  # held packet after a jump
        self._recent: dict[int, None] = {}  # extended sequences recently played (tells duplicate from late)
        self._bad_run = 0  # consecutive late/duplicate pushes
        self._over_ticks = 0  # consecutive pops with the level above target + slack
        self._last_payload: bytes | None = None
        self._conceal_run = 0
        self._prev_transit: float | None = None
        self._jitter = 0.0

    # ---- state for metrics -------------------------------------------------------------------------------------

    @property
    def buffered(self) -> int:
        """Packets waiting to be played."""
        return len(self._slots)

    @property
    def held(self) -> int:
        """1 while a packet far from the stream waits for confirmation of a restart, else 0."""
        return 0 if self._probe is None else 1

    @property
    def playing(self) -> bool:
        return self._playing

    @property
    def jitter(self) -> float:
        """Interarrival jitter estimate, in seconds."""
        return self._jitter

    @property
    def target(self) -> int:
        """The playout delay aimed at, in frames: ``depth``, or adapted to the jitter between depth and max_depth."""
        if not self.adaptive:
            return self.depth
        wanted = math.ceil(_JITTER_FRAMES * self._jitter / FRAME_SECONDS - 1e-9) + 1
        return min(self.max_depth, max(self.depth, wanted))

    @property
    def level(self) -> int:
        """Frames between the play cursor and the newest packet (the current delay), 0 when not playing."""
        if not self._playing or self._highest is None or self._next is None:
            return 0
        return max(0, self._highest - self._next + 1)

    # ---- input ---------------------------------------------------------------------------------------------------

    def push(self, sequence: int, timestamp: int, payload: bytes, arrival: float, *,
             ssrc: int | None = None) -> PushResult:
        """Add one received packet. ``arrival`` is the receive time in seconds on any monotonic clock."""
        if not 0 <= sequence < _SEQ_MOD:
            raise ValueError(f"RTP sequence out of range: {sequence}")
        self.stats.received += 1
        if ssrc is not None and ssrc != self._ssrc:
            known = self._ssrc is not None
            self._ssrc = ssrc
            if known:
                if self._probe is not None:
                    self.stats.dropped_stray += 1
                    self._probe = None
                self._resync()
                self._accept(sequence, timestamp, payload, arrival)
                return PushResult.RESYNC
        if self._highest is None:
            self._accept(sequence, timestamp, payload, arrival)
            return PushResult.BUFFERED

        ext = self._highest + _signed16(sequence - self._highest)
        if abs(ext - self._highest) > self.resync_threshold:
            return self._jump(sequence, timestamp, payload, arrival)

        if ext in self._slots:
            self.stats.dropped_duplicate += 1
            return PushResult.DUPLICATE
        if self._next is not None and ext < self._next:
            self._bad_run += 1
            if self._bad_run >= self.late_resync:  # only old packets for a while: restarted behind the cursor
                self._resync()
                self._accept(sequence, timestamp, payload, arrival)
                return PushResult.RESYNC
            if ext in self._recent:
                self.stats.dropped_duplicate += 1
                return PushResult.DUPLICATE
            self.stats.dropped_late += 1
            return PushResult.LATE

        lowest = self._next if self._next is not None else min(self._slots, default=ext)
        if max(ext, self._highest) - min(ext, lowest) + 1 > self.capacity:
            cut = max(ext, self._highest) - self.capacity + 1
            if ext < cut:  # only before playout, when nothing bounds lateness yet
                self.stats.dropped_overflow += 1
                return PushResult.OVERFLOW
            self._drop_below(cut)
        if self._probe is not None:  # an in-stream packet: the held one was a stray
            self.stats.dropped_stray += 1
            self._probe = None
        self._accept(ext, timestamp, payload, arrival)
        return PushResult.BUFFERED

    def _jump(self, sequence: int, timestamp: int, payload: bytes, arrival: float) -> PushResult:
        probe = self._probe
        if probe is not None:
            distance = abs(_signed16(sequence - probe[0]))
            if distance == 0:
                self.stats.dropped_duplicate += 1
                return PushResult.DUPLICATE
            if distance <= _PROBE_WINDOW:  # a second packet of the new stream: restart on it
                self._probe = None
                self._resync()
                self._accept(probe[0], probe[1], probe[2], probe[3])
                ext = probe[0] + _signed16(sequence - probe[0])
                self._accept(ext, timestamp, payload, arrival)
                return PushResult.RESYNC
            self.stats.dropped_stray += 1
        self._probe = (sequence, timestamp, payload, arrival)
        return PushResult.PROBATION

    def _accept(self, ext: int, timestamp: int, payload: bytes, arrival: float) -> None:
        self._slots[ext] = (timestamp, payload)
        if self._highest is None or ext > self._highest:
            self._highest = ext
        self._bad_run = 0
        transit = arrival - ext * FRAME_SECONDS
        if self._prev_transit is not None:
            step = abs(transit - self._prev_transit)
            if step <= self.max_depth * FRAME_SECONDS:  # larger: a pause or a discontinuity, not jitter
                self._jitter += (step - self._jitter) * _JITTER_GAIN
        self._prev_transit = transit

    def _drop_below(self, cut: int) -> None:
        for ext in [e for e in self._slots if e < cut]:
            del self._slots[ext]
            self.stats.dropped_overflow += 1
        if self._next is not None and self._next < cut:
            self._next = cut

    def _resync(self) -> None:
        self.stats.resyncs += 1
        self.stats.dropped_flushed += len(self._slots)
        self._slots.clear()
        self._highest = None
        self._next = None
        self._playing = False
        self._waited = 0
        self._recent.clear()
        self._bad_run = 0
        self._over_ticks = 0
        self._prev_transit = None

    # ---- output --------------------------------------------------------------------------------------------------

    def pop(self) -> Frame:
        """The frame for this tick; call exactly once per 20 ms."""
        if not self._playing:
            if not self._slots or not self._ready():
                if self._slots:
                    self._waited += 1
                return self._fill(None)
            self._playing = True
            self._waited = 0
            self._over_ticks = 0
            self._next = min(self._slots)  # never below a held cursor: older packets were refused as late
        assert self._next is not None
        self._shrink()
        ext = self._next
        item = self._slots.pop(ext, None)
        if item is not None:
            self._next = ext + 1
            self._remember(ext)
            self.stats.played += 1
            self._conceal_run = 0
            self._last_payload = item[1]
            return Frame(FrameKind.REAL, item[1], ext % _SEQ_MOD, item[0])
        if self._slots:  # a later packet is here: this one is lost
            self._next = ext + 1
            return self._fill(ext % _SEQ_MOD)
        self._playing = False  # underrun: hold the cursor, rebuffer to the target
        self.stats.underruns += 1
        return self._fill(None)

    def _ready(self) -> bool:
        target = max(self.target, 1)
        assert self._highest is not None
        return self._highest - min(self._slots) + 1 >= target or self._waited >= target

    def _shrink(self) -> None:
        assert self._next is not None and self._highest is not None
        if self.shrink_every == 0 or self._highest - self._next + 1 <= self.target + self.shrink_slack:
            self._over_ticks = 0
            return
        self._over_ticks += 1
        if self._over_ticks < self.shrink_every:
            return
        self._over_ticks = 0
        if self._slots.pop(self._next, None) is not None:
            self.stats.dropped_skipped += 1
        self._next += 1

    def _remember(self, ext: int) -> None:
        self._recent[ext] = None
        if len(self._recent) > self.capacity:
            del self._recent[next(iter(self._recent))]

    def _fill(self, sequence: int | None) -> Frame:
        """A concealed frame (known loss, or the start of an underrun) or silence."""
        lost = sequence is not None
        if self._last_payload is not None and self._conceal_run < self.conceal_frames:
            self._conceal_run += 1
            payload = self._last_payload
            if self._attenuate is not None:
                payload = self._attenuate(payload, self._conceal_run)
            self.stats.concealed += 1
            return Frame(FrameKind.CONCEALED, payload, sequence)
        if lost:
            self.stats.concealed += 1
            return Frame(FrameKind.CONCEALED, self._silence(), sequence)
        self.stats.silence += 1
        return Frame(FrameKind.SILENCE, self._silence())
