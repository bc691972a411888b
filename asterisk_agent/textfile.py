"""Reading the text files an administrator writes (the configuration, flows), with errors that name the file."""

from __future__ import annotations

from pathlib import Path


class UnreadableFile(ValueError):
    """The file cannot be read as UTF-8 text; the message names it and says why."""


def read_text(path: str | Path) -> str:
    source = str(path)
    try:
        return Path(path).read_text(encoding="utf-8")
    except OSError as exc:
        raise UnreadableFile(f"{source}: cannot read: {exc.strerror}") from exc
    except UnicodeDecodeError as exc:
        raise UnreadableFile(f"{source}: not UTF-8 text (byte {exc.start})") from exc
