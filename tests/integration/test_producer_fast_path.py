"""``MessageProducer.produce_many`` against the real broker: the acks of the fast path
are settled in bulk after each poll, yet every message is observed exactly once."""

from __future__ import annotations

import asyncio
import gc
import time

import pytest
from confluent_kafka import KafkaError

from alphapanda.pipeline.producer import EncodedMessage, MessageProducer
from alphapanda.pipeline.topics_admin import ensure_topic
from alphapanda.settings import Settings
from alphapanda.topics import TopicNames
from tests.integration.test_producer import read_all

# Measures speed or timing: runs alone, after the parallel part of the suite.
pytestmark = pytest.mark.serial


def _messages(n: int, received_at_ns: int) -> list[EncodedMessage]:
    headers = [("n", b"1")]  # one list shared by every message, as the publisher does
    return [
        EncodedMessage(str(i % 7).encode(), f"v{i}".encode(), headers, received_at_ns)
        for i in range(n)
    ]


async def _produce_all(producer: MessageProducer, messages: list[EncodedMessage]) -> None:
    done = 0
    while done < len(messages):
        done += producer.produce_many(messages, done)
        producer.poll()
        await asyncio.sleep(0)


async def test_fast_path_counts_every_ack_once_with_its_latency(settings_for) -> None:  # type: ignore[no-untyped-def]
    settings: Settings = settings_for(kafka={"topic_partitions": 3})
    topic = TopicNames.market_ticks(settings.kafka.topic_prefix)
    await ensure_topic(settings.kafka, topic)
    acked_batches: list[int] = []
    failures: list[KafkaError | None] = []

    def on_delivery(message: EncodedMessage, context: object, error: KafkaError | None) -> None:
        failures.append(error)

    producer = MessageProducer(settings.kafka, topic, on_delivery, on_ack=acked_batches.append)
    received = time.time_ns()
    messages = _messages(3000, received)
    async with asyncio.TaskGroup() as tg:
        tg.create_task(producer.run())
        await _produce_all(producer, messages)
        assert await producer.flush(20) == 0
        producer.stop()
    assert failures == []  # nothing went the slow way
    assert sum(acked_batches) == 3000 and all(n > 0 for n in acked_batches)
    assert producer.delivered == 3000 and producer.pending == 0
    assert producer.latency.count == 3000
    slowest = producer.latency.percentiles(1.0)[0]
    assert 0 < slowest * 1e9 <= time.time_ns() - received
    got = await asyncio.to_thread(read_all, settings.kafka.bootstrap_servers, topic, 3000)
    assert sorted(int(v[1:]) for _, v in got) == list(range(3000))


async def test_without_on_ack_every_report_goes_to_on_delivery(settings_for) -> None:  # type: ignore[no-untyped-def]
    settings: Settings = settings_for()
    topic = TopicNames.market_ticks(settings.kafka.topic_prefix)
    await ensure_topic(settings.kafka, topic)
    seen: list[tuple[bytes, int, KafkaError | None]] = []

    def on_delivery(message: EncodedMessage, context: object, error: KafkaError | None) -> None:
        seen.append((message.value, message.received_at_ns, error))

    producer = MessageProducer(settings.kafka, topic, on_delivery)
    async with asyncio.TaskGroup() as tg:
        tg.create_task(producer.run())
        await _produce_all(producer, _messages(500, 42))
        assert await producer.flush(20) == 0
        producer.stop()
    assert sorted(int(value[1:]) for value, _, _ in seen) == list(range(500))
    assert {(rx, error) for _, rx, error in seen} == {(42, None)}


async def test_failed_fast_path_messages_come_back_whole(settings_for) -> None:  # type: ignore[no-untyped-def]
    from tests.support.services import free_port

    settings: Settings = settings_for(
        kafka={
            "bootstrap_servers": f"127.0.0.1:{free_port()}",
            "message_timeout_ms": 1000,
            "request_timeout_ms": 500,
        }
    )
    failed: list[tuple[EncodedMessage, KafkaError | None]] = []
    acks: list[int] = []

    def on_delivery(message: EncodedMessage, context: object, error: KafkaError | None) -> None:
        failed.append((message, error))

    producer = MessageProducer(settings.kafka, "nowhere", on_delivery, on_ack=acks.append)
    messages = _messages(50, 7)
    async with asyncio.TaskGroup() as tg:
        tg.create_task(producer.run())
        assert producer.produce_many(messages) == 50
        assert await producer.flush(15) == 0
        producer.stop()
    assert acks == [] and producer.delivered == 0
    assert len(failed) == 50 and all(e is not None for _, e in failed)
    assert sorted(m.value for m, _ in failed) == sorted(m.value for m in messages)
    assert {(m.received_at_ns, tuple(m.headers)) for m, _ in failed} == {(7, (("n", b"1"),))}


def test_fast_path_handlers_are_not_tracked_by_the_gc() -> None:
    from alphapanda.pipeline.producer import _Delivery

    handler = _Delivery(object(), 1, [("n", b"1")])  # type: ignore[arg-type]
    assert not gc.is_tracked(handler)
