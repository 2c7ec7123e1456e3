"""Acks the broker never confirmed: the feed checks the topic and sends the missing ticks.

librdkafka reports messages as delivered, without an offset, when it infers their
delivery: a request of a partition was refused (``NOT_LEADER``, right after the topic
was created) while the next one was accepted by a broker that had no state yet for the
producer. Those messages never reached the topic. Reproducing the broker's side of that
race on demand is not possible, so the feed's librdkafka producer is wrapped: a few of
its ``produce()`` calls are not sent, and at the next ``poll()`` their reports say
delivered without an offset, as librdkafka's do. Everything else is real (simulator,
broker, the publisher's check of the topic, the re-send).
"""

from __future__ import annotations

import asyncio
from collections import defaultdict
from collections.abc import Callable
from typing import Any

from confluent_kafka import Message

from alphapanda.parts import FeedParts
from alphapanda.pipeline import publisher
from alphapanda.pipeline.producer import UNCONFIRMED_REASON
from alphapanda.pipeline.topics_admin import ensure_topic
from alphapanda.settings import Settings
from alphapanda.testing import eventually
from tests.support.feed import (
    assert_books_balance,
    feed_settings,
    new_feed,
    quiesce,
    settled_sent,
)
from tests.support.ledger import TickRecord, check_ledger, read_topic
from tests.support.sim import running_simulator

# librdkafka's RD_KAFKA_OFFSET_INVALID: what a report without an offset carries.
NO_OFFSET = -1001


class InferredAcks:
    """A librdkafka producer whose ``produce()`` calls numbered in ``withhold`` are not
    sent; at the next ``poll()`` they are reported delivered, without an offset."""

    def __init__(
        self, real: Any, withhold: range, on_produce: Callable[[], None] | None = None
    ) -> None:
        self._real = real
        self._withhold = withhold
        self._on_produce = on_produce
        self._calls = 0
        self._pending: list[tuple[Any, Message]] = []
        self.withheld: list[bytes] = []

    def produce(self, topic: str, value: bytes, key: bytes, **kw: Any) -> None:
        number = self._calls
        self._calls += 1
        if self._on_produce is not None:
            self._on_produce()
        if number not in self._withhold:
            self._real.produce(topic, value, key, **kw)
            return
        self.withheld.append(value)
        report = Message(topic=topic, partition=0, offset=NO_OFFSET, key=key, value=value)
        self._pending.append((kw["on_delivery"], report))

    def poll(self, timeout: float = 0) -> int:
        served = int(self._real.poll(timeout))
        pending, self._pending = self._pending, []
        for on_delivery, report in pending:
            on_delivery(None, report)
        return served + len(pending)

    def __len__(self) -> int:
        return len(self._real) + len(self._pending)

    def __getattr__(self, name: str) -> Any:
        return getattr(self._real, name)


def _in_volume_order(records: list[TickRecord]) -> list[TickRecord]:
    """Each instrument's records by volume: the ticks re-sent after their newer ones
    land behind them in the partition, so the ledger is checked on the volume chain."""
    by_token: dict[int, list[TickRecord]] = defaultdict(list)
    for record in records:
        by_token[record.instrument_token].append(record)
    ordered = []
    for token_records in by_token.values():
        if token_records[0].volume_traded is not None:
            token_records.sort(key=lambda r: r.volume_traded or 0)
        ordered.extend(token_records)
    return ordered


async def test_ticks_acked_without_an_offset_are_checked_and_sent_again(settings_for) -> None:  # type: ignore[no-untyped-def]
    async with running_simulator(ticks_per_second=1000) as sim:
        settings: Settings = feed_settings(settings_for, sim)
        feed, service = new_feed(settings)
        inferred = InferredAcks(feed.producer._producer, range(300, 304))
        feed.producer._producer = inferred  # type: ignore[assignment]
        async with asyncio.TaskGroup() as tg:
            tg.create_task(service.run())
            await eventually(
                lambda: feed.accounting.published >= 1500, timeout=30.0, what="1500 acks"
            )
            stats = await quiesce(sim, feed)
            service.request_stop()
    assert len(inferred.withheld) == 4
    # The four, and what the switch to the spool withdrew from librdkafka's queue.
    failed = dict(feed.producer.failed)
    assert failed.pop(UNCONFIRMED_REASON) == 4
    assert set(failed) <= {"_PURGE_QUEUE"}
    # Not in the topic, so none counted as already published: all four sent again.
    assert feed.publisher.core.already_published == 0
    assert_books_balance(feed)
    assert feed.accounting.dropped_total == 0 and feed.spool.pending == 0

    records = await asyncio.to_thread(read_topic, settings.kafka.bootstrap_servers, feed.topic)
    assert len(records) == feed.accounting.published == stats["total_ticks_sent"]
    assert len({r.event_id for r in records}) == len(records)
    check_ledger(_in_volume_order(records)).assert_complete(sent=stats["ticks_sent"])


async def test_nothing_is_produced_before_the_topic_takes_writes(settings_for, monkeypatch) -> None:  # type: ignore[no-untyped-def]
    # The hold is bounded (a broker slow to make the topic writable must not hold the
    # feed for long); a loaded machine can take longer than that, so not here.
    monkeypatch.setattr(publisher, "TOPIC_HOLD_S", 120.0)
    async with running_simulator(ticks_per_second=1000) as sim:
        settings: Settings = feed_settings(settings_for, sim)
        feed, service = new_feed(settings)
        writable_at_produce: list[bool] = []
        feed.producer._producer = InferredAcks(  # type: ignore[assignment]
            feed.producer._producer,
            range(0),
            lambda: writable_at_produce.append(feed.lifecycle.topic_writable.is_set()),
        )
        async with asyncio.TaskGroup() as tg:
            tg.create_task(service.run())
            await eventually(lambda: feed.accounting.published >= 500, timeout=30.0, what="acks")
            await quiesce(sim, feed)
            service.request_stop()
    assert writable_at_produce and all(writable_at_produce)
    assert not feed.producer.failed


async def _stop_while_held(settings_for, **feed_settings_: Any) -> tuple[FeedParts, int]:  # type: ignore[no-untyped-def]
    """Run a feed whose topic is never reported writable, stop it while it still holds
    every tick it received; returns the feed and how many ticks the simulator sent."""
    async with running_simulator(ticks_per_second=1000) as sim:
        settings: Settings = feed_settings(settings_for, sim, **feed_settings_)
        feed, service = new_feed(settings)
        await ensure_topic(settings.kafka, feed.topic)
        stop = feed.lifecycle.stop_requested

        async def topic_never_reported() -> None:
            await stop.wait()

        service._ensure_topic = topic_never_reported  # type: ignore[method-assign]
        async with asyncio.TaskGroup() as tg:
            tg.create_task(service.run())
            await eventually(lambda: feed.accounting.received >= 200, timeout=30.0, what="ticks")
            await sim.set_rate(0)
            sent = await settled_sent(sim)
            await eventually(
                lambda: feed.accounting.received_socket == sent, timeout=10.0, what="all sent"
            )
            # Still held: nothing sent yet.
            assert feed.accounting.published == 0 and len(feed.buffer) > 0
            service.request_stop()
    return feed, sent


async def test_ticks_held_for_the_topic_are_published_when_the_feed_stops(  # type: ignore[no-untyped-def]
    settings_for, monkeypatch
) -> None:
    # The feed stops while the publisher still waits for the topic to take writes (a
    # short replay does): what it held is published then, not left behind.
    monkeypatch.setattr(publisher, "TOPIC_HOLD_S", 120.0)
    feed, sent = await _stop_while_held(settings_for)
    assert_books_balance(feed)
    assert feed.accounting.dropped_total == 0 and feed.spool.pending == 0
    bootstrap = feed.settings.kafka.bootstrap_servers
    records = await asyncio.to_thread(read_topic, bootstrap, feed.topic)
    assert len(records) == feed.accounting.published == sent


async def test_ticks_still_held_at_the_shutdown_deadline_are_counted_as_dropped(  # type: ignore[no-untyped-def]
    settings_for, monkeypatch, caplog
) -> None:
    # A deadline too short to take them all: what the publisher did not take is
    # counted (reason shutdown) and logged, never left in the books as in flight.
    monkeypatch.setattr(publisher, "TOPIC_HOLD_S", 120.0)
    feed, sent = await _stop_while_held(settings_for, shutdown_deadline=1e-6)
    assert_books_balance(feed)
    acct = feed.accounting
    assert acct.dropped.get("shutdown", 0) > 0
    assert acct.received == sent == acct.published + acct.dropped_total + acct.spooled
    assert "not yet encoded at the shutdown deadline: dropped" in caplog.text
