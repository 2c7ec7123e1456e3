"""The one place that constructs the feed's parts and wires them together.

``build(settings, overrides)`` returns ``FeedParts`` — sources, buffer, record builder,
producer, spool, WAL, connections, derived streams, metrics, API control — ready for
``MarketFeedService(parts)`` to run. ``Overrides`` is what a caller changes from the
default wiring: the feed process hands in its database services, tests and benchmarks
hand in their own instruments, tokens, frame listener or background services.

``open_feed(settings)`` is the feed process's wiring (``alphapanda feed``): it opens
the two database services and builds with them, so that

* tokens come from ``AuthService`` (PostgreSQL, 06:00 IST expiry,
  ``settings.kite.access_token`` as the fallback) through ``BrokerAuthenticator`` — a
  token stored by ``alphapanda auth login`` / ``set-token`` is used at the next
  handshake;
* instruments come from ``InstrumentRegistryService`` (PostgreSQL first, the CSV when
  the database is unreachable) wrapped in ``RegistryInstruments``, which also covers a
  fresh install, and ``RegistryFollower`` turns registry changes into subscription
  deltas while the feed runs;
* the metrics collector (Redis) and the control API run beside the pipeline.
"""

from __future__ import annotations

import contextlib
import logging
from collections.abc import AsyncIterator, Callable, Sequence
from dataclasses import dataclass
from functools import partial
from typing import TYPE_CHECKING, Any

from alphapanda.api import ApiServer, ServiceControl
from alphapanda.auth import AuthService, BrokerAuthenticator
from alphapanda.clock import SYSTEM_CLOCK, Clock
from alphapanda.ha.gate import StandbyGate
from alphapanda.instruments.catalogs import (
    CsvInstrumentCatalog,
    InstrumentCatalog,
    RegistryInstrumentCatalog,
)
from alphapanda.instruments.sources import (
    CsvInstrumentSource,
    InstrumentSource,
    RegistryFollower,
    RegistryInstruments,
)
from alphapanda.kite.client import TickerClient
from alphapanda.kite.connection import FrameListener
from alphapanda.kite.ports import StaticTokenProvider, TokenProvider
from alphapanda.metrics.collector import PipelineMetricsCollector
from alphapanda.parts import BackgroundService, FeedLifecycle, FeedParts
from alphapanda.pipeline.accounting import Accounting
from alphapanda.pipeline.buffer import TickBuffer
from alphapanda.pipeline.formatter import TickFormatter
from alphapanda.pipeline.hotpath import HotPath, select_hot_path
from alphapanda.pipeline.producer import DeliveryHandler, MessageProducer, backstop_timeout_ms
from alphapanda.pipeline.publisher import Publisher, RecordBuilder
from alphapanda.pipeline.spool import Spool
from alphapanda.pipeline.wire import WireEncoder
from alphapanda.registry import InstrumentRegistryService
from alphapanda.service import FeedFigures
from alphapanda.settings import Settings
from alphapanda.streams.runner import DerivedStreams, ServiceState
from alphapanda.topics import TopicNames
from alphapanda.wal.ingest import WalIngest
from alphapanda.wal.tails import consumer_config, published_among

if TYPE_CHECKING:
    from alphapanda.ha.controller import HaController

log = logging.getLogger(__name__)

__all__ = ["FeedParts", "Overrides", "build", "open_feed"]


@dataclass(frozen=True, kw_only=True)
class Overrides:
    """What a caller changes from the default wiring (every field optional).

    * ``instruments``: where the instruments to stream come from (default: the CSV
      ``feed.instruments_csv`` in ``feed.mode``). Ignored when ``registry`` is given.
    * ``tokens``: the access tokens (default: ``kite.access_token``). Ignored when
      ``auth`` is given.
    * ``auth`` / ``registry``: the feed process's database services; they bring the
      tokens, the instruments, the registry follower, the known-instruments catalog of
      the API and their own figures.
    * ``frame_listener``: sees every raw frame read from a socket (``alphapanda record``).
    * ``services``: more background services, run after the built-in ones.
    * ``clock``: the time every part reads (monotonic for deadlines, wall ns for stamps).
    * ``metrics`` / ``api``: run the metrics collector (Redis) / the control API.
    """

    instruments: InstrumentSource | None = None
    tokens: TokenProvider | None = None
    auth: AuthService | None = None
    registry: InstrumentRegistryService | None = None
    frame_listener: FrameListener | None = None
    services: Sequence[BackgroundService] = ()
    clock: Clock = SYSTEM_CLOCK
    metrics: bool = False
    api: bool = False


def build(settings: Settings, overrides: Overrides | None = None) -> FeedParts:
    """Construct every part of one feed and wire them; nothing runs or opens yet."""
    overrides = overrides or Overrides()
    feed = settings.feed
    ha = settings.ha
    topic = TopicNames.market_ticks(settings.kafka.topic_prefix)
    lifecycle = FeedLifecycle()
    accounting = Accounting()
    buffer = TickBuffer(feed.buffer_capacity, feed.buffer_policy, accounting)
    spool = Spool(feed.spool_dir, feed.spool_max_bytes, feed.spool_min_free_bytes)
    formatter = TickFormatter(include_depth=feed.include_depth, include_oi=feed.include_oi)
    hot_path = _hot_path(settings)
    clock = overrides.clock
    records = RecordBuilder(formatter, WireEncoder(feed.wire_format), accounting, clock)

    def make_producer(
        on_delivery: DeliveryHandler, on_ack: Callable[[int], None]
    ) -> MessageProducer:
        # The publisher notices a silent broker itself (stall_after), in order.
        transactions: dict[str, Any] = {}
        if ha.group and ha.fencing == "transactions":
            # One transactional id per group: whoever initialises it fences the rest.
            transactions = {
                "transactional_id": f"alphapanda-ha-{ha.group}",
                "commit_interval": ha.commit_interval_ms / 1000,
            }
        return MessageProducer(
            settings.kafka,
            topic,
            on_delivery,
            on_ack=on_ack,
            message_timeout_ms=backstop_timeout_ms(settings.kafka.message_timeout_ms),
            clock=clock,
            **transactions,
        )

    publisher = Publisher(
        buffer,
        records,
        make_producer,
        spool,
        accounting,
        batch_max=feed.batch_max,
        shutdown_deadline=feed.shutdown_deadline,
        queue_max_messages=settings.kafka.queue_max_messages,
        stall_after=settings.kafka.message_timeout_ms / 1000,
        published_check=partial(published_among, consumer_config(settings.kafka), topic),
        on_fatal=lifecycle.producer_failed,
        clock=clock,
        topic_writable=lifecycle.topic_writable,
    )
    # Candles, latest quotes, feed events, order updates: fed after the tick path.
    derived = DerivedStreams(settings, clock=clock) if settings.streams.enabled else None
    records.observer = derived.offer if derived is not None else None
    # The write-ahead log of raw frames: what a crash of this process cannot lose.
    wal: WalIngest | None = None
    if feed.wal_enabled and ha.group:
        # In a hot-standby group a crash of the active is covered by the standby, which
        # publishes what follows the active's last tick; a restarted instance joins as
        # a standby and must not republish its own log.
        log.info("hot-standby group %s: the write-ahead log is not used", ha.group)
    elif feed.wal_enabled:
        wal = WalIngest(
            settings,
            topic,
            buffer,
            accounting,
            records.wire,
            # What a previous run spooled is replayed by the spool: not by the WAL.
            spool_dir=feed.spool_dir,
            decode=hot_path.decode,
            # What recovery at start found: a crash_recovery feed event.
            emit=derived.emit if derived is not None else None,
            clock=clock,
            # The native hot path also writes the WAL from a native thread.
            native=hot_path.native,
        )
        publisher.producer.ack_listener = wal.resolved
    tokens = overrides.tokens
    if overrides.auth is not None:
        tokens = BrokerAuthenticator(settings.kite.api_key, overrides.auth)
    # Hot standby: the connections feed a gate that holds ticks while this is a standby.
    gate = StandbyGate(buffer, ha.window_seconds) if ha.group else None
    client = TickerClient(
        settings.kite,
        tokens or StaticTokenProvider(settings.kite),
        gate if gate is not None else buffer,
        frame_listener=overrides.frame_listener,
        order_listener=derived.offer_order if derived is not None else None,
        decode=hot_path.decode,
        frame_log=wal,
        clock=clock,
    )
    if wal is not None:
        wal.instruments = client.subscriptions
    csv = CsvInstrumentSource(feed.instruments_csv, feed.mode, settings.kite.capacity)
    registry = overrides.registry
    from_registry = RegistryInstruments(registry, csv) if registry is not None else None
    instruments = from_registry or overrides.instruments or csv
    parts = FeedParts(
        settings=settings,
        topic=topic,
        lifecycle=lifecycle,
        accounting=accounting,
        buffer=buffer,
        spool=spool,
        formatter=formatter,
        hot_path=hot_path,
        records=records,
        publisher=publisher,
        client=client,
        instruments=instruments,
        wal=wal,
        derived=derived,
        clock=clock,
    )
    parts.sources.extend(
        [accounting, buffer, publisher, publisher.producer, spool, formatter, hot_path, client]
    )
    parts.sources.append(FeedFigures(parts))
    if wal is not None:
        parts.sources.append(wal)
    if derived is not None:
        derived.sample_from(ServiceState(client, publisher, accounting))
        parts.services.append(derived)
        parts.sources.append(derived)
    if gate is not None:
        parts.ha = _ha_controller(settings, parts, gate)
        parts.services.append(parts.ha)
        parts.sources.append(parts.ha)
    if overrides.auth is not None:
        parts.sources.append(overrides.auth)
    catalog: InstrumentCatalog = CsvInstrumentCatalog(feed.instruments_csv)
    if registry is not None and from_registry is not None:
        follower = RegistryFollower(from_registry, client, lambda: lifecycle.stopping)
        parts.services.append(follower)
        parts.sources.extend([registry, follower])
        # Unknown tokens (POST /subscriptions) are those the registry does not know.
        catalog = RegistryInstrumentCatalog(registry, catalog)
    parts.services.extend(overrides.services)
    control = ServiceControl(parts, catalog)
    api = None
    if overrides.api:
        api = ApiServer(settings, control, feed_stopping=lambda: lifecycle.stopping)
        if api.process is not None:
            # Its restarts and the control calls it made, beside the feed's own figures.
            parts.sources.append(api.process)
    if overrides.metrics:
        parts.collector = PipelineMetricsCollector(settings, control.metrics_sources())
        parts.services.append(parts.collector)
    if api is not None:
        parts.services.append(api)
    return parts


def _hot_path(settings: Settings) -> HotPath:
    # The hot-standby gate matches ticks by fields (last trade time) that native ticks
    # do not carry: a group member runs on the Python path.
    setting = settings.feed.hot_path
    if settings.ha.group:
        setting = "python"
    return select_hot_path(setting)


def _ha_controller(settings: Settings, parts: FeedParts, gate: StandbyGate) -> HaController:
    from alphapanda.ha.controller import HaController, instance_name

    api = settings.api
    derived = parts.derived
    controller = HaController(
        settings,
        gate,
        parts.producer,
        parts.topic,
        instance=instance_name(api.port),
        api_url=f"http://{api.host}:{api.port}",
        connect=parts.client.set_subscriptions,
        streaming=parts.client.is_streaming,
        emit=derived.emit if derived is not None else None,
        request_stop=parts.lifecycle.request_stop,
        topic_ready=parts.lifecycle.topic_writable,
    )
    if derived is not None:
        # A standby's own feed events are not published: the active's are the group's.
        derived.publishing = lambda: controller.active
    parts.lifecycle.on_producer_failed = controller.producer_failed
    return controller


@contextlib.asynccontextmanager
async def open_feed(
    settings: Settings, *, metrics: bool = True, api: bool = True, registry: bool = True
) -> AsyncIterator[FeedParts]:
    """The parts wired as ``alphapanda feed`` runs them (not yet running).

    ``registry=False`` streams the CSV only (no registry, no watcher). The auth and
    registry services (engines, migrations) are closed when the context exits.
    """
    async with contextlib.AsyncExitStack() as stack:
        auth = await stack.enter_async_context(AuthService(settings))
        reg = None
        if registry:
            reg = await stack.enter_async_context(InstrumentRegistryService(settings))
        yield build(settings, Overrides(auth=auth, registry=reg, metrics=metrics, api=api))
