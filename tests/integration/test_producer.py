"""MessageProducer against the real broker: every delivery observed, config honoured."""

from __future__ import annotations

import asyncio
import time
import uuid

from confluent_kafka import Consumer, KafkaError

from alphapanda.pipeline.producer import EncodedMessage, MessageProducer
from alphapanda.pipeline.topics_admin import admin_client, await_writable, ensure_topic
from alphapanda.settings import Settings
from alphapanda.topics import TopicNames


def read_all(
    bootstrap: str, topic: str, expected: int, deadline_s: float = 30.0
) -> list[tuple[bytes, bytes]]:
    consumer = Consumer(
        {
            "bootstrap.servers": bootstrap,
            "group.id": f"test-{uuid.uuid4().hex}",
            "auto.offset.reset": "earliest",
            "enable.auto.commit": False,
        }
    )
    consumer.subscribe([topic])
    out: list[tuple[bytes, bytes]] = []
    try:
        end = time.monotonic() + deadline_s
        while len(out) < expected and time.monotonic() < end:
            for m in consumer.consume(1000, 0.5):
                if m.error() is None:
                    out.append((m.key() or b"", m.value() or b""))
    finally:
        consumer.close()
    return out


async def test_produce_every_report_observed_and_topic_created(settings_for) -> None:  # type: ignore[no-untyped-def]
    settings: Settings = settings_for(kafka={"topic_partitions": 3})
    topic = TopicNames.market_ticks(settings.kafka.topic_prefix)
    assert await ensure_topic(settings.kafka, topic) is True
    # Returned only once every partition's leader takes writes (answers ListOffsets).
    admin = admin_client(settings.kafka, 5.0)
    assert await await_writable(admin, topic, 0.0)
    assert await ensure_topic(settings.kafka, topic) is False  # already exists: fine

    outcomes: list[tuple[int, KafkaError | None]] = []

    def on_delivery(message: EncodedMessage, context: object, error: KafkaError | None) -> None:
        assert isinstance(context, int)
        outcomes.append((context, error))

    producer = MessageProducer(settings.kafka, topic, on_delivery)
    async with asyncio.TaskGroup() as tg:
        tg.create_task(producer.run())
        for i in range(2000):
            await producer.produce(
                EncodedMessage(str(i % 10).encode(), f"v{i}".encode(), [("n", b"1")], 0), i
            )
        assert await producer.flush(20) == 0
        producer.stop()
    assert sorted(c for c, _ in outcomes) == list(range(2000))
    assert all(e is None for _, e in outcomes)
    assert producer.delivered == 2000 and producer.pending == 0
    got = await asyncio.to_thread(read_all, settings.kafka.bootstrap_servers, topic, 2000)
    assert len(got) == 2000
    # Per key, the values arrive in the order produced (key → one partition).
    by_key: dict[bytes, list[int]] = {}
    for key, value in got:
        by_key.setdefault(key, []).append(int(value[1:]))
    assert all(v == sorted(v) for v in by_key.values())


async def test_unreachable_broker_reports_timeout_for_each_message(settings_for) -> None:  # type: ignore[no-untyped-def]
    from tests.support.services import free_port

    settings: Settings = settings_for(
        kafka={
            "bootstrap_servers": f"127.0.0.1:{free_port()}",
            "message_timeout_ms": 1000,
            "request_timeout_ms": 500,
        }
    )
    failures: list[str] = []

    def on_delivery(message: EncodedMessage, context: object, error: KafkaError | None) -> None:
        assert error is not None
        failures.append(error.name())

    producer = MessageProducer(settings.kafka, "nowhere", on_delivery)
    async with asyncio.TaskGroup() as tg:
        tg.create_task(producer.run())
        for i in range(50):
            assert producer.try_produce(EncodedMessage(b"k", b"v", [], 1), i)
        assert await producer.flush(15) == 0
        producer.stop()
    assert failures == ["_MSG_TIMED_OUT"] * 50
    assert producer.failed == {"_MSG_TIMED_OUT": 50}
    assert producer.client_errors  # the connection refusals were observed too


async def test_a_topic_that_never_takes_writes_is_waited_for_and_reported(
    settings_for, caplog
) -> None:  # type: ignore[no-untyped-def]
    settings: Settings = settings_for()
    admin = admin_client(settings.kafka, 5.0)
    missing = f"{settings.kafka.topic_prefix}never.created"
    assert not await await_writable(admin, missing, 1.0)
    assert f"topic {missing}: partitions all" in caplog.text
