"""``FeedConsumer``: async iterators over the feed's topics, on confluent-kafka.

confluent-kafka's ``Consumer`` blocks; each poll runs in a worker thread for at most
``poll_timeout`` seconds, one at a time, so the event loop never blocks and the
consumer is never used by two threads at once.

::

    async with FeedConsumer("127.0.0.1:19092") as feed:
        async for candle in feed.candles("1m"):
            ...

``records()`` subscribes to several streams at once and yields each typed record as it
comes (e.g. candles and feed events together, to pause on gaps).
"""

from __future__ import annotations

import asyncio
import uuid
from collections.abc import AsyncIterator, Mapping
from types import TracebackType
from typing import Any

from confluent_kafka import Consumer, KafkaException

from alphapanda.consumer.records import Record, RecordKind, decode_record
from alphapanda.pipeline.formatter import MarketTick
from alphapanda.pipeline.wire import MarketTickEvent
from alphapanda.streams.candles import Candle
from alphapanda.streams.records import (
    CandleEvent,
    FeedEvent,
    FeedEventRecord,
    OrderUpdate,
    OrderUpdateEvent,
)
from alphapanda.topics import TopicNames


class FeedConsumer:
    """Reads ``market.ticks``, ``market.candles.<interval>``, ``market.feed.events`` and
    ``zerodha.orders.updates`` (with the feed's topic prefix) as typed records.

    ``group_id``: a consumer group (default: a new one, so every run reads on its own).
    ``from_beginning``: start at the oldest record when the group has no offset yet
    (default: only new records).
    """

    def __init__(
        self,
        bootstrap_servers: str,
        *,
        topic_prefix: str = "",
        group_id: str | None = None,
        from_beginning: bool = False,
        poll_timeout: float = 0.2,
        config: Mapping[str, Any] | None = None,
    ) -> None:
        self.topic_prefix = topic_prefix
        self._poll_timeout = poll_timeout
        self._config: dict[str, Any] = {
            "bootstrap.servers": bootstrap_servers,
            "group.id": group_id or f"alphapanda-consumer-{uuid.uuid4().hex[:12]}",
            "auto.offset.reset": "earliest" if from_beginning else "latest",
            "enable.auto.commit": True,
            **(config or {}),
        }
        self._consumer: Consumer | None = None
        self._kinds: dict[str, RecordKind] = {}

    async def __aenter__(self) -> FeedConsumer:
        return self

    async def __aexit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        await self.close()

    async def close(self) -> None:
        if self._consumer is not None:
            consumer, self._consumer = self._consumer, None
            await asyncio.to_thread(consumer.close)

    # -- one stream each --------------------------------------------------------------

    async def ticks(self) -> AsyncIterator[MarketTick]:
        async for record in self.records(ticks=True):
            assert isinstance(record, MarketTickEvent)
            yield record.data

    async def candles(self, interval: str = "1m") -> AsyncIterator[Candle]:
        async for record in self.records(candles=interval):
            assert isinstance(record, CandleEvent)
            yield record.data

    async def feed_events(self) -> AsyncIterator[FeedEvent]:
        async for record in self.records(feed_events=True):
            assert isinstance(record, FeedEventRecord)
            yield record.data

    async def order_updates(self) -> AsyncIterator[OrderUpdate]:
        async for record in self.records(order_updates=True):
            assert isinstance(record, OrderUpdateEvent)
            yield record.data

    # -- several at once --------------------------------------------------------------

    async def records(
        self,
        *,
        ticks: bool = False,
        candles: str | None = None,
        feed_events: bool = False,
        order_updates: bool = False,
    ) -> AsyncIterator[Record]:
        """Typed envelopes of the chosen streams, in arrival order (per-key order kept)."""
        prefix = self.topic_prefix
        kinds: dict[str, RecordKind] = {}
        if ticks:
            kinds[TopicNames.market_ticks(prefix)] = "tick"
        if candles is not None:
            kinds[TopicNames.market_candles(candles, prefix)] = "candle"
        if feed_events:
            kinds[TopicNames.market_feed_events(prefix)] = "feed_event"
        if order_updates:
            kinds[TopicNames.zerodha_orders_updates(prefix)] = "order_update"
        if not kinds:
            raise ValueError("choose at least one stream")
        if self._consumer is not None:
            raise RuntimeError("a FeedConsumer reads one set of streams; make another")
        self._kinds = kinds
        self._consumer = consumer = Consumer(self._config)
        consumer.subscribe(list(kinds))
        while self._consumer is consumer:
            messages = await asyncio.to_thread(consumer.consume, 500, self._poll_timeout)
            for message in messages:
                error = message.error()
                if error is not None:
                    if error.fatal():
                        raise KafkaException(error)
                    continue  # e.g. topic not created yet: librdkafka retries
                topic = message.topic()
                value = message.value()
                if topic is None or not isinstance(value, bytes):
                    continue
                yield decode_record(kinds[topic], value, message.headers())
