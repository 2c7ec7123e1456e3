"""``InstrumentRegistryService``: which instruments the feed streams, and in which mode.

PostgreSQL is the source of truth. At start the service migrates the schema (idempotent)
and reads the streaming set from the database; if PostgreSQL is unreachable it falls
back to the instrument dump CSV named by ``settings.feed.instruments_csv`` (every row in
``settings.feed.mode``), logs that at ERROR, and ``watch()`` keeps retrying the
database: once it answers, the feed receives the database's set through ``on_change``.

It is the feed's ``InstrumentSource`` (``load()``) and change feed (``watch()``).
"""

from __future__ import annotations

import logging
from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Literal

from sqlalchemy import select
from sqlalchemy.ext.asyncio import AsyncEngine

from alphapanda.db.engine import Database
from alphapanda.db.lifecycle import DB_UNAVAILABLE, DatabaseLifecycle, DatabaseService
from alphapanda.instruments.dump import Instrument, RowError, load_instrument_dump
from alphapanda.metrics.samples import Sample
from alphapanda.registry import loader
from alphapanda.registry.models import INSTRUMENTS, STREAM_SUBSCRIPTIONS
from alphapanda.registry.watch import OnChange, StreamingSetWatcher
from alphapanda.settings import Settings

log = logging.getLogger(__name__)

Source = Literal["database", "csv", "none"]


class RegistryUnavailable(Exception):
    """PostgreSQL cannot be reached for an operation that needs it (e.g. a load)."""


@dataclass(frozen=True, slots=True)
class LoadReport:
    """Outcome of ``load_dump``: counts, and every bad row with its line number."""

    inserted: int
    updated: int
    unchanged: int
    bad_rows: tuple[RowError, ...]
    streaming_changed: int = 0

    @property
    def good(self) -> int:
        return self.inserted + self.updated + self.unchanged


@dataclass(frozen=True, slots=True)
class StreamingInstrument:
    """A row of ``instruments list``: what is streamed, with a readable name."""

    instrument_token: int
    tradingsymbol: str
    exchange: str
    mode: str
    enabled: bool


class InstrumentRegistryService(DatabaseService):
    """The instrument registry on PostgreSQL with a CSV fallback. Use as an async context
    manager (``async with InstrumentRegistryService(settings) as registry``)."""

    def __init__(
        self,
        settings: Settings,
        database: Database | None = None,
        *,
        resync_interval: float = 30.0,
        retry_delay: float = 0.5,
    ) -> None:
        self._settings = settings
        self._database = database or Database.from_settings(settings.database)
        self._db = DatabaseLifecycle(self._database, "InstrumentRegistryService")
        self._resync_interval = resync_interval
        self._retry_delay = retry_delay
        self._last_loaded: dict[int, str] | None = None
        self.source: Source = "none"
        self.db_errors = 0
        self._watcher: StreamingSetWatcher | None = None
        kite = settings.kite
        self.capacity = kite.max_connections * kite.max_instruments_per_connection
        self.over_capacity = 0

    def __repr__(self) -> str:
        return f"InstrumentRegistryService(db={self._database.display_url!r}, schema={self._database.schema!r})"

    @property
    def database(self) -> Database:
        return self._database

    @property
    def engine(self) -> AsyncEngine:
        """The engine; ``DatabaseNotStarted`` before ``start()`` or after ``close()``."""
        return self._db.engine

    async def start(self) -> None:
        """Create the engine and migrate the schema; a down database is not an error here
        (``load()`` falls back, ``watch()`` retries)."""
        unreachable = await self._db.start()
        if unreachable is not None:
            self.db_errors += 1
            log.error(
                "PostgreSQL unreachable at start (%s at %s); instrument registry will retry",
                type(unreachable).__name__,
                self._database.display_url,
            )

    async def close(self) -> None:
        await self._db.close()

    async def ensure_schema(self) -> None:
        """Apply pending migrations once per process (idempotent, one caller at a time)."""
        await self._db.ensure_schema()

    # -- InstrumentSource -------------------------------------------------------------

    async def load(self) -> dict[int, str]:
        """The desired subscriptions (token → mode): the database, else the CSV dump."""
        engine = self.engine  # a registry never started is a bug, not an outage
        try:
            await self.ensure_schema()
            async with engine.connect() as conn:
                desired = await loader.read_streaming_set(conn)
        except DB_UNAVAILABLE as exc:
            self.db_errors += 1
            desired = self._load_csv_fallback(exc)
        else:
            self.source = "database"
            if not desired:
                log.warning(
                    "no instruments marked for streaming in the registry; "
                    "use `alphapanda instruments stream` or `instruments load --stream-mode`"
                )
        self._last_loaded = desired
        return self._cap(desired)

    def _cap(self, desired: dict[int, str]) -> dict[int, str]:
        # ``stream`` refuses to exceed the capacity, but a CSV or a hand-edited table can;
        # streaming the first instruments beats refusing to stream anything.
        if len(desired) <= self.capacity:
            return dict(desired)
        self.over_capacity += 1
        log.error(
            "%d instruments marked for streaming but the API key allows %d; streaming the "
            "%d lowest tokens",
            len(desired),
            self.capacity,
            self.capacity,
        )
        return {token: desired[token] for token in sorted(desired)[: self.capacity]}

    def _load_csv_fallback(self, exc: BaseException) -> dict[int, str]:
        path = self._settings.feed.instruments_csv
        mode = self._settings.feed.mode
        try:
            instruments, errors = load_instrument_dump(Path(path))
        except OSError as csv_exc:
            self.source = "none"
            log.error(
                "PostgreSQL unreachable (%s) and fallback CSV %s unreadable (%s): "
                "streaming nothing until the database answers",
                type(exc).__name__,
                path,
                type(csv_exc).__name__,
            )
            return {}
        self.source = "csv"
        log.error(
            "PostgreSQL unreachable (%s at %s): streaming %d instrument(s) from fallback "
            "CSV %s in mode %s (%d bad row(s)); will switch back when the database answers",
            type(exc).__name__,
            self._database.display_url,
            len(instruments),
            path,
            mode,
            len(errors),
        )
        return {i.instrument_token: mode for i in instruments}

    async def watch(self, on_change: OnChange) -> None:
        """Run until cancelled, calling ``on_change`` with the full desired set whenever
        the database's streaming set differs from the last one delivered (or loaded).
        Survives database restarts; run it in the caller's TaskGroup."""
        self._watcher = StreamingSetWatcher(
            self._database,
            last=self._last_loaded,
            resync_interval=self._resync_interval,
            retry_delay=self._retry_delay,
            on_connected=self.ensure_schema,
            on_read=self._on_database_read,
        )

        async def deliver(desired: dict[int, str]) -> None:
            await on_change(self._cap(desired))

        await self._watcher.run(deliver)

    def _on_database_read(self, desired: dict[int, str]) -> None:
        if self.source != "database":
            log.warning("instrument registry back on PostgreSQL (%d instruments)", len(desired))
        self.source = "database"

    # -- Management (CLI and API) -------------------------------------------------------

    async def load_dump(self, path: Path | str, stream_mode: str | None = None) -> LoadReport:
        """Upsert an instrument dump; bad rows are reported, good rows kept. With
        ``stream_mode``, every good row is also marked for streaming in that mode."""
        instruments, errors = load_instrument_dump(path)
        return await self.upsert(instruments, errors, stream_mode)

    async def upsert(
        self,
        instruments: Sequence[Instrument],
        errors: Iterable[RowError] = (),
        stream_mode: str | None = None,
    ) -> LoadReport:
        """Upsert parsed instruments in one transaction (all or nothing)."""
        await self.ensure_schema()
        async with self.engine.begin() as conn:
            counts = await loader.upsert_instruments(conn, instruments)
            changed = 0
            if stream_mode is not None:
                changed = await loader.enable_streaming(
                    conn, (i.instrument_token for i in instruments), stream_mode, self.capacity
                )
        return LoadReport(counts.inserted, counts.updated, counts.unchanged, tuple(errors), changed)

    async def stream(self, tokens: Iterable[int], mode: str) -> int:
        """Mark instruments for streaming in ``mode``; ValueError on unknown tokens."""
        await self.ensure_schema()
        async with self.engine.begin() as conn:
            return await loader.enable_streaming(conn, tokens, mode, self.capacity)

    async def unstream(self, tokens: Iterable[int]) -> int:
        """Stop streaming instruments; returns how many were streaming."""
        await self.ensure_schema()
        async with self.engine.begin() as conn:
            return await loader.disable_streaming(conn, tokens)

    async def streaming(self) -> dict[int, str]:
        """The database's streaming set (no fallback; raises if the DB is down)."""
        await self.ensure_schema()
        async with self.engine.connect() as conn:
            return await loader.read_streaming_set(conn)

    async def list_streaming(self, include_disabled: bool = False) -> list[StreamingInstrument]:
        """Streaming instruments with their symbols, ordered by exchange and symbol."""
        await self.ensure_schema()
        inst, sub = INSTRUMENTS, STREAM_SUBSCRIPTIONS
        query = (
            select(
                sub.c.instrument_token,
                inst.c.tradingsymbol,
                inst.c.exchange,
                sub.c.mode,
                sub.c.enabled,
            )
            .join(inst, inst.c.instrument_token == sub.c.instrument_token)
            .order_by(inst.c.exchange, inst.c.tradingsymbol)
        )
        if not include_disabled:
            query = query.where(sub.c.enabled)
        async with self.engine.connect() as conn:
            rows = await conn.execute(query)
            return [StreamingInstrument(int(r[0]), r[1], r[2], r[3], bool(r[4])) for r in rows]

    # -- Metrics ------------------------------------------------------------------------

    def samples(self) -> Iterable[Sample]:
        """Registry figures for the metrics collector (no I/O)."""
        watcher = self._watcher
        yield Sample(
            "registry_source",
            "gauge",
            1.0,
            (("source", self.source),),
            "Where the streaming set came from (database, csv, none)",
        )
        yield Sample(
            "registry_over_capacity_total",
            "counter",
            float(self.over_capacity),
            (),
            "Streaming sets cut to the API key's capacity",
        )
        yield Sample(
            "registry_db_errors_total",
            "counter",
            float(self.db_errors),
            (),
            "Registry operations that found PostgreSQL unreachable",
        )
        if watcher is not None:
            yield Sample(
                "registry_changes_total",
                "counter",
                float(watcher.changes),
                (),
                "Streaming-set changes delivered to the feed",
            )
            yield Sample(
                "registry_watch_reconnects_total",
                "counter",
                float(watcher.reconnects),
                (),
                "Registry listener reconnects",
            )
            yield Sample(
                "registry_watch_connected",
                "gauge",
                float(watcher.connected),
                (),
                "1 while the registry listener is connected",
            )
