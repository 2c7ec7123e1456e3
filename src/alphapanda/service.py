"""``MarketFeedService``: the orchestrator — Kite ticker → TickBuffer → publisher → Kafka.

Wiring, start-up and shutdown order live here and nowhere else::

    TickerClient ──put_many──▶ TickBuffer ──take_batch──▶ Publisher ──▶ MessageProducer ──▶ Kafka
                                                              └────────▶ Spool (broker away)

Start-up: open the spool (a previous run's records are replayed before anything new),
create the topic (retried in the background while the broker is unreachable: ticks
meanwhile wait in librdkafka's queue and then the spool), load the instruments to
stream from an ``InstrumentSource`` and subscribe, then run every part as one task of
one ``TaskGroup``.

Shutdown (``request_stop()``, wired to SIGTERM/SIGINT by ``alphapanda feed``):
unsubscribe and read until the exchange is quiet (bounded), stop reading (close every
socket), close the buffer, let the publisher drain it and flush
the producer within ``feed.shutdown_deadline`` (spooling what cannot be flushed), then
stop the extra services (metrics collector, API). A failure of the Kite client or of
an extra service triggers the same graceful shutdown and then ``ServiceFailed``; a
failure of the publisher itself cannot be drained and propagates.

Its defaults (``StaticTokenProvider``, ``CsvInstrumentSource``) suit tests and tools;
``alphapanda feed`` builds it through ``alphapanda.assembly.open_feed``, which hands it
``AuthService`` tokens, the instrument registry and its change follower.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import time
from collections.abc import Callable, Coroutine, Sequence
from pathlib import Path
from typing import TYPE_CHECKING, Any, Final, Protocol

import msgspec

from alphapanda.instruments import load_instrument_dump
from alphapanda.kite.client import TickerClient
from alphapanda.kite.connection import FrameListener
from alphapanda.kite.tokens import StaticTokenProvider, TokenProvider
from alphapanda.metrics.keys import LAST_TICK_TIMESTAMP
from alphapanda.metrics.samples import MetricsSource, Sample
from alphapanda.pipeline.accounting import DROP_SPOOL_CORRUPT, Accounting
from alphapanda.pipeline.buffer import TickBuffer
from alphapanda.pipeline.formatter import TickFormatter
from alphapanda.pipeline.hotpath import select_hot_path
from alphapanda.pipeline.producer import DeliveryHandler, MessageProducer
from alphapanda.pipeline.publisher import Publisher, TickEncoder
from alphapanda.pipeline.spool import Spool
from alphapanda.pipeline.topics_admin import TopicSetupError, ensure_topic
from alphapanda.pipeline.wire import WireEncoder
from alphapanda.settings import Settings
from alphapanda.streams.runner import DerivedStreams, ServiceState
from alphapanda.topics import TopicNames
from alphapanda.wal.ingest import WalIngest

if TYPE_CHECKING:
    from alphapanda.ha.controller import HaController

log = logging.getLogger(__name__)

# Between attempts to create the topic while the broker is unreachable at start-up.
TOPIC_RETRY_DELAY: Final = 5.0
# Shutdown: after unsubscribing, each socket is read until quiet (see the connection's
# DRAIN_QUIET/DRAIN_MAX); the whole step never takes longer than QUIESCE_MAX.
QUIESCE_MAX: Final = 3.0
# How long start-up waits for crash recovery (the broker answering) before it opens the
# sockets anyway.
WAL_RECOVERY_WAIT: Final = 10.0


class ServiceFailed(Exception):
    """A part of the feed failed; the feed was shut down gracefully because of it."""


class InstrumentSource(Protocol):
    """Which instruments to stream, and in which mode (token -> "ltp"|"quote"|"full")."""

    async def load(self) -> dict[int, str]: ...


class BackgroundService(Protocol):
    """Something that runs beside the pipeline (metrics collector, API server).

    ``run()`` returns after ``stop()``; it is cancelled if it does not within a second.
    """

    async def run(self) -> None: ...

    def stop(self) -> None: ...


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


class MarketFeedService:
    """The market feed: owns every part of the tick path and their life cycle."""

    def __init__(
        self,
        settings: Settings,
        *,
        instruments: InstrumentSource | None = None,
        tokens: TokenProvider | None = None,
        frame_listener: FrameListener | None = None,
        services: Sequence[BackgroundService] = (),
    ) -> None:
        self.settings = settings
        feed = settings.feed
        kite = settings.kite
        self.topic = TopicNames.market_ticks(settings.kafka.topic_prefix)
        ha = settings.ha
        self.accounting = Accounting()
        self.buffer = TickBuffer(feed.buffer_capacity, feed.buffer_policy, self.accounting)
        self.spool = Spool(feed.spool_dir, feed.spool_max_bytes, feed.spool_min_free_bytes)
        self.formatter = TickFormatter(include_depth=feed.include_depth, include_oi=feed.include_oi)
        # The derived streams read formatted MarketTicks, which only the Python path
        # builds: with them on, "auto" means the Python path (known gap: the native
        # encoder does not feed them yet; with "native" they receive nothing).
        # The hot-standby gate matches ticks by fields (last trade time) that native ticks
        # do not carry either: a group member runs on the Python path.
        hot_path = feed.hot_path
        if settings.ha.group or (settings.streams.enabled and hot_path == "auto"):
            hot_path = "python"
        elif settings.streams.enabled and hot_path == "native":
            log.warning("feed.hot_path native: the derived streams receive no ticks")
        self.hot_path = select_hot_path(hot_path)
        self.encoder = TickEncoder(self.formatter, WireEncoder(feed.wire_format), self.accounting)

        def make_producer(
            on_delivery: DeliveryHandler, on_ack: Callable[[int], None]
        ) -> MessageProducer:
            if ha.group and ha.fencing == "transactions":
                # One transactional id per group: whoever initialises it fences the rest.
                return MessageProducer(
                    settings.kafka,
                    self.topic,
                    on_delivery,
                    on_ack=on_ack,
                    transactional_id=f"alphapanda-ha-{ha.group}",
                    commit_interval=ha.commit_interval_ms / 1000,
                )
            return MessageProducer(settings.kafka, self.topic, on_delivery, on_ack=on_ack)

        self.publisher = Publisher(
            self.buffer,
            self.encoder,
            make_producer,
            self.spool,
            self.accounting,
            batch_max=feed.batch_max,
            shutdown_deadline=feed.shutdown_deadline,
            queue_max_messages=settings.kafka.queue_max_messages,
            on_fatal=self._on_fatal,
        )
        self.producer = self.publisher.producer
        # The write-ahead log of raw frames: what a crash of this process cannot lose.
        self.wal: WalIngest | None = None
        if feed.wal_enabled and ha.group:
            # In a hot-standby group a crash of the active is covered by the standby,
            # which publishes what follows the active's last tick; a restarted
            # instance joins as a standby and must not republish its own log.
            log.info("hot-standby group %s: the write-ahead log is not used", ha.group)
        elif feed.wal_enabled:
            self.wal = WalIngest(
                settings,
                self.topic,
                self.buffer,
                self.accounting,
                self.encoder.wire,
                # What a previous run spooled is replayed by the spool: not by the WAL.
                spool_dir=feed.spool_dir,
                decode=self.hot_path.decode,
            )
            self.producer.ack_listener = self.wal.resolved
        # Candles, latest quotes, feed events, order updates: fed after the tick path.
        self.derived = (
            DerivedStreams(settings, ServiceState(self)) if settings.streams.enabled else None
        )
        self.encoder.observer = self.derived.offer if self.derived else None
        # Hot standby: the connections feed a gate that holds ticks while standby.
        self.ha: HaController | None = None
        self.gate = None
        if ha.group:
            from alphapanda.ha.gate import StandbyGate

            self.gate = StandbyGate(self.buffer, ha.window_seconds)
        self.client = TickerClient(
            kite,
            tokens or StaticTokenProvider(kite),
            self.gate if self.gate is not None else self.buffer,
            frame_listener=frame_listener,
            order_listener=self.derived.offer_order if self.derived else None,
            decode=self.hot_path.decode,
            frame_log=self.wal,
        )
        self.instruments: InstrumentSource = instruments or CsvInstrumentSource(
            feed.instruments_csv,
            feed.mode,
            kite.max_connections * kite.max_instruments_per_connection,
        )
        self.services = list(services)
        self._extra_sources: list[MetricsSource] = []
        if self.derived is not None:
            self.services.append(self.derived)
            self._extra_sources.append(self.derived)
        self._subscriptions: dict[int, str] = {}
        if self.gate is not None:
            self.ha = self._make_ha()
            self.services.append(self.ha)
            self._extra_sources.append(self.ha)
        self.topic_ready = False
        self.failures: list[str] = []
        # Set when the feed can no longer do its job and must be restarted (a fatal
        # producer error): /health answers 503 with it from that moment.
        self.unhealthy: str | None = None
        self.started = asyncio.Event()
        self._stop = asyncio.Event()

    def metrics_sources(self) -> list[MetricsSource]:
        """Every part that counts something, for the metrics collector."""
        return [
            self.accounting,
            self.buffer,
            self.publisher,
            self.producer,
            self.spool,
            self.formatter,
            self.hot_path,
            self.client,
            _ServiceFigures(self),
            *([self.wal] if self.wal is not None else []),
            *self._extra_sources,
        ]

    def add_metrics_source(self, source: MetricsSource) -> None:
        """Report ``source``'s figures with the service's own (call before building the
        metrics collector / API from ``metrics_sources()``)."""
        self._extra_sources.append(source)

    @property
    def stopping(self) -> bool:
        """True once the graceful shutdown has been requested."""
        return self._stop.is_set()

    def request_stop(self) -> None:
        """Begin the graceful shutdown (safe to call from a signal handler, repeatedly)."""
        self._stop.set()

    def attach(self, service: BackgroundService) -> None:
        """Run ``service`` beside the pipeline (call before ``run()``)."""
        self.services.append(service)

    def readiness(self) -> tuple[bool, list[str]]:
        """``(ready, reasons)``: ready when a Kite connection is streaming AND the broker
        accepts writes (topic exists, nothing being spooled)."""
        reasons = []
        if self.ha is not None and not self.ha.active:
            reasons.append(f"standby in hot-standby group {self.ha.group} (not publishing)")
        if not self.client.is_streaming() and (self.ha is None or self.ha.active):
            reasons.append("no Kite connection is streaming")
        if not self.topic_ready:
            reasons.append(f"topic {self.topic} not created yet (broker unreachable?)")
        reasons.extend(self.publisher.core.not_ready_reasons())
        return not reasons, reasons

    def _on_fatal(self, reason: str) -> None:
        # The producer will never send again: everything is spooled for the next run,
        # the feed reports unhealthy (a supervisor restarts it) and shuts down, exit 1.
        self.unhealthy = f"Kafka producer failed fatally: {reason}"
        self.failures.append("kafka producer (fatal error)")
        self.request_stop()

    def is_ready(self) -> bool:
        """See ``readiness()``."""
        return self.readiness()[0]

    def status(self) -> dict[str, Any]:
        """A plain-data picture of the tick path, for the API and ``alphapanda status``."""
        p50, p99 = self.producer.latency.percentiles(0.5, 0.99)
        return {
            "topic": self.topic,
            "ready": self.is_ready(),
            "accounting": self.accounting.snapshot(),
            "buffer": {
                "policy": self.buffer.policy,
                "depth": len(self.buffer),
                "capacity": self.buffer.capacity,
                "high_water": self.buffer.high_water,
            },
            "spool": {
                "records": self.spool.pending,
                "bytes": self.spool.size_bytes,
                "spooling": self.publisher.spooling,
            },
            "producer": {
                "pending": self.producer.pending,
                "delivered": self.producer.delivered,
                "failed": dict(self.producer.failed),
                "latency_p50_seconds": p50,
                "latency_p99_seconds": p99,
            },
            "wal": self.wal.status() if self.wal is not None else {"enabled": False},
            "ha": self.ha.status() if self.ha is not None else {"group": None},
            "connections": [msgspec.to_builtins(s) for s in self.client.statuses()],
            "subscriptions": len(self.client.subscriptions()),
        }

    async def run(self) -> None:
        """Run until ``request_stop()`` (or a part fails), then shut down in order."""
        # A scan of a big spool reads every segment: off the event loop.
        recovered = await asyncio.to_thread(self.spool.open)
        if recovered and self.ha is not None:
            # What a previous run of this instance spooled was either published or is
            # published by the active that took over after it: replaying it would
            # duplicate it (and a standby must not publish).
            await asyncio.to_thread(_discard_spool, self.spool)
            log.warning(
                "hot standby: discarded %d spooled messages of a previous run (the group's "
                "active published what followed its last tick)",
                recovered,
            )
            recovered = 0
        if self.wal is not None:
            self.wal.open()
            await self.wal.prepare()
        lost = self.spool.lost_at_open
        if recovered or lost:
            # Damaged records of the previous run are received and dropped, counted.
            self.accounting.recover(recovered + lost)
            self.accounting.drop("spooled", DROP_SPOOL_CORRUPT, lost)
            log.warning(
                "spool holds %d messages from a previous run: replaying them first%s",
                recovered,
                f" ({lost} damaged records lost)" if lost else "",
            )
        subscriptions = await self.instruments.load()
        self._subscriptions = subscriptions
        if self.ha is not None:
            from alphapanda.ha.controller import choose_standby

            self.ha.standby = choose_standby(self.settings, len(subscriptions))
            log.info(
                "hot-standby group %s: %s standby until the lease is free (instance %s)",
                self.ha.group,
                self.ha.standby,
                self.ha.instance,
            )
        if self.ha is None or self.ha.standby == "warm":
            await self.client.set_subscriptions(subscriptions)
        log.info(
            "streaming %d instruments to topic %s (buffer %s/%d)",
            len(subscriptions),
            self.topic,
            self.buffer.policy,
            self.buffer.capacity,
        )
        try:
            async with asyncio.TaskGroup() as tg:
                topic_setup = tg.create_task(self._ensure_topic(), name="topic-setup")
                tg.create_task(self.producer.run(), name="producer-poll")
                publisher = tg.create_task(self.publisher.run(), name="publisher")
                wal_task = None
                if self.wal is not None:
                    wal_task = tg.create_task(
                        self._supervised("WAL", self.wal.run(self._stop)), name="wal"
                    )
                    await self._await_recovery(self.wal)
                client = tg.create_task(
                    self._supervised("kite client", self.client.run()), name="kite-client"
                )
                extras = [
                    tg.create_task(
                        self._supervised(type(service).__name__, service.run()),
                        name=f"service-{type(service).__name__}",
                    )
                    for service in self.services
                ]
                self.started.set()
                await self._stop.wait()
                log.info("shutting down: unsubscribing, closing sockets, draining the buffer")
                await self._stop_quietly("subscriptions", self._quiesce())
                await self._stop_quietly("kite client", self.client.stop())
                await client
                self.publisher.begin_shutdown()
                self.buffer.close()
                await publisher
                topic_setup.cancel()
                if wal_task is not None:
                    wal_task.cancel()
                self._log_final()
                for service, task in zip(self.services, extras, strict=True):
                    service.stop()
                    with contextlib.suppress(TimeoutError):
                        async with asyncio.timeout(1.0):
                            await asyncio.shield(task)
                    task.cancel()
        finally:
            await asyncio.to_thread(self.spool.close)
            if self.wal is not None:
                await asyncio.to_thread(self.wal.close)
        if self.failures:
            raise ServiceFailed(f"stopped because these parts failed: {', '.join(self.failures)}")

    def _make_ha(self) -> HaController:
        from alphapanda.ha.controller import HaController, instance_name

        assert self.gate is not None
        api = self.settings.api
        derived = self.derived

        async def connect() -> None:
            await self.client.set_subscriptions(self._subscriptions)

        controller = HaController(
            self.settings,
            self.gate,
            self.producer,
            self.topic,
            instance=instance_name(api.port),
            api_url=f"http://{api.host}:{api.port}",
            connect=connect,
            streaming=self.client.is_streaming,
            emit=derived.emit if derived is not None else None,
            request_stop=self.request_stop,
        )
        if derived is not None:
            derived.publishing = lambda: controller.active
        return controller

    async def _await_recovery(self, wal: WalIngest) -> None:
        # Crash recovery runs before any socket opens when the broker answers; if it
        # does not within WAL_RECOVERY_WAIT, connect anyway: frames are logged and held
        # (bounded) until recovery is done, so nothing Kite sends meanwhile is missed.
        if wal.recovered.is_set():
            return
        with contextlib.suppress(TimeoutError):
            async with asyncio.timeout(WAL_RECOVERY_WAIT):
                await wal.recovered.wait()
        if not wal.recovered.is_set():
            log.warning(
                "WAL recovery still waiting for the broker: connecting to Kite anyway "
                "(frames are logged and held until recovery is done)"
            )

    async def _supervised(self, name: str, work: Coroutine[Any, Any, None]) -> None:
        # A part that fails (the Kite client, the metrics collector, the API) must not
        # cancel the publisher mid-flight through the TaskGroup: it triggers the same
        # graceful shutdown as SIGTERM, so the buffer is still drained and flushed.
        try:
            await work
        except Exception:
            log.exception("%s failed; shutting the feed down gracefully", name)
            self.failures.append(name)
            self.request_stop()

    async def _quiesce(self) -> None:
        # Unsubscribe first: each connection then reads until its socket is quiet
        # (frames already sent are published, and a reader blocked handing ticks to a
        # full buffer finishes its hand-over) and closes. Bounded: an exchange that
        # keeps sending cannot hold the shutdown longer than QUIESCE_MAX.
        if not self.client.sessions_open():
            return
        await self.client.set_subscriptions({})
        deadline = time.monotonic() + QUIESCE_MAX
        while self.client.sessions_open() and time.monotonic() < deadline:  # noqa: ASYNC110 (a count over shards, not one event)
            await asyncio.sleep(0.02)

    async def _stop_quietly(self, what: str, awaitable: Any) -> None:
        # Teardown errors are logged once and do not stop the rest of the shutdown.
        try:
            await awaitable
        except Exception:
            log.exception("error while stopping the %s", what)

    async def _ensure_topic(self) -> None:
        while not self._stop.is_set():
            try:
                await ensure_topic(self.settings.kafka, self.topic)
            except TopicSetupError as exc:
                log.warning(
                    "%s; retrying in %.0f s (ticks are queued meanwhile)", exc, TOPIC_RETRY_DELAY
                )
                with contextlib.suppress(TimeoutError):
                    async with asyncio.timeout(TOPIC_RETRY_DELAY):
                        await self._stop.wait()
                continue
            self.topic_ready = True
            return

    def _log_final(self) -> None:
        figures = self.accounting.snapshot()
        log.info(
            "stopped: received=%d published=%d dropped=%d spooled=%d in_flight=%d",
            figures["received"],
            figures["published"],
            figures["dropped"],
            figures["spooled"],
            figures["in_flight"],
        )
        if self.accounting.imbalance():
            log.error("accounting imbalance of %d ticks (a bug)", self.accounting.imbalance())


def _discard_spool(spool: Spool) -> None:
    """Move a spool's cursor past everything it holds (hot standby: not replayed)."""
    while spool.pending:
        window = spool.read_window(10_000)
        if not window.messages and not window.lost:
            break
        spool.commit_window()


class _ServiceFigures:
    """Service-level gauges (readiness, topic, time of the last tick)."""

    def __init__(self, service: MarketFeedService, wall: Callable[[], float] = time.time) -> None:
        self._service = service
        self._wall = wall
        self._seen_received = 0
        self._last_tick_at = 0.0

    def _last_tick_timestamp(self) -> float:
        # The tick path keeps only a counter (no clock read per tick); a counter that
        # moved since the previous pull means a tick arrived since then, so the time is
        # exact to one pull interval (the metrics flush, or a /status call).
        received = self._service.accounting.received_socket
        if received != self._seen_received:
            self._seen_received = received
            self._last_tick_at = self._wall()
        return self._last_tick_at

    def samples(self) -> list[Sample]:
        return [
            Sample(
                LAST_TICK_TIMESTAMP,
                "gauge",
                self._last_tick_timestamp(),
                (),
                "Unix time of the last tick received (0: none yet); exact to one pull.",
            ),
            Sample("feed_ready", "gauge", int(self._service.is_ready()), (), "1 when ready."),
            Sample(
                "feed_topic_ready", "gauge", int(self._service.topic_ready), (), "Topic exists."
            ),
        ]
