"""One call's turn taking: voice activity on every caller frame of the media leg, and the endpointer's
decisions (speech started, utterance ended, barge-in) with the frame index, which is also the offset into the
recording tap (20 ms per frame)."""

from __future__ import annotations

import numpy as np

from asterisk_agent.media.leg import Samples
from asterisk_agent.speech.endpointer import Endpointer, EndpointerConfig, Event
from asterisk_agent.speech.vad import VadConfig, frame_dbfs, make_detector


class TurnDetector:
    def __init__(self, vad: VadConfig, endpointer: EndpointerConfig) -> None:
        self._detector = make_detector(vad)
        self.endpointer = Endpointer(endpointer)

    def feed(self, heard: Samples, said: Samples) -> tuple[Event, ...]:
        """One tick: the caller's frame and the agent's frame (all zeros when the agent sent nothing)."""
        agent_speaking = bool(np.any(said))
        return self.endpointer.feed(
            self._detector.probability(heard),
            agent_speaking=agent_speaking,
            energy_db=frame_dbfs(heard),
            agent_energy_db=frame_dbfs(said) if agent_speaking else None,
        )

    def close(self) -> None:
        """Give the detector's model back for the next call (idempotent)."""
        self._detector.close()
