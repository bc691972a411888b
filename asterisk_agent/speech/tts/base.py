"""What every speech synthesiser offers, and the way from its native rate to the 8 kHz phone frames.

A :class:`SpeechSynthesizer` yields int16 chunks at its own ``sample_rate`` (22,050 Hz for piper and
libespeak-ng), one sentence at a time. :func:`to_phone_rate` / :func:`iter_phone_rate` bring any chunk stream to
8 kHz through one streaming :class:`~asterisk_agent.media.codecs.Resampler` (the filter runs across chunk
boundaries, so nothing clicks between them).

:func:`render_sentence` turns one sentence into phone audio on its own, which is what a worker process or
thread does: the sentence gets enough silence on each side for the resampling filter's response (one 20 ms
frame before it, up to a frame after it, ending on a frame boundary) and then the pause between sentences, so a
reply made of independently rendered sentences is sample for sample what one streaming resampler makes of the
same padded sentences: nothing is cut at the seams.
"""

from __future__ import annotations

from collections.abc import Iterable, Iterator
from math import ceil, gcd
from typing import Protocol, runtime_checkable

import numpy as np

from asterisk_agent.media.codecs import Resampler, Samples, resample, to_int16
from asterisk_agent.media.frames import FRAME_MS, FRAME_SAMPLES, SAMPLE_RATE
from asterisk_agent.speech.tts.text import split_sentences

DEFAULT_PAUSE_MS = 200  # silence between two sentences of a reply (after trimming each sentence's own)
TRIM_DBFS = -50.0  # lead-in and tail quieter than this in every 5 ms are cut from a sentence...
TRIM_MARGIN_MS = 10  # ...but this much of them is kept


@runtime_checkable
class SpeechSynthesizer(Protocol):
    """Text to speech. ``synthesize`` yields int16 chunks at ``sample_rate``, sentence by sentence, so a reply
    can be played as soon as its first sentence exists; nothing for a text with nothing to pronounce.
    ``cache_key`` names the engine and every option that changes the audio (for :class:`PromptCache`)."""

    sample_rate: int
    cache_key: str

    def synthesize(self, text: str) -> Iterator[Samples]: ...


def iter_phone_rate(chunks: Iterable[Samples], rate: int) -> Iterator[Samples]:
    """``chunks`` at ``rate`` as 8 kHz chunks, resampled as one stream (the last chunk carries the filter's
    tail); empty outputs are skipped."""
    resampler = Resampler(rate, SAMPLE_RATE)
    for chunk in chunks:
        out = resampler.process(chunk)
        if len(out):
            yield out
    tail = resampler.flush()
    if len(tail):
        yield tail


def to_phone_rate(chunks: Iterable[Samples], rate: int) -> Samples:
    """All of ``chunks`` (int16 at ``rate``) as one 8 kHz int16 array, resampled as one stream."""
    pieces = list(iter_phone_rate(chunks, rate))
    return np.concatenate(pieces) if pieces else np.zeros(0, dtype=np.int16)


def _frame_step(rate: int) -> int:
    """Input samples at ``rate`` that make whole 20 ms output frames at 8 kHz (441 from 22,050 Hz)."""
    common = gcd(rate, SAMPLE_RATE)
    up, down = SAMPLE_RATE // common, rate // common
    return down * (FRAME_SAMPLES // gcd(FRAME_SAMPLES, up))


def phone_padding(length: int, rate: int) -> tuple[int, int]:
    """Zeros to put before and after ``length`` samples at ``rate`` so the resampling filter's whole response
    (it reaches ``latency_samples`` either way) falls inside the padding, and the 8 kHz result fills whole
    20 ms frames."""
    step = _frame_step(rate)
    reach = Resampler(rate, SAMPLE_RATE).latency_samples + 1
    lead = ceil(reach / step) * step
    return lead, ceil((length + reach) / step) * step - length


def sentence_to_phone(samples: Samples, rate: int, pause_ms: int = 0) -> Samples:
    """One sentence's audio at ``rate`` as 8 kHz whole frames (with the few milliseconds of silence the
    resampling filter needs on each side), followed by ``pause_ms`` of silence rounded up to whole frames.
    Rendered on its own, exactly what one streaming resampler makes of the same padded sentences in a row."""
    audio = to_int16(samples)
    if rate != SAMPLE_RATE:
        lead, tail = phone_padding(len(audio), rate)
        audio = np.concatenate((np.zeros(lead, dtype=np.int16), audio, np.zeros(tail, dtype=np.int16)))
        audio = resample(audio, rate, SAMPLE_RATE)
    elif len(audio) % FRAME_SAMPLES:
        audio = np.concatenate((audio, np.zeros(FRAME_SAMPLES - len(audio) % FRAME_SAMPLES, dtype=np.int16)))
    pause = ceil(pause_ms / FRAME_MS) * FRAME_SAMPLES
    if pause:
        audio = np.concatenate((audio, np.zeros(pause, dtype=np.int16)))
    return audio


def trim_silence(samples: Samples, rate: int, level_dbfs: float = TRIM_DBFS,
                 margin_ms: int = TRIM_MARGIN_MS) -> Samples:
    """``samples`` without the near-silent lead-in and tail (every 5 ms block below ``level_dbfs`` RMS), keeping
    ``margin_ms`` of each; empty when nothing is louder. Piper starts a sentence with about 50 ms of silence and
    ends it with about 120 ms; libespeak-ng with about 10 ms: trimmed, the pause between sentences is the same
    for both, and the first audio starts sooner."""
    block = max(1, rate // 200)
    usable = len(samples) // block * block
    if usable == 0:
        return samples[:0]
    blocks = samples[:usable].astype(np.float64).reshape(-1, block)
    loud = np.flatnonzero(np.sqrt(np.mean(blocks**2, axis=1)) >= 32768.0 * 10 ** (level_dbfs / 20))
    if len(loud) == 0:
        return samples[:0]
    margin = rate * margin_ms // 1000
    return samples[max(0, loud[0] * block - margin) : min(len(samples), (loud[-1] + 1) * block + margin)]


def render_sentence(synth: SpeechSynthesizer, sentence: str, pause_ms: int = 0) -> Samples:
    """``sentence`` spoken by ``synth``, silent ends trimmed, as 8 kHz whole frames plus ``pause_ms`` of
    silence; empty when there is nothing to pronounce. A module-level function, so process pools can run it
    (both synthesisers pickle as their options)."""
    chunks = list(synth.synthesize(sentence))
    audio = trim_silence(np.concatenate(chunks), synth.sample_rate) if chunks else np.zeros(0, dtype=np.int16)
    if not len(audio):
        return audio
    return sentence_to_phone(audio, synth.sample_rate, pause_ms)


def render_phone(synth: SpeechSynthesizer, text: str, pause_ms: int = DEFAULT_PAUSE_MS) -> Samples:
    """All of ``text`` as one 8 kHz array of whole frames, ``pause_ms`` between sentences (none after the last)."""
    sentences = split_sentences(text)
    pieces = [
        render_sentence(synth, sentence, pause_ms if index < len(sentences) - 1 else 0)
        for index, sentence in enumerate(sentences)
    ]
    return np.concatenate(pieces) if pieces else np.zeros(0, dtype=np.int16)
