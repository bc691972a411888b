"""Opening the database: which URLs are accepted, how SQLite is set up, and migrating to the newest schema.

SQLite needs care to behave like a database several tasks share: foreign keys on, write-ahead logging (readers
do not wait for the writer), a busy timeout (writers queue instead of failing), and every transaction begun with
``BEGIN IMMEDIATE``. Python's sqlite3 module otherwise opens a transaction only at the first write, so a read
followed by a write would not be one transaction, and two such transactions could deadlock on the upgrade from
read to write lock. PostgreSQL needs none of this; its connections are checked before use, so a database that
went away and came back is reconnected to instead of failing the next call's write.

Migrations run inside one transaction when the store opens (PostgreSQL and SQLite both have transactional DDL):
workers opening a new database together do not trip over each other (on PostgreSQL an advisory lock makes the
second wait; on SQLite ``BEGIN IMMEDIATE`` does), and a failed upgrade leaves the schema as it was.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

from alembic import command
from alembic.config import Config
from alembic.runtime.migration import MigrationContext
from alembic.script import ScriptDirectory
from sqlalchemy import event, text
from sqlalchemy.engine import URL, Connection, make_url
from sqlalchemy.exc import ArgumentError
from sqlalchemy.ext.asyncio import AsyncEngine, create_async_engine

MIGRATIONS = Path(__file__).resolve().parent / "migrations"
SQLITE_BUSY_TIMEOUT_MS = 10_000
_MIGRATION_LOCK = 0x6173_7472_6167  # pg_advisory_xact_lock key held while migrating ("astrag")
_ASYNC_DRIVERS = {
    "sqlite": "sqlite+aiosqlite",
    "sqlite+aiosqlite": "sqlite+aiosqlite",
    "postgresql": "postgresql+asyncpg",
    "postgres": "postgresql+asyncpg",
    "postgresql+asyncpg": "postgresql+asyncpg",
}


class StoreError(Exception):
    """The store cannot be used as asked (a bad URL, an unknown call...)."""


def parse_store_url(url: str) -> URL:
    """``url`` as an SQLAlchemy URL with its asyncio driver (``sqlite://`` and ``postgresql://`` get aiosqlite
    and asyncpg); anything else is refused. Error messages never repeat the URL (it may carry a password)."""
    try:
        parsed = make_url(url)
    except ArgumentError:
        raise StoreError("the store URL is not a database URL (sqlite+aiosqlite:///FILE or "
                         "postgresql+asyncpg://USER:PASSWORD@HOST/DB)") from None
    driver = _ASYNC_DRIVERS.get(parsed.drivername)
    if driver is None:
        raise StoreError(f"unsupported store database {parsed.drivername!r}: use sqlite+aiosqlite or "
                         "postgresql+asyncpg")
    parsed = parsed.set(drivername=driver)
    if driver.startswith("sqlite") and parsed.database in (None, "", ":memory:"):
        raise StoreError("the SQLite store needs a file (sqlite+aiosqlite:///data/asterisk-agent.db); "
                         "an in-memory database would be one per connection")
    return parsed


def sqlite_file(url: URL) -> Path | None:
    """The database file of an SQLite URL (None for PostgreSQL)."""
    return Path(url.database) if url.get_backend_name() == "sqlite" and url.database else None


def _sqlite_connect(dbapi_connection: Any, connection_record: Any) -> None:
    dbapi_connection.isolation_level = None  # we say when transactions begin (below), not the sqlite3 module
    cursor = dbapi_connection.cursor()
    # busy_timeout first: switching a new file to WAL needs its lock, which another opener may hold.
    for pragma in (f"busy_timeout={SQLITE_BUSY_TIMEOUT_MS}", "foreign_keys=ON", "journal_mode=WAL",
                   "synchronous=NORMAL"):
        cursor.execute(f"PRAGMA {pragma}")
    cursor.close()


def _sqlite_begin(connection: Connection) -> None:
    connection.exec_driver_sql("BEGIN IMMEDIATE")


def create_engine(url: URL, *, echo: bool = False) -> AsyncEngine:
    """An engine for a URL from :func:`parse_store_url`, set up as the module docstring says."""
    if url.get_backend_name() == "sqlite":
        engine = create_async_engine(url, echo=echo)
        event.listen(engine.sync_engine, "connect", _sqlite_connect)
        event.listen(engine.sync_engine, "begin", _sqlite_begin)
        return engine
    return create_async_engine(url, echo=echo, pool_pre_ping=True)


def _alembic_config(connection: Connection | None = None) -> Config:
    config = Config()
    config.set_main_option("script_location", str(MIGRATIONS).replace("%", "%%"))
    if connection is not None:
        config.attributes["connection"] = connection
    return config


def head_revision() -> str:
    """The newest migration shipped in the package."""
    head = ScriptDirectory.from_config(_alembic_config()).get_current_head()
    assert head is not None
    return head


def current_revision(connection: Connection) -> str | None:
    """The migration the database is at (None: none applied)."""
    return MigrationContext.configure(connection).get_current_revision()


def _upgrade(connection: Connection) -> None:
    command.upgrade(_alembic_config(connection), "head")


async def upgrade_to_head(engine: AsyncEngine) -> None:
    """Apply every migration the database lacks, in one transaction; nothing to do when it is at head."""
    async with engine.begin() as connection:
        if connection.dialect.name == "postgresql":
            await connection.execute(text("SELECT pg_advisory_xact_lock(:key)"), {"key": _MIGRATION_LOCK})
        await connection.run_sync(_upgrade)
