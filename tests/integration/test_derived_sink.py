"""The derived streams' producer against the real broker: the quotes go through a
producer that reports failures only, and are still counted exactly — delivered when
the broker has them, failed (with a log line) when it refused them."""

from __future__ import annotations

import asyncio
import logging
import os

import pytest
from confluent_kafka import Consumer, TopicPartition
from confluent_kafka.admin import AdminClient
from confluent_kafka.cimpl import NewTopic

from alphapanda.streams.sink import DerivedProducer
from alphapanda.testing import eventually
from tests.integration.test_api import SettingsFor
from tests.support.services import SHARED_KAFKA

HEADERS = [("schema", b"quote.v1")]


def _create(topic: str, **config: str) -> None:
    admin = AdminClient({"bootstrap.servers": SHARED_KAFKA})
    futures = admin.create_topics([NewTopic(topic, 1, 1, config=config)])
    futures[topic].result(timeout=30)


def _count(topic: str) -> int:
    consumer = Consumer({"bootstrap.servers": SHARED_KAFKA, "group.id": f"count-{topic}"})
    try:
        low, high = consumer.get_watermark_offsets(TopicPartition(topic, 0), timeout=15)
        return int(high - low)
    finally:
        consumer.close()


async def test_quotes_are_counted_delivered_and_failed_without_a_report_per_success(
    settings_for: SettingsFor, unique: str, caplog: pytest.LogCaptureFixture
) -> None:
    settings = settings_for()
    ok, small = f"test.{unique}.quotes", f"test.{unique}.quotes-small"
    _create(ok)
    # The broker refuses records over 2,000 bytes on this one: a failure reported by
    # the broker, not refused by the client at produce().
    _create(small, **{"max.message.bytes": "2000"})
    producer = DerivedProducer(settings.kafka, "quotes")
    stop = asyncio.Event()
    runner = asyncio.create_task(producer.run(stop))
    try:
        for i in range(5_000):
            assert producer.send("quotes", ok, b"%d" % (i % 300), b"x" * 300, HEADERS)
        big = os.urandom(6_000)  # random: lz4 cannot shrink it under the limit
        for i in range(3):
            assert producer.send("quotes", small, b"k%d" % i, big, HEADERS)
        assert producer.send("candles", ok, b"c", b"y" * 100, HEADERS)
        with caplog.at_level(logging.WARNING, logger="alphapanda.streams.sink"):
            await eventually(lambda: producer.pending == 0, timeout=60.0, what="all resolved")
        quotes, candles = producer.counts["quotes"], producer.counts["candles"]
        assert (quotes.sent, quotes.delivered, quotes.failed, quotes.dropped) == (
            5_003,
            5_000,
            3,
            0,
        )
        assert (candles.sent, candles.delivered, candles.failed) == (1, 1, 0)
        assert _count(ok) == 5_001
        assert _count(small) == 0
        assert any(
            "derived stream quotes: delivery failed (MSG_SIZE_TOO_LARGE)" in r.getMessage()
            for r in caplog.records
        ), [r.getMessage() for r in caplog.records]
        samples = {(s.name, s.labels): s.value for s in producer.samples()}
        assert samples[("derived_delivered_total", (("stream", "quotes"),))] == 5_000
        assert samples[("derived_failed_total", (("stream", "quotes"),))] == 3
    finally:
        stop.set()
        await runner
        assert await producer.flush(asyncio.get_running_loop().time() + 10) == 0


async def test_delivered_never_goes_back_while_records_are_in_flight(
    settings_for: SettingsFor, unique: str
) -> None:
    settings = settings_for()
    topic = f"test.{unique}.quotes"
    _create(topic)
    producer = DerivedProducer(settings.kafka, "quotes")
    seen: list[int] = []
    for round_ in range(20):
        for i in range(500):
            producer.send("quotes", topic, b"%d" % i, b"q" * 200, HEADERS)
        for _ in range(5):
            producer.poll()
            delivered = producer.counts["quotes"].delivered
            seen.append(delivered)
            await asyncio.sleep(0.001 * round_)
        # Counted as delivered only once the broker has it (read after the count).
        assert delivered <= _count(topic)

    def resolved() -> bool:
        producer.poll()
        return producer.pending == 0

    await eventually(resolved, timeout=60.0, what="acked")
    seen.append(producer.counts["quotes"].delivered)
    assert seen == sorted(seen)
    assert seen[-1] == 10_000
