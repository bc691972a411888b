"""Intent scoring, offline and light: each flow's example phrases become TF-IDF vectors of words, word pairs and
character n-grams (inside words, so "appointment" still meets "appointments" and a misheard ending); a caller's
sentence scores each intent by its nearest example (cosine similarity).

Why this and not sentence embeddings: the packaged MiniLM model needs torch (about 1.1 GB more to install) for a
task where a flow names its intents with a handful of examples each; ``bench/intent_bench.py`` measures both
kinds of error on held-back phrasings. Why not scikit-learn's vectoriser: it brings scipy (about 200 MB) for the
same few lines of arithmetic done here in numpy.
"""

from __future__ import annotations

import itertools
import math
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


class IntentScorer:
    """Trained once per flow from ``{intent: [examples]}``; :meth:`rank` costs one sparse dot product per
    example (microseconds)."""

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

    def rank(self, text: str, among: Iterable[str] | None = None) -> list[IntentScore]:
        """Every intent (of ``among`` only, when given) with its best similarity and confidence, best first."""
        if not self._examples:
            return []
        allowed = set(self.intents if among is None else among)
        similarities = self._matrix @ self._vector(_features(text))
        best: dict[str, tuple[float, int]] = {}
        for index, similarity in enumerate(similarities):
            label = self._labels[index]
            if label not in allowed:
                continue
            if label not in best or similarity > best[label][0]:
                best[label] = (float(similarity), index)
        ordered = sorted(best.items(), key=lambda item: -item[1][0])
        scores = []
        for position, (intent, (similarity, index)) in enumerate(ordered):
            confidence = min(1.0, max(0.0, (similarity - FLOOR) / (CEILING - FLOOR)))
            if position == 0 and len(ordered) > 1:
                margin = similarity - ordered[1][1][0]
                if margin < CLOSE_MARGIN:
                    confidence *= 0.5 + 0.5 * margin / CLOSE_MARGIN
            scores.append(IntentScore(intent, round(similarity, 4), round(confidence, 4), self._examples[index]))
        return scores

    def best(self, text: str, among: Iterable[str] | None = None) -> IntentScore | None:
        """The best intent (of ``among`` only, when given) or ``None`` when nothing resembles any example."""
        ranked = self.rank(text, among)
        return ranked[0] if ranked and ranked[0].similarity >= FLOOR else None


def combined_confidence(recognition: float, understanding: float) -> float:
    """One turn's confidence from the recogniser's and the understanding's: their geometric mean, so either
    being unsure pulls the turn down without one number swamping the other."""
    return round(math.sqrt(max(0.0, recognition) * max(0.0, understanding)), 4)
