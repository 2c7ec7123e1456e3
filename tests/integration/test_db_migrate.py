"""The packaged migrations against real PostgreSQL (own schema): what they build is
exactly what the SQLAlchemy models declare, so the code never queries a column the
migrations did not create (nor leaves one they did unmapped)."""

from __future__ import annotations

from typing import Any

from alembic.autogenerate import compare_metadata
from alembic.runtime.migration import MigrationContext
from pydantic import SecretStr
from sqlalchemy.engine import Connection
from sqlalchemy.pool import NullPool

from alphapanda.auth.store import ACCESS_TOKENS
from alphapanda.db.base import Base
from alphapanda.db.engine import Database
from alphapanda.db.migrate import head_revision, upgrade
from alphapanda.registry.models import INSTRUMENTS, STREAM_SUBSCRIPTIONS
from tests.support.services import SHARED_DATABASE

MAPPED = {table.name for table in (INSTRUMENTS, STREAM_SUBSCRIPTIONS, ACCESS_TOKENS)}


async def test_the_migrations_build_exactly_the_mapped_tables(schema: str) -> None:
    database = Database(url=SecretStr(SHARED_DATABASE), schema=schema)
    assert await upgrade(database) == head_revision()
    assert set(Base.metadata.tables) == MAPPED

    def differences(sync_conn: Connection) -> list[Any]:
        # The connection's search_path is the schema: it is the default one here.
        context = MigrationContext.configure(sync_conn, opts={"compare_type": True})
        return list(compare_metadata(context, Base.metadata))

    engine = database.create_engine(poolclass=NullPool)
    try:
        async with engine.connect() as conn:
            diffs = await conn.run_sync(differences)
    finally:
        await engine.dispose()
    assert [(d[0], d[1].name) for d in diffs] == []
