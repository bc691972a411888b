"""Replies cut into sentences, so each can be synthesised (and heard) while the next one renders.

Piper renders a whole sentence at a time, so the time to first audio grows with the first sentence's length:
sentences longer than ``max_chars`` are cut further, at a comma, semicolon, colon or dash when there is one,
else between words.
"""

from __future__ import annotations

import re

DEFAULT_MAX_CHARS = 180

# A period after these never ends a sentence ("Dr. Smith", "e.g. this").
_NEVER_FINAL = frozenset(
    {
        "mr", "mrs", "ms", "dr", "prof", "st", "sr", "jr", "mt", "rev", "gen", "col", "capt", "lt", "sgt", "hon",
        "fr", "e.g", "i.e", "vs", "cf", "approx", "ca", "viz",
    }
)
# A period after these ends a sentence only when a capitalised word follows ("No. 5" but "No. Not today.").
_BEFORE_NUMBER = frozenset({"no", "nr", "tel", "ext", "fig", "vol", "p", "pp", "jan", "feb", "mar", "apr", "jun",
                            "jul", "aug", "sep", "sept", "oct", "nov", "dec"})

# Terminal punctuation (with closing quotes or brackets) followed by whitespace or the end of the text.
_CLOSERS = "\"')]\u201d\u2019"  # quotes and brackets that close a sentence
_OPENERS = "\"'([\u201c\u2018"
_BOUNDARY = re.compile(r"(?:\.{2,}|\u2026|[.!?]+)[" + re.escape(_CLOSERS) + r"]*(?=\s|$)")
_WORD_BEFORE = re.compile(r"([\w.]+)$")
_CLAUSE_BREAK = re.compile(r"[,;:]\s|\s[\u2013\u2014-]+\s")  # a comma, semicolon, colon or spaced dash
_SPEAKABLE = re.compile(r"\w")


def split_sentences(text: str, max_chars: int = DEFAULT_MAX_CHARS) -> list[str]:
    """``text`` as a list of sentences to speak one at a time, whitespace collapsed, each at most ``max_chars``
    characters (longer ones cut at clause breaks, else between words, else anywhere). Line breaks end a
    sentence; pieces with nothing to pronounce (only punctuation or spaces) are dropped, so an empty or
    punctuation-only text gives ``[]``."""
    if max_chars < 20:
        raise ValueError(f"max_chars must be at least 20, got {max_chars}")
    sentences: list[str] = []
    for raw_line in text.splitlines():
        for sentence in _split_line(" ".join(raw_line.split())):
            sentences.extend(_cut_long(sentence, max_chars))
    return [sentence for sentence in sentences if _SPEAKABLE.search(sentence)]


def _split_line(line: str) -> list[str]:
    pieces: list[str] = []
    start = 0
    for match in _BOUNDARY.finditer(line):
        if _ends_sentence(line, match):
            pieces.append(line[start : match.end()].strip())
            start = match.end()
    pieces.append(line[start:].strip())
    return [piece for piece in pieces if piece]


def _ends_sentence(line: str, match: re.Match[str]) -> bool:
    rest = line[match.end() :].lstrip()
    if not rest:
        return True
    punctuation = match.group().rstrip(_CLOSERS)
    following = rest.lstrip(_OPENERS)[:1] or rest[0]
    if "?" in punctuation or "!" in punctuation:
        return True
    if punctuation.startswith(("..", "\u2026")):
        return following.isupper()  # "Well... I see." ends; "wait... what" goes on
    word_match = _WORD_BEFORE.search(line[: match.start()])
    word = word_match.group(1).lower().lstrip(".") if word_match else ""
    if word in _NEVER_FINAL:
        return False
    if len(word) == 1 and word.isalpha() and following.isupper():
        return False  # an initial: "J. R. Smith"
    if word in _BEFORE_NUMBER and not following.isupper():
        return False
    return not following.islower()


def _cut_long(sentence: str, max_chars: int) -> list[str]:
    """``sentence`` in pieces of at most ``max_chars``, packed greedily: each piece ends at the last clause break
    that fits, else at the last space that fits, else at ``max_chars``."""
    pieces: list[str] = []
    rest = sentence
    while len(rest) > max_chars:
        window = rest[: max_chars + 1]
        breaks = [match.end() for match in _CLAUSE_BREAK.finditer(window) if match.end() <= max_chars + 1]
        cut = max((b for b in breaks if b > max_chars // 4), default=0)
        if not cut:
            space = window.rfind(" ")
            cut = space if space > max_chars // 4 else max_chars
        piece, rest = rest[:cut].strip(), rest[cut:].strip()
        if piece:
            pieces.append(piece)
    if rest:
        pieces.append(rest)
    return pieces
