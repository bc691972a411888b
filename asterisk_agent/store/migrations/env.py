"""Alembic's environment for the store's migrations.

The store applies them itself when it opens (:func:`asterisk_agent.store.engine.upgrade_to_head`), passing its
connection in ``config.attributes["connection"]``. Run by the ``alembic`` command instead (to write a new
migration: ``alembic -x url=sqlite+aiosqlite:///scratch.db revision --autogenerate -m "..."`` with
``script_location`` pointing here), it opens the database named by ``-x url=...``.
"""

from __future__ import annotations

import asyncio

from alembic import context
from sqlalchemy.engine import Connection

from asterisk_agent.store.engine import create_engine, parse_store_url
from asterisk_agent.store.models import Base

config = context.config
target_metadata = Base.metadata


def _run(connection: Connection) -> None:
    # Batch mode: SQLite cannot ALTER most things, so Alembic rebuilds the table there (a no-op elsewhere).
    context.configure(connection=connection, target_metadata=target_metadata, render_as_batch=True,
                      compare_type=True)
    with context.begin_transaction():
        context.run_migrations()


async def _run_from_url(url: str) -> None:
    engine = create_engine(parse_store_url(url))
    try:
        async with engine.begin() as connection:
            await connection.run_sync(_run)
    finally:
        await engine.dispose()


connection = config.attributes.get("connection")
if connection is not None:
    _run(connection)
elif context.is_offline_mode():
    raise SystemExit("the store's migrations run online only (alembic -x url=... upgrade head)")
else:
    asyncio.run(_run_from_url(context.get_x_argument(as_dictionary=True)["url"]))
