"""Synthesis off the event loop: each sentence of a reply renders in the caller's executor (thread or process
pool) and comes back as 8 kHz frames while the next sentence renders."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncGenerator
from concurrent.futures import Executor

from asterisk_agent.media.codecs import Samples
from asterisk_agent.speech.tts.base import DEFAULT_PAUSE_MS, SpeechSynthesizer, render_sentence
from asterisk_agent.speech.tts.text import split_sentences


async def synthesize_async(
    synth: SpeechSynthesizer,
    text: str,
    executor: Executor | None,
    *,
    pause_ms: int = DEFAULT_PAUSE_MS,
    lookahead: int = 1,
) -> AsyncGenerator[Samples, None]:
    """``text`` spoken by ``synth`` as 8 kHz int16 chunks of whole 20 ms frames, one per sentence (each followed
    by ``pause_ms`` of silence, except the last), yielded as soon as each is rendered. Rendering (synthesis and
    resampling) runs in ``executor`` (``None``: the loop's default), at most ``1 + lookahead`` sentences of this
    reply at a time, so one long reply does not take the whole pool. Closing the iterator early (barge-in)
    cancels the sentences not started yet."""
    if lookahead < 0:
        raise ValueError(f"lookahead must be >= 0, got {lookahead}")
    sentences = split_sentences(text)
    loop = asyncio.get_running_loop()
    pending: list[asyncio.Future[Samples]] = []
    try:
        for index, sentence in enumerate(sentences):
            pause = pause_ms if index < len(sentences) - 1 else 0
            pending.append(loop.run_in_executor(executor, render_sentence, synth, sentence, pause))
            if len(pending) <= lookahead and index < len(sentences) - 1:
                continue
            chunk = await pending.pop(0)
            if len(chunk):
                yield chunk
        while pending:
            chunk = await pending.pop(0)
            if len(chunk):
                yield chunk
    finally:
        for future in pending:
            future.cancel()
