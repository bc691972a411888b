"""Open recognition cost and accuracy: faster-whisper's ``WhisperModel.transcribe`` (30 s window) against the
short-window direct CTranslate2 path of :mod:`asterisk_agent.speech.stt.whisper_engine`, one thread, greedy.

Prints CPU-s per utterance (process time, so model threads count) for the padded path, and for the direct path
in batches of 1, 4 and 8, with the WER of each on a small set of piper sentences through the phone path
(22,050 Hz -> 8 kHz -> mu-law -> 8 kHz -> 16 kHz). Nothing is downloaded.

    .venv/bin/python bench/stt_open_bench.py [--threads 1] [--repeat 1]
"""

from __future__ import annotations

import argparse
import os
import re
import time

os.environ.setdefault("HF_HUB_OFFLINE", "1")

from asterisk_agent.media.codecs import ulaw_decode, ulaw_encode
from asterisk_agent.speech.stt.metrics import word_error_rate
from asterisk_agent.speech.stt.whisper_engine import WhisperOptions, load_whisper, to_model_audio
from asterisk_agent.speech.tts import PiperSynthesizer, render_phone

SENTENCES = (
    "Yes.",
    "No thank you.",
    "Operator.",
    "Cancel my appointment.",
    "My name is Alice and my number is four two seven one.",
    "Could you move my appointment to next Tuesday afternoon?",
    "I would like to check the balance of my savings account.",
    "My date of birth is the fourth of July, nineteen eighty two.",
    "I want to speak to a human.",
    "The claim number is eight five five three two.",
    "What time do you open tomorrow morning?",
    "Please transfer me to billing.",
    "I lost my card yesterday and I need a new one.",
    "That is correct.",
    "Hello, I am calling about the invoice you sent me last week, it seems too high.",
    "Seven.",
)
_NUMBERS = {"zero": "0", "oh": "0", "one": "1", "two": "2", "three": "3", "four": "4", "five": "5", "six": "6",
            "seven": "7", "eight": "8", "nine": "9", "4th": "fourth", "1982": "nineteen eighty two"}


def words(text: str) -> list[str]:
    out: list[str] = []
    for word in re.sub(r"[^a-z0-9' ]", " ", text.lower()).split():
        mapped = _NUMBERS.get(word, word)
        for part in mapped.split():
            if part.isdigit() and out and out[-1].isdigit():
                out[-1] += part  # digit strings compared as one word, however they were spoken or written
            else:
                out.append(part)
    return out


def wer(refs: list[str], hyps: list[str]) -> float:
    return word_error_rate(refs, hyps, words)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--threads", type=int, default=1)
    parser.add_argument("--repeat", type=int, default=1)
    args = parser.parse_args()

    synth = PiperSynthesizer(noise_w_scale=0.0)
    audios = [to_model_audio(ulaw_decode(ulaw_encode(render_phone(synth, s)))) for s in SENTENCES]
    seconds = sum(len(a) for a in audios) / 16000
    print(f"{len(SENTENCES)} piper sentences through the phone path, {seconds / len(SENTENCES):.2f} s on average; "
          f"threads={args.threads}, greedy")
    runner = load_whisper(WhisperOptions(cpu_threads=args.threads))
    runner.transcribe([audios[0]])  # warm up

    def measure(name: str, run: object) -> None:
        assert callable(run)
        cpu, wall = time.process_time(), time.perf_counter()
        hyps: list[str] = []
        fallbacks = 0
        for _ in range(args.repeat):
            transcripts = run()
            hyps = [t.text for t in transcripts]
            fallbacks = sum(t.fallback for t in transcripts)
        cpu, wall = time.process_time() - cpu, time.perf_counter() - wall
        n = len(SENTENCES) * args.repeat
        print(f"{name:32s} CPU-s/utt {cpu / n:6.3f}  wall-s/utt {wall / n:6.3f}  WER {wer(list(SENTENCES), hyps):6.1%}"
              f"  fallbacks {fallbacks}")

    measure("WhisperModel.transcribe (30 s)", lambda: [runner.transcribe_padded(a) for a in audios])
    for size in (1, 4, 8):
        def batched(size: int = size) -> list[object]:
            out: list[object] = []
            for start in range(0, len(audios), size):
                out.extend(runner.transcribe(audios[start : start + size]))
            return out
        measure(f"direct short window, batch {size}", batched)
    full = WhisperOptions(cpu_threads=args.threads, short_window=False)
    runner_full = load_whisper(full)
    measure("direct 30 s window, batch 8", lambda: [t for s in range(0, len(audios), 8)
                                                  for t in runner_full.transcribe(audios[s : s + 8])])
    print("hypotheses (short window, batch 1):")
    for sentence, transcript in zip(SENTENCES, [runner.transcribe([a])[0] for a in audios], strict=True):
        print(f"  {transcript.confidence:4.2f} {transcript.window_seconds:4.0f}s  {sentence!r} -> {transcript.text!r}")


if __name__ == "__main__":
    main()
