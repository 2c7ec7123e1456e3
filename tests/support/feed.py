"""Helpers for tests that run the whole feed against the simulator and a real broker."""

from __future__ import annotations

import asyncio
import time
from collections.abc import Callable
from typing import Any

from alphapanda.assembly import Overrides, build
from alphapanda.parts import FeedParts
from alphapanda.service import MarketFeedService
from alphapanda.settings import Settings
from tests.support.ledger import TickRecord, check_ledger
from tests.support.sim import INSTRUMENTS_CSV, SimHandle


def feed_settings(
    settings_for: Callable[..., Settings],
    sim: SimHandle,
    *,
    kafka: dict[str, Any] | None = None,
    **feed: Any,
) -> Settings:
    """Settings for a feed streaming every instrument of the shipped CSV from ``sim``."""
    return settings_for(
        kite={"ws_url": sim.ws_url, "api_key": sim.api_key, "access_token": sim.access_token},
        feed={"instruments_csv": INSTRUMENTS_CSV, "mode": "full", **feed},
        kafka=kafka or {},
    )


def new_feed(settings: Settings, **overrides: Any) -> tuple[FeedParts, MarketFeedService]:
    """The parts ``build`` wires for ``settings`` (``Overrides`` as keywords) and the
    service that runs them: a test reads figures from the parts."""
    parts = build(settings, Overrides(**overrides))
    return parts, MarketFeedService(parts)


async def settled_sent(sim: SimHandle) -> int:
    """The simulator's count of ticks sent, once it stopped changing (no feed left)."""
    last = -1
    while True:
        sent = int((await sim.stats())["total_ticks_sent"])
        if sent == last:
            return sent
        last = sent
        await asyncio.sleep(0.3)


async def quiesce(
    sim: SimHandle, feed: FeedParts, within: float = 60.0, earlier_runs: int = 0
) -> dict[str, Any]:
    """Stop the simulator's stream and wait until the feed received every tick it sent
    (minus ``earlier_runs``: ticks received by previous feeds of this simulator) and
    published (or spooled) all of it; returns the simulator's final stats."""
    await sim.set_rate(0)
    deadline = time.monotonic() + within
    while True:
        stats = await sim.stats()
        acct = feed.accounting
        if (
            stats["total_ticks_sent"] == acct.received_socket + earlier_runs
            and acct.in_flight == 0
            and acct.spooled == 0
        ):
            return stats
        if time.monotonic() > deadline:
            raise AssertionError(
                f"feed never caught up: sim sent {stats['total_ticks_sent']}, {acct.snapshot()}"
            )
        await asyncio.sleep(0.05)


def assert_books_balance(feed: FeedParts) -> None:
    """The books balance (received = published + dropped + spooled), nothing in flight."""
    acct = feed.accounting
    assert acct.imbalance() == 0, acct.snapshot()
    assert acct.in_flight == 0, acct.snapshot()
    assert acct.received == acct.published + acct.dropped_total + acct.spooled, acct.snapshot()


def assert_stages_match(feed: FeedParts) -> None:
    """Mid-stream: the ledger's stages equal what the components really hold, and the
    books balance (at any await point of the test, the tick path is between steps)."""
    acct = feed.accounting
    assert acct.imbalance() == 0, acct.snapshot()
    assert len(feed.buffer) == acct.buffered, (len(feed.buffer), acct.snapshot())
    # Awaiting an ack: in the producer, or failed once and held by the publisher to be
    # produced again ahead of newer ticks.
    held = feed.publisher.core.held_failed
    assert feed.producer.pending + held == acct.awaiting_ack, (
        feed.producer.pending,
        held,
        acct.snapshot(),
    )


def assert_topic_holds_published(
    records: list[TickRecord], feed: FeedParts, sent: dict[str, int] | None = None
) -> None:
    """The topic read back holds exactly what the feed counted as published; if not,
    say where the difference is (which instruments, the ledger's gaps, whether the
    publisher ever left its direct route) so a rare failure explains itself."""
    published = feed.accounting.published
    if len(records) == published:
        return
    report = check_ledger(records)
    short = {}
    for token, n in (sent or {}).items():
        got = report.per_instrument.get(int(token), 0)
        if got != int(n):
            short[int(token)] = (int(n), got)
    core = feed.publisher.core
    last = {}
    for record in records:
        if record.instrument_token in short:
            last[record.instrument_token] = (record.partition, record.offset, record.volume_traded)
    raise AssertionError(
        f"topic holds {len(records)} records, the feed counted {published} published; "
        f"instruments short (sent, in topic): {dict(list(short.items())[:10])}; "
        f"their last record (partition, offset, volume): {dict(list(last.items())[:10])}; "
        f"ledger problems: {report.problems}; accounting: {feed.accounting.snapshot()}; "
        f"producer failed {feed.producer.failed}, client errors {feed.producer.client_errors}; "
        f"publisher stalls {core.stalls}, spills {core.spill_events}, "
        f"already published {core.already_published}"
    )
