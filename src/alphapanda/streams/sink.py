"""The derived streams' own Kafka producer and topic set-up.

A producer of its own (not the tick path's): its queue filling up, or its broker
errors, can never hold back a tick. Every record is counted per stream — sent,
delivered, failed, dropped (the bounded queue was full) — so nothing leaves silently.

The latest quotes are a record per tick at the exchange's one-frame-a-second cadence
(nothing conflates), so they have a producer of their own that reports failures only:
a success costs no Python call and no copy of the record (a report per record was
most of what the quotes cost the feed). A failure is still reported, with its record,
and counted; delivered is what was sent and neither failed nor is still in flight.
Candles, feed events and order updates are few and keep a report per record.
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Iterator
from functools import partial
from typing import Final

from confluent_kafka import KafkaError, KafkaException, Message, Producer

from alphapanda.logs import LogThrottle
from alphapanda.metrics import catalog
from alphapanda.metrics.samples import Sample
from alphapanda.pipeline.producer import UNCONFIRMED, failure_reason, producer_config
from alphapanda.settings import KafkaSettings

log = logging.getLogger(__name__)

POLL_INTERVAL: Final = 0.005
# With nothing pending there are no reports to serve: poll rarely (each wake-up of the
# loop costs CPU of the tick path's thread; 200 a second added up to ~20 ms/s).
IDLE_POLL_INTERVAL: Final = 0.1
# Records librdkafka may hold for the derived streams (candles and quotes are small
# and few per second; a full queue means the broker is away: drop and count).
QUEUE_MAX_MESSAGES: Final = 50_000


class StreamCounts:
    __slots__ = ("delivered", "dropped", "failed", "sent")

    def __init__(self) -> None:
        self.sent = 0
        self.delivered = 0
        self.failed = 0
        self.dropped = 0


class DerivedProducer:
    """Sends derived records; ``run()`` serves delivery reports until ``close()``.

    ``bulk_stream`` goes through the producer that reports failures only (see the module
    docstring)."""

    def __init__(
        self, settings: KafkaSettings, bulk_stream: str, client_id: str = "alphapanda-derived"
    ) -> None:
        config = producer_config(settings, client_id)
        config["queue.buffering.max.messages"] = QUEUE_MAX_MESSAGES
        self._producer = Producer(config)
        self._bulk = Producer(
            {**config, "client.id": f"{client_id}-bulk", "delivery.report.only.error": True}
        )
        self.counts: dict[str, StreamCounts] = {}
        self._throttle = LogThrottle()
        self._loop_time = asyncio.get_running_loop().time
        # Records of the producer with a report per record, not yet reported.
        self._reported_pending = 0
        self._bulk_stream = bulk_stream
        self._bulk_counts = self.stream(bulk_stream)
        # One handler for every record of the stream (none is made per record).
        self._on_bulk_failure = partial(self._on_failure_only, self._bulk_counts, bulk_stream)

    @property
    def pending(self) -> int:
        """Records sent and not yet delivered or failed (with their reports served)."""
        return self._reported_pending + len(self._bulk)

    def stream(self, name: str) -> StreamCounts:
        counts = self.counts.get(name)
        if counts is None:
            counts = self.counts[name] = StreamCounts()
        return counts

    def send(
        self,
        stream: str,
        topic: str,
        key: bytes,
        value: bytes,
        headers: list[tuple[str, bytes]],
    ) -> bool:
        """Queue one record; False (and counted as dropped) if the queue is full."""
        counts = self.stream(stream)
        bulk = stream == self._bulk_stream
        try:
            if bulk:
                self._bulk.produce(
                    topic,
                    value,
                    key,
                    headers=headers,  # type: ignore[arg-type]
                    on_delivery=self._on_bulk_failure,
                )
            else:
                self._producer.produce(
                    topic,
                    value,
                    key,
                    headers=headers,  # type: ignore[arg-type]  # the stub's list is invariant
                    on_delivery=partial(self._on_delivery, counts, stream, key),
                )
        except BufferError:
            counts.dropped += 1
            self._warn(stream, "queue full: record dropped")
            return False
        except KafkaException as exc:
            counts.dropped += 1
            self._warn(stream, f"cannot produce: {exc}")
            return False
        counts.sent += 1
        if not bulk:
            self._reported_pending += 1
        return True

    def _on_delivery(
        self,
        counts: StreamCounts,
        stream: str,
        key: bytes,
        error: KafkaError | None,
        message: Message,
    ) -> None:
        self._reported_pending -= 1
        if error is None and message.offset() is not None:
            counts.delivered += 1
            return
        # An ack without an offset is one librdkafka inferred (see producer.UNCONFIRMED):
        # not counted as delivered. Derived records are not sent again.
        self._failed(counts, stream, key, error or UNCONFIRMED)

    def _on_failure_only(
        self, counts: StreamCounts, stream: str, error: KafkaError | None, message: Message
    ) -> None:
        # Called for failures only ("delivery.report.only.error"); successes are counted
        # in poll().
        if error is not None:
            self._failed(counts, stream, message.key() or b"", error)

    def _failed(self, counts: StreamCounts, stream: str, key: bytes, error: KafkaError) -> None:
        counts.failed += 1
        # Throttled per stream and error (not per key: an outage fails every key at once).
        self._warn(
            stream,
            f"delivery failed ({failure_reason(error)})",
            f", e.g. key {key.decode(errors='replace')}",
        )

    def _warn(self, stream: str, what: str, detail: str = "") -> None:
        allowed, suppressed = self._throttle.allow(f"{stream}:{what}", self._loop_time())
        if allowed:
            more = f" (and {suppressed} more)" if suppressed else ""
            level = logging.ERROR if stream == "orders" else logging.WARNING
            log.log(level, "derived stream %s: %s%s%s", stream, what, detail, more)

    def poll(self) -> None:
        self._producer.poll(0)
        self._bulk.poll(0)
        # What was sent and is neither failed nor in flight was delivered. In flight
        # counts librdkafka's queued events as well, so this is a lower bound (exact
        # once the queue is empty): the counter never goes back.
        counts = self._bulk_counts
        delivered = counts.sent - counts.failed - len(self._bulk)
        if delivered > counts.delivered:
            counts.delivered = delivered

    async def run(self, stop: asyncio.Event) -> None:
        while not stop.is_set():
            self.poll()
            try:
                async with asyncio.timeout(POLL_INTERVAL if self.pending else IDLE_POLL_INTERVAL):
                    await stop.wait()
            except TimeoutError:
                pass

    async def flush(self, deadline: float) -> int:
        """Serve reports until nothing is pending or ``deadline`` (loop time); returns what is left."""
        loop_time = self._loop_time
        while self.pending and loop_time() < deadline:
            self.poll()
            await asyncio.sleep(0.005)
        self.poll()
        return self.pending

    def samples(self) -> Iterator[Sample]:
        for stream, counts in self.counts.items():
            labels = (("stream", stream),)
            yield catalog.DERIVED_SENT.sample(counts.sent, labels)
            yield catalog.DERIVED_DELIVERED.sample(counts.delivered, labels)
            yield catalog.DERIVED_FAILED.sample(counts.failed, labels)
            yield catalog.DERIVED_DROPPED.sample(counts.dropped, labels)
