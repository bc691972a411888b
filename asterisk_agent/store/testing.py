"""pytest plugin: a private PostgreSQL server for the store's tests, so they run on PostgreSQL as well as SQLite.

``postgres_cluster`` (once per test run) makes a throwaway cluster with Debian's server binaries
(``/usr/lib/postgresql/<version>/bin``; ``ASTERISK_AGENT_PG_BINDIR`` points elsewhere) in a temporary folder,
listening on 127.0.0.1 on a free port and nowhere else, with durability off (fsync) since nothing in it must
survive; it is stopped and removed at the end. ``postgres_url`` gives each test a fresh database on it.

PostgreSQL refuses to run as root: as root the server runs as the ``postgres`` system user (``runuser``), which
the Debian package creates, in a folder it owns. Without the binaries the fixture fails, saying what to install,
rather than skipping: the store must be tested on both databases (``make test`` installs them).
"""

from __future__ import annotations

import contextlib
import os
import pwd
import shutil
import socket
import subprocess
import tempfile
import uuid
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import pytest

DEBIAN_BINDIRS = Path("/usr/lib/postgresql")
SERVER_USER = "postgres"
BINDIR_ENV = "ASTERISK_AGENT_PG_BINDIR"
_SERVER_OPTIONS = ("-c listen_addresses=127.0.0.1 -c fsync=off -c synchronous_commit=off "
                   "-c full_page_writes=off -c max_connections=50")


class PostgresUnavailable(RuntimeError):
    """The PostgreSQL server cannot be started here (the message says why and what to do)."""


def find_bindir() -> Path | None:
    """The folder with initdb and pg_ctl: ``ASTERISK_AGENT_PG_BINDIR``, else Debian's newest version."""
    if os.environ.get(BINDIR_ENV):
        return Path(os.environ[BINDIR_ENV])
    found = []
    if DEBIAN_BINDIRS.is_dir():
        for folder in DEBIAN_BINDIRS.iterdir():
            tools = (folder / "bin" / "initdb", folder / "bin" / "pg_ctl")
            if folder.name.isdigit() and all(tool.is_file() for tool in tools):
                found.append((int(folder.name), folder / "bin"))
    return max(found)[1] if found else None


def _free_port() -> int:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as probe:
        probe.bind(("127.0.0.1", 0))
        return int(probe.getsockname()[1])


@dataclass
class PostgresCluster:
    bindir: Path
    home: Path
    port: int = 0

    @property
    def data(self) -> Path:
        return self.home / "data"

    def url(self, database: str = "postgres") -> str:
        """An SQLAlchemy URL for ``database`` (the superuser ``postgres``, trusted on loopback)."""
        return f"postgresql+asyncpg://postgres@127.0.0.1:{self.port}/{database}"

    def _server(self, *argv: str) -> subprocess.CompletedProcess[str]:
        command = [str(self.bindir / argv[0]), *argv[1:]]
        if os.geteuid() == 0:
            command = ["runuser", "-u", SERVER_USER, "--", *command]
        return subprocess.run(command, capture_output=True, text=True, timeout=60, check=False)

    def _client(self, *argv: str) -> None:
        command = [str(self.bindir / argv[0]), "-h", "127.0.0.1", "-p", str(self.port), "-U", "postgres",
                   *argv[1:]]
        done = subprocess.run(command, capture_output=True, text=True, timeout=60, check=False)
        if done.returncode:
            raise PostgresUnavailable(f"{argv[0]} failed: {done.stderr.strip()}")

    @classmethod
    def start(cls, bindir: Path) -> PostgresCluster:
        if not (bindir / "initdb").is_file() or not (bindir / "pg_ctl").is_file():
            raise PostgresUnavailable(f"no initdb and pg_ctl in {bindir}")
        home = Path(tempfile.mkdtemp(prefix="asterisk-agent-pg-"))
        cluster = cls(bindir, home)
        try:
            if os.geteuid() == 0:
                try:
                    user = pwd.getpwnam(SERVER_USER)
                except KeyError:
                    raise PostgresUnavailable(
                        f"running as root, and there is no {SERVER_USER!r} user to run the server as "
                        "(Debian's postgresql package creates it)") from None
                os.chown(home, user.pw_uid, user.pw_gid)
            done = cluster._server("initdb", "-D", str(cluster.data), "-U", "postgres", "--auth=trust",
                                   "-E", "UTF8", "--locale=C", "--no-sync", "--no-instructions")
            if done.returncode:
                raise PostgresUnavailable(f"initdb failed (is {home} reachable by the {SERVER_USER} user? "
                                          f"set TMPDIR to a folder it can enter): {done.stderr.strip()}")
            for _ in range(3):  # the free port may be taken between the probe and the server's bind
                cluster.port = _free_port()
                done = cluster._server("pg_ctl", "-D", str(cluster.data), "-l", str(home / "server.log"), "-w",
                                       "-t", "30", "-o", f"-p {cluster.port} -c unix_socket_directories={home} "
                                       f"{_SERVER_OPTIONS}", "start")
                if done.returncode == 0:
                    return cluster
            log = (home / "server.log").read_text(errors="replace")[-2000:]
            raise PostgresUnavailable(f"pg_ctl start failed: {done.stderr.strip()}\n{log}")
        except BaseException:
            shutil.rmtree(home, ignore_errors=True)
            raise

    def stop(self) -> None:
        with contextlib.suppress(subprocess.TimeoutExpired):
            self._server("pg_ctl", "-D", str(self.data), "-m", "immediate", "-w", "stop")
        shutil.rmtree(self.home, ignore_errors=True)

    def create_database(self, name: str) -> str:
        self._client("createdb", name)
        return self.url(name)

    def drop_database(self, name: str) -> None:
        self._client("dropdb", "--force", "--if-exists", name)


@pytest.fixture(scope="session")
def postgres_cluster() -> Iterator[PostgresCluster]:
    """A private PostgreSQL server for the whole test run."""
    bindir = find_bindir()
    if bindir is None:
        pytest.fail(f"PostgreSQL server binaries not found under {DEBIAN_BINDIRS}/<version>/bin: install Debian's "
                    f"postgresql package (make test does), or set {BINDIR_ENV}", pytrace=False)
    try:
        cluster = PostgresCluster.start(bindir)
    except PostgresUnavailable as exc:
        pytest.fail(f"could not start PostgreSQL: {exc}", pytrace=False)
    try:
        yield cluster
    finally:
        cluster.stop()


@pytest.fixture
def postgres_url(postgres_cluster: PostgresCluster) -> Iterator[str]:
    """A fresh, empty database for one test (dropped after it)."""
    name = f"test_{uuid.uuid4().hex[:16]}"
    yield postgres_cluster.create_database(name)
    postgres_cluster.drop_database(name)
