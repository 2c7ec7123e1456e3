"""A takeover that meets a broker not ready yet: the feed waits or tries again, holding
the lease, and becomes the group's active; it does not end.

In process (the controller of a one-member group, everything else real): the first
active of a group creates the topic while it takes over, so it reads the topic's tail
only once the topic exists; a transient failure of a takeover step is tried again.
"""

from __future__ import annotations

import asyncio
from collections.abc import Callable
from typing import Any

import pytest
from confluent_kafka import KafkaError, KafkaException

from alphapanda.parts import FeedParts
from alphapanda.service import MarketFeedService
from alphapanda.settings import Settings
from alphapanda.testing import eventually
from tests.support.feed import assert_books_balance, new_feed, quiesce
from tests.support.ledger import read_committed
from tests.support.sim import INSTRUMENTS_CSV, running_simulator

Patch = Callable[[FeedParts, MarketFeedService], None]


async def _first_active(settings_for: Any, unique: str, standby: str, patch: Patch) -> FeedParts:
    """Run a one-member group's feed (``patch``ed) until it published, then stop it."""
    async with running_simulator(ticks_per_second=500) as sim:
        settings: Settings = settings_for(
            kite={"ws_url": sim.ws_url, "api_key": sim.api_key, "access_token": sim.access_token},
            feed={"instruments_csv": INSTRUMENTS_CSV, "mode": "full"},
            # A long lease: this is about the takeover, not a busy machine's pauses.
            ha={"group": f"t-{unique}", "standby": standby, "lease_ms": 10_000},
        )
        feed, service = new_feed(settings)
        patch(feed, service)
        async with asyncio.TaskGroup() as tg:
            tg.create_task(service.run())
            await eventually(
                lambda: bool(feed.lifecycle.failures) or feed.accounting.published >= 300,
                timeout=60.0,
                what="300 ticks published",
            )
            assert not feed.lifecycle.failures
            assert feed.ha is not None and feed.ha.active
            stats = await quiesce(sim, feed)
            service.request_stop()
    assert not feed.lifecycle.failures
    assert_books_balance(feed)
    records = await asyncio.to_thread(read_committed, settings.kafka.bootstrap_servers, feed.topic)
    assert len(records) == feed.accounting.published == stats["total_ticks_sent"]
    return feed


@pytest.mark.parametrize("standby", ["cold", "warm"])
async def test_the_first_active_reads_the_tail_once_its_topic_exists(
    settings_for: Any, unique: str, standby: str
) -> None:
    def slow_topic(feed: FeedParts, service: MarketFeedService) -> None:
        create = service._ensure_topic

        async def later() -> None:
            # The lease and the fencing are quicker than this topic's creation.
            await asyncio.sleep(2.0)
            await create()

        service._ensure_topic = later  # type: ignore[method-assign]

    await _first_active(settings_for, unique, standby, slow_topic)


async def test_a_transient_failure_of_the_fencing_is_tried_again(
    settings_for: Any, unique: str
) -> None:
    failures: list[float] = []

    def slow_coordinator(feed: FeedParts, service: MarketFeedService) -> None:
        start = feed.producer.start_transactions

        async def timing_out(wait_seconds: float) -> None:
            if len(failures) < 2:
                # What init_transactions raises when the coordinator does not answer
                # in time (a loaded broker creating its transaction log).
                failures.append(wait_seconds)
                raise KafkaException(KafkaError(KafkaError._TIMED_OUT, "init timed out"))
            await start(wait_seconds)

        feed.producer.start_transactions = timing_out  # type: ignore[method-assign]

    await _first_active(settings_for, unique, "cold", slow_coordinator)
    assert len(failures) == 2
