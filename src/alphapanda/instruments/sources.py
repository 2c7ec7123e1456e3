"""Where the feed's instruments come from, and how registry changes reach it.

* ``CsvInstrumentSource``: every instrument of a Kite instrument-dump CSV in one mode;
  what tests, tools and a fresh install stream.
* ``RegistryInstruments``: the instrument registry (PostgreSQL), with the CSV for a
  fresh install whose streaming set was never filled.
* ``RegistryFollower``: runs beside the feed and turns streaming-set changes in the
  registry into subscription deltas (no reconnect).
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Callable, Iterator, Mapping, Sequence
from pathlib import Path
from typing import Protocol

from alphapanda.db.lifecycle import DB_UNAVAILABLE
from alphapanda.instruments.dump import load_instrument_dump
from alphapanda.kite.sharding import CapacityError
from alphapanda.metrics import catalog
from alphapanda.metrics.samples import Sample
from alphapanda.registry.watch import OnChange

log = logging.getLogger(__name__)


class InstrumentSource(Protocol):
    """Which instruments to stream, and in which mode (token -> "ltp"|"quote"|"full")."""

    async def load(self) -> dict[int, str]: ...


class CsvInstrumentSource:
    """Every instrument of a Kite instrument-dump CSV, all in one mode, capped at ``limit``."""

    def __init__(self, path: Path | None, mode: str, limit: int) -> None:
        self.path = path
        self.mode = mode
        self.limit = limit

    async def load(self) -> dict[int, str]:
        if self.path is None:  # no CSV configured: nothing to stream from it
            return {}
        instruments, errors = await asyncio.to_thread(load_instrument_dump, self.path)
        if errors:
            log.warning(
                "%s: %d rows skipped (first: line %d)", self.path, len(errors), errors[0].line
            )
        tokens = list(dict.fromkeys(i.instrument_token for i in instruments))
        if len(tokens) > self.limit:
            log.warning(
                "%s lists %d instruments; streaming the first %d (the API key's capacity)",
                self.path,
                len(tokens),
                self.limit,
            )
            tokens = tokens[: self.limit]
        return dict.fromkeys(tokens, self.mode)


class SubscriptionTarget(Protocol):
    """Where the desired set goes (``TickerClient``): applied as deltas, no reconnect."""

    async def set_subscriptions(self, desired: Mapping[int, str]) -> None: ...


class StreamingRegistry(Protocol):
    """What the feed needs of ``InstrumentRegistryService``."""

    @property
    def source(self) -> str:
        """Where the last set came from: ``database``, ``csv`` or ``none``."""
        ...

    async def load(self) -> dict[int, str]: ...

    async def list_streaming(self, include_disabled: bool = False) -> Sequence[object]: ...

    async def watch(self, on_change: OnChange) -> None: ...


class RegistryInstruments:
    """The feed's ``InstrumentSource``: the registry, with a CSV for a fresh install.

    * Database reachable and instruments marked for streaming: that set.
    * Database unreachable: the registry's own CSV fallback (logged at ERROR there).
    * Database reachable but the streaming table has never been filled (no row at
      all, enabled or not — a fresh install): the CSV ``settings.feed.instruments_csv``
      in ``settings.feed.mode`` if one is configured (``make run`` configures the
      simulator's universe), with a WARNING. Without a CSV nothing is streamed — never
      made-up instruments — and the WARNING says how to choose instruments; the feed
      waits, connected, for the first instrument to be marked for streaming.
    * Rows exist but all are disabled: nothing is streamed — that is the operator's
      choice (``instruments unstream``), not a missing configuration.
    """

    def __init__(self, registry: StreamingRegistry, csv: CsvInstrumentSource) -> None:
        self.registry = registry
        self._csv = csv
        self.unconfigured_fallback = False

    @property
    def source(self) -> str:
        """``database``, ``csv`` (database down), ``csv-unconfigured``, ``unconfigured``
        (no streaming set and no CSV) or ``none``."""
        if not self.unconfigured_fallback:
            return self.registry.source
        return "csv-unconfigured" if self._csv.path is not None else "unconfigured"

    async def load(self) -> dict[int, str]:
        desired = await self.registry.load()
        if desired or self.registry.source != "database" or await self._configured():
            self.unconfigured_fallback = False
            return desired
        self.unconfigured_fallback = True
        if self._csv.path is None:
            log.warning(
                "no instruments to stream: the registry has no streaming set and no CSV is "
                "configured. Waiting; choose instruments with `alphapanda instruments fetch` "
                "then `alphapanda instruments stream NSE:INFY ...` (applied within a second)"
            )
            return {}
        fallback = await self._csv.load()
        log.warning(
            "instrument registry has no streaming instruments configured (fresh install?): "
            "streaming %d instrument(s) from %s in mode %s until `alphapanda instruments "
            "stream` or `instruments load --mode` configures the registry",
            len(fallback),
            self._csv.path,
            self._csv.mode,
        )
        return fallback

    async def resolve_change(self, desired: dict[int, str]) -> dict[int, str] | None:
        """The set to apply for a change the watcher reported; None: keep the current."""
        if desired:
            if self.unconfigured_fallback:
                log.warning("instrument registry configured: streaming its set from now on")
            self.unconfigured_fallback = False
            return desired
        try:
            configured = await self._configured()
        except DB_UNAVAILABLE as exc:
            log.warning(
                "cannot check the registry (%s); keeping the current set", type(exc).__name__
            )
            return None
        if not configured:
            # Still (or again) a registry without configuration: keep/return to the CSV.
            if self.unconfigured_fallback:
                return None
            self.unconfigured_fallback = True
            return await self._csv.load()
        self.unconfigured_fallback = False
        return desired

    async def _configured(self) -> bool:
        rows = await self.registry.list_streaming(include_disabled=True)
        return bool(rows)


class RegistryFollower:
    """``BackgroundService``: streaming-set changes in the registry → subscription deltas.

    Runs the registry's watcher (LISTEN/NOTIFY, resync, DB restarts survived) until
    ``stop()``. Changes arriving while the feed shuts down are ignored, so the
    unsubscribe-and-drain of the shutdown is not undone.
    """

    def __init__(
        self,
        instruments: RegistryInstruments,
        target: SubscriptionTarget,
        stopping: Callable[[], bool],
    ) -> None:
        self._instruments = instruments
        self._target = target
        self._stopping = stopping
        self._stop = asyncio.Event()
        self.changes_applied = 0
        self.changes_refused = 0

    async def run(self) -> None:
        async with asyncio.TaskGroup() as tg:
            watch = tg.create_task(
                self._instruments.registry.watch(self._apply), name="registry-watch"
            )
            await self._stop.wait()
            watch.cancel()

    def stop(self) -> None:
        self._stop.set()

    def samples(self) -> Iterator[Sample]:
        """Registry changes applied to / refused by the running feed (``MetricsSource``)."""
        yield catalog.REGISTRY_CHANGES_APPLIED.sample(self.changes_applied)
        yield catalog.REGISTRY_CHANGES_REFUSED.sample(self.changes_refused)

    async def _apply(self, desired: dict[int, str]) -> None:
        if self._stopping() or self._stop.is_set():
            return
        target = await self._instruments.resolve_change(desired)
        if target is None:
            return
        try:
            await self._target.set_subscriptions(target)
        except (CapacityError, ValueError) as exc:
            # A bad set in the database must not take the running feed down.
            self.changes_refused += 1
            log.error("registry change refused (%s); keeping the current subscriptions", exc)
            return
        self.changes_applied += 1
        log.info(
            "streaming set changed in the registry: now %d instrument(s) (source %s)",
            len(target),
            self._instruments.source,
        )
