"""The derived streams' own Kafka producer and topic set-up.

A producer of its own (not the tick path's): its queue filling up, or its broker
errors, can never hold back a tick. Every record is sent with a delivery callback and
counted per stream — sent, delivered, failed, dropped (the bounded queue was full) —
so nothing leaves silently.
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Iterator, Mapping
from concurrent.futures import Future
from functools import partial
from typing import Final

from confluent_kafka import KafkaError, KafkaException, Message, Producer
from confluent_kafka.admin import AdminClient
from confluent_kafka.cimpl import NewTopic

from alphapanda.logs import LogThrottle
from alphapanda.metrics import catalog
from alphapanda.metrics.samples import Sample
from alphapanda.pipeline.producer import producer_config
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
    """Sends derived records; ``run()`` serves delivery reports until ``close()``."""

    def __init__(self, settings: KafkaSettings, client_id: str = "alphapanda-derived") -> None:
        config = producer_config(settings, client_id)
        config["queue.buffering.max.messages"] = QUEUE_MAX_MESSAGES
        self._producer = Producer(config)
        self.counts: dict[str, StreamCounts] = {}
        self._throttle = LogThrottle()
        self._loop_time = asyncio.get_running_loop().time
        self.pending = 0

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
        try:
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
        self.pending += 1
        return True

    def _on_delivery(
        self,
        counts: StreamCounts,
        stream: str,
        key: bytes,
        error: KafkaError | None,
        message: Message,
    ) -> None:
        self.pending -= 1
        if error is None:
            counts.delivered += 1
            return
        counts.failed += 1
        # Throttled per stream and error (not per key: an outage fails every key at once).
        self._warn(
            stream,
            f"delivery failed ({error.name()})",
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

    async def run(self, stop: asyncio.Event) -> None:
        while not stop.is_set():
            self._producer.poll(0)
            try:
                async with asyncio.timeout(POLL_INTERVAL if self.pending else IDLE_POLL_INTERVAL):
                    await stop.wait()
            except TimeoutError:
                pass

    async def flush(self, deadline: float) -> int:
        """Serve reports until nothing is pending or ``deadline`` (loop time); returns what is left."""
        loop_time = self._loop_time
        while self.pending and loop_time() < deadline:
            self._producer.poll(0)
            await asyncio.sleep(0.005)
        self._producer.poll(0)
        return self.pending

    def samples(self) -> Iterator[Sample]:
        for stream, counts in self.counts.items():
            labels = (("stream", stream),)
            yield catalog.DERIVED_SENT.sample(counts.sent, labels)
            yield catalog.DERIVED_DELIVERED.sample(counts.delivered, labels)
            yield catalog.DERIVED_FAILED.sample(counts.failed, labels)
            yield catalog.DERIVED_DROPPED.sample(counts.dropped, labels)


async def ensure_topics(
    settings: KafkaSettings, topics: Mapping[str, Mapping[str, str]], wait_seconds: float = 15.0
) -> list[str]:
    """Create the topics that do not exist yet, each with its config; returns those created."""
    admin = AdminClient(
        {
            "bootstrap.servers": settings.bootstrap_servers,
            "socket.timeout.ms": int(wait_seconds * 1000),
            "log_level": 0,
        }
    )
    new = [
        NewTopic(
            topic,
            num_partitions=settings.topic_partitions,
            replication_factor=settings.replication_factor,
            config=dict(config),
        )
        for topic, config in topics.items()
    ]
    futures: dict[str, Future[None]] = admin.create_topics(
        new, operation_timeout=wait_seconds, request_timeout=wait_seconds
    )
    created = []
    for topic, future in futures.items():
        try:
            async with asyncio.timeout(wait_seconds + 5):
                await asyncio.wrap_future(future)
        except KafkaException as exc:
            error = exc.args[0]
            if isinstance(error, KafkaError) and error.code() == KafkaError.TOPIC_ALREADY_EXISTS:
                continue
            raise
        created.append(topic)
    return created
