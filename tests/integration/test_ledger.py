"""The sequence ledger against the real broker and the simulator: a steady stream,
restarts and a slow broker.

Each test streams from the simulator through the whole feed into Kafka, reads the
topic back and proves, per instrument, that every tick arrived exactly once and in
order (``tests/support/ledger.py``), and that the feed's books balance
(received = published + dropped + spooled + in flight).
"""

from __future__ import annotations

import asyncio
from datetime import datetime
from typing import Any

import pytest

from alphapanda.settings import Settings
from alphapanda.testing import eventually
from tests.support.feed import (
    assert_books_balance,
    assert_topic_holds_published,
    feed_settings,
    new_feed,
    quiesce,
)
from tests.support.ledger import check_ledger, read_topic
from tests.support.sim import running_simulator


def _epoch(value: datetime | None) -> float | None:
    return None if value is None else value.timestamp()


def assert_same_as_official(official: dict[str, Any], ours: Any) -> None:
    """One tick as ``kiteconnect.KiteTicker._parse_binary`` read it vs what reached Kafka."""
    for name in (
        "instrument_token",
        "mode",
        "tradable",
        "last_price",
        "last_traded_quantity",
        "average_traded_price",
        "volume_traded",
        "total_buy_quantity",
        "total_sell_quantity",
        "oi",
        "oi_day_high",
        "oi_day_low",
    ):
        assert getattr(ours, name) == official[name], name
    assert ours.change == pytest.approx(official["change"])
    assert ours.ohlc is not None
    assert {k: getattr(ours.ohlc, k) for k in ("open", "high", "low", "close")} == official["ohlc"]
    # The official parser makes naive local datetimes; compare the instants.
    assert _epoch(ours.last_trade_time) == _epoch(official["last_trade_time"])
    assert _epoch(ours.exchange_timestamp) == _epoch(official["exchange_timestamp"])
    assert ours.depth is not None
    for side in ("buy", "sell"):
        got = [(e.quantity, e.price, e.orders) for e in getattr(ours.depth, side)]
        want = [(e["quantity"], e["price"], e["orders"]) for e in official["depth"][side]]
        assert got == want, side


# Both hot paths: the Rust extension (what "auto" picks when it is built) and the
# pure-Python reference/fallback.
@pytest.mark.parametrize("hot_path", ["native", "python"])
async def test_steady_stream_is_complete_and_matches_official_parser(  # type: ignore[no-untyped-def]
    settings_for, hot_path: str
) -> None:
    frames: list[bytes] = []

    def capture(data: bytes, received_at_ns: int) -> None:
        if len(data) > 1 and len(frames) < 40:
            frames.append(data)

    async with running_simulator(ticks_per_second=1500) as sim:
        settings: Settings = feed_settings(settings_for, sim, hot_path=hot_path)
        feed, service = new_feed(settings, frame_listener=capture)
        assert feed.hot_path.impl == hot_path
        async with asyncio.TaskGroup() as tg:
            tg.create_task(service.run())
            await eventually(
                lambda: feed.accounting.published >= 3000, timeout=30.0, what="3000 acks"
            )
            stats = await quiesce(sim, feed)
            service.request_stop()
    assert_books_balance(feed)
    assert feed.accounting.dropped_total == 0 and feed.spool.pending == 0

    records = await asyncio.to_thread(read_topic, settings.kafka.bootstrap_servers, feed.topic)
    assert_topic_holds_published(records, feed, stats["ticks_sent"])
    assert len(records) == stats["total_ticks_sent"]
    check_ledger(records).assert_complete(sent=stats["ticks_sent"])

    from kiteconnect import KiteTicker

    official_parser = KiteTicker("key", "token")
    by_volume = {(r.instrument_token, r.volume_traded): r.tick for r in records}
    compared = 0
    for frame in frames:
        for official in official_parser._parse_binary(frame):
            if not official["tradable"]:
                continue  # index ticks carry no volume to match on
            ours = by_volume[(official["instrument_token"], official["volume_traded"])]
            assert_same_as_official(official, ours)
            compared += 1
    assert compared >= 20
