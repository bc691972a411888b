"""Grammar recognition with pocketsphinx 5 and the US English model inside its wheel (nothing downloaded).

Decoders and memory (measured on this machine, ``/proc/self/smaps_rollup``):

- pocketsphinx's default configuration costs about 90 MB per ``Decoder``: 65 MB are the n-gram language model
  (``en-us.lm.bin``), about 25 MB the 126,000-word dictionary; the acoustic model itself is only about 3 MB of
  private memory (its files are memory-mapped and shared). Grammar search needs neither, so every decoder here
  is made with no language model and an empty dictionary, and gets only the words of the grammars it runs
  (``add_word``, pronunciations from the one copy of the dictionary this process reads,
  :func:`~asterisk_agent.speech.stt.grammars.pronouncing_dictionary`). Such a decoder costs about 3 MB and
  6 ms to make.
- A pocketsphinx decoder runs one utterance at a time (one feature stream, one active search, one lattice);
  it cannot interleave two. So the engine keeps a pool: a recogniser leases a decoder when its utterance
  starts (the first :meth:`PocketsphinxRecognizer.accept`) and gives it back at ``finish``/``reset``. The pool
  holds as many decoders as utterances are in progress at once (callers speaking at the same moment, not
  calls), keeps up to ``max_idle_decoders`` of them between utterances and drops the rest. Never waits, so
  recognisers driven in turn from one thread cannot deadlock. A recogniser dropped mid-utterance takes its
  decoder with it (garbage collected; no leak).
- Each grammar is compiled once per decoder, lazily, as a named search (``add_jsgf_string``), then selected
  per utterance with ``activate_search``; idle decoders that already know the grammar are preferred.
- Cepstral mean normalisation is per caller, not per decoder: at lease the recogniser restores its own
  estimate (``set_cmn``; the model's initial estimate for its first utterance) and saves it at the end, so one
  caller's channel never shapes another's features.

Audio: the phone path's 8 kHz is upsampled to 16 kHz (the model refuses 8 kHz) through one streaming
:class:`~asterisk_agent.media.codecs.Resampler` per recogniser; the model's own ``feat.params`` (mel filters up
to 6,800 Hz, noise removal) are kept: narrowing the filter bank to the phone band helped piper speech and
ruined espeak speech, so it is not done.

Silence: an utterance whose loudest 20 ms frame stays below ``silence_dbfs`` (-50 dBFS) gives nothing
(digital silence, which mu-law decodes to exact zeros, otherwise comes out as "oh" in a digit grammar).

Rejection: a closed grammar always finds its closest sentence ("maybe tomorrow" comes out as "no", with a
posterior near 1). So the engine wraps each grammar's ``<utterance>`` as ``<utterance> | <garbage>+``, where
the garbage words are single phones of the acoustic model (a phone loop) weighted ``garbage_weight`` (1e-20):
speech that fits no sentence of the grammar takes the phone loop, and the result is empty. Results that
:meth:`Grammar.normalize` cannot map (a digit string cut short when the search ended off a final state) are
rejected the same way.

Confidence: the lowest per-word probability that ``Decoder.seg()`` reports for the result's grammar words,
clamped to 0..1; 0.0 for an empty or rejected result; partials carry 0.0. The decoder runs with
``bestpath=False``: the bestpath pass (true lattice posteriors) over a lattice full of phone-loop paths took
up to 12 s at the end of a long out-of-grammar utterance, against under 3 ms without it. Without it the
per-word values are high (0.7-0.96) for anything the search accepts, so they rank results but do not detect
out-of-grammar speech: the phone loop does that, and a rejected result is what a dialog should act on.

Threads: see :mod:`asterisk_agent.speech.stt.base`; one recogniser from one thread at a time, decode work is
CPU-bound (about 0.03 CPU-s per audio second) and is called off the event loop by its owner.
"""

from __future__ import annotations

import hashlib
import os
import re
import threading
import time
from dataclasses import dataclass, field
from importlib import import_module
from typing import Any

import numpy as np

from asterisk_agent.media.codecs import Resampler, Samples
from asterisk_agent.media.frames import SAMPLE_RATE, WIDEBAND_RATE
from asterisk_agent.speech.stt.base import Recognition
from asterisk_agent.speech.stt.grammars import ROOT_RULE, Grammar, pronouncing_dictionary

_pocketsphinx: Any = import_module("pocketsphinx")  # ships no type information
Decoder = Any  # pocketsphinx.Decoder

ENGINE_NAME = "pocketsphinx"
DEFAULT_GARBAGE_WEIGHT = 1e-20
DEFAULT_MAX_IDLE_DECODERS = 8
DEFAULT_SILENCE_DBFS = -50.0  # an utterance whose loudest 20 ms stays below this is silence: nothing recognised
# The en-us model's context-independent phones (ARPABET without stress): the garbage loop's "words".
_PHONES = ("AA", "AE", "AH", "AO", "AW", "AY", "B", "CH", "D", "DH", "EH", "ER", "EY", "F", "G", "HH", "IH", "IY",
           "JH", "K", "L", "M", "N", "NG", "OW", "OY", "P", "R", "S", "SH", "T", "TH", "UH", "UW", "V", "W", "Y", "Z",
           "ZH")
GARBAGE_PREFIX = "grb_"  # not a dictionary word, so no grammar word can collide with it
_GARBAGE_WORDS = {f"{GARBAGE_PREFIX}{phone.lower()}": phone for phone in _PHONES}
_ALT_PRONUNCIATION = re.compile(r"\(\d+\)$")
_PUBLIC_ROOT = re.compile(rf"^public\s+<{ROOT_RULE}>", re.MULTILINE)


def _wrapped_jsgf(grammar: Grammar, garbage_weight: float) -> str:
    """The grammar with its root demoted and a new public root: the grammar, or a loop of phones."""
    if not _PUBLIC_ROOT.search(grammar.jsgf):
        raise ValueError(f"grammar {grammar.name!r} has no public <{ROOT_RULE}> rule")
    body = _PUBLIC_ROOT.sub(f"<{ROOT_RULE}>", grammar.jsgf).rstrip("\n")
    return (
        f"{body}\n"
        f"public <recognize> = /1/ <{ROOT_RULE}> | /{garbage_weight:g}/ <garbage>+;\n"
        f"<garbage> = {' | '.join(_GARBAGE_WORDS)};\n"
    )


@dataclass(frozen=True, slots=True)
class _Search:
    name: str  # unique per grammar content
    jsgf: str
    words: frozenset[str]


@dataclass(slots=True, eq=False)
class _PooledDecoder:
    decoder: Decoder
    searches: set[str] = field(default_factory=set)
    words: set[str] = field(default_factory=set)


class PocketsphinxEngine:
    """Grammar recognition for every call of a process: the model is loaded per decoder, decoders are pooled
    (see the module's notes). ``open(grammar)`` gives a :class:`PocketsphinxRecognizer`; open recognition
    (``grammar=None``) is refused (the full language model's WER is 30 %: use the whisper engine)."""

    name = ENGINE_NAME

    def __init__(self, *, garbage_weight: float = DEFAULT_GARBAGE_WEIGHT,
                 max_idle_decoders: int = DEFAULT_MAX_IDLE_DECODERS, silence_dbfs: float = DEFAULT_SILENCE_DBFS,
                 hmm: str | None = None) -> None:
        if not 0.0 < garbage_weight <= 1.0:
            raise ValueError(f"garbage_weight must be within (0, 1], got {garbage_weight}")
        if max_idle_decoders < 0:
            raise ValueError(f"max_idle_decoders must be at least 0, got {max_idle_decoders}")
        self.garbage_weight = garbage_weight
        self.max_idle_decoders = max_idle_decoders
        # Mean square of int16 samples at that level; digital silence otherwise decodes as a short word.
        self.silence_power = (32768.0 * 10 ** (silence_dbfs / 20)) ** 2
        self._hmm = hmm
        self._lock = threading.Lock()
        self._idle: list[_PooledDecoder] = []
        self._searches: dict[Grammar, _Search] = {}
        self._created = 0
        self._leased = 0
        self._peak_leased = 0
        self._dictionary = pronouncing_dictionary()
        first = self._new_decoder()  # fails here, not on the first call, when the model is unusable
        self.initial_cmn: str = str(first.decoder.get_cmn())
        self._idle.append(first)

    # --- the pool -------------------------------------------------------------------------------------------

    def _new_decoder(self) -> _PooledDecoder:
        config = _pocketsphinx.Config(lm=None, dict=os.devnull, loglevel="FATAL", bestpath=False)
        if self._hmm is not None:
            config["hmm"] = self._hmm
        decoder = _pocketsphinx.Decoder(config)
        garbage = list(_GARBAGE_WORDS.items())
        for index, (word, phone) in enumerate(garbage):
            decoder.add_word(word, phone, index == len(garbage) - 1)  # update once, at the last word
        with self._lock:
            self._created += 1
        return _PooledDecoder(decoder)

    def _search(self, grammar: Grammar) -> _Search:
        with self._lock:
            search = self._searches.get(grammar)
            if search is None:
                jsgf = _wrapped_jsgf(grammar, self.garbage_weight)
                digest = hashlib.sha1(jsgf.encode(), usedforsecurity=False).hexdigest()[:12]
                search = _Search(f"{grammar.name}_{digest}", jsgf, grammar.words)
                self._searches[grammar] = search
            return search

    def _lease(self, search: _Search) -> _PooledDecoder:
        """A decoder with ``search`` registered and active (made when none is idle)."""
        with self._lock:
            pooled = next((p for p in reversed(self._idle) if search.name in p.searches), None)
            if pooled is None and self._idle:
                pooled = self._idle[-1]
            if pooled is not None:
                self._idle.remove(pooled)
            self._leased += 1
            self._peak_leased = max(self._peak_leased, self._leased)
        try:
            if pooled is None:
                pooled = self._new_decoder()
            if search.name not in pooled.searches:
                self._register(pooled, search)
            pooled.decoder.activate_search(search.name)
        except BaseException:
            with self._lock:
                self._leased -= 1
            raise
        return pooled

    def _register(self, pooled: _PooledDecoder, search: _Search) -> None:
        missing = sorted(search.words - pooled.words)
        entries = [  # the n-th pronunciation of a word is "word(n)", as in the dictionary file
            (word if n == 1 else f"{word}({n})", phones)
            for word in missing
            for n, phones in enumerate(self._dictionary.pronunciations(word), start=1)
        ]
        for index, (label, phones) in enumerate(entries):
            pooled.decoder.add_word(label, phones, index == len(entries) - 1)
        pooled.words.update(missing)
        pooled.decoder.add_jsgf_string(search.name, search.jsgf)
        pooled.searches.add(search.name)

    def _release(self, pooled: _PooledDecoder) -> None:
        with self._lock:
            self._leased -= 1
            if len(self._idle) < self.max_idle_decoders:
                self._idle.append(pooled)

    def stats(self) -> dict[str, int]:
        """Decoders made so far, idle now, leased now and at most at once; grammars compiled."""
        with self._lock:
            return {"created": self._created, "idle": len(self._idle), "leased": self._leased,
                    "peak_leased": self._peak_leased, "grammars": len(self._searches)}

    # --- recognisers ----------------------------------------------------------------------------------------

    def open(self, grammar: Grammar | None = None) -> PocketsphinxRecognizer:
        if grammar is None:
            raise ValueError("pocketsphinx recognises with a grammar only; use an open-recognition engine")
        return PocketsphinxRecognizer(self, grammar, self._search(grammar))


def _is_filler(word: str) -> bool:
    return word.startswith(("<", "[", "+")) or word.startswith(GARBAGE_PREFIX)


class PocketsphinxRecognizer:
    """One caller's grammar recogniser (see :class:`~asterisk_agent.speech.stt.base.StreamingRecognizer`)."""

    def __init__(self, engine: PocketsphinxEngine, grammar: Grammar, search: _Search) -> None:
        self._engine = engine
        self._grammar = grammar
        self._search = search
        self._resampler = Resampler(SAMPLE_RATE, WIDEBAND_RATE)
        self._pooled: _PooledDecoder | None = None
        self._samples = 0
        self._last_partial = ""
        self._peak_power = 0.0
        self._cmn = engine.initial_cmn

    @property
    def grammar(self) -> Grammar:
        return self._grammar

    @property
    def in_utterance(self) -> bool:
        return self._pooled is not None

    def _start(self) -> _PooledDecoder:
        pooled = self._engine._lease(self._search)
        try:
            pooled.decoder.set_cmn(self._cmn)
            pooled.decoder.start_utt()
        except BaseException:
            self._engine._release(pooled)
            raise
        self._pooled = pooled
        self._samples = 0
        self._last_partial = ""
        self._peak_power = 0.0
        return pooled

    def accept(self, frame: Samples) -> Recognition | None:
        started = time.perf_counter()
        pooled = self._pooled if self._pooled is not None else self._start()
        wide = self._resampler.process(frame)
        self._samples += len(frame)
        if len(frame):
            self._peak_power = max(self._peak_power, float(np.mean(np.square(frame, dtype=np.float64))))
        if len(wide):
            pooled.decoder.process_raw(wide.tobytes(), False, False)
        hyp = pooled.decoder.hyp()
        words = hyp.hypstr.split() if hyp is not None else []
        if not words or any(word.startswith(GARBAGE_PREFIX) for word in words) or self._silent():
            return None
        text = " ".join(words)
        if text == self._last_partial:
            return None
        self._last_partial = text
        return self._result(text, 0.0, False, started)

    def finish(self) -> Recognition:
        started = time.perf_counter()
        pooled = self._pooled
        if pooled is None:
            self._resampler.flush()
            return self._result("", 0.0, True, started)
        decoder = pooled.decoder
        try:
            tail = self._resampler.flush()
            if len(tail):
                decoder.process_raw(tail.tobytes(), False, False)
            decoder.end_utt()
            hyp = decoder.hyp()
            text, confidence = "", 0.0
            if hyp is not None and hyp.hypstr.strip() and not self._silent():
                text, confidence = self._score(decoder, hyp.hypstr)
            self._cmn = str(decoder.get_cmn())
        finally:
            self._pooled = None
            self._engine._release(pooled)
        return self._result(text, confidence, True, started)

    def _silent(self) -> bool:
        return self._peak_power < self._engine.silence_power

    def _score(self, decoder: Decoder, hypstr: str) -> tuple[str, float]:
        words = hypstr.split()
        if any(word.startswith(GARBAGE_PREFIX) for word in words):
            return "", 0.0
        text = " ".join(words)
        if self._grammar.normalize(text) is None:
            return "", 0.0
        posteriors = [min(1.0, max(0.0, float(segment.prob))) for segment in decoder.seg()
                      if not _is_filler(_ALT_PRONUNCIATION.sub("", segment.word))]
        return text, (min(posteriors) if posteriors else 0.0)

    def reset(self) -> None:
        pooled, self._pooled = self._pooled, None
        self._resampler.flush()
        self._samples = 0
        self._last_partial = ""
        self._peak_power = 0.0
        if pooled is not None:
            try:
                pooled.decoder.end_utt()
            finally:
                self._engine._release(pooled)

    def _result(self, text: str, confidence: float, final: bool, started: float) -> Recognition:
        return Recognition(
            text=text,
            confidence=confidence,
            is_final=final,
            engine=ENGINE_NAME,
            grammar=self._grammar.name,
            audio_seconds=self._samples / SAMPLE_RATE,
            latency_ms=(time.perf_counter() - started) * 1000.0,
        )

    def __repr__(self) -> str:
        return f"PocketsphinxRecognizer(grammar={self._grammar.name!r}, in_utterance={self.in_utterance})"
