"""The private Asterisk root: a minimal Debian sid tree with Asterisk 22, built from Debian's packages.

It is cached in the project's git-ignored ``.pbx/`` folder and rebuilt only when the package list changes.
mmdebstrap uses its own default mirror: no host is written here.
"""

from __future__ import annotations

import hashlib
import json
import os
import re
import shutil
import socket
import subprocess
from pathlib import Path

SUITE = "sid"
PACKAGES = (
    "asterisk",
    "asterisk-modules",
    "asterisk-core-sounds-en-wav",
    "asterisk-moh-opsound-wav",
)
_EXCLUDES = ("/usr/share/doc/*", "/usr/share/man/*", "/usr/share/info/*", "/usr/share/locale/*")
STAMP = ".asterisk-agent-root.json"


class PbxError(Exception):
    """The private Asterisk cannot be built, started or reached; the message says what to do."""


def default_home() -> Path:
    """Where the root and the instances live: ``$ASTERISK_AGENT_PBX_HOME`` or ``./.pbx``."""
    return Path(os.environ.get("ASTERISK_AGENT_PBX_HOME", ".pbx")).resolve()


def recipe() -> dict[str, object]:
    return {"suite": SUITE, "packages": list(PACKAGES), "excludes": list(_EXCLUDES), "variant": "minbase"}


def recipe_hash() -> str:
    return hashlib.sha256(json.dumps(recipe(), sort_keys=True).encode()).hexdigest()[:16]


def root_dir(home: Path) -> Path:
    return home / "root"


def root_is_current(home: Path) -> bool:
    stamp = root_dir(home) / STAMP
    try:
        return bool(json.loads(stamp.read_text())["recipe"] == recipe_hash())
    except (OSError, ValueError, KeyError):
        return False


def asterisk_version(home: Path) -> str:
    try:
        return str(json.loads((root_dir(home) / STAMP).read_text())["asterisk_version"])
    except (OSError, ValueError, KeyError):
        return "unknown"


def write_name_service(root: Path) -> None:
    """Names resolve from the root's own files only: Asterisk looks up this host's name on every call, and
    with the builder's resolver copied in, each lookup waits seconds for a DNS server that is not there."""
    hostname = socket.gethostname()
    hosts = f"127.0.0.1 localhost\n::1 localhost ip6-localhost\n127.0.1.1 {hostname}\n"
    etc = root / "etc"
    if not (etc / "hosts").exists() or (etc / "hosts").read_text() != hosts:
        (etc / "hosts").write_text(hosts)
    resolv = "# no name server: the private Asterisk resolves only from /etc/hosts\noptions timeout:1 attempts:1\n"
    if (etc / "resolv.conf").is_symlink() or not (etc / "resolv.conf").exists() or (
        (etc / "resolv.conf").read_text() != resolv
    ):
        (etc / "resolv.conf").unlink(missing_ok=True)
        (etc / "resolv.conf").write_text(resolv)
    nsswitch = etc / "nsswitch.conf"
    if nsswitch.exists():
        text = nsswitch.read_text()
        fixed = re.sub(r"(?m)^hosts:.*$", "hosts:          files", text)
        if fixed != text:
            nsswitch.write_text(fixed)


def build_root(home: Path, *, force: bool = False, log_path: Path | None = None) -> Path:
    """Build (or reuse) the root. Needs root privileges and mmdebstrap; raises PbxError with the reason."""
    root = root_dir(home)
    if not force and root_is_current(home):
        return root
    if os.geteuid() != 0:
        raise PbxError(
            "building the private Asterisk root needs root (mmdebstrap installs packages as root): "
            "run `make demo`/`make test` or `asterisk-agent pbx build` as root"
        )
    if shutil.which("mmdebstrap") is None:
        raise PbxError("mmdebstrap is missing: `apt-get install -y mmdebstrap` (the Makefile does this)")
    home.mkdir(parents=True, exist_ok=True)
    partial = home / "root.partial"
    if partial.exists():
        shutil.rmtree(partial)
    log_path = log_path or home / "build.log"
    command = [
        "mmdebstrap",
        "--variant=minbase",
        # The registry may serve a snapshot whose Release file is past its Valid-Until date.
        "--aptopt=Acquire::Check-Valid-Until \"false\"",
        *(f"--dpkgopt=path-exclude={pattern}" for pattern in _EXCLUDES),
        "--include=" + ",".join(PACKAGES),
        SUITE,
        str(partial),
    ]
    with log_path.open("w") as log_file:
        result = subprocess.run(command, stdout=log_file, stderr=subprocess.STDOUT, check=False)
    if result.returncode != 0:
        text = log_path.read_text(errors="replace")
        if any(s in text for s in ("Could not resolve", "Failed to fetch", "Temporary failure", "Unable to connect")):
            raise PbxError(f"the Debian package registry cannot be reached; see {log_path}")
        raise PbxError(f"mmdebstrap failed (exit {result.returncode}); see {log_path}")
    write_name_service(partial)
    (partial / "inst").mkdir(exist_ok=True)
    version = subprocess.run(
        ["chroot", str(partial), "asterisk", "-V"], capture_output=True, text=True, check=False
    ).stdout.strip()
    (partial / STAMP).write_text(json.dumps({"recipe": recipe_hash(), "asterisk_version": version}))
    if root.exists():
        shutil.rmtree(root)
    partial.rename(root)
    return root
