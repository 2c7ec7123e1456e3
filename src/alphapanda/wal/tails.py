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

``newest_positions`` is pure over the records; ``read_tail_positions`` does the Kafka
I/O (blocking: run it in a thread).
"""

from __future__ import annotations

import logging
import time
from collections.abc import Iterable
from dataclasses import dataclass, field
from typing import Any, Final

import msgspec
from confluent_kafka import Consumer, KafkaError, KafkaException, TopicPartition

from alphapanda.pipeline.wire import CONTENT_TYPES, content_type_of, position_of

log = logging.getLogger(__name__)

Position = tuple[int, int]  # (received_at_ns, packet index)

DEFAULT_WINDOW: Final = 2_000
DEFAULT_MAX_WINDOW: Final = 1_000_000


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


def consumer_config(bootstrap_servers: str) -> dict[str, Any]:
    return {
        "bootstrap.servers": bootstrap_servers,
        "group.id": "alphapanda-wal-recovery",  # never committed; assign() only
        "enable.auto.commit": False,
        "enable.partition.eof": True,
        "log_level": 2,
    }


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
        metadata = consumer.list_topics(topic, timeout=timeout)
        described = metadata.topics.get(topic)
        if described is None or described.error is not None:
            error = described.error if described is not None else "no metadata"
            raise KafkaException(error)
        report = TailReport(partitions=len(described.partitions))
        for partition in sorted(described.partitions):
            _read_partition(
                consumer, topic, partition, oldest_ns, window, max_window, timeout, report, exclude
            )
        return report
    finally:
        consumer.close()


def _read_partition(
    consumer: Consumer,
    topic: str,
    partition: int,
    oldest_ns: int,
    window: int,
    max_window: int,
    timeout: float,
    report: TailReport,
    exclude: set[tuple[int, int, int]] | None = None,
) -> None:
    low, high = consumer.get_watermark_offsets(TopicPartition(topic, partition), timeout=timeout)
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
                    "WAL recovery: partition %d of %s holds more than %d records newer "
                    "than the WAL's oldest frame; only those were compared",
                    partition,
                    topic,
                    max_window,
                )
            newest_positions(records, report.positions, exclude)
            report.records += len(records)
            return
        size = min(size * 4, max_window)


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
