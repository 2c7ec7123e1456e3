"""Create the feed's topic at start-up (Redpanda and our Kafka do not auto-create topics)."""

from __future__ import annotations

import asyncio
import logging
from concurrent.futures import Future

from confluent_kafka import KafkaError, KafkaException
from confluent_kafka.admin import AdminClient
from confluent_kafka.cimpl import NewTopic

from alphapanda.kafka_security import security_config
from alphapanda.settings import KafkaSettings

log = logging.getLogger(__name__)


class TopicSetupError(Exception):
    """The topic could not be created or verified."""


async def ensure_topic(settings: KafkaSettings, topic: str, wait_seconds: float = 15.0) -> bool:
    """Create ``topic`` with the configured partitions and replication factor.

    Returns ``True`` if it was created, ``False`` if it already existed (an existing
    topic is left as it is, whatever its partition count). Raises ``TopicSetupError``
    if the broker cannot be reached or refuses within ``wait_seconds``.
    """
    admin = AdminClient(
        {
            "bootstrap.servers": settings.bootstrap_servers,
            "socket.timeout.ms": int(wait_seconds * 1000),
            # Its connection failures surface through the future below (and the
            # producer reports them too); librdkafka's own stderr lines add nothing.
            "log_level": 0,
            **security_config(settings),
        }
    )
    new = NewTopic(
        topic,
        num_partitions=settings.topic_partitions,
        replication_factor=settings.replication_factor,
    )
    futures: dict[str, Future[None]] = admin.create_topics(
        [new], operation_timeout=wait_seconds, request_timeout=wait_seconds
    )
    try:
        async with asyncio.timeout(wait_seconds + 5):
            await asyncio.wrap_future(futures[topic])
    except KafkaException as exc:
        error = exc.args[0]
        if isinstance(error, KafkaError) and error.code() == KafkaError.TOPIC_ALREADY_EXISTS:
            return False
        raise TopicSetupError(f"cannot create topic {topic!r}: {error}") from None
    except TimeoutError:
        raise TopicSetupError(
            f"cannot create topic {topic!r}: broker {settings.bootstrap_servers} did not answer"
        ) from None
    log.info(
        "created topic %s (%d partitions, rf %d)",
        topic,
        settings.topic_partitions,
        settings.replication_factor,
    )
    return True
