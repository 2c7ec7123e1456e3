"""The local stack is real: Kafka, Redis and PostgreSQL answer on loopback."""

from __future__ import annotations

import asyncpg
import redis.asyncio as redis
from confluent_kafka import Consumer, Producer
from confluent_kafka.admin import AdminClient, NewTopic

from tests.support.services import SHARED_DATABASE, SHARED_KAFKA, SHARED_REDIS, PrivateService


def test_kafka_create_topic_produce_and_consume(unique: str) -> None:
    topic = f"test.{unique}.stack"
    admin = AdminClient({"bootstrap.servers": SHARED_KAFKA})
    for future in admin.create_topics(
        [NewTopic(topic, num_partitions=1, replication_factor=1)]
    ).values():
        future.result(timeout=30)

    reports: list[tuple[str | None, bytes | None]] = []
    producer = Producer(
        {"bootstrap.servers": SHARED_KAFKA, "enable.idempotence": True, "acks": "all"}
    )
    producer.produce(
        topic,
        value=b"hello",
        key=b"256265",
        on_delivery=lambda err, msg: reports.append((err and str(err), msg.value())),
    )
    assert producer.flush(30) == 0
    assert reports == [(None, b"hello")]

    consumer = Consumer(
        {"bootstrap.servers": SHARED_KAFKA, "group.id": unique, "auto.offset.reset": "earliest"}
    )
    consumer.subscribe([topic])
    try:
        message = None
        for _ in range(60):
            message = consumer.poll(1.0)
            if message is not None and message.error() is None:
                break
        assert message is not None and message.error() is None
        assert (message.key(), message.value()) == (b"256265", b"hello")
    finally:
        consumer.close()


async def test_redis_round_trip(unique: str) -> None:
    client = redis.Redis.from_url(SHARED_REDIS)
    try:
        await client.set(f"test:{unique}", "42", ex=60)
        assert await client.get(f"test:{unique}") == b"42"
    finally:
        await client.aclose()


async def test_postgres_round_trip(unique: str) -> None:
    conn = await asyncpg.connect(SHARED_DATABASE.replace("+asyncpg", ""))
    try:
        table = f"t_{unique}"
        await conn.execute(f"CREATE TEMP TABLE {table} (id int, name text)")
        await conn.execute(f"INSERT INTO {table} VALUES (1, 'NIFTY 50')")
        assert await conn.fetchval(f"SELECT name FROM {table} WHERE id = 1") == "NIFTY 50"
    finally:
        await conn.close()


def test_private_kafka_can_be_killed_and_restarted(private_kafka: PrivateService) -> None:
    admin = AdminClient({"bootstrap.servers": private_kafka.bootstrap})
    assert admin.list_topics(timeout=20).brokers
    private_kafka.kill()
    private_kafka.start()
    admin = AdminClient({"bootstrap.servers": private_kafka.bootstrap})
    assert admin.list_topics(timeout=30).brokers


async def test_private_postgres_runs_beside_the_shared_one(
    private_postgres: PrivateService,
) -> None:
    conn = await asyncpg.connect(private_postgres.database_url.replace("+asyncpg", ""))
    try:
        assert await conn.fetchval("SELECT 1") == 1
    finally:
        await conn.close()
