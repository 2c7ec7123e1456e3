"""The ledger through broker faults: SIGKILL + restart, SIGSTOP/SIGCONT.

A private broker (``private_kafka``) is abused; the producer's queue is kept small
(``queue_max_messages=1000``) so that an outage overflows it within a second and the
disk spool really carries ticks, which are then replayed in order.
"""

from __future__ import annotations

import asyncio

import pytest

from alphapanda.service import MarketFeedService
from alphapanda.settings import Settings
from tests.support.feed import (
    assert_books_balance,
    assert_stages_match,
    eventually,
    feed_settings,
    quiesce,
)
from tests.support.ledger import check_ledger, read_topic
from tests.support.services import PrivateService
from tests.support.sim import running_simulator

pytestmark = pytest.mark.slow


def fault_settings(settings_for, sim, broker: PrivateService) -> Settings:  # type: ignore[no-untyped-def]
    return feed_settings(
        settings_for,
        sim,
        kafka={
            "bootstrap_servers": broker.bootstrap,
            "queue_max_messages": 1000,
            "request_timeout_ms": 1000,
            "topic_partitions": 3,
        },
    )


async def test_broker_sigkill_and_restart_loses_nothing(settings_for, private_kafka) -> None:  # type: ignore[no-untyped-def]
    async with running_simulator(ticks_per_second=1000) as sim:
        settings = fault_settings(settings_for, sim, private_kafka)
        service = MarketFeedService(settings)
        acct = service.accounting
        async with asyncio.TaskGroup() as tg:
            tg.create_task(service.run())
            await eventually(lambda: acct.published >= 1000, what="first acks")
            await asyncio.to_thread(private_kafka.kill)
            await eventually(lambda: acct.spooled >= 1000, what="ticks spooled during the outage")
            assert_stages_match(service)
            await asyncio.to_thread(private_kafka.start)
            await eventually(
                lambda: not service.publisher.spooling, within=120, what="spool replayed"
            )
            stats = await quiesce(sim, service, within=120)
            service.request_stop()
    assert_books_balance(service)
    assert acct.dropped_total == 0
    assert acct.spool_written >= 1000 and acct.replayed >= acct.spool_written
    records = await asyncio.to_thread(read_topic, private_kafka.bootstrap, service.topic)
    assert len(records) == acct.published == stats["total_ticks_sent"]
    check_ledger(records).assert_complete(sent=stats["ticks_sent"])


async def test_broker_paused_beyond_request_timeout_three_times(
    settings_for, private_kafka
) -> None:  # type: ignore[no-untyped-def]
    async with running_simulator(ticks_per_second=1000) as sim:
        settings = fault_settings(settings_for, sim, private_kafka)
        service = MarketFeedService(settings)
        acct = service.accounting
        async with asyncio.TaskGroup() as tg:
            tg.create_task(service.run())
            await eventually(lambda: acct.published >= 500, what="first acks")
            for _ in range(3):
                written_before = acct.spool_written
                private_kafka.pause()
                try:
                    # ≥1500 more spooled ticks at 1000/s: paused for well over the
                    # 1 s request timeout.
                    await eventually(
                        lambda before=written_before: acct.spool_written >= before + 1500,
                        what="ticks spooled while paused",
                    )
                finally:
                    private_kafka.resume()
                await eventually(
                    lambda: not service.publisher.spooling, within=60, what="spool replayed"
                )
            stats = await quiesce(sim, service, within=60)
            service.request_stop()
    assert_books_balance(service)
    assert acct.dropped_total == 0 and acct.spool_written >= 4500
    records = await asyncio.to_thread(read_topic, private_kafka.bootstrap, service.topic)
    assert len(records) == acct.published == stats["total_ticks_sent"]
    check_ledger(records).assert_complete(sent=stats["ticks_sent"])
