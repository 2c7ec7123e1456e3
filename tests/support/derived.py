"""Reading the derived topics back, raw (independent of the consumer SDK)."""

from __future__ import annotations

import time
import uuid
from dataclasses import dataclass

from confluent_kafka import Consumer, TopicPartition


@dataclass(frozen=True)
class RawRecord:
    partition: int
    offset: int
    key: bytes | None
    value: bytes
    headers: dict[str, bytes]
    # The record's Kafka timestamp (the producer's create time), ms since the epoch.
    timestamp_ms: int = 0


def read_raw(bootstrap: str, topic: str, timeout: float = 30.0) -> list[RawRecord]:
    """Every record of ``topic`` now (to each partition's high watermark). Blocking."""
    consumer = Consumer(
        {
            "bootstrap.servers": bootstrap,
            "group.id": f"derived-{uuid.uuid4().hex}",
            "enable.auto.commit": False,
        }
    )
    out: list[RawRecord] = []
    try:
        metadata = consumer.list_topics(topic, timeout=timeout)
        partitions = sorted(metadata.topics[topic].partitions)
        highs: dict[int, int] = {}
        lows: dict[int, int] = {}
        for p in partitions:
            low, high = consumer.get_watermark_offsets(TopicPartition(topic, p), timeout=timeout)
            if high > low:
                highs[p], lows[p] = high, low
        consumer.assign([TopicPartition(topic, p, lows[p]) for p in highs])
        positions = {p: lows[p] - 1 for p in highs}
        deadline = time.monotonic() + timeout
        while any(positions[p] + 1 < highs[p] for p in highs):
            if time.monotonic() > deadline:
                raise AssertionError(f"could not read {topic} to its end: {positions} vs {highs}")
            for message in consumer.consume(1000, 0.5):
                error = message.error()
                if error is not None:
                    raise AssertionError(f"consumer error: {error}")
                partition, offset = message.partition(), message.offset()
                assert partition is not None and offset is not None
                if offset >= highs.get(partition, 0):
                    continue
                positions[partition] = offset
                value = message.value()
                assert isinstance(value, bytes)
                headers = {k: v for k, v in (message.headers() or []) if isinstance(v, bytes)}
                _, timestamp_ms = message.timestamp()
                out.append(
                    RawRecord(partition, offset, message.key(), value, headers, timestamp_ms)
                )
    finally:
        consumer.close()
    return out
