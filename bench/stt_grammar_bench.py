"""Grammar recognition (pocketsphinx) on phone-path speech: per utterance the CPU time, real-time factor, the
latency of the final result after the audio ends (the ``finish`` call), and whether the slot value is right;
then accuracy per voice and the memory of the decoder pool. Prints only.

    .venv/bin/python bench/stt_grammar_bench.py [--espeak] [--decoders 20]

Speech is piper's packaged voice (``noise_w_scale=0``) rendered offline, brought to 8 kHz and through mu-law;
``--espeak`` adds the libespeak-ng set, the hard case.
"""

from __future__ import annotations

import argparse
import statistics
import time
from typing import Any

import numpy as np

from asterisk_agent.media.codecs import Samples, ulaw_decode, ulaw_encode
from asterisk_agent.media.frames import FRAME_SAMPLES, SAMPLE_RATE
from asterisk_agent.speech.stt import Grammar, dates_and_times, digits, human_request, menu, names, yes_no
from asterisk_agent.speech.stt.grammars import DateTimeValue
from asterisk_agent.speech.stt.pocketsphinx_engine import PocketsphinxEngine
from asterisk_agent.speech.tts import EspeakSynthesizer, PiperSynthesizer, SpeechSynthesizer, render_phone

MENU = {"billing": ["billing", "pay my bill"], "sales": ["sales", "buy something"], "support": ["support"]}
PEOPLE = ["Anna Smith", "John", "Maria Garcia", "Peter", "David Miller"]
NOTHING = object()  # expected: no result (speech outside the grammar)


def grammars() -> dict[str, Grammar]:
    return {"digits4": digits(4, 4), "digits": digits(1, 8), "yes_no": yes_no(), "menu": menu(MENU),
            "names": names(PEOPLE), "dates": dates_and_times(), "human": human_request()}


CASES: list[tuple[str, str, Any]] = [
    ("digits4", "four two seven one", "4271"),
    ("digits4", "nine eight oh three", "9803"),
    ("digits4", "one one five six", "1156"),
    ("digits", "five five five oh one two", "555012"),
    ("digits", "three seven", "37"),
    ("yes_no", "yes", True),
    ("yes_no", "no", False),
    ("yes_no", "yeah", True),
    ("yes_no", "nope", False),
    ("yes_no", "that's right", True),
    ("menu", "billing", "billing"),
    ("menu", "buy something", "sales"),
    ("menu", "support", "support"),
    ("names", "Maria Garcia", "Maria Garcia"),
    ("names", "Peter", "Peter"),
    ("names", "David Miller", "David Miller"),
    ("dates", "monday", DateTimeValue(weekday="monday")),
    ("dates", "tomorrow at three p.m.", DateTimeValue(relative_days=1, hour=3, minute=0, meridiem="pm")),
    ("dates", "ten thirty", DateTimeValue(hour=10, minute=30)),
    ("human", "operator", True),
    ("human", "I want to speak to a human", True),
    ("yes_no", "maybe tomorrow", NOTHING),
    ("human", "what is the weather like", NOTHING),
    ("digits4", "I would like to speak to an operator please", NOTHING),
]


def phone(synth: SpeechSynthesizer, text: str) -> Samples:
    audio = ulaw_decode(ulaw_encode(render_phone(synth, text)))
    pad = np.zeros(SAMPLE_RATE // 5, dtype=np.int16)
    return np.concatenate((pad, audio, pad))


def rss_mb() -> float:
    with open("/proc/self/smaps_rollup", encoding="ascii") as status:
        for line in status:
            if line.startswith("Rss:"):
                return int(line.split()[1]) / 1024
    return 0.0


def run_set(engine: PocketsphinxEngine, table: dict[str, Grammar], synth: SpeechSynthesizer, label: str) -> None:
    print(f"\n== {label}")
    print(f"{'grammar':8} {'audio s':>7} {'cpu ms':>7} {'RTF':>6} {'final ms':>8} {'partials':>8} {'conf':>5} ok  text")
    rtfs, finals, right = [], [], 0
    for grammar_name, text, expected in CASES:
        grammar = table[grammar_name]
        audio = phone(synth, text)
        recognizer = engine.open(grammar)
        cpu = time.process_time()
        partials = 0
        for start in range(0, len(audio), FRAME_SAMPLES):
            if recognizer.accept(audio[start : start + FRAME_SAMPLES]) is not None:
                partials += 1
        final = recognizer.finish()
        cpu = time.process_time() - cpu
        value = grammar.normalize(final.text)
        ok = (final.text == "") if expected is NOTHING else (value == expected)
        right += ok
        rtf = cpu / final.audio_seconds
        rtfs.append(rtf)
        finals.append(final.latency_ms)
        print(f"{grammar_name:8} {final.audio_seconds:7.2f} {cpu * 1000:7.1f} {rtf:6.3f} {final.latency_ms:8.1f} "
              f"{partials:8d} {final.confidence:5.2f} {'yes' if ok else 'NO ':3} {text!r} -> {final.text!r}")
    finals.sort()
    print(f"accuracy {right}/{len(CASES)}; RTF mean {statistics.mean(rtfs):.3f} max {max(rtfs):.3f}; "
          f"final latency p50 {statistics.median(finals):.1f} ms max {finals[-1]:.1f} ms")


def memory(engine: PocketsphinxEngine, table: dict[str, Grammar], count: int) -> None:
    before = rss_mb()
    frame = np.full(FRAME_SAMPLES, 100, dtype=np.int16)
    recognizers = [engine.open(table["digits4"]) for _ in range(count)]
    for recognizer in recognizers:
        recognizer.accept(frame)  # each starts an utterance: one decoder leased per recogniser
    during = rss_mb()
    stats = engine.stats()
    for recognizer in recognizers:
        recognizer.reset()
    print(f"\n== memory: {count} utterances at once lease {stats['leased']} decoders "
          f"({stats['created']} made so far): RSS +{during - before:.1f} MB, "
          f"{(during - before) / max(1, count):.2f} MB per concurrent utterance; after: {engine.stats()}")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--espeak", action="store_true", help="also run the espeak-ng set (the hard case)")
    parser.add_argument("--decoders", type=int, default=20, help="concurrent utterances for the memory check")
    args = parser.parse_args()
    start_rss = rss_mb()
    started = time.perf_counter()
    engine = PocketsphinxEngine()
    table = grammars()
    print(f"engine and grammars ready in {(time.perf_counter() - started) * 1000:.0f} ms "
          f"(dictionary read once), RSS +{rss_mb() - start_rss:.1f} MB")
    piper = PiperSynthesizer(noise_w_scale=0.0)
    run_set(engine, table, piper, "piper (joe-us), 8 kHz mu-law")
    if args.espeak:
        run_set(engine, table, EspeakSynthesizer(), "espeak-ng en-us, 8 kHz mu-law (hard case)")
    memory(engine, table, args.decoders)


if __name__ == "__main__":
    main()
