"""``LatestQuotes.bootstrap()``: every instrument's current quote from the compacted
topic ``market.quotes.latest`` — what a strategy reads once at start, before it
follows ``market.ticks``."""

from __future__ import annotations

import asyncio
import time
import uuid
from collections.abc import Iterator

from confluent_kafka import Consumer, TopicPartition

from alphapanda.consumer.records import decode_record
from alphapanda.pipeline.formatter import MarketTick
from alphapanda.pipeline.wire import MarketTickEvent
from alphapanda.topics import TopicNames


class LatestQuotes:
    """The latest ``MarketTick`` per instrument, as of the topic's end when read."""

    def __init__(self, quotes: dict[int, MarketTick]) -> None:
        self._quotes = quotes

    @classmethod
    async def bootstrap(
        cls, bootstrap_servers: str, *, topic_prefix: str = "", read_timeout: float = 30.0
    ) -> LatestQuotes:
        """Read ``market.quotes.latest`` from its start to each partition's current end
        (a compacted topic: small), keeping the last record per instrument."""
        topic = TopicNames.market_quotes_latest(topic_prefix)
        quotes = await asyncio.to_thread(_read_latest, bootstrap_servers, topic, read_timeout)
        return cls(quotes)

    def get(self, token: int) -> MarketTick | None:
        return self._quotes.get(token)

    def __getitem__(self, token: int) -> MarketTick:
        return self._quotes[token]

    def __contains__(self, token: object) -> bool:
        return token in self._quotes

    def __iter__(self) -> Iterator[int]:
        return iter(self._quotes)

    def __len__(self) -> int:
        return len(self._quotes)

    def tokens(self) -> list[int]:
        return sorted(self._quotes)


def _read_latest(bootstrap: str, topic: str, timeout: float) -> dict[int, MarketTick]:
    consumer = Consumer(
        {
            "bootstrap.servers": bootstrap,
            "group.id": f"alphapanda-quotes-{uuid.uuid4().hex[:12]}",
            "enable.auto.commit": False,
        }
    )
    latest: dict[int, MarketTick] = {}
    try:
        metadata = consumer.list_topics(topic, timeout=timeout)
        if topic not in metadata.topics or metadata.topics[topic].error is not None:
            return latest
        ends: dict[int, int] = {}
        starts: dict[int, int] = {}
        for partition in metadata.topics[topic].partitions:
            low, high = consumer.get_watermark_offsets(
                TopicPartition(topic, partition), timeout=timeout
            )
            if high > low:
                starts[partition], ends[partition] = low, high
        consumer.assign([TopicPartition(topic, p, starts[p]) for p in ends])
        done = {p: False for p in ends}
        deadline = time.monotonic() + timeout
        while not all(done.values()):
            if time.monotonic() > deadline:
                raise TimeoutError(f"could not read {topic} to its end within {timeout}s")
            for message in consumer.consume(1000, 0.5):
                if message.error() is not None:
                    continue
                partition, offset, value = message.partition(), message.offset(), message.value()
                if partition is None or offset is None or not isinstance(value, bytes):
                    continue
                if offset < ends[partition]:
                    record = decode_record("tick", value, message.headers())
                    assert isinstance(record, MarketTickEvent)
                    latest[record.data.instrument_token] = record.data
                if offset + 1 >= ends[partition]:
                    done[partition] = True
    finally:
        consumer.close()
    return latest
