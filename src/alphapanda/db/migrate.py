"""Schema migrations run through alembic's API with the packaged script location.

Used at service start (idempotent: already at head is a no-op) and by
``alphapanda db upgrade``. Concurrent starters serialise on a PostgreSQL advisory lock
per schema, so two processes never run the same migration at once.
"""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path

from alembic import command
from alembic.config import Config
from alembic.runtime.migration import MigrationContext
from alembic.script import ScriptDirectory
from sqlalchemy import text
from sqlalchemy.engine import Connection
from sqlalchemy.ext.asyncio import AsyncConnection
from sqlalchemy.pool import NullPool

from alphapanda.db.engine import Database, validate_schema

ALEMBIC_INI = Path(__file__).with_name("alembic.ini")
_LOCK_KEY = "alphapanda.migrate."


def alembic_config(schema: str) -> Config:
    """The packaged alembic configuration, aimed at ``schema``."""
    config = Config(str(ALEMBIC_INI))
    config.attributes["schema"] = schema
    return config


def head_revision() -> str:
    """The newest revision shipped with this version of the package."""
    head = ScriptDirectory.from_config(alembic_config("public")).get_current_head()
    assert head is not None
    return head


async def upgrade_connection(
    conn: AsyncConnection,
    schema: str,
    revision: str = "head",
    run: Callable[[Connection], None] | None = None,
) -> None:
    """Lock, create the schema if needed, and upgrade, all in ``conn``'s transaction."""
    validate_schema(schema)
    await conn.execute(
        text("SELECT pg_advisory_xact_lock(hashtext(:key))"), {"key": _LOCK_KEY + schema}
    )
    await conn.execute(text(f'CREATE SCHEMA IF NOT EXISTS "{schema}"'))
    if run is not None:  # called from env.py under the plain alembic command
        await conn.run_sync(run)
        return

    def upgrade_sync(sync_conn: Connection) -> None:
        config = alembic_config(schema)
        config.attributes["connection"] = sync_conn
        command.upgrade(config, revision)

    await conn.run_sync(upgrade_sync)


async def upgrade(database: Database, revision: str = "head") -> str | None:
    """Bring ``database.schema`` up to ``revision``; returns the revision it is at after."""
    engine = database.create_engine(poolclass=NullPool)
    try:
        async with engine.begin() as conn:
            await upgrade_connection(conn, database.schema, revision)
        return await current_revision(database)
    finally:
        await engine.dispose()


async def current_revision(database: Database) -> str | None:
    """The schema's revision, or None when it was never migrated."""
    engine = database.create_engine(poolclass=NullPool)
    try:
        async with engine.connect() as conn:

            def read(sync_conn: Connection) -> str | None:
                ctx = MigrationContext.configure(
                    sync_conn, opts={"version_table_schema": database.schema}
                )
                return ctx.get_current_revision()

            return await conn.run_sync(read)
    finally:
        await engine.dispose()
