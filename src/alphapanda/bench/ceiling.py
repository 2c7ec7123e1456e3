"""The ceiling: a bare confluent-kafka producer loop of pre-encoded records.

Same broker, same producer configuration as the feed (``producer_config``: idempotent,
``acks=all``, the configured compression and linger), and records of the same size and
shape as the feed's: real ``WireEncoder`` output of full-mode ticks, with their keys and
headers. No decoding, no formatting, no buffering — only ``produce()`` in a tight loop
with one delivery callback per record (the feed observes every send too, so the ceiling
pays for that as well). The feed's throughput is reported as a fraction of this.

``run_paced`` is the same producer at a fixed rate, in frames as the simulator sends
them: the frame → ack latency a bare producer gets from this broker, the floor under
the feed's own figure.

Blocking by design (it is a loop around librdkafka); call it from a worker thread
(``asyncio.to_thread``) when inside an event loop.
"""

from __future__ import annotations

import time
from collections.abc import Sequence
from functools import partial
from typing import Final

import msgspec
from confluent_kafka import KafkaError, Message, Producer

from alphapanda.kite.protocol import DepthEntry, Tick, compute_change
from alphapanda.pipeline.formatter import TickFormatter
from alphapanda.pipeline.producer import producer_config
from alphapanda.pipeline.wire import WireEncoder, WireFormat
from alphapanda.settings import KafkaSettings

Record = tuple[bytes, bytes, list[tuple[str, bytes]]]

# Produce this many records between clock reads and ``poll(0)`` calls.
_CHUNK: Final = 512


class CeilingResult(msgspec.Struct, frozen=True):
    """What the bare producer loop achieved."""

    sent: int
    acked: int
    failed: int
    elapsed_s: float  # first produce() to the last delivery report (flush done)
    messages_per_s: float  # acked / elapsed_s
    bytes_per_s: float  # acked value bytes / elapsed_s
    message_bytes: float  # mean value size
    first_error: str | None = None


class PacedResult(msgspec.Struct, frozen=True):
    """What the bare producer got at a fixed rate: frame → ack latency of every record."""

    rate: float
    sent: int  # timed records (after the warm-up record)
    acked: int
    failed: int
    p50_ms: float
    p99_ms: float
    first_error: str | None = None
    warmup: int = 1  # untimed records sent first: the connection, the producer id


def sample_records(
    instruments: int = 1000, fmt: WireFormat = "json", received_at_ns: int | None = None
) -> list[Record]:
    """Real encoder output of one full-mode tick per instrument (NSE-like tokens)."""
    now_ns = time.time_ns() if received_at_ns is None else received_at_ns
    now_s = now_ns // 1_000_000_000
    formatter = TickFormatter()
    encoder = WireEncoder(fmt)
    records: list[Record] = []
    for i in range(instruments):
        token = ((100_000 + i) << 8) | 1
        last = 100.0 + (i % 900) + 0.05 * (i % 20)
        close = last - 1.25
        depth_buy = tuple(
            DepthEntry(50 * (j + 1), round(last - 0.05 * (j + 1), 2), j + 1) for j in range(5)
        )
        depth_sell = tuple(
            DepthEntry(40 * (j + 1), round(last + 0.05 * (j + 1), 2), j + 2) for j in range(5)
        )
        tick = Tick(
            token, "full", True, last, 10 + i % 50, round(last - 0.4, 2), 1_000_000 + i * 37,
            250_000, 260_000, round(last - 2.0, 2), round(last + 3.0, 2), round(last - 4.0, 2),
            close, compute_change(last, close), now_s - 1, 50_000 + i, 60_000 + i, 40_000 + i,
            now_s, depth_buy, depth_sell, now_ns,
        )  # fmt: skip
        market_tick = formatter.format(tick)
        assert market_tick is not None  # built sane above
        records.append(encoder.encode(market_tick, now_ns))
    return records


def run_ceiling(
    kafka: KafkaSettings,
    topic: str,
    *,
    duration_s: float = 5.0,
    max_messages: int | None = None,
    records: Sequence[Record] | None = None,
    flush_timeout_s: float = 30.0,
) -> CeilingResult:
    """Produce ``records`` round-robin to ``topic`` for ``duration_s`` (or until
    ``max_messages`` were sent), wait for every delivery report, and report the rate.

    The topic must exist. Records default to ``sample_records()``.
    """
    payloads = list(records) if records is not None else sample_records()
    if not payloads:
        raise ValueError("no records to send")
    producer = Producer(producer_config(kafka, client_id="alphapanda-bench-ceiling"))
    acked = failed = 0
    acked_bytes = 0
    first_error: list[str] = []

    def delivered(err: KafkaError | None, msg: Message) -> None:
        nonlocal acked, failed, acked_bytes
        if err is None:
            acked += 1
            acked_bytes += len(msg.value() or b"")
        else:
            failed += 1
            if not first_error:
                first_error.append(str(err))

    produce = producer.produce
    poll = producer.poll
    count = len(payloads)
    limit = max_messages if max_messages is not None else 1 << 62
    sent = 0
    start = time.perf_counter()
    deadline = start + duration_s
    while sent < limit and time.perf_counter() < deadline:
        for _ in range(min(_CHUNK, limit - sent)):
            key, value, headers = payloads[sent % count]
            while True:
                try:
                    # (ignore: the stubs want list[tuple[str, str | bytes | None]], and
                    # lists are invariant; ours holds bytes only)
                    produce(topic, value, key, headers=headers, on_delivery=delivered)  # type: ignore[arg-type]
                    break
                except BufferError:
                    # librdkafka's queue is full: serve delivery reports until it drains.
                    poll(0.005)
            sent += 1
        poll(0)
    remaining = producer.flush(flush_timeout_s)
    elapsed = time.perf_counter() - start
    if remaining and not first_error:
        first_error.append(f"{remaining} records had no delivery report after flush")
    total_bytes = sum(len(value) for _, value, _ in payloads)
    return CeilingResult(
        sent=sent,
        acked=acked,
        failed=failed,
        elapsed_s=elapsed,
        messages_per_s=acked / elapsed if elapsed > 0 else 0.0,
        bytes_per_s=acked_bytes / elapsed if elapsed > 0 else 0.0,
        message_bytes=total_bytes / count,
        first_error=first_error[0] if first_error else None,
    )


def run_paced(
    kafka: KafkaSettings,
    topic: str,
    *,
    rate: float,
    duration_s: float = 5.0,
    frame_interval_s: float = 0.02,
    records: Sequence[Record] | None = None,
    flush_timeout_s: float = 30.0,
) -> PacedResult:
    """Produce ``rate`` records a second to ``topic`` for ``duration_s``, in frames of
    ``rate * frame_interval_s`` records produced at once every ``frame_interval_s``, and
    time each record from its frame's start to its delivery report. Between frames the
    producer only waits for reports, so each is timed as soon as librdkafka has it."""
    payloads = list(records) if records is not None else sample_records()
    if not payloads or rate <= 0 or frame_interval_s <= 0:
        raise ValueError("run_paced needs records, a rate > 0 and a frame interval > 0")
    producer = Producer(producer_config(kafka, client_id="alphapanda-bench-paced"))
    latencies: list[float] = []
    failed = 0
    first_error: list[str] = []
    clock = time.perf_counter

    def delivered(frame_start: float, err: KafkaError | None, msg: Message) -> None:
        nonlocal failed
        if err is None:
            latencies.append(clock() - frame_start)
        else:
            failed += 1
            if not first_error:
                first_error.append(str(err))

    per_frame = max(1, round(rate * frame_interval_s))
    frames = max(1, round(duration_s / frame_interval_s))
    count = len(payloads)
    produce = producer.produce
    # Untimed: connecting, fetching metadata and the idempotent producer id take a
    # few hundred ms once; the feed's figure is read long after its start-up too.
    key, value, headers = payloads[0]
    produce(topic, value, key, headers=headers)  # type: ignore[arg-type]
    producer.flush(flush_timeout_s)
    sent = 0
    start = clock()
    for frame in range(frames):
        due = start + frame * frame_interval_s
        while (wait := due - clock()) > 0:
            producer.poll(wait)
        on_delivery = partial(delivered, clock())
        for _ in range(per_frame):
            key, value, headers = payloads[sent % count]
            while True:
                try:
                    produce(topic, value, key, headers=headers, on_delivery=on_delivery)  # type: ignore[arg-type]
                    break
                except BufferError:
                    producer.poll(0.005)
            sent += 1
        producer.poll(0)
    remaining = producer.flush(flush_timeout_s)
    if remaining and not first_error:
        first_error.append(f"{remaining} records had no delivery report after flush")
    latencies.sort()

    def quantile(q: float) -> float:
        return (
            latencies[min(len(latencies) - 1, int(q * len(latencies)))] * 1000 if latencies else 0.0
        )

    return PacedResult(
        rate=rate,
        sent=sent,
        acked=len(latencies),
        failed=failed,
        p50_ms=quantile(0.5),
        p99_ms=quantile(0.99),
        first_error=first_error[0] if first_error else None,
    )
