"""Fixed prompts rendered once: 8 kHz int16 arrays in memory, optionally in a folder of ``.npy`` files that
survives restarts. One render per key however many threads or tasks ask for it first."""

from __future__ import annotations

import asyncio
import hashlib
import logging
import os
import tempfile
import threading
from collections.abc import Callable
from concurrent.futures import Executor, Future
from pathlib import Path

import numpy as np

from asterisk_agent.media.codecs import Samples
from asterisk_agent.media.frames import SAMPLE_RATE
from asterisk_agent.speech.tts.base import DEFAULT_PAUSE_MS, SpeechSynthesizer, render_phone

log = logging.getLogger(__name__)

CACHE_FORMAT = 1  # bump when the rendering changes, so old files are not used


class PromptCache:
    """Rendered prompts keyed by the engine and its options (``synth.cache_key``), the pause between sentences
    and the text. :meth:`get` (any thread) and :meth:`get_async` (on a loop; renders in an executor) share the
    same entries: the first caller for a key renders it (or reads it from ``folder``), everyone else asking
    meanwhile waits for that result. Arrays handed out are read-only and shared. Files are written atomically
    (a temporary file in the folder, then renamed), so a crash never leaves a truncated prompt."""

    def __init__(self, folder: str | Path | None = None, *, pause_ms: int = DEFAULT_PAUSE_MS) -> None:
        self.folder = Path(folder) if folder is not None else None
        if self.folder is not None:
            self.folder.mkdir(parents=True, exist_ok=True)
        self.pause_ms = pause_ms
        self.renders = 0  # syntheses run (not counting prompts read from the folder)
        self.disk_reads = 0
        self._lock = threading.Lock()
        self._ready: dict[str, Samples] = {}
        self._inflight: dict[str, Future[Samples]] = {}
        self._tasks: set[asyncio.Task[None]] = set()

    def key(self, synth: SpeechSynthesizer, text: str) -> str:
        engine = synth.cache_key.split(":", 1)[0]
        identity = f"{CACHE_FORMAT}|{SAMPLE_RATE}|{self.pause_ms}|{synth.cache_key}|{text}"
        return f"{engine}-{hashlib.sha256(identity.encode()).hexdigest()[:32]}"

    def path(self, key: str) -> Path | None:
        return self.folder / f"{key}.npy" if self.folder is not None else None

    def __len__(self) -> int:
        with self._lock:
            return len(self._ready)

    def _claim(self, key: str) -> tuple[Future[Samples], bool]:
        """The shared future for ``key`` and whether the caller must produce it."""
        with self._lock:
            ready = self._ready.get(key)
            if ready is not None:
                done: Future[Samples] = Future()
                done.set_result(ready)
                return done, False
            future = self._inflight.get(key)
            if future is not None:
                return future, False
            future = Future()
            future.set_running_or_notify_cancel()  # nobody can cancel it from under the waiters
            self._inflight[key] = future
            return future, True

    def _finish(self, key: str, future: Future[Samples], produce: Callable[[], Samples]) -> None:
        try:
            samples = produce()
            samples.flags.writeable = False
        except BaseException as error:
            with self._lock:
                del self._inflight[key]  # a later call tries again
            future.set_exception(error)
            if not isinstance(error, Exception):
                raise
            return
        with self._lock:
            self._ready[key] = samples
            del self._inflight[key]
        future.set_result(samples)

    def get(self, synth: SpeechSynthesizer, text: str) -> Samples:
        """``text`` spoken by ``synth`` as 8 kHz int16, rendered in this thread if nobody has it yet. Blocks: not
        for the event loop's thread (use :meth:`get_async` there)."""
        key = self.key(synth, text)
        future, owner = self._claim(key)
        if owner:
            self._finish(key, future, lambda: self._load_or_render(key, lambda: render_phone(synth, text,
                                                                                                self.pause_ms)))
        return future.result()

    async def get_async(self, synth: SpeechSynthesizer, text: str, executor: Executor | None = None) -> Samples:
        """Like :meth:`get`, without blocking the loop: the render runs in ``executor`` (``None``: the loop's
        default), file reads and writes in the default executor. Cancelling the caller does not cancel the render
        others may be waiting for."""
        key = self.key(synth, text)
        future, owner = self._claim(key)
        if owner:
            task = asyncio.get_running_loop().create_task(self._produce(key, future, synth, text, executor))
            self._tasks.add(task)
            task.add_done_callback(self._tasks.discard)
        return await asyncio.shield(asyncio.wrap_future(future))

    async def _produce(self, key: str, future: Future[Samples], synth: SpeechSynthesizer, text: str,
                       executor: Executor | None) -> None:
        loop = asyncio.get_running_loop()
        try:
            samples = await asyncio.to_thread(self._read, key)
            if samples is None:
                samples = await loop.run_in_executor(executor, render_phone, synth, text, self.pause_ms)
                with self._lock:
                    self.renders += 1
                await asyncio.to_thread(self._write, key, samples)
        except BaseException as error:
            self._finish(key, future, _raiser(error))
            return
        self._finish(key, future, lambda: samples)

    def _load_or_render(self, key: str, render: Callable[[], Samples]) -> Samples:
        samples = self._read(key)
        if samples is None:
            samples = render()
            with self._lock:
                self.renders += 1
            self._write(key, samples)
        return samples

    def _read(self, key: str) -> Samples | None:
        path = self.path(key)
        if path is None or not path.is_file():
            return None
        try:
            array = np.load(path, allow_pickle=False)
        except (OSError, ValueError) as error:
            log.warning("prompt cache: unreadable %s (%s); rendering again", path, error)
            return None
        if array.dtype != np.int16 or array.ndim != 1:
            log.warning("prompt cache: %s holds %s %s, not 1-D int16; rendering again", path, array.dtype,
                        array.shape)
            return None
        with self._lock:
            self.disk_reads += 1
        return np.asarray(array, dtype=np.int16)

    def _write(self, key: str, samples: Samples) -> None:
        path = self.path(key)
        if path is None:
            return
        handle, temporary = tempfile.mkstemp(prefix=f".{key}.", suffix=".tmp", dir=path.parent)
        try:
            with os.fdopen(handle, "wb") as file:
                np.save(file, samples, allow_pickle=False)
                file.flush()
                os.fsync(file.fileno())
            os.replace(temporary, path)
        except OSError as error:  # a full or read-only disk costs a render at the next start, nothing more
            Path(temporary).unlink(missing_ok=True)
            log.warning("prompt cache: could not write %s (%s)", path, error)
        except BaseException:
            Path(temporary).unlink(missing_ok=True)
            raise


def _raiser(error: BaseException) -> Callable[[], Samples]:
    def produce() -> Samples:
        raise error

    return produce
