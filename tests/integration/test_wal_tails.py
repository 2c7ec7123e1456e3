"""The partition-tail reader against the real broker: newest position per instrument,
read from a bounded window of every partition."""

from __future__ import annotations

import asyncio
from collections.abc import Callable

from confluent_kafka import Producer

from alphapanda.kite.protocol.ticks import MODE_LTP, Tick
from alphapanda.pipeline.formatter import TickFormatter
from alphapanda.pipeline.producer import EncodedMessage
from alphapanda.pipeline.topics_admin import ensure_topic
from alphapanda.pipeline.wire import POSITION_HEADER, WireEncoder, position_of
from alphapanda.settings import Settings
from alphapanda.topics import TopicNames
from alphapanda.wal.tails import consumer_config, published_among, read_tail_positions
from tests.support.services import SHARED_KAFKA

TOKENS = [408065, 738561, 2953217, 5633, 779521, 3045]


def frames_of_messages(frames: int, first_ns: int, step_ns: int) -> list[EncodedMessage]:
    """Encoded records of ``frames`` frames, each holding every instrument once and the
    first one twice (so it has packet indices 0 and 1), as the publisher writes them."""
    encoder = WireEncoder()
    formatter = TickFormatter()
    messages: list[EncodedMessage] = []
    for frame in range(frames):
        ns = first_ns + frame * step_ns
        for token in [TOKENS[0], *TOKENS]:
            tick = formatter.format(
                Tick(
                    instrument_token=token,
                    mode=MODE_LTP,
                    tradable=True,
                    last_price=float(frame + 1),
                    received_at_ns=ns,
                )
            )
            assert tick is not None
            key, value, _ = encoder.encode(tick, ns)
            messages.append(EncodedMessage(key, value, encoder.position_headers(token, ns), ns))
    return messages


async def test_tail_positions_are_the_newest_per_instrument_and_the_read_is_bounded(
    settings_for: Callable[..., Settings],
) -> None:
    settings = settings_for(kafka={"topic_partitions": 3})
    topic = TopicNames.market_ticks(settings.kafka.topic_prefix)
    assert await ensure_topic(settings.kafka, topic)
    producer = Producer({"bootstrap.servers": SHARED_KAFKA, "acks": "all"})
    newest: dict[int, tuple[int, int]] = {}
    # 200 frames; each holds every instrument once, and the first one twice.
    for m in frames_of_messages(200, 1_000_000, 1):
        producer.produce(topic, m.value, m.key, headers=m.headers)  # type: ignore[arg-type]
        newest[int(m.key)] = (m.received_at_ns, position_of(m.headers) or 0)
    assert producer.flush(30) == 0
    assert newest[TOKENS[0]] == (1_000_199, 1)

    config = consumer_config(SHARED_KAFKA)
    # The WAL's oldest frame is recent: a small window per partition suffices.
    report = await asyncio.to_thread(
        read_tail_positions, config, topic, oldest_ns=1_000_190, window=50
    )
    assert report.positions == newest
    assert report.partitions == 3
    assert report.records <= 3 * 50 and not report.truncated
    # An older WAL makes the read reach further back (and no further than needed).
    deep = await asyncio.to_thread(
        read_tail_positions, config, topic, oldest_ns=1_000_010, window=10
    )
    assert deep.positions == newest
    assert 70 < deep.records <= 1_400
    # A cap on the window is honoured and reported.
    capped = await asyncio.to_thread(
        read_tail_positions, config, topic, oldest_ns=0, window=10, max_window=40
    )
    assert capped.records <= 3 * 40 and capped.truncated


async def test_an_empty_topic_has_no_positions(settings_for: Callable[..., Settings]) -> None:
    settings = settings_for()
    topic = TopicNames.market_ticks(settings.kafka.topic_prefix)
    assert await ensure_topic(settings.kafka, topic)
    report = await asyncio.to_thread(
        read_tail_positions, consumer_config(SHARED_KAFKA), topic, oldest_ns=0
    )
    assert report.positions == {} and report.records == 0


async def test_published_among_finds_exactly_the_messages_the_topic_holds(
    settings_for: Callable[..., Settings],
) -> None:
    # The publisher's question after a failed delivery: which of these did the broker
    # write anyway? Answered by exact position (instrument, receive time, packet index).
    settings = settings_for(kafka={"topic_partitions": 3})
    topic = TopicNames.market_ticks(settings.kafka.topic_prefix)
    assert await ensure_topic(settings.kafka, topic)
    producer = Producer({"bootstrap.servers": SHARED_KAFKA, "acks": "all"})
    messages = frames_of_messages(20, 1_700_000_000_000_000_000, 1_000_000)
    # The topic holds the first 100 (earlier history) and every third of the last 40.
    written = list(range(100)) + [i for i in range(100, 140) if i % 3 == 0]
    for i in written:
        m = messages[i]
        producer.produce(topic, m.value, m.key, headers=m.headers)  # type: ignore[arg-type]
    assert producer.flush(30) == 0

    asked = messages[100:140]
    present = await asyncio.to_thread(
        published_among, consumer_config(settings.kafka), topic, asked, window=8
    )
    assert present == {i - 100 for i in written if i >= 100}
    # Same instruments and receive times, other packet indices: not the same ticks.
    renumbered = [
        EncodedMessage(
            m.key,
            m.value,
            [(n, b"9" if n == POSITION_HEADER else v) for n, v in m.headers],
            m.received_at_ns,
        )
        for m in asked[:3]
    ]
    assert (
        await asyncio.to_thread(published_among, consumer_config(settings.kafka), topic, renumbered)
        == set()
    )
