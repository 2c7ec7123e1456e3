"""Helpers for tests that run the whole feed against the simulator and a real broker."""

from __future__ import annotations

import asyncio
import time
from collections.abc import Callable
from typing import Any

from alphapanda.service import MarketFeedService
from alphapanda.settings import Settings
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


async def eventually(
    condition: Callable[[], bool], within: float = 30.0, what: str = "condition"
) -> None:
    """Poll ``condition`` until it holds or ``within`` seconds pass (then fail)."""
    deadline = time.monotonic() + within
    while not condition():
        if time.monotonic() > deadline:
            raise AssertionError(f"timed out waiting for {what}")
        await asyncio.sleep(0.02)


async def quiesce(
    sim: SimHandle, service: MarketFeedService, within: float = 60.0, earlier_runs: int = 0
) -> dict[str, Any]:
    """Stop the simulator's stream and wait until the feed received every tick it sent
    (minus ``earlier_runs``: ticks received by previous feeds of this simulator) and
    published (or spooled) all of it; returns the simulator's final stats."""
    await sim.set_rate(0)
    deadline = time.monotonic() + within
    while True:
        stats = await sim.stats()
        acct = service.accounting
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


def assert_books_balance(service: MarketFeedService) -> None:
    """The books balance (received = published + dropped + spooled), nothing in flight."""
    acct = service.accounting
    assert acct.imbalance() == 0, acct.snapshot()
    assert acct.in_flight == 0, acct.snapshot()
    assert acct.received == acct.published + acct.dropped_total + acct.spooled, acct.snapshot()


def assert_stages_match(service: MarketFeedService) -> None:
    """Mid-stream: the ledger's stages equal what the components really hold, and the
    books balance (at any await point of the test, the tick path is between steps)."""
    acct = service.accounting
    assert acct.imbalance() == 0, acct.snapshot()
    assert len(service.buffer) == acct.buffered, (len(service.buffer), acct.snapshot())
    # Awaiting an ack: in the producer, or failed once and held by the publisher to be
    # produced again ahead of newer ticks.
    held = service.publisher.core.held_failed
    assert service.producer.pending + held == acct.awaiting_ack, (
        service.producer.pending,
        held,
        acct.snapshot(),
    )
