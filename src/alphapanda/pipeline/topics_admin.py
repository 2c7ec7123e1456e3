"""Create the feed's topics at start-up (Redpanda and our Kafka do not auto-create
topics), and wait until each of their partitions takes writes.

Why the wait: right after a topic is created, the broker's metadata already names a
leader for each partition while that leader still refuses writes (``NOT_LEADER``) for
a moment — seconds on a loaded machine. An idempotent librdkafka producer that has
several requests in flight for one partition in that window can see the first refused
and the next accepted (a broker that has no state yet for a producer takes any
sequence number), and then reports the refused messages as delivered too: they never
reach the topic. So the publisher sends nothing until ``ensure_topics`` has seen every
partition answer a ``ListOffsets`` request, which only a leader that takes writes does.
(The publisher also checks every ack for this, see ``MessageProducer``.)
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Mapping
from concurrent.futures import Future

from confluent_kafka import KafkaError, KafkaException, TopicPartition
from confluent_kafka.admin import AdminClient, OffsetSpec  # type: ignore[attr-defined]
from confluent_kafka.cimpl import NewTopic

from alphapanda.kafka_security import security_config
from alphapanda.settings import KafkaSettings

log = logging.getLogger(__name__)

# Between two rounds of asking the partitions of a new topic whether they take writes.
WRITABLE_POLL_S = 0.1
_LATEST = OffsetSpec.latest()  # type: ignore[no-untyped-call]


class TopicSetupError(Exception):
    """The topic could not be created or verified."""


def admin_client(settings: KafkaSettings, wait_seconds: float) -> AdminClient:
    """An admin client for the feed's cluster (with its security settings)."""
    return AdminClient(
        {
            "bootstrap.servers": settings.bootstrap_servers,
            "socket.timeout.ms": int(wait_seconds * 1000),
            # Its connection failures surface through the futures (and the producer
            # reports them too); librdkafka's own stderr lines add nothing.
            "log_level": 0,
            **security_config(settings),
        }
    )


async def ensure_topic(settings: KafkaSettings, topic: str, wait_seconds: float = 15.0) -> bool:
    """Create ``topic`` with the configured partitions and replication factor.

    Returns ``True`` if it was created, ``False`` if it already existed (an existing
    topic is left as it is, whatever its partition count). Raises ``TopicSetupError``
    if the broker cannot be reached or refuses within ``wait_seconds``.
    """
    return bool(await ensure_topics(settings, {topic: {}}, wait_seconds))


async def ensure_topics(
    settings: KafkaSettings, topics: Mapping[str, Mapping[str, str]], wait_seconds: float = 15.0
) -> list[str]:
    """Create the topics that do not exist yet, each with its config, then wait (up to
    ``wait_seconds``) until every partition of each takes writes; returns those created.
    Raises ``TopicSetupError`` if one cannot be created."""
    admin = admin_client(settings, wait_seconds)
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
        created.append(topic)
    for topic in topics:
        await await_writable(admin, topic, wait_seconds)
    return created


async def await_writable(admin: AdminClient, topic: str, within: float) -> bool:
    """Wait until every partition of ``topic`` answers a ``ListOffsets`` request (its
    leader takes writes); ``False`` (and a warning) if some still do not after ``within`` seconds."""
    loop = asyncio.get_running_loop()
    deadline = loop.time() + within
    while True:
        # Each round gets at least a second, even when the time is up (one more try).
        request = max(1.0, deadline - loop.time())
        try:
            metadata = await asyncio.to_thread(admin.list_topics, topic, timeout=request)
            described = metadata.topics.get(topic)
            if described is None or described.error is not None or not described.partitions:
                waiting = "all (no metadata yet)"
            else:
                futures = admin.list_offsets(
                    {TopicPartition(topic, p): _LATEST for p in described.partitions},
                    request_timeout=request,
                )
                refused = []
                for partition, future in futures.items():
                    try:
                        await asyncio.wrap_future(future)
                    except KafkaException:
                        refused.append(partition.partition)
                if not refused:
                    return True
                waiting = ", ".join(map(str, sorted(refused)))
        except KafkaException as exc:
            waiting = f"all ({exc})"
        if loop.time() >= deadline:
            log.warning(
                "topic %s: partitions %s do not take writes yet after %.0f s; publishing "
                "anyway (every ack is checked)",
                topic,
                waiting,
                within,
            )
            return False
        await asyncio.sleep(WRITABLE_POLL_S)
