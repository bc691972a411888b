"""The default intent scorer: a caller's sentence against each flow's example phrases in all-MiniLM-L6-v2's
sentence-embedding space (:mod:`asterisk_agent.dialog.sentence_embeddings`), nearest example by cosine.

Where it accepts, and how sure it says it is, comes from the flow's own examples, never from test phrases:
each example is left out in turn and compared with the rest of its intent. Its nearest same-intent neighbour's
cosine is how close a new way of saying that intent tends to come (a paraphrase the flow did not list). A normal
fitted to those cosines gives two points:

- the **line**, its 10th percentile: a sentence at least that close to some example of an intent is as close as
  nine in ten of the flow's own paraphrases. Here the confidence equals the flow's ``thresholds.reprompt``, so
  the engine's rule accepts exactly from the line up; an intent's own ``threshold`` (or a state's thresholds)
  asks for more on the same scale.
- the **ceiling**, its 90th percentile: confidence 1.0 (as close as the flow's closest paraphrases).

Between them the confidence rises linearly; below the line it falls linearly to 0 at cosine 0. Why one-class
(paraphrases only): a flow's intents are related by design (booking and changing an appointment share their
words), so the cosines between its intents say which intent, not whether the sentence is one of them at all; a
line that also had to reject those near misses turns away a third of the shipped clinic flow's paraphrases
(``bench/intent_bench.py`` measures both errors on held-back phrasings, and TF-IDF agreement as a second vote).
The line stays within ``MIN_LINE``-``MAX_LINE``: below 0.3 this model calls unrelated sentences alike, and a flow
whose examples all repeat one wording should not refuse every rewording.
"""

from __future__ import annotations

import logging
import statistics
from collections.abc import Mapping, Sequence
from dataclasses import dataclass

import numpy as np

from asterisk_agent.dialog.intents import IntentScore, IntentScorer, IntentScoring, Nearest
from asterisk_agent.dialog.sentence_embeddings import MiniLM, shared_encoder

log = logging.getLogger(__name__)

COVERAGE = 0.9  # of the flow's own paraphrases kept at the line (and the share below the ceiling)
MIN_LINE = 0.3
MAX_LINE = 0.6
MIN_SPAN = 0.05  # between the line and the ceiling
MIN_PARAPHRASES = 3  # fewer examples with a same-intent neighbour: the defaults below
DEFAULT_LINE = 0.45  # typical of this model for two wordings of one request, for flows too small to measure
DEFAULT_CEILING = 0.8


@dataclass(frozen=True)
class Calibration:
    """Where the confidence of a flow's embedding scorer reaches the flow's floor (``line``) and 1.0
    (``ceiling``), from leave-one-out over its examples."""

    line: float  # cosine
    ceiling: float  # cosine
    floor: float  # the confidence at the line: the flow's thresholds.reprompt
    paraphrases: int  # leave-one-out cosines it rests on (0: the defaults)
    paraphrases_kept: float | None  # share of those at or above the line
    near_misses_kept: float | None  # share of examples whose nearest other-intent example is at or above it

    def confidence(self, similarity: float) -> float:
        if similarity >= self.line:
            value = self.floor + (1.0 - self.floor) * (similarity - self.line) / (self.ceiling - self.line)
        else:
            value = self.floor * max(0.0, similarity) / self.line
        return round(min(1.0, max(0.0, value)), 4)


def calibrate(vectors: np.ndarray, labels: Sequence[str], floor: float, coverage: float = COVERAGE) -> Calibration:
    """The calibration of unit example ``vectors`` (one row per example, ``labels`` their intents)."""
    similarity = vectors @ vectors.T
    np.fill_diagonal(similarity, -np.inf)
    same = np.array([[a == b for b in labels] for a in labels], dtype=bool).reshape(len(labels), len(labels))
    paraphrases = np.where(same, similarity, -np.inf).max(axis=1, initial=-np.inf)
    near_misses = np.where(~same, similarity, -np.inf).max(axis=1, initial=-np.inf)
    paraphrases = paraphrases[np.isfinite(paraphrases)]
    near_misses = near_misses[np.isfinite(near_misses)]
    if paraphrases.size >= MIN_PARAPHRASES:
        fitted = statistics.NormalDist(float(paraphrases.mean()), max(1e-6, float(paraphrases.std(ddof=1))))
        line = min(MAX_LINE, max(MIN_LINE, fitted.inv_cdf(1.0 - coverage)))
        ceiling = max(line + MIN_SPAN, min(1.0, fitted.inv_cdf(coverage)))
        counted = int(paraphrases.size)
    else:
        line, ceiling, counted = DEFAULT_LINE, DEFAULT_CEILING, 0
    return Calibration(
        line=round(line, 4), ceiling=round(ceiling, 4), floor=floor, paraphrases=counted,
        paraphrases_kept=round(float((paraphrases >= line).mean()), 3) if paraphrases.size else None,
        near_misses_kept=round(float((near_misses >= line).mean()), 3) if near_misses.size else None,
    )


class EmbeddingIntentScorer(IntentScoring):
    """A flow's intents as MiniLM vectors of their examples. Building it embeds every example (about 5 ms each);
    :meth:`nearest` embeds the caller's sentence (about 6 ms): both off the event loop."""

    def __init__(self, encoder: MiniLM, examples: Mapping[str, Sequence[str]], *, floor: float,
                 coverage: float = COVERAGE) -> None:
        self.encoder = encoder
        self.intents = list(examples)
        self._labels = [intent for intent, phrases in examples.items() for _ in phrases]
        self._examples = [phrase for phrases in examples.values() for phrase in phrases]
        self._vectors = encoder.encode(self._examples) if self._examples else np.zeros((0, encoder.dimension))
        self.calibration = calibrate(self._vectors, self._labels, floor, coverage)

    def nearest(self, text: str) -> Nearest:
        best: dict[str, tuple[float, str]] = {}
        if self._examples:
            similarities = self._vectors @ self.encoder.encode([text])[0]
            for index, similarity in enumerate(similarities.tolist()):
                label = self._labels[index]
                if label not in best or similarity > best[label][0]:
                    best[label] = (similarity, self._examples[index])
        return Nearest(text, best)

    def _scored(self, ordered: Sequence[tuple[str, float, str]]) -> list[IntentScore]:
        return [IntentScore(intent, round(similarity, 4), self.calibration.confidence(similarity), example)
                for intent, similarity, example in ordered]


def intent_scorer(examples: Mapping[str, Sequence[str]], *, floor: float) -> IntentScoring:
    """A flow's scorer: MiniLM embeddings when the model package loads, else TF-IDF (one warning per process,
    from :func:`shared_encoder`). ``floor`` is the flow's ``thresholds.reprompt``. Blocking the first time (the
    model loads) and for every example embedded: on a running loop, call it in a thread."""
    if not any(examples.values()):
        return IntentScorer(examples)  # nothing to compare with: no model needed
    encoder = shared_encoder()
    if encoder is None:
        return IntentScorer(examples)
    return EmbeddingIntentScorer(encoder, examples, floor=floor)
