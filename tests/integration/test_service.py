"""MarketFeedService life cycle: readiness, status, and a failing part → graceful drain."""

from __future__ import annotations

import asyncio
import json

import pytest

from alphapanda.service import ServiceFailed
from alphapanda.testing import eventually
from tests.support.feed import assert_books_balance, feed_settings, new_feed
from tests.support.ledger import check_ledger, read_topic
from tests.support.sim import running_simulator


class ExplodingService:
    """A background service that fails once the feed has published something."""

    def __init__(self) -> None:
        self.armed = asyncio.Event()
        self.stopped = False

    async def run(self) -> None:
        await self.armed.wait()
        raise RuntimeError("boom")

    def stop(self) -> None:
        self.stopped = True


async def test_failing_part_triggers_graceful_drain_then_error(settings_for) -> None:  # type: ignore[no-untyped-def]
    exploding = ExplodingService()
    async with running_simulator(ticks_per_second=1000) as sim:
        feed, service = new_feed(feed_settings(settings_for, sim), services=[exploding])
        assert service.readiness()[0] is False

        async def drive() -> None:
            async with asyncio.TaskGroup() as tg:
                tg.create_task(service.run())
                await eventually(lambda: service.readiness()[0], timeout=30.0, what="ready")
                status = service.status()
                json.dumps(status)  # plain data for the API
                assert status["ready"] is True and status["subscriptions"] > 0
                await eventually(
                    lambda: feed.accounting.published >= 500, timeout=30.0, what="acks"
                )
                exploding.armed.set()

        with pytest.raises(ExceptionGroup) as caught:
            await drive()
    assert caught.group_contains(ServiceFailed)
    assert feed.lifecycle.failures == ["ExplodingService"]
    assert_books_balance(feed)
    acct = feed.accounting
    assert acct.dropped_total == 0 and acct.spooled == 0
    records = await asyncio.to_thread(read_topic, feed.settings.kafka.bootstrap_servers, feed.topic)
    assert len(records) == acct.published == acct.received
    report = check_ledger(records)
    assert not report.problems
