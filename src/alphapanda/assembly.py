"""The feed process, assembled: ``open_feed(settings)`` wires every finished part together.

``MarketFeedService`` owns the tick path; this module decides *where its inputs come
from* in a real deployment and attaches what runs beside it:

* tokens: ``AuthService`` (PostgreSQL, 06:00 IST expiry, ``settings.kite.access_token``
  as the fallback) through ``BrokerAuthenticator`` — a token stored by
  ``alphapanda auth login`` / ``set-token`` is used at the next handshake;
* instruments: ``InstrumentRegistryService`` (PostgreSQL first, the CSV when the
  database is unreachable) wrapped in ``RegistryInstruments``, which also covers a
  fresh install (see there);
* ``RegistryFollower``: the registry's LISTEN/NOTIFY watcher, supervised in the
  service's TaskGroup, turning streaming-set changes into subscription deltas;
* metrics collector (Redis) and control API, plus the auth and registry figures.

``alphapanda feed`` runs ``open_feed`` and tests use it to run exactly that wiring.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
from collections.abc import AsyncIterator, Callable, Iterator, Mapping, Sequence
from typing import Protocol

from alphapanda.api import ApiServer, ServiceControl
from alphapanda.api.control import CsvInstrumentCatalog, RegistryInstrumentCatalog
from alphapanda.auth import AuthService, BrokerAuthenticator
from alphapanda.db.lifecycle import DB_UNAVAILABLE as _DB_UNAVAILABLE
from alphapanda.kite.sharding import CapacityError
from alphapanda.metrics.collector import PipelineMetricsCollector
from alphapanda.metrics.samples import Sample
from alphapanda.registry import InstrumentRegistryService
from alphapanda.registry.watch import OnChange
from alphapanda.service import CsvInstrumentSource, MarketFeedService
from alphapanda.settings import Settings

log = logging.getLogger(__name__)


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
      in ``settings.feed.mode``, with a WARNING, so ``make run`` streams out of the box.
      It stays in use until the first instrument is marked for streaming.
    * Rows exist but all are disabled: nothing is streamed — that is the operator's
      choice (``instruments unstream``), not a missing configuration.
    """

    def __init__(self, registry: StreamingRegistry, csv: CsvInstrumentSource) -> None:
        self.registry = registry
        self._csv = csv
        self.unconfigured_fallback = False

    @property
    def source(self) -> str:
        """``database``, ``csv`` (database down), ``csv-unconfigured`` or ``none``."""
        return "csv-unconfigured" if self.unconfigured_fallback else self.registry.source

    async def load(self) -> dict[int, str]:
        desired = await self.registry.load()
        if desired or self.registry.source != "database" or await self._configured():
            self.unconfigured_fallback = False
            return desired
        self.unconfigured_fallback = True
        fallback = await self._csv.load()
        log.warning(
            "instrument registry has no streaming instruments configured (fresh install?): "
            "streaming %d instrument(s) from %s in mode %s until `alphapanda instruments "
            "stream` or `instruments load --stream-mode` configures the registry",
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
        except _DB_UNAVAILABLE as exc:
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
        yield Sample(
            "registry_changes_applied_total",
            "counter",
            self.changes_applied,
            (),
            "Streaming-set changes applied to the running feed as subscription deltas",
        )
        yield Sample(
            "registry_changes_refused_total",
            "counter",
            self.changes_refused,
            (),
            "Streaming-set changes the ticker client refused (current set kept)",
        )

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


@contextlib.asynccontextmanager
async def open_feed(
    settings: Settings, *, metrics: bool = True, api: bool = True, registry: bool = True
) -> AsyncIterator[MarketFeedService]:
    """A ``MarketFeedService`` wired as ``alphapanda feed`` runs it (not yet running).

    ``registry=False`` streams the CSV only (no registry, no watcher). The auth and
    registry services (engines, migrations) are closed when the context exits.
    """
    feed = settings.feed
    kite = settings.kite
    csv = CsvInstrumentSource(
        feed.instruments_csv, feed.mode, kite.max_connections * kite.max_instruments_per_connection
    )
    async with contextlib.AsyncExitStack() as stack:
        auth = await stack.enter_async_context(AuthService(settings))
        tokens = BrokerAuthenticator(kite.api_key, auth)
        source: RegistryInstruments | None = None
        if registry:
            reg = await stack.enter_async_context(InstrumentRegistryService(settings))
            source = RegistryInstruments(reg, csv)
        service = MarketFeedService(settings, instruments=source or csv, tokens=tokens)
        service.add_metrics_source(auth)
        catalog: RegistryInstrumentCatalog | None = None
        if source is not None:
            service.add_metrics_source(reg)
            follower = RegistryFollower(source, service.client, lambda: service.stopping)
            service.attach(follower)
            service.add_metrics_source(follower)
            # Unknown tokens (POST /subscriptions) are those the registry does not know.
            catalog = RegistryInstrumentCatalog(reg, CsvInstrumentCatalog(feed.instruments_csv))
        control = ServiceControl(service, catalog)
        if metrics:
            service.attach(PipelineMetricsCollector(settings, control.metrics_sources()))
        if api:
            service.attach(ApiServer(settings, control))
        yield service
