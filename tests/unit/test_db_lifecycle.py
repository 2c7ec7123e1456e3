"""``DatabaseLifecycle``: the engine made at start, migrated once, and what counts as
"the database is unavailable" rather than a bug. The migration itself is replaced by a
recorder and the engine by a fake, so this is the life cycle's own logic; the same
against a real and an unreachable PostgreSQL is in ``tests/integration/test_db_lifecycle.py``.
"""

from __future__ import annotations

import asyncio
from dataclasses import dataclass, field
from typing import Any, cast

import asyncpg
import pytest
from sqlalchemy.exc import OperationalError, ProgrammingError

from alphapanda.db import lifecycle as lifecycle_module
from alphapanda.db.engine import Database
from alphapanda.db.lifecycle import (
    DB_DOWN_ERRORS,
    DB_UNAVAILABLE,
    DatabaseLifecycle,
    DatabaseNotStarted,
    DatabaseService,
)

pytestmark = pytest.mark.unit

SCHEMA = "test_lifecycle"


@dataclass
class FakeEngine:
    disposed: int = 0

    def begin(self) -> FakeTransaction:
        return FakeTransaction()

    async def dispose(self) -> None:
        self.disposed += 1


class FakeTransaction:
    async def __aenter__(self) -> str:
        return "conn"

    async def __aexit__(self, *exc: object) -> None:
        return None


@dataclass
class FakeDatabase:
    schema: str = SCHEMA
    engines: list[FakeEngine] = field(default_factory=list)

    def create_engine(self) -> FakeEngine:
        self.engines.append(FakeEngine())
        return self.engines[-1]


@dataclass
class Migrations:
    """Stands in for ``upgrade_connection``: records the schemas, fails while told to."""

    schemas: list[str] = field(default_factory=list)
    failures: list[BaseException] = field(default_factory=list)

    async def __call__(self, conn: Any, schema: str) -> None:
        await asyncio.sleep(0)  # let concurrent callers pile up
        if self.failures:
            raise self.failures.pop(0)
        self.schemas.append(schema)


@pytest.fixture
def migrations(monkeypatch: pytest.MonkeyPatch) -> Migrations:
    recorder = Migrations()
    monkeypatch.setattr(lifecycle_module, "upgrade_connection", recorder)
    return recorder


def lifecycle() -> tuple[DatabaseLifecycle, FakeDatabase]:
    database = FakeDatabase()
    return DatabaseLifecycle(cast(Database, database), "SomeService"), database


# -- start, ensure_schema, close ---------------------------------------------------------


async def test_the_engine_is_refused_before_start_naming_the_owner(
    migrations: Migrations,
) -> None:
    db, database = lifecycle()
    assert not db.started
    with pytest.raises(DatabaseNotStarted, match="SomeService not started"):
        _ = db.engine
    with pytest.raises(DatabaseNotStarted):
        await db.ensure_schema()
    assert database.engines == [] and migrations.schemas == []


async def test_start_creates_the_engine_and_migrates_the_schema(migrations: Migrations) -> None:
    db, database = lifecycle()
    assert await db.start() is None
    assert db.started and cast(object, db.engine) is database.engines[0]
    assert migrations.schemas == [SCHEMA]


async def test_migrations_run_once_however_many_callers(migrations: Migrations) -> None:
    db, _ = lifecycle()
    await db.start()
    await asyncio.gather(*(db.ensure_schema() for _ in range(10)))
    assert migrations.schemas == [SCHEMA]


async def test_concurrent_first_callers_share_one_migration(migrations: Migrations) -> None:
    db, database = lifecycle()
    migrations.failures.append(ConnectionRefusedError(111, "Connection refused"))
    await db.start()  # the database was down at start
    await asyncio.gather(*(db.ensure_schema() for _ in range(10)))
    assert migrations.schemas == [SCHEMA] and len(database.engines) == 1


OUTAGES = [
    pytest.param(ConnectionRefusedError(111, "Connection refused"), id="refused"),
    pytest.param(TimeoutError(), id="timeout"),
    pytest.param(asyncpg.CannotConnectNowError("starting up"), id="postgres"),
    pytest.param(asyncpg.InterfaceError("connection is closed"), id="interface"),
    pytest.param(OperationalError("SELECT 1", {}, OSError("gone")), id="sqlalchemy"),
]


@pytest.mark.parametrize("outage", OUTAGES)
async def test_an_unavailable_database_at_start_is_returned_not_raised(
    migrations: Migrations, outage: BaseException
) -> None:
    db, _ = lifecycle()
    migrations.failures.append(outage)
    assert await db.start() is outage
    assert db.started  # the engine stays: a later call retries


async def test_a_failed_migration_is_retried_by_the_next_caller(migrations: Migrations) -> None:
    db, _ = lifecycle()
    migrations.failures += [TimeoutError(), ConnectionRefusedError(111, "refused")]
    assert isinstance(await db.start(), TimeoutError)
    with pytest.raises(ConnectionRefusedError):
        await db.ensure_schema()
    await db.ensure_schema()
    await db.ensure_schema()
    assert migrations.schemas == [SCHEMA]


async def test_an_error_that_is_not_an_outage_is_raised_by_start(migrations: Migrations) -> None:
    db, _ = lifecycle()
    migrations.failures.append(KeyError("script_location"))
    with pytest.raises(KeyError):
        await db.start()


async def test_start_twice_keeps_the_engine(migrations: Migrations) -> None:
    db, database = lifecycle()
    await db.start()
    await db.start()
    assert len(database.engines) == 1 and migrations.schemas == [SCHEMA]


async def test_close_disposes_the_engine_once(migrations: Migrations) -> None:
    db, database = lifecycle()
    await db.start()
    await db.close()
    await db.close()
    assert database.engines[0].disposed == 1
    assert not db.started
    with pytest.raises(DatabaseNotStarted):
        _ = db.engine


async def test_a_restart_makes_a_new_engine_without_migrating_again(
    migrations: Migrations,
) -> None:
    db, database = lifecycle()
    await db.start()
    await db.close()
    await db.start()
    assert len(database.engines) == 2 and cast(object, db.engine) is database.engines[1]
    assert migrations.schemas == [SCHEMA]


# -- what "unavailable" means ------------------------------------------------------------


@pytest.mark.parametrize("outage", OUTAGES)
def test_outages_count_as_unavailable(outage: BaseException) -> None:
    assert isinstance(outage, DB_UNAVAILABLE)


def test_a_service_without_its_engine_counts_as_unavailable() -> None:
    assert isinstance(DatabaseNotStarted("x"), DB_UNAVAILABLE)


@pytest.mark.parametrize(
    "bug",
    [KeyError("k"), ValueError("v"), TypeError("t"), AssertionError(), RuntimeError("r")],
    ids=lambda e: type(e).__name__,
)
def test_programming_errors_do_not_count_as_unavailable(bug: Exception) -> None:
    assert not isinstance(bug, DB_UNAVAILABLE)


def test_the_raw_driver_errors_leave_out_sqlalchemys_wrappers() -> None:
    # The LISTEN connection is plain asyncpg; SQLAlchemy errors never reach it.
    wrapped = ProgrammingError("SELECT", {}, Exception("syntax"))
    assert isinstance(wrapped, DB_UNAVAILABLE) and not isinstance(wrapped, DB_DOWN_ERRORS)
    assert isinstance(asyncpg.ConnectionDoesNotExistError("gone"), DB_DOWN_ERRORS)


# -- DatabaseService ---------------------------------------------------------------------


@dataclass
class Recording(DatabaseService):
    events: list[str] = field(default_factory=list)

    async def start(self) -> None:
        self.events.append("start")

    async def close(self) -> None:
        self.events.append("close")


async def test_a_service_as_a_context_manager_starts_then_closes() -> None:
    service = Recording()
    async with service as entered:
        assert entered is service and service.events == ["start"]
    assert service.events == ["start", "close"]


async def test_a_service_is_closed_when_its_block_raises() -> None:
    service = Recording()
    with pytest.raises(RuntimeError, match="boom"):
        async with service:
            raise RuntimeError("boom")
    assert service.events == ["start", "close"]


async def test_the_base_service_has_no_start_of_its_own() -> None:
    with pytest.raises(NotImplementedError):
        async with DatabaseService():
            pass
