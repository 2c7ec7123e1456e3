"""``MarketFeedService``: runs the feed's parts — Kite ticker → TickBuffer → publisher → Kafka.

The parts are built and wired by ``alphapanda.assembly.build`` (``FeedParts``); this
module decides the order they start and stop in::

    TickerClient ──put_many──▶ TickBuffer ──take_batch──▶ Publisher ──▶ MessageProducer ──▶ Kafka
                                                              └────────▶ Spool (broker away)

Start-up: open the spool (a previous run's records are replayed before anything new),
create the topic (retried in the background while the broker is unreachable: ticks
meanwhile wait in librdkafka's queue and then the spool), load the instruments to
stream from the parts' ``InstrumentSource`` and subscribe, then run every part as one
task of one ``TaskGroup``.

Shutdown (``request_stop()``, wired to SIGTERM/SIGINT by ``alphapanda feed``):
unsubscribe and read until the exchange is quiet (bounded), stop reading (close every
socket), close the buffer, let the publisher drain it and flush
the producer within ``feed.shutdown_deadline`` (spooling what cannot be flushed), then
stop the background services (metrics collector, API). A failure of the Kite client or
of a background service triggers the same graceful shutdown and then ``ServiceFailed``;
a failure of the publisher itself cannot be drained and propagates.

From outside, the service offers ``status()``, ``readiness()``, the ``ready`` event and
``request_stop()``; its parts are read from the ``FeedParts`` that built it.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
from collections.abc import Coroutine
from typing import Any, Final

from alphapanda.metrics import catalog
from alphapanda.metrics.samples import Sample
from alphapanda.parts import FeedParts
from alphapanda.pipeline.accounting import DROP_SPOOL_CORRUPT
from alphapanda.pipeline.topics_admin import TopicSetupError, ensure_topic
from alphapanda.wal.ingest import WalIngest

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


class MarketFeedService:
    """The market feed: runs the parts ``build`` wired, in order, and stops them in order."""

    def __init__(self, parts: FeedParts) -> None:
        self._parts = parts
        self._lifecycle = parts.lifecycle

    @property
    def ready(self) -> asyncio.Event:
        """Set once every part runs (the Kite sockets are being opened)."""
        return self._lifecycle.ready

    @property
    def stopping(self) -> bool:
        """True once the graceful shutdown has been requested."""
        return self._lifecycle.stopping

    @property
    def unhealthy(self) -> str | None:
        """Why the feed must be restarted (``None``: it is healthy)."""
        return self._lifecycle.unhealthy

    def request_stop(self) -> None:
        """Begin the graceful shutdown (safe to call from a signal handler, repeatedly)."""
        self._lifecycle.request_stop()

    def readiness(self) -> tuple[bool, list[str]]:
        """``(ready, reasons)``: ready when a Kite connection is streaming AND the broker
        accepts writes (topic exists, nothing being spooled)."""
        return self._parts.readiness()

    def status(self) -> dict[str, Any]:
        """A plain-data picture of the tick path, for the API and ``alphapanda status``."""
        return self._parts.status()

    async def run(self) -> None:
        """Run until ``request_stop()`` (or a part fails), then shut down in order."""
        parts = self._parts
        # A scan of a big spool reads every segment: off the event loop.
        recovered = await asyncio.to_thread(parts.spool.open)
        if parts.wal is not None:
            parts.wal.open()
            await parts.wal.prepare()
        lost = parts.spool.lost_at_open
        if recovered and parts.ha is not None:
            # What a previous run of this instance spooled was either published or is
            # published by the active that took over after it: replaying it would
            # duplicate it (and a standby must not publish).
            await asyncio.to_thread(parts.spool.discard_pending)
            log.warning(
                "hot standby: discarded %d spooled messages of a previous run (the group's "
                "active published what followed its last tick)",
                recovered,
            )
            recovered = 0
        if recovered and parts.wal is not None and parts.wal.has_backlog:
            # What the WAL recovers is older than what the spool holds (it was in
            # librdkafka's queue or in memory at the crash, the spool got newer ticks):
            # the spool is replayed after it.
            parts.publisher.hold_replay()
            parts.wal.on_recovered = parts.publisher.release_replay
        if recovered or lost:
            # Damaged records of the previous run are received and dropped, counted.
            parts.accounting.recover(recovered + lost)
            parts.accounting.drop("spooled", DROP_SPOOL_CORRUPT, lost)
            log.warning(
                "spool holds %d messages from a previous run: replaying them first%s",
                recovered,
                f" ({lost} damaged records lost)" if lost else "",
            )
        subscriptions = await parts.instruments.load()
        # A cold standby connects only when it takes over.
        if parts.ha is None or parts.ha.plan(subscriptions):
            await parts.client.set_subscriptions(subscriptions)
        log.info(
            "streaming %d instruments to topic %s (buffer %s/%d)",
            len(subscriptions),
            parts.topic,
            parts.buffer.policy,
            parts.buffer.capacity,
        )
        try:
            async with asyncio.TaskGroup() as tg:
                topic_setup = tg.create_task(self._ensure_topic(), name="topic-setup")
                tg.create_task(parts.producer.run(), name="producer-poll")
                publisher = tg.create_task(parts.publisher.run(), name="publisher")
                wal_task = None
                if parts.wal is not None:
                    wal_task = tg.create_task(
                        self._supervised("WAL", parts.wal.run(self._lifecycle.stop_requested)),
                        name="wal",
                    )
                    await self._await_recovery(parts.wal)
                client = tg.create_task(
                    self._supervised("kite client", parts.client.run()), name="kite-client"
                )
                extras = [
                    tg.create_task(
                        self._supervised(type(service).__name__, service.run()),
                        name=f"service-{type(service).__name__}",
                    )
                    for service in parts.services
                ]
                self._lifecycle.ready.set()
                await self._lifecycle.stop_requested.wait()
                log.info("shutting down: unsubscribing, closing sockets, draining the buffer")
                await self._stop_quietly("subscriptions", self._quiesce())
                await self._stop_quietly("kite client", parts.client.stop())
                await client
                parts.publisher.begin_shutdown()
                parts.buffer.close()
                await publisher
                topic_setup.cancel()
                if wal_task is not None:
                    wal_task.cancel()
                self._log_final()
                for service, task in zip(parts.services, extras, strict=True):
                    service.stop()
                    with contextlib.suppress(TimeoutError):
                        async with asyncio.timeout(1.0):
                            await asyncio.shield(task)
                    task.cancel()
        finally:
            await asyncio.to_thread(parts.spool.close)
            if parts.wal is not None:
                await asyncio.to_thread(parts.wal.close)
        failures = self._lifecycle.failures
        if failures:
            raise ServiceFailed(f"stopped because these parts failed: {', '.join(failures)}")

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
            self._lifecycle.part_failed(name)

    async def _quiesce(self) -> None:
        # Unsubscribe first: each connection then reads until its socket is quiet
        # (frames already sent are published, and a reader blocked handing ticks to a
        # full buffer finishes its hand-over) and closes. Bounded: an exchange that
        # keeps sending cannot hold the shutdown longer than QUIESCE_MAX.
        client = self._parts.client
        if not client.sessions_open():
            return
        await client.set_subscriptions({})
        monotonic = self._parts.clock.monotonic
        deadline = monotonic() + QUIESCE_MAX
        while client.sessions_open() and monotonic() < deadline:  # noqa: ASYNC110 (a count over shards, not one event)
            await asyncio.sleep(0.02)

    async def _stop_quietly(self, what: str, awaitable: Any) -> None:
        # Teardown errors are logged once and do not stop the rest of the shutdown.
        try:
            await awaitable
        except Exception:
            log.exception("error while stopping the %s", what)

    async def _ensure_topic(self) -> None:
        parts = self._parts
        while not self._lifecycle.stopping:
            try:
                await ensure_topic(parts.settings.kafka, parts.topic)
            except TopicSetupError as exc:
                log.warning(
                    "%s; retrying in %.0f s (ticks are queued meanwhile)", exc, TOPIC_RETRY_DELAY
                )
                with contextlib.suppress(TimeoutError):
                    async with asyncio.timeout(TOPIC_RETRY_DELAY):
                        await self._lifecycle.stop_requested.wait()
                continue
            self._lifecycle.topic_writable.set()
            return

    def _log_final(self) -> None:
        accounting = self._parts.accounting
        figures = accounting.snapshot()
        log.info(
            "stopped: received=%d published=%d dropped=%d spooled=%d in_flight=%d",
            figures["received"],
            figures["published"],
            figures["dropped"],
            figures["spooled"],
            figures["in_flight"],
        )
        if accounting.imbalance():
            log.error("accounting imbalance of %d ticks (a bug)", accounting.imbalance())


class FeedFigures:
    """Feed-level gauges (readiness, topic, time of the last tick)."""

    def __init__(self, parts: FeedParts) -> None:
        self._parts = parts
        self._wall_ns = parts.clock.wall_ns
        self._seen_received = 0
        self._last_tick_at = 0.0

    def _last_tick_timestamp(self) -> float:
        # The tick path keeps only a counter (no clock read per tick); a counter that
        # moved since the previous pull means a tick arrived since then, so the time is
        # exact to one pull interval (the metrics flush, or a /status call).
        received = self._parts.accounting.received_socket
        if received != self._seen_received:
            self._seen_received = received
            self._last_tick_at = self._wall_ns() / 1e9
        return self._last_tick_at

    def samples(self) -> list[Sample]:
        return [
            catalog.LAST_TICK_TIMESTAMP_SECONDS.sample(self._last_tick_timestamp()),
            catalog.FEED_READY.sample(int(self._parts.readiness()[0])),
            catalog.FEED_TOPIC_READY.sample(int(self._parts.lifecycle.topic_ready)),
        ]
