"""The agent's voice: one synthesizer per process, fixed prompts rendered once, replies streamed sentence by
sentence from an executor so the event loop never waits on synthesis."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncGenerator
from concurrent.futures import Executor, ThreadPoolExecutor
from dataclasses import dataclass, field

from asterisk_agent.media.leg import Samples
from asterisk_agent.speech.tts import EspeakSynthesizer, PiperSynthesizer, PromptCache, SpeechSynthesizer
from asterisk_agent.speech.tts import synthesize_async as _stream


@dataclass
class Voice:
    synth: SpeechSynthesizer
    executor: Executor
    cache: PromptCache = field(default_factory=PromptCache)

    @classmethod
    async def load(cls, engine: str = "piper", *, threads: int = 1, workers: int = 2) -> Voice:
        """Load the engine off the loop (piper takes about 0.3 s); synthesis runs on ``workers`` threads
        (onnxruntime and libespeak-ng release the GIL while they work). Piper runs without its random noise
        terms, so a text always sounds the same: a prompt rendered again after a restart is the same audio."""
        executor = ThreadPoolExecutor(max_workers=workers, thread_name_prefix="tts")
        loop = asyncio.get_running_loop()
        if engine == "piper":
            synth: SpeechSynthesizer = await loop.run_in_executor(
                executor, lambda: PiperSynthesizer(intra_op_threads=threads, noise_scale=0.0, noise_w_scale=0.0)
            )
        elif engine == "espeak":
            synth = await loop.run_in_executor(executor, EspeakSynthesizer)
        else:
            raise ValueError(f"unknown TTS engine {engine!r}: piper or espeak")
        return cls(synth, executor)

    async def prompt(self, text: str) -> Samples:
        """A fixed prompt at 8 kHz, rendered once per process."""
        return await self.cache.get_async(self.synth, text, self.executor)

    def stream(self, text: str) -> AsyncGenerator[Samples, None]:
        """A reply at 8 kHz, one chunk per sentence as soon as each is rendered (close it to stop early)."""
        return _stream(self.synth, text, self.executor)

    def close(self) -> None:
        self.executor.shutdown(wait=False, cancel_futures=True)
