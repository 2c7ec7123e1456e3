"""The consumer-side sequence ledger: prove from the topic alone that no tick
went missing, none arrived twice, and each instrument's ticks kept their order.

The simulator's ``volume_traded`` starts at 0 and grows by exactly
``last_traded_quantity`` with every tick it sends of an instrument (only while someone
is subscribed), so per instrument, in partition order::

    volume[0] == ltq[0]                  (when the run starts from a fresh simulator)
    volume[i] == volume[i-1] + ltq[i]    (no gap, no duplicate, no reordering)

and the count per instrument equals the simulator's ``ticks_sent``. Index instruments
carry no volume; they are only counted.

Usage::

    records = read_topic(bootstrap, topic)
    report = check_ledger(records)
    report.assert_complete(sent=sim_stats["ticks_sent"])
"""

from __future__ import annotations

import time
import uuid
from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any

from confluent_kafka import Consumer, KafkaError, TopicPartition

from alphapanda.market_tick import MarketTick
from alphapanda.pipeline.wire import WireDecoder, content_type_of
from alphapanda.wal.tails import watermarks


@dataclass(frozen=True)
class TickRecord:
    """What the ledger needs from one record of ``market.ticks``."""

    partition: int
    offset: int
    key: bytes
    event_id: str
    instrument_token: int
    volume_traded: int | None
    last_traded_quantity: int | None
    last_price: float
    received_at_ns: int
    tick: MarketTick


def read_topic(bootstrap: str, topic: str, timeout: float = 60.0) -> list[TickRecord]:
    """Every record in ``topic`` now (up to each partition's high watermark), in
    partition order. Blocking: call through ``asyncio.to_thread`` from async tests."""

    consumer = Consumer(
        {
            "bootstrap.servers": bootstrap,
            "group.id": f"ledger-{uuid.uuid4().hex}",
            "enable.auto.commit": False,
            "enable.partition.eof": False,
        }
    )
    decoder = WireDecoder()
    records: list[TickRecord] = []
    try:
        metadata = consumer.list_topics(topic, timeout=timeout)
        partitions = sorted(metadata.topics[topic].partitions)

        def ends() -> dict[int, int]:
            found: dict[int, int] = {}
            for p in partitions:
                low, high = watermarks(consumer, TopicPartition(topic, p), timeout)
                if high > low:
                    found[p] = high
            return found

        # The ends twice in a row the same: a loaded broker answers with what it has.
        highs = ends()
        while True:
            time.sleep(0.2)
            again = ends()
            if again == highs:
                break
            highs = again
        consumer.assign([TopicPartition(topic, p, 0) for p in highs])
        positions = dict.fromkeys(highs, -1)
        deadline = time.monotonic() + timeout
        while any(positions[p] + 1 < highs[p] for p in highs):
            if time.monotonic() > deadline:
                raise AssertionError(f"could not read {topic} to its end: {positions} vs {highs}")
            for message in consumer.consume(5000, 0.5):
                error = message.error()
                if error is not None:
                    raise AssertionError(f"consumer error: {error}")
                partition = message.partition()
                offset = message.offset()
                assert partition is not None and offset is not None
                if offset >= highs.get(partition, 0):
                    continue
                positions[partition] = offset
                records.append(tick_record(message, decoder))
    finally:
        consumer.close()
    return records


def read_committed(bootstrap: str, topic: str, timeout: float = 60.0) -> list[TickRecord]:
    """Every committed record of ``topic``, in partition order (to each partition's end)."""
    consumer = Consumer(
        {
            "bootstrap.servers": bootstrap,
            "group.id": f"ha-ledger-{uuid.uuid4().hex}",
            "enable.auto.commit": False,
            "enable.partition.eof": True,
            "isolation.level": "read_committed",
        }
    )
    decoder = WireDecoder()
    records: list[TickRecord] = []
    try:
        partitions = sorted(consumer.list_topics(topic, timeout=timeout).topics[topic].partitions)
        consumer.assign([TopicPartition(topic, p, 0) for p in partitions])
        done: set[int] = set()
        deadline = time.monotonic() + timeout
        while len(done) < len(partitions):
            assert time.monotonic() < deadline, f"could not read {topic} to its end"
            for message in consumer.consume(5000, 0.5):
                error = message.error()
                if error is not None:
                    assert error.code() == KafkaError._PARTITION_EOF, str(error)
                    done.add(message.partition() or 0)
                    continue
                records.append(tick_record(message, decoder))
    finally:
        consumer.close()
    records.sort(key=lambda r: (r.partition, r.offset))
    return records


def tick_record(message: Any, decoder: WireDecoder) -> TickRecord:
    """One consumed ``market.ticks`` message as the ledger checks it."""
    value = message.value()
    assert isinstance(value, bytes)
    event = decoder.decode(value, content_type_of(message.headers()))
    tick = event.data
    return TickRecord(
        partition=message.partition() or 0,
        offset=message.offset() or 0,
        key=message.key() or b"",
        event_id=event.id,
        instrument_token=tick.instrument_token,
        volume_traded=tick.volume_traded,
        last_traded_quantity=tick.last_traded_quantity,
        last_price=tick.last_price,
        received_at_ns=tick.received_at_ns,
        tick=tick,
    )


@dataclass
class LedgerReport:
    """What the ledger found. Empty problem lists mean a complete, exact, ordered stream."""

    total: int = 0
    per_instrument: dict[int, int] = field(default_factory=dict)
    duplicate_ids: list[str] = field(default_factory=list)
    duplicate_volumes: list[tuple[int, int]] = field(default_factory=list)
    gaps: list[tuple[int, int, int]] = field(default_factory=list)  # token, expected, got
    reordered: list[tuple[int, int, int]] = field(default_factory=list)  # token, prev, got
    bad_start: list[tuple[int, int, int]] = field(default_factory=list)  # token, volume, ltq
    wrong_partition: list[int] = field(default_factory=list)

    @property
    def problems(self) -> dict[str, list[object]]:
        found: dict[str, list[object]] = {}
        for name in (
            "duplicate_ids",
            "duplicate_volumes",
            "gaps",
            "reordered",
            "bad_start",
            "wrong_partition",
        ):
            items = getattr(self, name)
            if items:
                found[name] = list(items[:10])
        return found

    def assert_complete(self, sent: Mapping[str, int] | Mapping[int, int] | None = None) -> None:
        """No gap, duplicate or reordering; and, given the simulator's ``ticks_sent``
        (token -> count), exactly that many ticks per instrument."""
        assert not self.problems, f"ledger problems: {self.problems}"
        if sent is not None:
            expected = {int(token): int(n) for token, n in sent.items() if int(n)}
            missing = {
                token: (n, self.per_instrument.get(token, 0))
                for token, n in expected.items()
                if self.per_instrument.get(token, 0) != n
            }
            extra = set(self.per_instrument) - set(expected)
            assert not missing and not extra, (
                f"per-instrument counts differ from the simulator's (sent, got): "
                f"{dict(list(missing.items())[:10])}; unexpected instruments: {sorted(extra)[:10]}"
            )


def check_ledger(records: list[TickRecord], *, from_zero: bool = True) -> LedgerReport:
    """Check ``records`` (in partition order, as ``read_topic`` returns them).

    ``from_zero``: the simulator was fresh when the first tick of each instrument was
    sent, so that tick's volume must equal its quantity (nothing before it was lost).
    """
    report = LedgerReport(total=len(records))
    seen_ids: set[str] = set()
    seen_volumes: set[tuple[int, int]] = set()
    last_volume: dict[int, int] = {}
    partition_of: dict[int, int] = {}
    for record in records:
        token = record.instrument_token
        report.per_instrument[token] = report.per_instrument.get(token, 0) + 1
        if record.event_id in seen_ids:
            report.duplicate_ids.append(record.event_id)
        seen_ids.add(record.event_id)
        if partition_of.setdefault(token, record.partition) != record.partition:
            report.wrong_partition.append(token)
        volume, quantity = record.volume_traded, record.last_traded_quantity
        if volume is None or quantity is None:
            continue  # index instruments carry no volume
        if (token, volume) in seen_volumes:
            report.duplicate_volumes.append((token, volume))
        seen_volumes.add((token, volume))
        previous = last_volume.get(token)
        if previous is None:
            if from_zero and volume != quantity:
                report.bad_start.append((token, volume, quantity))
        elif volume != previous + quantity:
            if volume <= previous:
                report.reordered.append((token, previous, volume))
            else:
                report.gaps.append((token, previous + quantity, volume))
        last_volume[token] = volume
    return report
