"""libespeak-ng in process (the fast, robotic fallback), through ctypes on the library that ``espeakng-loader``
ships: ``espeak_Initialize`` in synchronous mode, a synth callback collecting the 22,050 Hz samples into a
buffer, ``espeak_Synth`` once per sentence.

libespeak-ng keeps one global state (voice, parameters, callback), so every call goes through one lock and
sets the voice and parameters it needs. Other code in the same process may drive the same library file
through ctypes and set its own callback (the test helpers do), so this module loads a private instance from
one of the package's identical copies of the library (``libespeak-ng.so.1.52.0`` beside ``libespeak-ng.so``):
the dynamic loader maps a different file as a separate library, with state of its own.
"""

from __future__ import annotations

import ctypes
import os
import threading
from collections.abc import Iterator
from importlib import import_module
from pathlib import Path
from typing import Any

import numpy as np

from asterisk_agent.media.codecs import Samples
from asterisk_agent.speech.tts.text import split_sentences

_AUDIO_OUTPUT_SYNCHRONOUS = 2
_INITIALIZE_DONT_EXIT = 0x8000
_CHARS_UTF8 = 1
_POS_CHARACTER = 1
_RATE, _VOLUME, _PITCH, _RANGE = 1, 2, 3, 4  # espeak_PARAMETER
_EE_OK = 0
_SYNTH_CALLBACK = ctypes.CFUNCTYPE(ctypes.c_int, ctypes.POINTER(ctypes.c_short), ctypes.c_int, ctypes.c_void_p)


def _library_file(loader: Any) -> str:
    """A copy of libespeak-ng in the loader's folder other than the one it names, when there is one."""
    default = Path(str(loader.get_library_path()))
    for candidate in sorted(default.parent.glob("libespeak-ng.so.*"), key=lambda p: -len(p.name)):
        try:
            if not os.path.samefile(candidate, default):
                return str(candidate)
        except OSError:
            continue
    return str(default)


class _Espeak:
    """One libespeak-ng instance, initialised once per process."""

    def __init__(self) -> None:
        loader = import_module("espeakng_loader")  # ships no type information
        lib = ctypes.CDLL(_library_file(loader))
        lib.espeak_Initialize.argtypes = [ctypes.c_int, ctypes.c_int, ctypes.c_char_p, ctypes.c_int]
        lib.espeak_Initialize.restype = ctypes.c_int
        lib.espeak_SetVoiceByName.argtypes = [ctypes.c_char_p]
        lib.espeak_SetVoiceByName.restype = ctypes.c_int
        lib.espeak_SetParameter.argtypes = [ctypes.c_int, ctypes.c_int, ctypes.c_int]
        lib.espeak_SetParameter.restype = ctypes.c_int
        lib.espeak_SetSynthCallback.argtypes = [_SYNTH_CALLBACK]
        lib.espeak_SetSynthCallback.restype = None
        lib.espeak_Synth.argtypes = [
            ctypes.c_void_p, ctypes.c_size_t, ctypes.c_uint, ctypes.c_int, ctypes.c_uint, ctypes.c_uint,
            ctypes.c_void_p, ctypes.c_void_p,
        ]
        lib.espeak_Synth.restype = ctypes.c_int
        data = str(loader.get_data_path()).encode()
        rate = int(lib.espeak_Initialize(_AUDIO_OUTPUT_SYNCHRONOUS, 0, data, _INITIALIZE_DONT_EXIT))
        if rate <= 0:
            raise RuntimeError(f"espeak_Initialize failed ({rate})")
        self.sample_rate = rate
        self._lib = lib
        self._chunks: list[Samples] = []
        self._callback = _SYNTH_CALLBACK(self._collect)  # kept referenced: the library calls it
        self.lock = threading.Lock()

    def _collect(self, wav: Any, count: int, events: Any) -> int:
        del events
        if count > 0 and wav:
            self._chunks.append(np.ctypeslib.as_array(wav, shape=(count,)).astype(np.int16, copy=True))
        return 0  # go on

    def select(self, voice: str, rate: int, pitch: int, pitch_range: int, volume: int) -> None:
        """Voice and parameters for the next synth (hold :attr:`lock`)."""
        status = int(self._lib.espeak_SetVoiceByName(voice.encode()))
        if status != _EE_OK:
            raise ValueError(f"espeak-ng has no voice {voice!r} (status {status})")
        for parameter, value in ((_RATE, rate), (_PITCH, pitch), (_RANGE, pitch_range), (_VOLUME, volume)):
            self._lib.espeak_SetParameter(parameter, value, 0)

    def synth(self, text: str) -> Samples:
        """One text's samples (hold :attr:`lock`, after :meth:`select`)."""
        data = text.encode("utf-8")
        self._chunks = []
        self._lib.espeak_SetSynthCallback(self._callback)
        status = int(self._lib.espeak_Synth(data, len(data) + 1, 0, _POS_CHARACTER, 0, _CHARS_UTF8, None, None))
        chunks, self._chunks = self._chunks, []
        if status != _EE_OK:
            raise RuntimeError(f"espeak_Synth failed ({status}) for {text!r}")
        return np.concatenate(chunks) if chunks else np.zeros(0, dtype=np.int16)


_ENGINE: _Espeak | None = None
_ENGINE_LOCK = threading.Lock()


def _engine() -> _Espeak:
    global _ENGINE  # noqa: PLW0603 - one library state per process
    with _ENGINE_LOCK:
        if _ENGINE is None:
            _ENGINE = _Espeak()
        return _ENGINE


class EspeakSynthesizer:
    """libespeak-ng speech, one chunk per sentence (int16, 22,050 Hz). ``rate`` in words per minute (80-450),
    ``pitch`` and ``pitch_range`` 0-100 (50 is the voice's own), ``volume`` 0-200 (100 normal)."""

    def __init__(self, voice: str = "en-us", *, rate: int = 165, pitch: int = 50, pitch_range: int = 50,
                 volume: int = 100) -> None:
        if not 80 <= rate <= 450:
            raise ValueError(f"rate must be within 80..450 words per minute, got {rate}")
        if not (0 <= pitch <= 100 and 0 <= pitch_range <= 100):
            raise ValueError(f"pitch and pitch_range must be within 0..100, got {pitch}, {pitch_range}")
        if not 0 < volume <= 200:
            raise ValueError(f"volume must be within 1..200, got {volume}")
        self.voice, self.rate, self.pitch, self.pitch_range, self.volume = voice, rate, pitch, pitch_range, volume
        self._engine = _engine()
        with self._engine.lock:
            self._engine.select(voice, rate, pitch, pitch_range, volume)  # fails now for an unknown voice
        self.sample_rate = self._engine.sample_rate
        self.cache_key = f"espeak:{voice}:rate={rate}:pitch={pitch}:range={pitch_range}:volume={volume}"

    def __reduce__(self) -> tuple[Any, ...]:
        return (_rebuild, (self.voice, self.rate, self.pitch, self.pitch_range, self.volume))

    def synthesize(self, text: str) -> Iterator[Samples]:
        for sentence in split_sentences(text):
            with self._engine.lock:
                self._engine.select(self.voice, self.rate, self.pitch, self.pitch_range, self.volume)
                audio = self._engine.synth(sentence)
            if len(audio):
                yield audio

    def __repr__(self) -> str:
        return f"EspeakSynthesizer({self.cache_key})"


def _rebuild(voice: str, rate: int, pitch: int, pitch_range: int, volume: int) -> EspeakSynthesizer:
    return EspeakSynthesizer(voice, rate=rate, pitch=pitch, pitch_range=pitch_range, volume=volume)
