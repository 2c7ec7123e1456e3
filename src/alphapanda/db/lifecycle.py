"""The life of one service's database engine, shared by the auth and registry services.

Both services keep working when PostgreSQL is down (a configured token, the instrument
CSV) and pick the database up again when it answers. So neither may fail at start:
``start()`` creates the engine and tries the migrations, and *returns* the error that
says the database is unreachable instead of raising it; later calls migrate on first
success (once per process, one caller at a time). What counts as "unreachable" rather
than a bug is :data:`DB_UNAVAILABLE`, defined here once.
"""

from __future__ import annotations

import asyncio
from types import TracebackType
from typing import Self

import asyncpg
from sqlalchemy.exc import DBAPIError
from sqlalchemy.ext.asyncio import AsyncEngine

from alphapanda.db.engine import Database
from alphapanda.db.migrate import upgrade_connection


class DatabaseNotStarted(RuntimeError):
    """The service's engine was used before ``start()`` or after ``close()``."""


# The database is not there right now (refused, timed out, restarting), as raised by a
# raw asyncpg connection (LISTEN/NOTIFY)...
DB_DOWN_ERRORS: tuple[type[BaseException], ...] = (
    OSError,
    TimeoutError,
    asyncpg.PostgresError,
    asyncpg.InterfaceError,
)
# ...and by anything that goes through SQLAlchemy, which wraps the driver's errors, or
# through a service that never got its engine.
DB_UNAVAILABLE: tuple[type[BaseException], ...] = (
    *DB_DOWN_ERRORS,
    DBAPIError,
    DatabaseNotStarted,
)


class DatabaseLifecycle:
    """An engine created at ``start()``, migrated once, disposed at ``close()``."""

    def __init__(self, database: Database, owner: str) -> None:
        self.database = database
        self._owner = owner
        self._engine: AsyncEngine | None = None
        self._migrated = False
        self._migrating = asyncio.Lock()

    @property
    def engine(self) -> AsyncEngine:
        if self._engine is None:
            raise DatabaseNotStarted(f"{self._owner} not started")
        return self._engine

    @property
    def started(self) -> bool:
        return self._engine is not None

    async def start(self) -> BaseException | None:
        """Create the engine and migrate; the error if the database is unreachable."""
        if self._engine is None:
            self._engine = self.database.create_engine()
        try:
            await self.ensure_schema()
        except DB_UNAVAILABLE as exc:
            return exc
        return None

    async def ensure_schema(self) -> None:
        """Apply pending migrations once per process (idempotent, one caller at a time)."""
        if self._migrated:
            return
        async with self._migrating:
            if self._migrated:
                return
            async with self.engine.begin() as conn:
                await upgrade_connection(conn, self.database.schema)
            self._migrated = True

    async def close(self) -> None:
        if self._engine is not None:
            engine, self._engine = self._engine, None
            await engine.dispose()


class DatabaseService:
    """Base of the services that own a :class:`DatabaseLifecycle`:
    ``async with Service(settings) as service`` is ``start()``, then ``close()``."""

    async def start(self) -> None:
        raise NotImplementedError

    async def close(self) -> None:
        raise NotImplementedError

    async def __aenter__(self) -> Self:
        await self.start()
        return self

    async def __aexit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        await self.close()
