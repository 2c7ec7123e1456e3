"""The active's last published tick per instrument, read from the tails of ``market.ticks``.

A takeover reads it after the new owner of the transactional id has fenced the old one,
so the tail cannot grow behind its back (a read_committed consumer: records of the
fenced, aborted transaction are never seen). The read is bounded: ``window`` records
per partition from the end. Records are keyed by instrument, so within a partition
the last record of an instrument is the last one published.
"""

from __future__ import annotations

import threading
import time
from collections import deque
from dataclasses import dataclass, field
from typing import Any, Final

import msgspec
from confluent_kafka import Consumer, KafkaError, KafkaException, TopicPartition

from alphapanda.market_tick import MarketTick
from alphapanda.pipeline.wire import WireDecoder, content_type_of
from alphapanda.settings import KafkaSettings
from alphapanda.wal.tails import consumer_config, watermarks

# Records kept per instrument: the last one and those before it, so that a takeover can
# tell apart snapshots of the same content by what came before them.
RECENT: Final = 8

_Record = tuple[bytes, Any]


@dataclass(slots=True)
class LastPublished:
    """Per instrument, the last tick in the topic; how the read went."""

    ticks: dict[int, MarketTick] = field(default_factory=dict)
    # Per instrument, up to ``RECENT`` last ticks in the topic, oldest first (the last is
    # the one in ``ticks``).
    recent: dict[int, list[MarketTick]] = field(default_factory=dict)
    records: int = 0
    unreadable: int = 0
    newest_received_at_ns: int = 0  # the newest receive time seen (the active's clock)
    # From this receive time on, every record of every partition was read (0: whole
    # topic read, or empty).
    oldest_received_at_ns: int = 0


def tail_config(kafka: KafkaSettings | str, group: str) -> dict[str, Any]:
    """A read_committed consumer of assigned ranges (never committed), with the Kafka
    security settings, that a takeover does not wait on: no fetch batching delays."""
    return consumer_config(kafka) | {
        "group.id": group,
        "isolation.level": "read_committed",
        "fetch.wait.max.ms": 10,
        "fetch.error.backoff.ms": 10,
        "max.partition.fetch.bytes": 16 * 1024 * 1024,
    }


def read_last_published(
    kafka: KafkaSettings | str, topic: str, *, window: int, timeout: float = 10.0
) -> LastPublished:
    """Blocking (run it in a thread). All partitions are read at once, each from
    ``window`` records before its end up to its end (end of partition event)."""
    consumer = Consumer(tail_config(kafka, "alphapanda-ha-takeover"))
    decoder = WireDecoder()
    result = LastPublished()
    try:
        metadata = consumer.list_topics(topic, timeout=timeout)
        described = metadata.topics.get(topic)
        if described is None or described.error is not None:
            raise KafkaException(described.error if described is not None else "no metadata")
        assignment = []
        for partition in sorted(described.partitions):
            # A just-created topic may have no leader yet: asked again until ``timeout``.
            low, high = watermarks(consumer, TopicPartition(topic, partition), timeout)
            if high > low:
                assignment.append(TopicPartition(topic, partition, max(low, high - window)))
        if assignment:
            consumer.assign(assignment)
            _read(consumer, decoder, {tp.partition for tp in assignment}, timeout, result)
    finally:
        consumer.close()
    return result


def _decode(decoder: WireDecoder, value: bytes, headers: Any) -> MarketTick | None:
    try:
        return decoder.decode(
            value, content_type_of(headers if isinstance(headers, list) else None)
        ).data
    except (msgspec.DecodeError, msgspec.ValidationError, ValueError):
        return None


def _read(
    consumer: Any,
    decoder: WireDecoder,
    partitions: set[int],
    timeout: float,
    result: LastPublished,
) -> None:
    # Only the last record of each key (instrument) and the first of each partition
    # are decoded: a takeover must not spend its time parsing the whole window.
    deadline = time.monotonic() + timeout
    open_partitions = set(partitions)
    last: dict[bytes, deque[_Record]] = {}
    first: dict[int, _Record] = {}
    while open_partitions:
        if time.monotonic() > deadline:
            raise TimeoutError(
                f"reading the tail of partitions {sorted(open_partitions)} timed out"
            )
        for message in consumer.consume(10_000, timeout=0.1):
            error = message.error()
            if error is not None:
                if error.code() == KafkaError._PARTITION_EOF:
                    open_partitions.discard(message.partition() or 0)
                    continue
                raise KafkaException(error)
            record = (message.value() or b"", message.headers())
            _keep(last, message.key() or b"", record)
            first.setdefault(message.partition() or 0, record)
            result.records += 1
    _fill(result, decoder, last, first)


def _keep(last: dict[bytes, deque[_Record]], key: bytes, record: _Record) -> None:
    kept = last.get(key)
    if kept is None:
        kept = last[key] = deque(maxlen=RECENT)
    kept.append(record)


def _fill(
    result: LastPublished,
    decoder: WireDecoder,
    last: dict[bytes, deque[_Record]],
    first: dict[int, _Record],
) -> None:
    """Decode the kept records into ``result``."""
    for kept in last.values():
        ticks = [t for t in (_decode(decoder, v, h) for v, h in kept) if t is not None]
        if len(ticks) < len(kept):
            result.unreadable += 1
        if not ticks:
            continue
        tick = ticks[-1]
        result.ticks[tick.instrument_token] = tick
        result.recent[tick.instrument_token] = ticks
        result.newest_received_at_ns = max(result.newest_received_at_ns, tick.received_at_ns)
    oldest = [t for t in (_decode(decoder, v, h) for v, h in first.values()) if t is not None]
    if oldest:
        # Every partition was read from its window's start: an instrument absent from
        # the result published nothing received after the latest of these starts.
        result.oldest_received_at_ns = max(t.received_at_ns for t in oldest)


class TailFollower:
    """A warm standby follows the topic's tail all along (in a thread of its own),
    keeping only the raw last record of each instrument, so that a takeover reads just
    the last moments: ``catch_up()`` (after the old active was fenced) reads every
    partition up to its end as of that moment and decodes the last record per
    instrument. ``run()`` blocks until ``stop`` is set or ``catch_up()`` returned.
    """

    def __init__(self, kafka: KafkaSettings | str, topic: str, window: int) -> None:
        self._config = tail_config(kafka, "alphapanda-ha-follower")
        self.topic = topic
        self.window = window
        self.stop = threading.Event()
        self._catch_up = threading.Event()
        self._done = threading.Event()
        self.result: LastPublished | None = None
        self.error: BaseException | None = None
        self.records = 0
        # The active's receive time of the newest record read so far (0: none yet): how
        # far its publishing has got.
        self.frontier_ns = 0

    def run(self) -> None:
        try:
            self._run()
        except BaseException as exc:  # handed to catch_up(): it falls back to a full read
            self.error = exc
        finally:
            self._done.set()

    def _run(self) -> None:
        consumer = Consumer(self._config)
        decoder = WireDecoder()
        last: dict[bytes, deque[_Record]] = {}
        first: dict[int, _Record] = {}
        try:
            # Short metadata waits: a catch-up request must be noticed quickly.
            described = consumer.list_topics(self.topic, timeout=1).topics.get(self.topic)
            while described is None or described.error is not None or not described.partitions:
                if self._catch_up.is_set():
                    # No topic yet: nothing was ever published.
                    self.result = LastPublished()
                    return
                if self.stop.wait(0.1):
                    return
                described = consumer.list_topics(self.topic, timeout=1).topics.get(self.topic)
            partitions = sorted(described.partitions)
            assignment = []
            for partition in partitions:
                low, high = watermarks(consumer, TopicPartition(self.topic, partition), 10)
                assignment.append(
                    TopicPartition(self.topic, partition, max(low, high - self.window))
                )
            consumer.assign(assignment)
            ends: dict[int, int] | None = None
            reached: set[int] = set()
            while not self.stop.is_set():
                if ends is None and self._catch_up.is_set():
                    ends = {}
                    for partition in partitions:
                        _, high = watermarks(consumer, TopicPartition(self.topic, partition), 10)
                        ends[partition] = high
                newest = None
                for message in consumer.consume(10_000, timeout=0.05):
                    error = message.error()
                    partition = message.partition() or 0
                    if error is not None:
                        if error.code() != KafkaError._PARTITION_EOF:
                            raise KafkaException(error)
                        if ends is not None and (message.offset() or 0) >= ends[partition]:
                            reached.add(partition)
                        continue
                    record = (message.value() or b"", message.headers())
                    _keep(last, message.key() or b"", record)
                    first.setdefault(partition, record)
                    self.records += 1
                    newest = record
                if newest is not None:
                    # One decode per poll (the batch's last record), not per record.
                    tick = _decode(decoder, *newest)
                    if tick is not None:
                        self.frontier_ns = max(self.frontier_ns, tick.received_at_ns)
                if ends is not None:
                    for partition in partitions:
                        if partition in reached:
                            continue
                        position = consumer.position([TopicPartition(self.topic, partition)])[0]
                        if position.offset >= ends[partition]:
                            reached.add(partition)
                    if len(reached) == len(partitions):
                        break
            if ends is None:
                return
            result = LastPublished(records=self.records)
            _fill(result, decoder, last, first)
            self.result = result
        finally:
            consumer.close()

    def catch_up(self, timeout: float) -> LastPublished | None:
        """Blocking: the last published tick per instrument as of now (``None``: the
        follower failed or is not following; read the tail afresh)."""
        self._catch_up.set()
        self._done.wait(timeout)
        return self.result
