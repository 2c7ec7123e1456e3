"""Candle aggregation: session alignment, volume from cumulative day volume, timer close,
late ticks, gaps, and a property test against a naive recomputation."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from alphapanda.market_tick import MarketTick
from alphapanda.streams.candles import CandleAggregator
from alphapanda.streams.sessions import INTERVALS, SessionTable, align, parse_hhmm
from tests.support.candles import recompute

pytestmark = pytest.mark.unit

NSE_TOKEN = 256265 & ~0xFF | 1  # segment 1: NSE
MCX_TOKEN = 0x1234 << 8 | 7  # segment 7: MCX
INDEX_TOKEN = 0x99 << 8 | 9
# 2026-12-01 09:15:00 IST
OPEN_NSE = datetime(2026, 12, 1, 3, 45, tzinfo=UTC)


def tick(
    token: int,
    at: datetime,
    price: float,
    volume: int | None = 100,
    *,
    oi: int | None = None,
    exchange: bool = True,
    received: datetime | None = None,
) -> MarketTick:
    received = received or at
    return MarketTick(
        instrument_token=token,
        mode="full" if exchange else "quote",
        tradable=token & 0xFF != 9,
        last_price=price,
        last_traded_quantity=None,
        average_traded_price=None,
        volume_traded=volume,
        total_buy_quantity=None,
        total_sell_quantity=None,
        ohlc=None,
        change=None,
        last_trade_time=None,
        oi=oi,
        oi_day_high=None,
        oi_day_low=None,
        exchange_timestamp=at if exchange else None,
        depth=None,
        received_at=received,
        received_at_ns=int(received.timestamp() * 1e9),
    )


def test_alignment_to_session_open() -> None:
    sessions = SessionTable()
    t = OPEN_NSE + timedelta(minutes=14, seconds=59)  # 09:29:59 IST
    start = sessions.bucket_start(NSE_TOKEN, t.timestamp(), INTERVALS["15m"])
    assert start == int(OPEN_NSE.timestamp())
    hour = sessions.bucket_start(NSE_TOKEN, (OPEN_NSE + timedelta(minutes=70)).timestamp(), 3600)
    assert hour == int((OPEN_NSE + timedelta(hours=1)).timestamp())  # 10:15 IST
    # MCX opens at 09:00 IST: its 15-minute bars start at :00, :15, ...
    mcx = sessions.bucket_start(MCX_TOKEN, (OPEN_NSE + timedelta(minutes=1)).timestamp(), 900)
    assert mcx == int(OPEN_NSE.timestamp())  # 09:15 is also an MCX boundary
    mcx_hour = sessions.bucket_start(MCX_TOKEN, (OPEN_NSE + timedelta(minutes=1)).timestamp(), 3600)
    assert mcx_hour == int((OPEN_NSE - timedelta(minutes=15)).timestamp())  # 09:00 IST
    # Pre-open ticks fall in buckets counted backwards from the open.
    pre = sessions.bucket_start(NSE_TOKEN, (OPEN_NSE - timedelta(seconds=1)).timestamp(), 300)
    assert pre == int((OPEN_NSE - timedelta(minutes=5)).timestamp())


def test_session_table_is_overridable() -> None:
    sessions = SessionTable({"NSE": "09:00"})
    t = (OPEN_NSE + timedelta(minutes=50)).timestamp()  # 10:05 IST
    assert sessions.bucket_start(NSE_TOKEN, t, 3600) == int(
        (OPEN_NSE + timedelta(minutes=45)).timestamp()
    )
    with pytest.raises(ValueError, match="HH:MM"):
        parse_hhmm("9.15")
    with pytest.raises(ValueError, match="HH:MM"):
        parse_hhmm("24:00")


def test_align_is_idempotent() -> None:
    for interval in INTERVALS.values():
        start = align(1_764_560_000, parse_hhmm("09:15"), interval)
        assert align(start, parse_hhmm("09:15"), interval) == start


def test_volume_is_the_change_of_cumulative_volume() -> None:
    agg = CandleAggregator("1m", grace=0.5)
    t0 = OPEN_NSE
    assert agg.add(tick(NSE_TOKEN, t0 + timedelta(seconds=1), 10.0, 1000, oi=5)) == []
    agg.add(tick(NSE_TOKEN, t0 + timedelta(seconds=20), 12.0, 1300, oi=6))
    agg.add(tick(NSE_TOKEN, t0 + timedelta(seconds=40), 9.5, 1450, oi=7))
    (first,) = agg.add(tick(NSE_TOKEN, t0 + timedelta(seconds=61), 11.0, 1500))
    # First bar after start: no known volume before it -> incomplete, counted from its first tick.
    assert (first.open, first.high, first.low, first.close) == (10.0, 12.0, 9.5, 9.5)
    assert (first.volume, first.oi, first.ticks, first.complete) == (450, 7, 3, False)
    assert first.start == t0 and first.end == t0 + timedelta(minutes=1)
    agg.add(tick(NSE_TOKEN, t0 + timedelta(seconds=90), 11.5, 1600))
    (second,) = agg.close_due((t0 + timedelta(seconds=120.5)).timestamp())
    assert (second.volume, second.complete, second.ticks) == (150, True, 2)  # 1600 - 1450


def test_timer_closes_after_grace_only() -> None:
    agg = CandleAggregator("5s", grace=0.5)
    agg.add(tick(NSE_TOKEN, OPEN_NSE + timedelta(seconds=1), 10.0))
    end = (OPEN_NSE + timedelta(seconds=5)).timestamp()
    assert agg.next_due() == end + 0.5
    assert agg.close_due(end + 0.49) == []
    (bar,) = agg.close_due(end + 0.5)
    assert bar.ticks == 1
    assert agg.close_due(end + 100) == []  # no ticks, no bar
    assert agg.next_due() is None


def test_timer_closes_a_bar_opened_after_a_later_one() -> None:
    # The timer skips its scan until the earliest open bar is due: a bar opened later
    # in an earlier bucket (another instrument, its tick held up) must move that bound.
    agg = CandleAggregator("5s", grace=0.5)
    second_bucket = OPEN_NSE + timedelta(seconds=6)
    agg.add(tick(NSE_TOKEN, second_bucket, 10.0))
    first_end = (OPEN_NSE + timedelta(seconds=5)).timestamp()
    assert agg.close_due(first_end + 0.5) == []
    agg.add(tick(NSE_TOKEN + 256, OPEN_NSE + timedelta(seconds=1), 20.0))
    (bar,) = agg.close_due(first_end + 0.5)
    assert bar.instrument_token == NSE_TOKEN + 256
    (bar,) = agg.close_due(first_end + 5.5)
    assert bar.instrument_token == NSE_TOKEN
    assert agg.close_due(first_end + 100) == []


def test_late_tick_is_counted_and_never_reopens() -> None:
    agg = CandleAggregator("5s", grace=0.5)
    agg.add(tick(NSE_TOKEN, OPEN_NSE + timedelta(seconds=1), 10.0, 100))
    agg.close_due((OPEN_NSE + timedelta(seconds=6)).timestamp())
    assert agg.add(tick(NSE_TOKEN, OPEN_NSE + timedelta(seconds=4), 99.0, 150)) == []
    assert agg.late == 1
    assert agg.close_due((OPEN_NSE + timedelta(seconds=60)).timestamp()) == []
    # An older bucket than the open bar is late too.
    agg.add(tick(NSE_TOKEN, OPEN_NSE + timedelta(seconds=11), 10.0, 200))
    agg.add(tick(NSE_TOKEN, OPEN_NSE + timedelta(seconds=7), 10.0, 210))
    assert agg.late == 2
    (bar,) = agg.close_due((OPEN_NSE + timedelta(seconds=60)).timestamp())
    # Volume from the last tick taken before the bucket (100; the late one was ignored).
    assert (bar.volume, bar.complete) == (100, True)


def test_gap_and_day_change_make_the_next_bar_incomplete() -> None:
    agg = CandleAggregator("1m", grace=0.5)
    agg.add(tick(NSE_TOKEN, OPEN_NSE, 10.0, 100))
    agg.add(tick(NSE_TOKEN, OPEN_NSE + timedelta(seconds=61), 10.0, 150))
    agg.mark_gap([NSE_TOKEN])
    (bar,) = agg.add(tick(NSE_TOKEN, OPEN_NSE + timedelta(seconds=125), 10.0, 400))
    assert bar.complete is False  # the open bar missed ticks
    (after_gap,) = agg.close_due((OPEN_NSE + timedelta(hours=1)).timestamp())
    assert (after_gap.volume, after_gap.complete) == (0, False)
    next_day = OPEN_NSE + timedelta(days=1)
    agg.add(tick(NSE_TOKEN, next_day, 10.0, 30))
    agg.add(tick(NSE_TOKEN, next_day + timedelta(seconds=3), 10.0, 80))
    (day2,) = agg.close_due((next_day + timedelta(minutes=2)).timestamp())
    assert (day2.volume, day2.complete) == (50, False)


def test_index_has_prices_only_and_receive_time_is_counted() -> None:
    agg = CandleAggregator("1m", grace=0.5)
    agg.add(tick(INDEX_TOKEN, OPEN_NSE, 100.0, None, exchange=False))
    agg.add(tick(INDEX_TOKEN, OPEN_NSE + timedelta(seconds=2), 101.0, None, exchange=False))
    (bar,) = agg.close_due((OPEN_NSE + timedelta(minutes=5)).timestamp())
    assert (bar.volume, bar.oi, bar.close, bar.complete) == (None, None, 101.0, True)
    assert agg.ticks_by_source == {"exchange": 0, "receive": 2}


def test_unknown_interval_is_refused() -> None:
    with pytest.raises(ValueError, match="unknown interval"):
        CandleAggregator("2m")


_tokens = st.sampled_from([NSE_TOKEN, MCX_TOKEN, INDEX_TOKEN, 0x42 << 8 | 3])


@st.composite
def _streams(draw: st.DrawFn) -> list[MarketTick]:
    """Ticks of a few instruments with non-decreasing times and cumulative volumes,
    across session opens and IST day boundaries."""
    base = OPEN_NSE - timedelta(minutes=draw(st.integers(0, 24 * 60)))
    n = draw(st.integers(1, 120))
    steps = draw(st.lists(st.floats(0, 400, allow_nan=False), min_size=n, max_size=n))
    tokens = draw(st.lists(_tokens, min_size=n, max_size=n))
    prices = draw(st.lists(st.floats(1, 1000, allow_nan=False), min_size=n, max_size=n))
    growth = draw(st.lists(st.integers(0, 500), min_size=n, max_size=n))
    exchange = draw(st.booleans())
    volumes: dict[int, int] = {}
    days: dict[int, int] = {}
    out = []
    t = base
    for step, token, price, grow in zip(steps, tokens, prices, growth, strict=True):
        t += timedelta(seconds=step)
        if exchange:
            t = t.replace(microsecond=0)  # Kite's exchange timestamps are whole seconds
        day = (t + timedelta(hours=5, minutes=30)).date().toordinal()
        if days.get(token) != day:
            volumes[token] = 0  # the cumulative day volume restarts
            days[token] = day
        volumes[token] += grow
        volume = None if token & 0xFF == 9 else volumes[token]
        out.append(tick(token, t, round(price, 2), volume, oi=grow, exchange=exchange))
    return out


@settings(max_examples=300, deadline=None)
@given(_streams(), st.sampled_from(list(INTERVALS)), st.booleans())
def test_matches_naive_recomputation(
    ticks: list[MarketTick], interval: str, timer_between: bool
) -> None:
    agg = CandleAggregator(interval, grace=0.5)
    candles = []
    for t in ticks:
        candles.extend(agg.add(t))
        if timer_between:
            # The timer runs on the clock of the ticks: it never closes a bar early.
            candles.extend(agg.close_due(t.received_at_ns / 1e9))
    candles.extend(agg.close_due(ticks[-1].received_at_ns / 1e9 + 10_000))
    assert agg.late == 0
    got = sorted(
        (
            c.instrument_token,
            c.start,
            c.open,
            c.high,
            c.low,
            c.close,
            c.volume,
            c.oi,
            c.ticks,
            c.complete,
        )
        for c in candles
    )
    expected = sorted(
        (
            n.instrument_token,
            n.start,
            n.open,
            n.high,
            n.low,
            n.close,
            n.volume,
            n.oi,
            n.ticks,
            n.complete,
        )
        for n in recompute(ticks, INTERVALS[interval])
    )
    assert got == expected
