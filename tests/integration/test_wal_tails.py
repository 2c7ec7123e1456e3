"""The partition-tail reader against the real broker: newest position per instrument,
read from a bounded window of every partition."""

from __future__ import annotations

import asyncio
from collections.abc import Callable

from confluent_kafka import Producer

from alphapanda.kite.protocol.ticks import MODE_LTP, Tick
from alphapanda.pipeline.formatter import TickFormatter
from alphapanda.pipeline.topics_admin import ensure_topic
from alphapanda.pipeline.wire import WireEncoder
from alphapanda.settings import Settings
from alphapanda.topics import TopicNames
from alphapanda.wal.tails import consumer_config, read_tail_positions
from tests.support.services import SHARED_KAFKA

TOKENS = [408065, 738561, 2953217, 5633, 779521, 3045]


async def test_tail_positions_are_the_newest_per_instrument_and_the_read_is_bounded(
    settings_for: Callable[..., Settings],
) -> None:
    settings = settings_for(kafka={"topic_partitions": 3})
    topic = TopicNames.market_ticks(settings.kafka.topic_prefix)
    assert await ensure_topic(settings.kafka, topic)
    encoder = WireEncoder()
    formatter = TickFormatter()
    producer = Producer({"bootstrap.servers": SHARED_KAFKA, "acks": "all"})
    newest: dict[int, tuple[int, int]] = {}
    # 200 frames; each holds every instrument once, and the first one twice.
    for frame in range(200):
        ns = 1_000_000 + frame
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
            headers = encoder.position_headers(token, ns)
            producer.produce(topic, value, key, headers=headers)  # type: ignore[arg-type]
            newest[token] = (ns, int(headers[-1][1]))
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
