"""The simulator's market model and tick schedule: pure, seeded, no network."""

from __future__ import annotations

import datetime as dt

import pytest

from alphapanda.instruments import Instrument
from alphapanda.kite.protocol import (
    MODE_FULL,
    MODE_LTP,
    MODE_QUOTE,
    Tick,
    decode_message,
    encode_message,
    encode_tick,
    price_divisor,
)
from alphapanda.sim.market import Market, in_mode
from alphapanda.sim.schedule import TickSchedule
from tests.support.sim import default_instruments

NOW = 1_764_000_000


def instrument(
    token: int,
    tick_size: float,
    lot: int = 1,
    itype: str = "EQ",
    last_price: float = 0.0,
    segment: str = "NSE",
) -> Instrument:
    expiry = dt.date(2026, 12, 31) if itype in ("FUT", "CE", "PE") else None
    return Instrument(
        token, token >> 8, f"SYM{token}", "X", last_price, expiry, 0.0, tick_size, lot, itype,
        segment, segment,
    )  # fmt: skip


NSE_EQ = instrument(408065, 0.05, last_price=1520.5)
NFO_FUT = instrument(13_000 << 8 | 2, 0.05, lot=75, itype="FUT", last_price=24210.0)
CDS_FUT = instrument(4000 << 8 | 3, 0.0025, itype="FUT", segment="CDS-FUT")  # no price: default
BCD_OPT = instrument(3000 << 8 | 6, 0.0025, itype="CE", last_price=0.3125, segment="BCD-OPT")
MCX_FUT = instrument(220_000 << 8 | 7, 1.0, lot=100, itype="FUT", last_price=5980.0)
INDEX = instrument(256265, 0.0, last_price=24150.0, segment="INDICES")
UNIVERSE = [NSE_EQ, NFO_FUT, CDS_FUT, BCD_OPT, MCX_FUT, INDEX]
TRADABLE = [i for i in UNIVERSE if i is not INDEX]


def run(market: Market, token: int, n: int, mode: str = MODE_FULL) -> list[Tick]:
    return [market.advance(token, NOW + i, mode) for i in range(n)]


@pytest.mark.parametrize("inst", TRADABLE, ids=lambda i: i.segment)
def test_volume_grows_by_exactly_the_last_traded_quantity(inst: Instrument) -> None:
    ticks = run(Market(UNIVERSE, seed=7), inst.instrument_token, 3000)
    volume = 0
    for tick in ticks:
        assert tick.last_traded_quantity is not None
        assert tick.last_traded_quantity >= max(1, inst.lot_size)
        assert tick.last_traded_quantity % max(1, inst.lot_size) == 0
        volume += tick.last_traded_quantity
        assert tick.volume_traded == volume


@pytest.mark.parametrize("inst", UNIVERSE, ids=lambda i: i.segment)
def test_every_price_on_the_wire_is_on_the_tick_grid(inst: Instrument) -> None:
    token = inst.instrument_token
    divisor = price_divisor(token)
    grid = round((inst.tick_size or 0.05) * divisor)
    frame = encode_message([encode_tick(t) for t in run(Market(UNIVERSE, seed=3), token, 2000)])
    decoded = decode_message(frame, 0)
    assert decoded.skipped == []
    assert len(decoded.ticks) == 2000
    for tick in decoded.ticks:
        prices = [tick.last_price, tick.open, tick.high, tick.low, tick.close]
        prices += [level.price for level in (*tick.depth_buy, *tick.depth_sell)]
        for price in prices:
            assert price is not None
            assert round(price * divisor) % grid == 0, (price, inst)
        assert tick.low is not None and tick.high is not None
        assert tick.low <= tick.last_price <= tick.high


def test_currency_prices_need_their_divisor() -> None:
    market = Market(UNIVERSE, seed=1)
    cds = run(market, CDS_FUT.instrument_token, 500)
    assert all(65.0 <= t.last_price <= 95.0 for t in cds)  # no price in the dump: ~70-90
    # A 0.0025 tick is 25,000 wire units under CDS's 1e7 divisor and 25 under BCD's 1e4.
    raw = int.from_bytes(encode_tick(cds[0])[4:8], "big")
    assert raw % 25_000 == 0
    assert raw == round(cds[0].last_price * 10_000_000)
    bcd = run(market, BCD_OPT.instrument_token, 1)[0]
    assert int.from_bytes(encode_tick(bcd)[4:8], "big") == round(bcd.last_price * 10_000)


def test_same_seed_same_ticks_whatever_the_interleaving() -> None:
    a, b = Market(UNIVERSE, seed=42), Market(UNIVERSE, seed=42)
    tokens = [i.instrument_token for i in UNIVERSE]
    alone = {t: run(a, t, 50) for t in tokens}
    interleaved: dict[int, list[Tick]] = {t: [] for t in tokens}
    for i in range(50):
        for t in reversed(tokens):
            interleaved[t].append(b.advance(t, NOW + i))
    assert interleaved == alone
    other = run(Market(UNIVERSE, seed=43), NSE_EQ.instrument_token, 50)
    assert [t.last_price for t in other] != [t.last_price for t in alone[NSE_EQ.instrument_token]]


@pytest.mark.parametrize("inst", [NFO_FUT, INDEX], ids=lambda i: i.segment)
def test_the_mode_built_does_not_change_the_path(inst: Instrument) -> None:
    token = inst.instrument_token
    paths = {
        mode: run(Market(UNIVERSE, seed=5), token, 300, mode)
        for mode in (MODE_FULL, MODE_QUOTE, MODE_LTP)
    }
    assert {mode: [t.mode for t in ticks][-1] for mode, ticks in paths.items()} == {
        MODE_FULL: MODE_FULL,
        MODE_QUOTE: MODE_QUOTE,
        MODE_LTP: MODE_LTP,
    }
    for mode in (MODE_QUOTE, MODE_LTP):
        # Narrowing the full tick gives exactly what was built for the narrower mode.
        assert [in_mode(t, mode) for t in paths[MODE_FULL]] == paths[mode]
    if inst is NFO_FUT:
        assert all(len(t.depth_buy) == 5 and len(t.depth_sell) == 5 for t in paths[MODE_FULL])


def test_depth_brackets_the_last_price() -> None:
    for tick in run(Market(UNIVERSE, seed=9), MCX_FUT.instrument_token, 200):
        bids = [level.price for level in tick.depth_buy]
        asks = [level.price for level in tick.depth_sell]
        assert bids == sorted(bids, reverse=True)
        assert asks == sorted(asks)
        assert max(bids) < tick.last_price < min(asks)
        assert all(level.quantity > 0 and level.orders > 0 for level in tick.depth_buy)


def test_open_interest_only_for_derivatives() -> None:
    market = Market(UNIVERSE, seed=11)
    for tick in run(market, NFO_FUT.instrument_token, 500):
        assert tick.oi is not None and tick.oi_day_low is not None and tick.oi_day_high is not None
        assert 0 < tick.oi_day_low <= tick.oi <= tick.oi_day_high
        assert tick.oi % NFO_FUT.lot_size == 0
    assert {t.oi for t in run(market, NSE_EQ.instrument_token, 50)} == {0}


def test_timestamps_are_the_epoch_seconds_passed_in() -> None:
    tick = Market(UNIVERSE).advance(NSE_EQ.instrument_token, NOW)
    assert tick.last_trade_time == NOW
    assert tick.exchange_timestamp == NOW


def test_index_ticks_carry_no_volume_and_are_not_tradable() -> None:
    market = Market(UNIVERSE, seed=2)
    ticks = run(market, INDEX.instrument_token, 100)
    assert all(t.volume_traded is None and t.last_traded_quantity is None for t in ticks)
    assert all(not t.tradable for t in ticks)
    assert len(encode_tick(ticks[0])) == 32
    assert len(encode_tick(in_mode(ticks[0], MODE_QUOTE))) == 28
    assert all(23_000 < t.last_price < 25_500 for t in ticks)


def test_in_mode_narrows_to_what_the_mode_carries() -> None:
    full = Market(UNIVERSE, seed=4).advance(NFO_FUT.instrument_token, NOW)
    ltp, quote = in_mode(full, MODE_LTP), in_mode(full, MODE_QUOTE)
    assert in_mode(full, MODE_FULL) is full
    assert (ltp.mode, ltp.last_price, ltp.volume_traded) == (MODE_LTP, full.last_price, None)
    assert quote.volume_traded == full.volume_traded
    assert (quote.oi, quote.depth_buy, quote.exchange_timestamp) == (None, (), None)
    assert [len(encode_tick(t)) for t in (ltp, quote, full)] == [8, 44, 184]
    decoded = decode_message(encode_message([encode_tick(quote)]), 0).ticks[0]
    assert decoded.volume_traded == full.volume_traded
    assert decoded.last_traded_quantity == full.last_traded_quantity


def test_shipped_universe_ticks_for_every_instrument() -> None:
    instruments = default_instruments()
    market = Market(instruments, seed=0)
    assert len(market) == len(instruments)
    for inst in instruments:
        tick = market.advance(inst.instrument_token, NOW)
        assert tick.last_price > 0
        assert decode_message(encode_message([encode_tick(tick)]), 0).skipped == []
        assert market.ticks_generated(inst.instrument_token) == 1


def test_schedule_turns_elapsed_time_into_whole_ticks() -> None:
    schedule = TickSchedule(1000)
    assert [schedule.due(0.0105) for _ in range(4)] == [10, 11, 10, 11]
    schedule.set_rate(10)
    assert schedule.due(0.05) + schedule.due(0.05) == 1
    assert schedule.shortfall == 0
    assert schedule.due(3600) == 2  # a long pause carries over at most 0.25 s of credit
    assert 35_990 < schedule.shortfall <= 36_000  # and says what it could not deliver
    schedule.reset()
    assert schedule.due(0.0) == 0
    with pytest.raises(ValueError, match="ticks_per_second"):
        schedule.set_rate(-1)


def test_schedule_picks_round_robin_across_calls() -> None:
    schedule = TickSchedule(100)
    tokens = [1, 2, 3]
    assert schedule.pick(tokens, 2) == [1, 2]
    assert schedule.pick(tokens, 2) == [3, 1]
    assert schedule.pick(tokens, 7) == [2, 3, 1, 2, 3, 1, 2]
    assert schedule.pick([], 5) == []
    assert schedule.pick(tokens, 0) == []
