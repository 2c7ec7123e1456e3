"""The engine life cycle the auth and registry services share, against the real
PostgreSQL (own schema) and against a port nobody listens on."""

from __future__ import annotations

import asyncio

import pytest
from pydantic import SecretStr
from sqlalchemy import text

from alphapanda.db.engine import Database
from alphapanda.db.lifecycle import DB_UNAVAILABLE, DatabaseLifecycle, DatabaseNotStarted
from alphapanda.db.migrate import current_revision, head_revision
from tests.support.services import SHARED_DATABASE, free_port


async def test_start_migrates_once_and_close_disposes(schema: str) -> None:
    database = Database(url=SecretStr(SHARED_DATABASE), schema=schema)
    db = DatabaseLifecycle(database, "TestService")
    with pytest.raises(DatabaseNotStarted, match="TestService not started"):
        _ = db.engine
    assert await db.start() is None
    assert db.started
    assert await current_revision(database) == head_revision()
    # Many callers at once (a request, the watcher, a token lookup): one migration.
    await asyncio.gather(*(db.ensure_schema() for _ in range(10)))
    async with db.engine.connect() as conn:
        assert await conn.scalar(text("SELECT current_schema()")) == schema
    await db.close()
    await db.close()  # idempotent
    assert not db.started
    with pytest.raises(DatabaseNotStarted):
        _ = db.engine


async def test_an_unreachable_database_is_returned_not_raised() -> None:
    port = free_port()
    url = f"postgresql+asyncpg://nobody:secret@127.0.0.1:{port}/nothing"
    db = DatabaseLifecycle(Database(url=SecretStr(url), connect_timeout=2.0), "TestService")
    error = await db.start()
    assert isinstance(error, DB_UNAVAILABLE), error
    assert db.started  # the engine exists: a later call retries the migration
    with pytest.raises(DB_UNAVAILABLE):
        await db.ensure_schema()
    await db.close()
