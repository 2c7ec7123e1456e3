"""Alembic environment.

The service and ``alphapanda db upgrade`` hand alembic an open connection (see
``alphapanda.db.migrate``), already switched to the target schema and holding the
migration lock. Run through the plain ``alembic`` command instead, the URL comes from
the alphapanda settings (environment / ``.env``), never from ``alembic.ini``.
"""

from __future__ import annotations

import asyncio

from alembic import context
from sqlalchemy.engine import Connection

from alphapanda.db.base import Base
from alphapanda.db.engine import DEFAULT_SCHEMA, Database


def _run(connection: Connection) -> None:
    schema = context.config.attributes.get("schema", DEFAULT_SCHEMA)
    context.configure(
        connection=connection,
        target_metadata=Base.metadata,
        version_table_schema=schema,
        transaction_per_migration=False,
    )
    with context.begin_transaction():
        context.run_migrations()


def _run_online() -> None:
    connection = context.config.attributes.get("connection")
    if connection is not None:
        _run(connection)
        return
    from alphapanda.db.migrate import upgrade_connection
    from alphapanda.settings import load_settings

    database = Database.from_settings(load_settings().database)
    context.config.attributes["schema"] = database.schema

    async def standalone() -> None:
        engine = database.create_engine()
        try:
            async with engine.begin() as conn:
                await upgrade_connection(conn, database.schema, run=_run)
        finally:
            await engine.dispose()

    asyncio.run(standalone())


if context.is_offline_mode():
    raise SystemExit("offline (--sql) migrations are not supported; run `alphapanda db upgrade`")
_run_online()
