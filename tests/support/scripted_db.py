"""A database connection scripted by the test, for unit tests of code that sends SQL.

It answers each statement with the next prepared :class:`Answer` and records what was
sent, so a test can check the logic around the queries (validation, batching, counting,
row mapping) without PostgreSQL. What the SQL itself does is for the integration tests.
"""

from __future__ import annotations

from collections.abc import AsyncIterator, Callable, Iterator, Sequence
from contextlib import asynccontextmanager
from dataclasses import dataclass, field
from typing import Any, cast

from sqlalchemy.dialects import postgresql
from sqlalchemy.ext.asyncio import AsyncConnection, AsyncEngine
from sqlalchemy.sql import ClauseElement


class Scalars(list[Any]):
    def all(self) -> list[Any]:
        return list(self)


@dataclass
class Answer:
    """What one statement returns: rows, scalars (first column) and a rowcount."""

    rows: Sequence[tuple[Any, ...]] = ()
    rowcount: int = 0

    def scalars(self) -> Scalars:
        return Scalars(row[0] for row in self.rows)

    def scalar_one(self) -> Any:
        ((value,),) = self.rows
        return value

    def one(self) -> tuple[Any, ...]:
        (row,) = self.rows
        return row

    def all(self) -> list[tuple[Any, ...]]:
        return list(self.rows)

    def first(self) -> tuple[Any, ...] | None:
        return self.rows[0] if self.rows else None

    def __iter__(self) -> Iterator[tuple[Any, ...]]:
        return iter(self.rows)


@dataclass
class ScriptedConnection:
    """Answers statements in order; a statement nobody scripted fails the test."""

    answers: list[Answer] = field(default_factory=list)
    statements: list[Any] = field(default_factory=list)
    parameters: list[dict[str, Any] | None] = field(default_factory=list)
    synced: list[Callable[..., Any]] = field(default_factory=list)

    async def execute(self, statement: Any, parameters: dict[str, Any] | None = None) -> Answer:
        self.statements.append(statement)
        self.parameters.append(parameters)
        assert self.answers, f"unexpected statement: {statement}"
        return self.answers.pop(0)

    async def run_sync(self, fn: Callable[..., Any]) -> Any:
        """Records ``fn`` instead of calling it with a synchronous connection."""
        self.synced.append(fn)

    @property
    def conn(self) -> AsyncConnection:
        return cast(AsyncConnection, self)


def compiled_params(statement: ClauseElement) -> dict[str, Any]:
    """The bind parameters of ``statement`` as PostgreSQL would receive them."""
    return dict(statement.compile(dialect=postgresql.dialect()).params)  # type: ignore[no-untyped-call]


@dataclass
class ScriptedEngine:
    """An engine whose every ``connect()`` / ``begin()`` is the same scripted connection."""

    connection: ScriptedConnection = field(default_factory=ScriptedConnection)
    opened: list[str] = field(default_factory=list)

    @asynccontextmanager
    async def connect(self) -> AsyncIterator[ScriptedConnection]:
        self.opened.append("connect")
        yield self.connection

    @asynccontextmanager
    async def begin(self) -> AsyncIterator[ScriptedConnection]:
        self.opened.append("begin")
        yield self.connection

    @property
    def engine(self) -> AsyncEngine:
        return cast(AsyncEngine, self)


class ScriptedLifecycle:
    """What a service uses of ``DatabaseLifecycle``, over a :class:`ScriptedEngine`.

    ``down`` makes the database unreachable: ``start`` returns it, ``ensure_schema``
    raises it. Before ``start`` and after ``close`` the engine is refused, as the real
    lifecycle refuses it."""

    def __init__(self, database: object, owner: str) -> None:
        self.database = database
        self.owner = owner
        self.scripted = ScriptedEngine()
        self.down: BaseException | None = None
        self.started = False
        self.schema_checks = 0

    @property
    def engine(self) -> AsyncEngine:
        from alphapanda.db.lifecycle import DatabaseNotStarted

        if not self.started:
            raise DatabaseNotStarted(f"{self.owner} not started")
        return self.scripted.engine

    async def start(self) -> BaseException | None:
        from alphapanda.db.lifecycle import DB_UNAVAILABLE

        self.started = True
        try:
            await self.ensure_schema()
        except DB_UNAVAILABLE as exc:
            return exc
        return None

    async def ensure_schema(self) -> None:
        """Counts the calls in ``schema_checks`` (the real one migrates on the first)."""
        _ = self.engine
        if self.down is not None:
            raise self.down
        self.schema_checks += 1

    async def close(self) -> None:
        self.started = False
