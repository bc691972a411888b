"""The endpointer's rules on synthetic probability sequences (one probability per 20 ms frame), then end to end
over espeak-ng speech through the real detectors: two utterances give exactly two endpoints, each inside the
silence that follows it; line noise gives nothing; the agent's own echo never barges in, the caller does."""

from __future__ import annotations

from collections.abc import Callable, Iterable, Sequence
from dataclasses import replace

import numpy as np
import numpy.typing as npt
import pytest

from asterisk_agent.media.frames import FRAME_SAMPLES
from asterisk_agent.speech.endpointer import (
    BargeIn,
    Endpointer,
    EndpointerConfig,
    Event,
    SpeechDiscarded,
    SpeechEnded,
    SpeechStarted,
    State,
)
from asterisk_agent.speech.vad import SileroVad, VadConfig, VoiceDetector, frame_dbfs, make_detector
from tests.support.speech_samples import (
    concat,
    delay,
    frames,
    gain,
    mix,
    rms_dbfs,
    seconds,
    sentence,
    silence,
    white_noise,
)

# start 5 frames, end 10, min 8, max 50; echo guard 0.8 / 12 dB / 3 frames of tail
CONFIG = EndpointerConfig(
    threshold=0.5, stay_threshold=0.3, start_ms=100, end_ms=200, min_utterance_ms=160, max_utterance_ms=1000,
    echo_threshold=0.8, echo_margin_db=12.0, echo_tail_ms=60,
)
HI, MID, LO = 0.9, 0.4, 0.1  # speech, between the two thresholds, non-speech


def feed(endpointer: Endpointer, probabilities: Iterable[float], **kwargs: object) -> list[Event]:
    events: list[Event] = []
    for probability in probabilities:
        events.extend(endpointer.feed(probability, **kwargs))  # type: ignore[arg-type]
    return events


def seq(*runs: tuple[float, int]) -> list[float]:
    return [p for p, count in runs for _ in range(count)]


# --- start ----------------------------------------------------------------------------------------------------


def test_a_turn_starts_after_start_ms_of_consecutive_speech() -> None:
    ep = Endpointer(CONFIG)
    assert feed(ep, seq((LO, 3), (HI, 4))) == []
    assert ep.feed(HI) == (SpeechStarted(frame_index=7, start_index=3),)
    assert ep.state is State.SPEECH


def test_a_break_in_the_run_starts_the_count_again() -> None:
    ep = Endpointer(CONFIG)
    assert feed(ep, seq((HI, 4), (LO, 1), (HI, 4))) == []
    assert feed(ep, [HI]) == [SpeechStarted(9, 5)]


def test_the_threshold_itself_counts_as_speech_and_the_lower_one_does_not_start() -> None:
    assert feed(Endpointer(CONFIG), seq((0.5, 5))) == [SpeechStarted(4, 0)]
    assert feed(Endpointer(CONFIG), seq((MID, 50))) == []  # hysteresis works only inside a turn
    assert feed(Endpointer(CONFIG), seq((HI, 2), (MID, 1), (HI, 5))) == [SpeechStarted(7, 3)]


# --- end, hysteresis, lengths ---------------------------------------------------------------------------------


def test_the_endpoint_comes_after_end_ms_of_non_speech() -> None:
    ep = Endpointer(CONFIG)
    feed(ep, seq((HI, 20)))
    assert feed(ep, seq((LO, 9))) == []
    assert ep.feed(LO) == (SpeechEnded(frame_index=29, start_index=0, last_speech_index=19),)
    assert ep.state is State.IDLE
    assert SpeechEnded(29, 0, 19).frames == 20


def test_hysteresis_keeps_the_turn_through_frames_above_the_lower_threshold() -> None:
    ep = Endpointer(replace(CONFIG, max_utterance_ms=10_000))
    feed(ep, seq((HI, 10)))
    assert feed(ep, seq((MID, 30), (LO, 9), (MID, 1), (LO, 9))) == []  # every MID is still speech
    assert feed(ep, [LO]) == [SpeechEnded(59, 0, 49)]


def test_non_speech_must_be_consecutive_to_end_the_turn() -> None:
    ep = Endpointer(CONFIG)
    events = feed(ep, seq((HI, 10), (LO, 9), (HI, 1), (LO, 9), (HI, 1), (LO, 10)))
    assert events == [SpeechStarted(4, 0), SpeechEnded(39, 0, 29)]


def test_a_turn_shorter_than_the_minimum_is_discarded() -> None:
    ep = Endpointer(CONFIG)
    events = feed(ep, seq((HI, 7), (LO, 10)))  # starts at 5 frames, ends at 7 < 8
    assert events == [SpeechStarted(4, 0), SpeechDiscarded(16, 0, 6)]
    assert feed(Endpointer(CONFIG), seq((HI, 8), (LO, 10))) == [SpeechStarted(4, 0), SpeechEnded(17, 0, 7)]


def test_the_maximum_length_forces_an_endpoint_and_speech_goes_on_as_a_new_turn() -> None:
    ep = Endpointer(CONFIG)
    events = feed(ep, seq((HI, 60)))
    assert events == [SpeechStarted(4, 0), SpeechEnded(49, 0, 49, forced=True), SpeechStarted(54, 50)]
    assert feed(ep, seq((LO, 10))) == [SpeechEnded(69, 50, 59)]


def test_reset_forgets_the_turn() -> None:
    ep = Endpointer(CONFIG)
    feed(ep, seq((HI, 10)))
    ep.reset()
    assert (ep.state, ep.frame_index) == (State.IDLE, -1)
    assert feed(ep, seq((LO, 30))) == []


@pytest.mark.parametrize(
    "kwargs",
    [
        {"threshold": 0.3, "stay_threshold": 0.5},
        {"threshold": 1.5},
        {"stay_threshold": 0.0},
        {"echo_threshold": 0.4},
        {"start_ms": 0},
        {"end_ms": 10},
        {"min_utterance_ms": -1},
        {"max_utterance_ms": 50},
        {"echo_margin_db": -3.0},
    ],
)
def test_config_is_validated(kwargs: dict[str, float]) -> None:
    with pytest.raises(ValueError):
        EndpointerConfig(**kwargs)  # type: ignore[arg-type]


def test_durations_round_up_to_whole_frames() -> None:
    ep = Endpointer(EndpointerConfig(start_ms=90, min_utterance_ms=0))  # 4.5 frames: 5
    assert feed(ep, seq((HI, 4))) == []
    assert feed(ep, [HI]) == [SpeechStarted(4, 0)]


# --- barge-in and the echo guard ------------------------------------------------------------------------------


def test_barge_in_only_when_the_turn_starts_while_the_agent_speaks() -> None:
    assert feed(Endpointer(CONFIG), seq((HI, 5)), agent_speaking=True) == [SpeechStarted(4, 0), BargeIn(4, 0)]
    assert feed(Endpointer(CONFIG), seq((HI, 5))) == [SpeechStarted(4, 0)]
    ep = Endpointer(CONFIG)
    feed(ep, seq((HI, 5)))  # the caller was first: the agent starting now is no barge-in
    assert feed(ep, seq((HI, 20)), agent_speaking=True) == []


def test_while_the_agent_speaks_a_turn_needs_the_echo_threshold() -> None:
    ep = Endpointer(CONFIG)
    assert feed(ep, seq((0.7, 50)), agent_speaking=True) == []
    assert feed(ep, seq((0.85, 5)), agent_speaking=True) == [SpeechStarted(54, 50), BargeIn(54, 50)]


def test_while_the_agent_speaks_a_caller_far_below_its_level_is_echo() -> None:
    ep = Endpointer(CONFIG)
    agent = {"agent_speaking": True, "agent_energy_db": -20.0}
    assert feed(ep, seq((HI, 50)), energy_db=-40.0, **agent) == []  # 20 dB below: echo
    assert feed(ep, seq((HI, 5)), energy_db=-32.0, **agent) == [SpeechStarted(54, 50), BargeIn(54, 50)]


def test_the_echo_reference_is_the_loudest_agent_frame_of_the_tail() -> None:
    ep = Endpointer(CONFIG)  # tail: 3 frames
    ep.feed(LO, agent_speaking=True, agent_energy_db=-10.0)
    quiet_agent = {"agent_speaking": True, "agent_energy_db": -40.0}
    assert feed(ep, seq((HI, 2)), energy_db=-30.0, **quiet_agent) == []  # -10 is still within the tail
    # from frame 3 the loudest of the last 3 frames is -40: -30 passes, and the run starts there
    assert feed(ep, seq((HI, 4)), energy_db=-30.0, **quiet_agent) == []
    assert feed(ep, [HI], energy_db=-30.0, **quiet_agent) == [SpeechStarted(7, 3), BargeIn(7, 3)]


def test_the_echo_guard_lasts_the_tail_after_the_agent_stops() -> None:
    ep = Endpointer(CONFIG)
    ep.feed(LO, agent_speaking=True, agent_energy_db=-20.0)
    assert ep.echo_guarded
    events = feed(ep, seq((0.7, 10)), energy_db=-20.0)  # guarded for 3 more frames, then a plain start
    assert events == [SpeechStarted(8, 4)]  # no barge-in: the agent had stopped
    assert not ep.echo_guarded


def test_without_the_echo_guard_the_plain_rules_apply_while_the_agent_speaks() -> None:
    ep = Endpointer(EndpointerConfig(echo_threshold=None, echo_margin_db=None))
    events = feed(ep, seq((0.6, 5)), agent_speaking=True, energy_db=-60.0, agent_energy_db=-10.0)
    assert events == [SpeechStarted(4, 0), BargeIn(4, 0)]


def test_the_level_rule_needs_both_levels() -> None:
    ep = Endpointer(CONFIG)
    assert feed(ep, seq((HI, 5)), agent_speaking=True, energy_db=-60.0) == [SpeechStarted(4, 0), BargeIn(4, 0)]


# --- end to end over espeak-ng speech -------------------------------------------------------------------------

GAP_S = 1.5
ENGINES: dict[str, Callable[[], VoiceDetector]] = {
    "silero": SileroVad,
    "cascade": lambda: make_detector(VadConfig(engine="cascade")),
}


def run(
    detector: VoiceDetector,
    caller: npt.NDArray[np.int16],
    agent: npt.NDArray[np.int16] | None = None,
    config: EndpointerConfig | None = None,
) -> list[Event]:
    """The caller's audio through ``detector`` and an endpointer, the agent speaking ``agent`` meanwhile."""
    endpointer = Endpointer(config)
    agent_frames: Sequence[npt.NDArray[np.int16]] = list(frames(agent)) if agent is not None else []
    events: list[Event] = []
    try:
        for index, frame in enumerate(frames(caller)):
            said = agent_frames[index] if index < len(agent_frames) else None
            events.extend(
                endpointer.feed(
                    detector.probability(frame),
                    agent_speaking=said is not None,
                    energy_db=frame_dbfs(frame),
                    agent_energy_db=frame_dbfs(said) if said is not None else None,
                )
            )
    finally:
        detector.close()
    return events


def frame_of(samples: int) -> int:
    return samples // FRAME_SAMPLES


@pytest.mark.parametrize("engine", ENGINES)
@pytest.mark.parametrize("snr_db", [None, 10.0])
def test_two_utterances_give_two_endpoints_inside_the_silence_after_each(engine: str, snr_db: float | None) -> None:
    first, second = sentence(0), sentence(1)
    audio = concat(first, silence(GAP_S), second, silence(GAP_S))
    if snr_db is not None:  # line noise throughout, ``snr_db`` below the speech
        audio = mix(audio, white_noise(seconds(audio), rms_dbfs(concat(first, second)) - snr_db, seed=7))
    events = run(ENGINES[engine](), audio)
    ended = [event for event in events if isinstance(event, SpeechEnded)]
    started = [event for event in events if isinstance(event, SpeechStarted)]
    assert len(ended) == 2, events
    assert len(started) == 2, events
    assert not any(isinstance(event, SpeechDiscarded | BargeIn) for event in events)
    gap = frame_of(round(GAP_S * 8000))
    first_end, second_start = frame_of(len(first)), frame_of(len(first)) + gap
    second_end = second_start + frame_of(len(second))
    assert first_end < ended[0].frame_index < second_start
    assert second_end < ended[1].frame_index < second_end + gap
    assert abs(ended[0].start_index - 0) <= 5 and abs(ended[1].start_index - second_start) <= 5  # within 100 ms
    assert ended[0].last_speech_index >= first_end - 5 and ended[1].last_speech_index >= second_end - 5


@pytest.mark.parametrize("engine", ENGINES)
@pytest.mark.parametrize("level_dbfs", [-45.0, -35.0, -25.0])
def test_ten_seconds_of_line_noise_give_no_turn(engine: str, level_dbfs: float) -> None:
    assert run(ENGINES[engine](), white_noise(10, level_dbfs, seed=11)) == []


def agent_and_echo(echo_loss_db: float = 20.0) -> tuple[npt.NDArray[np.int16], npt.NDArray[np.int16]]:
    """The agent's reply (two sentences) and what comes back on the caller's side: its echo, ``echo_loss_db``
    down and 60 ms late, over quiet line noise."""
    agent = concat(sentence(2), sentence(0))
    echo = delay(gain(agent, -echo_loss_db), 0.06)
    return agent, mix(echo, white_noise(seconds(echo), -55, seed=13))


@pytest.mark.parametrize("engine", ENGINES)
def test_the_agents_own_echo_does_not_barge_in(engine: str) -> None:
    agent, caller = agent_and_echo()
    assert run(ENGINES[engine](), caller, agent) == []
    # the guard is what holds it back: without it the echo barges in
    unguarded = EndpointerConfig(echo_threshold=None, echo_margin_db=None)
    assert any(isinstance(event, BargeIn) for event in run(ENGINES[engine](), caller, agent, unguarded))


@pytest.mark.parametrize("engine", ENGINES)
def test_the_caller_talking_over_the_agent_barges_in(engine: str) -> None:
    agent, echo = agent_and_echo()
    onset_s = 2.0
    caller = concat(mix(echo, delay(sentence(1), onset_s)), silence(1))
    events = run(ENGINES[engine](), caller, agent)
    barge = [event for event in events if isinstance(event, BargeIn)]
    assert len(barge) == 1, events
    onset = frame_of(round(onset_s * 8000))
    assert onset <= barge[0].frame_index <= onset + 15  # within 300 ms of the caller's first word
    assert sum(isinstance(event, SpeechEnded) for event in events) == 1


def test_a_pause_inside_a_turn_gives_an_early_look_once_then_the_endpoint_or_more_speech() -> None:
    from asterisk_agent.speech.endpointer import SpeechPaused

    ep = Endpointer(EndpointerConfig(start_ms=40, end_ms=200, pause_ms=100, min_utterance_ms=0))
    events = [e for p in [0.9] * 10 + [0.0] * 5 for e in ep.feed(p)]
    assert [type(e).__name__ for e in events] == ["SpeechStarted", "SpeechPaused"]
    paused = events[-1]
    assert isinstance(paused, SpeechPaused) and (paused.start_index, paused.last_speech_index) == (0, 9)
    assert paused.frame_index == 14  # five silent frames: 100 ms
    # The caller goes on: no endpoint for that pause; the next pause gives another look, then the endpoint.
    events = [e for p in [0.9] * 5 + [0.0] * 10 for e in ep.feed(p)]
    assert [type(e).__name__ for e in events] == ["SpeechPaused", "SpeechEnded"]
    assert events[0].last_speech_index == events[1].last_speech_index == 19


def test_pause_ms_must_be_below_end_ms() -> None:
    with pytest.raises(ValueError, match="pause_ms"):
        EndpointerConfig(end_ms=200, pause_ms=200)
    assert EndpointerConfig(pause_ms=0).pause_ms == 0
