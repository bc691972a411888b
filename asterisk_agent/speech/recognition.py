"""Recognition as a call uses it: one finished utterance (8 kHz int16, cut by the endpointer) in, one
:class:`~asterisk_agent.speech.stt.base.Recognition` out, never on the event loop.

Three services behind one interface, :class:`UtteranceRecognition`, chosen by config (``speech.stt.engine``):

- :class:`WhisperRecognition` (default, open recognition): every call's utterances join the batches of one
  :class:`~.stt.whisper_engine.WhisperBatcher`, whose single worker thread owns the model. CTranslate2 releases
  the GIL and spreads one batch over ``cpu_threads`` cores itself, so a process pool would only split batches
  apart and load the model once per process; batching across calls is what makes open recognition affordable.
- :class:`GrammarProcessPool` (pocketsphinx grammars): a pool of worker processes, one per core by default;
  pocketsphinx decodes holding the GIL, so threads would serialise calls. Each call is pinned to one process
  (the least loaded when the call first speaks) for as long as it lasts: its recogniser, with its per-caller
  channel estimate (cepstral mean), stays in that process between utterances. Grammars cross the process
  boundary as :class:`~.stt.grammars.GrammarSpec` and are built once per process.
- :class:`HttpRecognition`: an OpenAI-compatible transcription endpoint (cloud or self-hosted).

The dialog applies the grammar's :meth:`~.stt.grammars.Grammar.normalize` to the text for every engine (open
recognition included), so a state means the same thing whichever engine listens.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import multiprocessing
import os
from concurrent.futures import ProcessPoolExecutor
from typing import TYPE_CHECKING, Protocol

import numpy as np

from asterisk_agent.config import SttSettings
from asterisk_agent.media.codecs import Samples
from asterisk_agent.speech.stt.base import Recognition, StreamingRecognizer
from asterisk_agent.speech.stt.grammars import Grammar, GrammarSpec, pronouncing_dictionary
from asterisk_agent.speech.stt.http_engine import HttpEngine, HttpSttOptions
from asterisk_agent.speech.stt.whisper_engine import WhisperEngine, WhisperOptions

if TYPE_CHECKING:
    from asterisk_agent.speech.stt.pocketsphinx_engine import PocketsphinxEngine

log = logging.getLogger(__name__)


class UtteranceRecognition(Protocol):
    """What a session needs from speech recognition."""

    name: str

    @property
    def in_flight(self) -> int:
        """Utterances being recognised right now (a session starts early recognition only when this is 0)."""
        ...

    async def start(self) -> None:
        """Load models (off the loop) before the first call."""
        ...

    async def recognize(self, call_id: str, audio: Samples, grammar: GrammarSpec | None) -> Recognition:
        """One whole utterance of ``call_id``. Raises when the engine fails (the caller decides what then)."""
        ...

    def release(self, call_id: str) -> None:
        """The call ended: drop whatever the service keeps for it (idempotent)."""
        ...

    async def close(self) -> None: ...


class _BufferedRecognition:
    """An engine that takes the whole utterance at once (whisper, an HTTP endpoint)."""

    name = "buffered"
    engine: WhisperEngine | HttpEngine
    _in_flight = 0

    @property
    def in_flight(self) -> int:
        return self._in_flight

    async def start(self) -> None:
        await asyncio.get_running_loop().run_in_executor(None, pronouncing_dictionary)

    async def recognize(self, call_id: str, audio: Samples, grammar: GrammarSpec | None) -> Recognition:
        del call_id
        self._in_flight += 1
        try:
            recognizer = self.engine.open(await _built(grammar))
            # Resampling a whole utterance takes milliseconds: not on the loop, which paces every call's audio.
            await asyncio.get_running_loop().run_in_executor(None, recognizer.accept, audio)
            return await recognizer.finish_async()
        finally:
            self._in_flight -= 1

    def release(self, call_id: str) -> None:
        del call_id

    async def close(self) -> None:
        await self.engine.close()


class WhisperRecognition(_BufferedRecognition):
    """Open recognition on faster-whisper, batched across calls (see the module's notes)."""

    name = "faster-whisper"

    def __init__(self, options: WhisperOptions | None = None) -> None:
        self.engine: WhisperEngine = WhisperEngine(options or WhisperOptions())

    async def start(self) -> None:
        await self.engine.batcher().start()
        await super().start()


class HttpRecognition(_BufferedRecognition):
    """An OpenAI-compatible transcription endpoint."""

    name = "http"

    def __init__(self, options: HttpSttOptions) -> None:
        self.engine = HttpEngine(options)


async def _built(grammar: GrammarSpec | None) -> Grammar | None:
    """The grammar object for a spec (built off the loop the first time: it reads the dictionary)."""
    if grammar is None:
        return None
    return await asyncio.get_running_loop().run_in_executor(None, grammar.build)


# --- pocketsphinx in worker processes ---------------------------------------------------------------------------

# Worker-process state (each process of the pool has its own copy).
_worker_engines: list[PocketsphinxEngine] = []
_recognizers: dict[tuple[str, GrammarSpec], StreamingRecognizer] = {}


def _worker_init(garbage_weight: float) -> None:
    from asterisk_agent.speech.stt.pocketsphinx_engine import PocketsphinxEngine

    _worker_engines.append(PocketsphinxEngine(garbage_weight=garbage_weight))


def _worker_ready() -> int:
    """Load the dictionary; answers the process id (so the pool knows its processes are up)."""
    pronouncing_dictionary()
    return os.getpid()


def _worker_recognize(call_id: str, pcm: bytes, spec: GrammarSpec) -> Recognition:
    assert _worker_engines, "the pool's initializer did not run"
    key = (call_id, spec)
    recognizer = _recognizers.get(key)
    if recognizer is None:
        recognizer = _recognizers[key] = _worker_engines[0].open(spec.build())
    recognizer.accept(np.frombuffer(pcm, dtype=np.int16))
    return recognizer.finish()


def _worker_release(call_id: str) -> int:
    gone = [key for key in _recognizers if key[0] == call_id]
    for key in gone:
        del _recognizers[key]
    return len(gone)


class GrammarProcessPool:
    """Grammar recognition with pocketsphinx in ``processes`` worker processes (0: one per core), each call
    pinned to one of them."""

    name = "pocketsphinx"

    def __init__(self, processes: int = 0, *, garbage_weight: float = 1e-20) -> None:
        count = processes or os.cpu_count() or 1
        context = multiprocessing.get_context("spawn")  # never fork a process that runs threads
        self._executors = [
            ProcessPoolExecutor(max_workers=1, mp_context=context, initializer=_worker_init,
                                initargs=(garbage_weight,))
            for _ in range(count)
        ]
        self._load = [0] * count  # calls pinned to each process
        self._pinned: dict[str, int] = {}
        self.pids: list[int] = []
        self._in_flight = 0

    @property
    def in_flight(self) -> int:
        return self._in_flight

    @property
    def processes(self) -> int:
        return len(self._executors)

    def process_of(self, call_id: str) -> int | None:
        return self._pinned.get(call_id)

    async def start(self) -> None:
        loop = asyncio.get_running_loop()
        self.pids = list(await asyncio.gather(*(loop.run_in_executor(ex, _worker_ready) for ex in self._executors)))

    def _pin(self, call_id: str) -> int:
        index = self._pinned.get(call_id)
        if index is None:
            index = min(range(len(self._load)), key=self._load.__getitem__)
            self._pinned[call_id] = index
            self._load[index] += 1
        return index

    async def recognize(self, call_id: str, audio: Samples, grammar: GrammarSpec | None) -> Recognition:
        if grammar is None:
            raise ValueError("pocketsphinx recognises grammars only: this state asks for open recognition")
        executor = self._executors[self._pin(call_id)]
        pcm = np.ascontiguousarray(audio, dtype=np.int16).tobytes()
        self._in_flight += 1
        try:
            return await asyncio.get_running_loop().run_in_executor(executor, _worker_recognize, call_id, pcm,
                                                                    grammar)
        finally:
            self._in_flight -= 1

    def release(self, call_id: str) -> None:
        index = self._pinned.pop(call_id, None)
        if index is None:
            return
        self._load[index] -= 1
        with contextlib.suppress(RuntimeError):  # shutting down: the process and its state go with it
            self._executors[index].submit(_worker_release, call_id)

    async def close(self) -> None:
        loop = asyncio.get_running_loop()
        await asyncio.gather(*(loop.run_in_executor(None, ex.shutdown) for ex in self._executors))


def make_recognition(settings: SttSettings) -> UtteranceRecognition:
    """The recognition service the configuration names (not started: await its ``start``)."""
    if settings.engine == "pocketsphinx":
        return GrammarProcessPool(settings.processes)
    if settings.engine == "http":
        http = settings.http
        return HttpRecognition(HttpSttOptions(base_url=http.base_url, model=http.model, api_key=http.api_key,
                                              timeout_ms=http.timeout_ms))
    whisper = settings.whisper
    return WhisperRecognition(WhisperOptions(cpu_threads=whisper.cpu_threads, batch_max=whisper.batch_max,
                                             batch_wait_ms=whisper.batch_wait_ms, model_dir=whisper.model_dir,
                                             cache_dir=whisper.cache_dir))
