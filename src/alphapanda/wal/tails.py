"""The newest position per instrument already in ``market.ticks``, read from partition tails.

A tick's position is ``(received_at_ns of its frame, packet index)``: the receive time
is in the record's payload, the index in its ``pkt`` header. The producer uses
``acks=all``, so whatever the previous run got acked is readable now.

The read is bounded: per partition it starts ``window`` records before the end and
stops at the end offset taken at the start. It reaches further back (doubling the
window, up to ``max_window``) only while the oldest record read is not older than
``oldest_ns``, the receive time of the oldest frame recovery is about to look at: once
a partition's window starts before that, every record of that partition from the WAL's
time is inside it. An instrument absent from every window therefore has nothing from
the WAL's time in the topic, and all of its WAL ticks are published. If a partition's
window hits ``max_window`` first, that is logged: positions older than the window are
not seen, so a few of its instruments' ticks could be published twice.

The same bounded read answers the publisher's question after a failed delivery: which
of these messages does the topic hold already (``published_among``)? A message whose
delivery failed may still have been written by the broker (the failure came after the
write, or a retry of it was withdrawn from librdkafka's queue); sending it again as a
new message would duplicate it.

``newest_positions`` is pure over the records; ``read_tail_positions`` and
``published_among`` do the Kafka I/O (blocking: run them in a thread).
"""

from __future__ import annotations

import logging
import time
from collections.abc import Iterable, Iterator, Sequence
from dataclasses import dataclass, field
from typing import Any, Final

import msgspec
from confluent_kafka import Consumer, KafkaError, KafkaException, TopicPartition

from alphapanda.kafka_security import security_config
from alphapanda.pipeline.producer import EncodedMessage
from alphapanda.pipeline.wire import CONTENT_TYPES, content_type_of, position_of
from alphapanda.settings import KafkaSettings

log = logging.getLogger(__name__)

Position = tuple[int, int]  # (received_at_ns, packet index)

DEFAULT_WINDOW: Final = 2_000
DEFAULT_MAX_WINDOW: Final = 1_000_000
# How much older than the oldest message asked about a partition's read reaches back:
# frames of several connections are not appended in strict receive-time order.
CHECK_MARGIN_NS: Final = 5_000_000_000
# A broker that was paused (overloaded, SIGSTOPped, a long GC) answers a new connection
# as soon as it runs again, while produce requests it received before the pause may
# still be on their way into the log. published_among waits this long after the first
# answer before it reads the tails, so those writes are there to be seen.
CHECK_SETTLE_S: Final = 1.0
# Pause between metadata requests while a just-created topic is not known yet.
METADATA_RETRY_S: Final = 0.1


class _Data(msgspec.Struct):
    instrument_token: int
    received_at_ns: int


class _Envelope(msgspec.Struct):
    data: _Data


_JSON = msgspec.json.Decoder(_Envelope)
_MSGPACK = msgspec.msgpack.Decoder(_Envelope)


@dataclass(frozen=True, slots=True)
class TailRecord:
    """What recovery needs of one record."""

    offset: int
    instrument_token: int
    position: Position


@dataclass(slots=True)
class TailReport:
    """The positions found, and how the read went."""

    positions: dict[int, Position] = field(default_factory=dict)
    records: int = 0
    unreadable: int = 0
    partitions: int = 0
    truncated: list[int] = field(default_factory=list)  # partitions that hit max_window


def parse_record(value: bytes, headers: list[tuple[str, bytes]] | None) -> tuple[int, Position]:
    """``(instrument_token, position)`` of one ``market.ticks`` record value."""
    decoder = _MSGPACK if content_type_of(headers) == CONTENT_TYPES["msgpack"] else _JSON
    envelope = decoder.decode(value)
    index = position_of(headers)
    return envelope.data.instrument_token, (envelope.data.received_at_ns, index or 0)


def newest_positions(
    records: Iterable[TailRecord],
    into: dict[int, Position],
    exclude: set[tuple[int, int, int]] | None = None,
) -> None:
    """Fold ``records`` into the newest position per instrument, leaving out those in
    ``exclude`` ((token, receive time, index): messages of the spool being replayed)."""
    for record in records:
        if exclude and (record.instrument_token, *record.position) in exclude:
            continue
        seen = into.get(record.instrument_token)
        if seen is None or record.position > seen:
            into[record.instrument_token] = record.position


def consumer_config(kafka: KafkaSettings | str) -> dict[str, Any]:
    """A consumer that only reads assigned ranges (a bootstrap string: no security)."""
    config: dict[str, Any] = {
        "group.id": "alphapanda-wal-recovery",  # never committed; assign() only
        "enable.auto.commit": False,
        "enable.partition.eof": True,
        "log_level": 2,
    }
    if isinstance(kafka, str):
        config["bootstrap.servers"] = kafka
    else:
        config["bootstrap.servers"] = kafka.bootstrap_servers
        config.update(security_config(kafka))
    return config


def message_position(message: EncodedMessage) -> tuple[int, int, int]:
    """``(instrument, receive time, packet index)`` of an encoded message."""
    return int(message.key), message.received_at_ns, position_of(message.headers) or 0


def read_tail_positions(
    config: dict[str, Any],
    topic: str,
    *,
    oldest_ns: int,
    window: int = DEFAULT_WINDOW,
    max_window: int = DEFAULT_MAX_WINDOW,
    timeout: float = 10.0,
    exclude: set[tuple[int, int, int]] | None = None,
) -> TailReport:
    """Read every partition's tail of ``topic``; raises ``KafkaException`` (or
    ``TimeoutError``) when the broker does not answer within ``timeout``."""
    consumer = Consumer(config)
    try:
        report = TailReport()
        for records in _tails(consumer, topic, oldest_ns, window, max_window, timeout, report):
            newest_positions(records, report.positions, exclude)
            report.records += len(records)
        return report
    finally:
        consumer.close()


def published_among(
    config: dict[str, Any],
    topic: str,
    messages: Sequence[EncodedMessage],
    *,
    window: int = DEFAULT_WINDOW,
    max_window: int = DEFAULT_MAX_WINDOW,
    timeout: float = 10.0,
    settle: float = CHECK_SETTLE_S,
) -> set[int]:
    """Indices of ``messages`` that ``topic`` already holds, compared by exact position.

    Every partition is read back until a record older than the oldest message (less a
    margin): anything written since, including every one of ``messages`` the broker
    kept, is inside that range. A topic that does not exist yet holds nothing. Raises
    ``KafkaException`` or ``TimeoutError`` when the broker does not answer.
    """
    if not messages:
        return set()
    wanted = {message_position(m): i for i, m in enumerate(messages)}
    oldest_ns = min(m.received_at_ns for m in messages) - CHECK_MARGIN_NS
    consumer = Consumer(config)
    try:
        consumer.list_topics(timeout=timeout)  # the broker answers again...
        time.sleep(settle)  # ...and has written what it held before
        report = TailReport()
        found: set[int] = set()
        tails = _tails(
            consumer, topic, oldest_ns, window, max_window, timeout, report, missing_ok=True
        )
        for records in tails:
            for record in records:
                index = wanted.get((record.instrument_token, *record.position))
                if index is not None:
                    found.add(index)
        return found
    finally:
        consumer.close()


def _tails(
    consumer: Consumer,
    topic: str,
    oldest_ns: int,
    window: int,
    max_window: int,
    timeout: float,
    report: TailReport,
    *,
    missing_ok: bool = False,
) -> Iterator[list[TailRecord]]:
    """Each partition's tail back to ``oldest_ns``, one partition at a time (so only
    one is in memory); ``report.partitions`` is set from the topic's metadata.
    ``missing_ok``: a topic that does not exist yet yields nothing instead of raising."""
    deadline = time.monotonic() + timeout
    while True:
        metadata = consumer.list_topics(topic, timeout=timeout)
        described = metadata.topics.get(topic)
        if described is None:
            raise KafkaException("no metadata")
        if described.error is None:
            break
        if described.error.code() != KafkaError.UNKNOWN_TOPIC_OR_PART:
            raise KafkaException(described.error)
        if missing_ok:
            return
        # A topic created a moment ago is not in every broker's metadata yet.
        if time.monotonic() >= deadline:
            raise KafkaException(described.error)
        time.sleep(METADATA_RETRY_S)
    report.partitions = len(described.partitions)
    for partition in sorted(described.partitions):
        yield _read_partition(
            consumer, topic, partition, oldest_ns, window, max_window, timeout, report
        )


def _read_partition(
    consumer: Consumer,
    topic: str,
    partition: int,
    oldest_ns: int,
    window: int,
    max_window: int,
    timeout: float,
    report: TailReport,
) -> list[TailRecord]:
    low, high = watermarks(consumer, TopicPartition(topic, partition), timeout)
    end = high
    size = window
    while True:
        start = max(low, end - size)
        records = _read_range(consumer, topic, partition, start, end, timeout, report)
        reached_back = start == low or (records and min(r.position[0] for r in records) < oldest_ns)
        if reached_back or size >= max_window:
            if not reached_back:
                report.truncated.append(partition)
                log.warning(
                    "partition %d of %s holds more than %d records newer than the oldest "
                    "tick looked for; only those were compared",
                    partition,
                    topic,
                    max_window,
                )
            return records
        size = min(size * 4, max_window)


# Answers a partition gives for a moment after its topic was created or while its
# leader moves (librdkafka does not always flag them retriable here).
_TRANSIENT: Final = frozenset(
    {
        KafkaError.NOT_LEADER_FOR_PARTITION,
        KafkaError.LEADER_NOT_AVAILABLE,
        KafkaError.UNKNOWN_TOPIC_OR_PART,
        KafkaError._TIMED_OUT,
    }
)


def is_transient(exc: KafkaException) -> bool:
    """A broker answer that may pass if asked again (no leader yet right after the topic
    was created, a leader moving, a slow broker)."""
    error = exc.args[0] if exc.args else None
    return isinstance(error, KafkaError) and (error.retriable() or error.code() in _TRANSIENT)


def watermarks(consumer: Consumer, partition: TopicPartition, timeout: float) -> tuple[int, int]:
    """``(low, high)`` of ``partition``. A transient answer (no leader yet right after
    the topic was created, a leader moving) is asked again until ``timeout``."""
    deadline = time.monotonic() + timeout
    while True:
        try:
            low, high = consumer.get_watermark_offsets(partition, timeout=timeout)
            return int(low), int(high)
        except KafkaException as exc:
            if not is_transient(exc) or time.monotonic() > deadline:
                raise
            time.sleep(0.1)


def _read_range(
    consumer: Consumer,
    topic: str,
    partition: int,
    start: int,
    end: int,
    timeout: float,
    report: TailReport,
) -> list[TailRecord]:
    if start >= end:
        return []
    consumer.assign([TopicPartition(topic, partition, start)])
    records: list[TailRecord] = []
    deadline = time.monotonic() + timeout
    try:
        while True:
            if time.monotonic() > deadline:
                raise TimeoutError(f"reading partition {partition} of {topic} timed out")
            batch = consumer.consume(1000, timeout=0.5)
            for message in batch:
                error = message.error()
                if error is not None:
                    if error.code() == KafkaError._PARTITION_EOF:
                        return records
                    raise KafkaException(error)
                offset = message.offset()
                if offset is None or offset >= end:
                    return records
                value = message.value()
                key = message.key()
                try:
                    headers = message.headers()
                    token, position = parse_record(
                        value or b"",
                        headers if isinstance(headers, list) else None,  # type: ignore[arg-type]
                    )
                except (msgspec.DecodeError, msgspec.ValidationError):
                    report.unreadable += 1
                    continue
                if key is not None and key != b"%d" % token:
                    report.unreadable += 1
                    continue
                records.append(TailRecord(offset, token, position))
                if offset >= end - 1:
                    return records
    finally:
        consumer.unassign()
