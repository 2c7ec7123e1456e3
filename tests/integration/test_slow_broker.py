"""Slow broker: memory stays bounded, the declared policy is applied, and
every drop is counted exactly — the ticks missing from the topic are exactly the ones
the feed says it dropped.

The private broker is paused long enough that librdkafka's queue and then the (small,
1 MiB) spool fill up; the publisher then stops taking ticks and the TickBuffer applies
its policy. After the broker resumes, everything not dropped arrives once, in order.
"""

from __future__ import annotations

import asyncio

import pytest

from alphapanda.service import MarketFeedService
from tests.support.feed import (
    assert_books_balance,
    assert_stages_match,
    eventually,
    feed_settings,
    quiesce,
)
from tests.support.ledger import check_ledger, read_topic
from tests.support.sim import running_simulator

pytestmark = pytest.mark.slow

CAPACITY = 300


@pytest.mark.parametrize(
    ("policy", "reasons"),
    [("drop_oldest", {"drop_oldest"}), ("conflate", {"conflated", "conflate_overflow"})],
)
async def test_paused_broker_applies_declared_policy_and_counts_exactly(
    settings_for, private_kafka, policy: str, reasons: set[str]
) -> None:  # type: ignore[no-untyped-def]
    async with running_simulator(ticks_per_second=2000) as sim:
        settings = feed_settings(
            settings_for,
            sim,
            kafka={
                "bootstrap_servers": private_kafka.bootstrap,
                "queue_max_messages": 1000,
                "request_timeout_ms": 1000,
                "topic_partitions": 3,
            },
            buffer_capacity=CAPACITY,
            buffer_policy=policy,
            spool_max_bytes=1 << 20,
        )
        service = MarketFeedService(settings)
        acct = service.accounting
        async with asyncio.TaskGroup() as tg:
            tg.create_task(service.run())
            await eventually(lambda: acct.published >= 500, what="first acks")
            private_kafka.pause()
            try:
                await eventually(lambda: acct.dropped_total >= 2000, what="policy drops")
                assert len(service.buffer) <= CAPACITY
                assert service.spool.refused > 0  # the spool was full: its bound held
                assert_stages_match(service)
            finally:
                private_kafka.resume()
            await eventually(lambda: not service.publisher.spooling, within=60, what="replay")
            stats = await quiesce(sim, service)
            service.request_stop()

    assert_books_balance(service)
    assert set(acct.dropped) <= reasons and acct.dropped_total >= 2000
    assert service.buffer.high_water <= CAPACITY
    # The spool's bound: refused appends past max_bytes (forced writes of failed
    # deliveries may exceed it by at most the producer's queue).
    assert acct.spool_written > 0
    records = await asyncio.to_thread(read_topic, private_kafka.bootstrap, service.topic)
    assert len(records) == acct.published
    report = check_ledger(records)
    assert not report.duplicate_ids and not report.duplicate_volumes
    assert not report.reordered and not report.wrong_partition
    sent = {int(k): v for k, v in stats["ticks_sent"].items()}
    assert stats["total_ticks_sent"] == acct.received_socket
    # Exactness: what is missing from the topic is what the feed counted as dropped.
    missing = sum(sent.values()) - len(records)
    assert missing == acct.dropped_total
    assert all(report.per_instrument.get(t, 0) <= n for t, n in sent.items())
