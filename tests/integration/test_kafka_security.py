"""The feed on a SASL_SSL listener (SCRAM-SHA-512 over TLS, the way managed Kafka is
reached): a private broker started by ``scripts/devstack.sh`` with its opt-in second
listener, a CA and broker certificate it generated with openssl."""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Callable, Iterator
from typing import Any

import pytest
from confluent_kafka import Consumer, TopicPartition

from alphapanda.kafka_security import security_config
from alphapanda.ops.devstack import DevstackService
from alphapanda.settings import Settings
from alphapanda.testing import always, eventually
from tests.support.feed import feed_settings, new_feed
from tests.support.sim import running_simulator

SettingsFor = Callable[..., Settings]


@pytest.fixture(scope="module")
def sasl_kafka(tmp_path_factory: pytest.TempPathFactory) -> Iterator[DevstackService]:
    broker = DevstackService("kafka", tmp_path_factory.mktemp("sasl-kafka"), sasl_ssl=True)
    broker.start()
    try:
        yield broker
    finally:
        broker.stop()


def _kafka(broker: DevstackService, password: str) -> dict[str, Any]:
    return {
        "bootstrap_servers": f"127.0.0.1:{broker.sasl_port}",
        "security_protocol": "SASL_SSL",
        "sasl_mechanism": "SCRAM-SHA-512",
        "sasl_username": "alphapanda",
        "sasl_password": password,
        "ssl_ca_location": broker.ca_location,
        "request_timeout_ms": 3000,
        "message_timeout_ms": 5000,
    }


def _count(settings: Settings, topic: str) -> int:
    consumer = Consumer(
        {
            "bootstrap.servers": settings.kafka.bootstrap_servers,
            "group.id": "sasl-check",
            **security_config(settings.kafka),
        }
    )
    try:
        meta = consumer.list_topics(topic, timeout=10)
        total = 0
        for partition in meta.topics[topic].partitions:
            _, high = consumer.get_watermark_offsets(TopicPartition(topic, partition), timeout=10)
            total += high
        return total
    finally:
        consumer.close()


async def test_the_feed_publishes_through_sasl_ssl(
    sasl_kafka: DevstackService, settings_for: SettingsFor
) -> None:
    assert sasl_kafka.ca_location.is_file()
    async with running_simulator(ticks_per_second=500) as sim:
        settings = feed_settings(settings_for, sim, kafka=_kafka(sasl_kafka, "dev-kafka-password"))
        feed, service = new_feed(settings)
        async with asyncio.TaskGroup() as tg:
            tg.create_task(service.run())
            await eventually(
                lambda: service.readiness()[0], timeout=60, what="feed ready over SASL_SSL"
            )
            await eventually(lambda: feed.accounting.published > 200, timeout=30)
            # The derived streams' topics are created through the same secured listener.
            derived = feed.derived
            assert derived is not None
            await eventually(lambda: derived.topics_ready, timeout=30, what="derived topics")
            service.request_stop()
    topic = feed.topic
    published = feed.accounting.published
    assert await asyncio.to_thread(_count, settings, topic) >= published > 0


async def test_a_wrong_password_is_one_clear_error_and_not_ready(
    sasl_kafka: DevstackService,
    settings_for: SettingsFor,
    caplog: pytest.LogCaptureFixture,
) -> None:
    caplog.set_level(logging.WARNING)
    async with running_simulator(ticks_per_second=200) as sim:
        settings = feed_settings(settings_for, sim, kafka=_kafka(sasl_kafka, "not-the-password"))
        feed, service = new_feed(settings)
        async with asyncio.TaskGroup() as tg:
            tg.create_task(service.run())
            await eventually(feed.client.is_streaming, timeout=30, what="kite streaming")
            # A wrong password never makes the feed ready, however long it tries.
            await always(
                lambda: not service.readiness()[0],
                duration=8,
                what="never ready with a bad password",
            )
            ready, reasons = service.readiness()
            service.request_stop()
    assert not ready, reasons
    messages = [r.getMessage() for r in caplog.records if r.name.startswith("alphapanda")]
    auth = [m for m in messages if "Authentication failed" in m or "SASL" in m]
    assert auth, messages[-20:]
    # Reported, not repeated: a handful of lines, no tracebacks.
    assert len(auth) <= 5, auth
    assert not any(r.exc_info for r in caplog.records if "SASL" in r.getMessage())
    assert "not-the-password" not in "\n".join(messages)
