"""The feed's parts, as ``alphapanda.assembly.build`` wires them, and its shared condition.

``FeedParts`` is plain data: every part of the tick path and what runs beside it,
constructed once by ``build`` and handed to ``MarketFeedService``, which runs them.
Whoever builds the parts (the feed process, a test, a benchmark) holds them and may
read them; nothing reaches into the running service for them.

``FeedLifecycle`` is the condition the parts share while the feed runs: stop
requested, the topic created, a fatal failure. The publisher reports a fatal producer
error into it, the service's supervisor records failed parts in it, and readiness is
read from it, so none of them needs a reference to the service.
"""

from __future__ import annotations

import asyncio
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any, Protocol

import msgspec

from alphapanda.clock import SYSTEM_CLOCK, Clock
from alphapanda.instruments.sources import InstrumentSource
from alphapanda.kite.client import TickerClient
from alphapanda.metrics.collector import PipelineMetricsCollector
from alphapanda.metrics.samples import MetricsSource
from alphapanda.pipeline.accounting import Accounting
from alphapanda.pipeline.buffer import TickBuffer
from alphapanda.pipeline.formatter import TickFormatter
from alphapanda.pipeline.hotpath import HotPath
from alphapanda.pipeline.producer import MessageProducer
from alphapanda.pipeline.publisher import Publisher, RecordBuilder
from alphapanda.pipeline.spool import Spool
from alphapanda.settings import Settings
from alphapanda.streams.runner import DerivedStreams
from alphapanda.wal.ingest import WalIngest

if TYPE_CHECKING:  # the hot-standby modules are imported only by a group member
    from alphapanda.ha.controller import HaController


class BackgroundService(Protocol):
    """Something that runs beside the pipeline (metrics collector, API server).

    ``run()`` returns after ``stop()``; it is cancelled if it does not within a second.
    """

    async def run(self) -> None: ...

    def stop(self) -> None: ...


class FeedLifecycle:
    """Stop requested, topic created, parts failed: what the running feed knows of itself."""

    def __init__(self) -> None:
        # Set once the topic exists and its partitions take writes (or stopped being
        # waited for); the publisher sends nothing before.
        self.topic_writable = asyncio.Event()
        # Names of the parts that failed (the feed then stops and reports them).
        self.failures: list[str] = []
        # Set when the feed can no longer do its job and must be restarted (a fatal
        # producer error): /health answers 503 with it from that moment.
        self.unhealthy: str | None = None
        # Set once every part runs (the sockets are being opened).
        self.ready = asyncio.Event()
        # Set by ``request_stop()``: the graceful shutdown begins.
        self.stop_requested = asyncio.Event()
        # Told first of a fatal producer error (a hot-standby member: its producer was
        # fenced by the group's new active, so it is deposed rather than shut down).
        self.on_producer_failed: Callable[[str], None] | None = None

    @property
    def topic_ready(self) -> bool:
        """The topic exists (and takes writes, or stopped being waited for)."""
        return self.topic_writable.is_set()

    @property
    def stopping(self) -> bool:
        """True once the graceful shutdown has been requested."""
        return self.stop_requested.is_set()

    def request_stop(self) -> None:
        """Begin the graceful shutdown (safe from a signal handler, repeatedly)."""
        self.stop_requested.set()

    def part_failed(self, name: str) -> None:
        self.failures.append(name)
        self.request_stop()

    def producer_failed(self, reason: str) -> None:
        # The producer will never send again: everything is spooled for the next run,
        # the feed reports unhealthy (a supervisor restarts it) and shuts down, exit 1.
        if self.on_producer_failed is not None:
            self.on_producer_failed(reason)
        self.unhealthy = f"Kafka producer failed fatally: {reason}"
        self.part_failed("kafka producer (fatal error)")


@dataclass(kw_only=True, eq=False)
class FeedParts:
    """Every part of one feed, wired (see ``alphapanda.assembly.build``)."""

    settings: Settings
    topic: str
    lifecycle: FeedLifecycle
    accounting: Accounting
    buffer: TickBuffer
    spool: Spool
    formatter: TickFormatter
    hot_path: HotPath
    records: RecordBuilder
    publisher: Publisher
    client: TickerClient
    instruments: InstrumentSource
    wal: WalIngest | None = None
    derived: DerivedStreams | None = None
    # This feed's part in its hot-standby group (``ha.group`` set); also in ``services``.
    ha: HaController | None = None
    # The time every part reads (``Overrides(clock=...)``).
    clock: Clock = SYSTEM_CLOCK
    # Ships the figures to Redis (``Overrides(metrics=True)``); also in ``services``.
    collector: PipelineMetricsCollector | None = None
    # Run beside the pipeline, in this order (the derived streams, the registry
    # follower, the metrics collector, the API server).
    services: list[BackgroundService] = field(default_factory=list)
    # Every part that counts something, for the metrics collector and the API.
    sources: list[MetricsSource] = field(default_factory=list)

    @property
    def producer(self) -> MessageProducer:
        return self.publisher.producer

    def readiness(self) -> tuple[bool, list[str]]:
        """``(ready, reasons)``: ready when a Kite connection is streaming AND the broker
        accepts writes (topic exists, nothing being spooled)."""
        reasons = []
        ha = self.ha
        if ha is not None and not ha.active:
            # A standby publishes nothing: not ready (``standby_ready`` says whether
            # it could take over); a cold one has no connection of its own either.
            reasons.append(f"standby in hot-standby group {ha.group} (not publishing)")
        if not self.client.is_streaming() and (ha is None or ha.active):
            reasons.append("no Kite connection is streaming")
        if not self.lifecycle.topic_ready:
            reasons.append(f"topic {self.topic} not created yet (broker unreachable?)")
        reasons.extend(self.publisher.core.not_ready_reasons())
        return not reasons, reasons

    def status(self) -> dict[str, Any]:
        """A plain-data picture of the tick path, for the API and ``alphapanda status``."""
        producer = self.producer
        p50, p99 = producer.latency.percentiles(0.5, 0.99)
        return {
            "topic": self.topic,
            "ready": self.readiness()[0],
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
                "pending": producer.pending,
                "delivered": producer.delivered,
                "failed": dict(producer.failed),
                "latency_p50_seconds": p50,
                "latency_p99_seconds": p99,
            },
            "wal": self.wal.status() if self.wal is not None else {"enabled": False},
            "ha": self.ha.status() if self.ha is not None else {"group": None},
            "connections": [msgspec.to_builtins(s) for s in self.client.statuses()],
            "subscriptions": len(self.client.subscriptions()),
        }
