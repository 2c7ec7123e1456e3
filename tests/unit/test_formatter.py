"""TickFormatter: field-for-field against the decoded tick and the official parser."""

from __future__ import annotations

import math
import struct
from datetime import UTC, datetime, timedelta
from typing import Any

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st
from kiteconnect import KiteTicker

from alphapanda.kite.protocol import (
    DepthEntry,
    Tick,
    compute_change,
    decode_message,
    encode_message,
    encode_tick,
    price_divisor,
)
from alphapanda.pipeline.formatter import (
    DROP_REASONS,
    REASON_INVALID_AVERAGE_PRICE,
    REASON_INVALID_CHANGE,
    REASON_INVALID_DEPTH,
    REASON_INVALID_LAST_PRICE,
    REASON_INVALID_OHLC_PRICE,
    REASON_NEGATIVE_OI,
    REASON_NEGATIVE_QUANTITY,
    REASON_OHLC_INCONSISTENT,
    REASON_TIMESTAMP_OUT_OF_RANGE,
    REASON_UNKNOWN_MODE,
    MarketTick,
    TickFormatter,
    format_all,
)

RECEIVED_NS = 1_764_048_000_123_456_789  # 2025-11-25T05:20:00.123456789Z
NOW_S = RECEIVED_NS // 1_000_000_000
EQUITY = 408065  # segment 1 (NSE)
CDS = 0x1234_03  # segment 3: divisor 1e7
BCD = 0x1234_06  # segment 6: divisor 1e4
INDEX = 256265  # segment 9: NIFTY 50, not tradable
SEGMENT_TOKENS = {"equity": EQUITY, "cds": CDS, "bcd": BCD}
PRICE_STEP = {EQUITY: 0.05, CDS: 0.0025, BCD: 0.0001}


def _utc(epoch: int) -> datetime:
    return datetime.fromtimestamp(epoch, UTC)


def _depth(base: float, step: float, sign: int) -> tuple[DepthEntry, ...]:
    return tuple(
        DepthEntry(100 * (i + 1), round(base + sign * step * (i + 1), 7), i + 1) for i in range(5)
    )


def full_tick(token: int = EQUITY, **changes: Any) -> Tick:
    step = PRICE_STEP.get(token, 0.05)
    last = round(1500 * step / 0.05, 7)
    close = round(last - 20 * step, 7)
    fields: dict[str, Any] = {
        "instrument_token": token,
        "mode": "full",
        "tradable": True,
        "last_price": last,
        "last_traded_quantity": 25,
        "average_traded_price": round(last - step, 7),
        "volume_traded": 1_234_567,
        "total_buy_quantity": 8000,
        "total_sell_quantity": 9000,
        "open": round(last - 10 * step, 7),
        "high": round(last + 30 * step, 7),
        "low": round(last - 40 * step, 7),
        "close": close,
        "change": compute_change(last, close),
        "last_trade_time": NOW_S - 2,
        "oi": 120_000,
        "oi_day_high": 130_000,
        "oi_day_low": 110_000,
        "exchange_timestamp": NOW_S - 1,
        "depth_buy": _depth(last, step, -1),
        "depth_sell": _depth(last, step, +1),
        "received_at_ns": RECEIVED_NS,
    }
    fields.update(changes)
    return Tick(**fields)


def _wire_round_trip(tick: Tick) -> Tick:
    """The tick as the decoder produces it from the bytes a server would send."""
    decoded = decode_message(encode_message([encode_tick(tick)]), RECEIVED_NS)
    assert not decoded.skipped
    (only,) = decoded.ticks
    return only


def _sample_ticks() -> list[Tick]:
    """One tick of every packet kind and price segment, as decoded from real bytes."""
    ticks = []
    for token in SEGMENT_TOKENS.values():
        base = full_tick(token)
        ticks.append(_wire_round_trip(base))
        ticks.append(_wire_round_trip(Tick(token, "ltp", True, base.last_price)))
        quote = {f: getattr(base, f) for f in base.__struct_fields__}
        for name in ("last_trade_time", "oi", "oi_day_high", "oi_day_low", "exchange_timestamp"):
            quote[name] = None
        quote.update(mode="quote", depth_buy=(), depth_sell=())
        ticks.append(_wire_round_trip(Tick(**quote)))
    index = {
        "instrument_token": INDEX,
        "tradable": False,
        "last_price": 24_350.5,
        "open": 24_300.0,
        "high": 24_400.25,
        "low": 24_250.0,
        "close": 24_310.0,
        "change": compute_change(24_350.5, 24_310.0),
    }
    ticks.append(_wire_round_trip(Tick(mode="quote", **index)))
    ticks.append(_wire_round_trip(Tick(mode="full", exchange_timestamp=NOW_S, **index)))
    ticks.append(_wire_round_trip(Tick(INDEX, "ltp", False, 24_350.5)))
    return ticks


def _official(ticks: list[Tick]) -> list[dict[str, Any]]:
    frame = encode_message([encode_tick(t) for t in ticks])
    parsed: list[dict[str, Any]] = KiteTicker("key", "token")._parse_binary(frame)
    return parsed


def _comparable(tick: MarketTick) -> dict[str, Any]:
    """``tick`` as the official parser would spell it, timestamps aside."""
    d: dict[str, Any] = {
        "tradable": tick.tradable,
        "mode": tick.mode,
        "instrument_token": tick.instrument_token,
        "last_price": tick.last_price,
    }
    if tick.ohlc is not None:
        o = tick.ohlc
        d["ohlc"] = {"open": o.open, "high": o.high, "low": o.low, "close": o.close}
        d["change"] = tick.change
    for name in (
        "last_traded_quantity",
        "average_traded_price",
        "volume_traded",
        "total_buy_quantity",
        "total_sell_quantity",
        "oi",
        "oi_day_high",
        "oi_day_low",
        "last_trade_time",
        "exchange_timestamp",
    ):
        value = getattr(tick, name)
        if value is not None:
            d[name] = value
    if tick.depth is not None:
        d["depth"] = {
            side: [{"quantity": e.quantity, "price": e.price, "orders": e.orders} for e in levels]
            for side, levels in (("buy", tick.depth.buy), ("sell", tick.depth.sell))
        }
    return d


def _official_comparable(d: dict[str, Any], received: Tick) -> dict[str, Any]:
    # The official parser makes naive local datetimes; ours are UTC from the
    # same epoch seconds, which the decoded tick carries.
    d = dict(d)
    for name in ("last_trade_time", "exchange_timestamp"):
        if name in d:
            epoch = getattr(received, name)
            d[name] = _utc(epoch) if epoch else None
            if d[name] is None:
                del d[name]
    return d


def test_every_packet_kind_and_segment_matches_the_official_parser() -> None:
    ticks = _sample_ticks()
    formatter = TickFormatter()
    ours = [formatter.format(t) for t in ticks]
    assert all(t is not None for t in ours)
    official = _official(ticks)
    assert len(official) == len(ours)
    for mine, theirs, decoded in zip(ours, official, ticks, strict=True):
        assert mine is not None
        assert _comparable(mine) == _official_comparable(theirs, decoded)
    assert formatter.malformed_by_reason() == {}
    assert formatter.formatted == len(ticks)


def test_fields_follow_the_decoded_tick_one_for_one() -> None:
    for decoded in _sample_ticks():
        tick = TickFormatter().format(decoded)
        assert tick is not None
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
            "change",
            "oi",
            "oi_day_high",
            "oi_day_low",
            "received_at_ns",
        ):
            assert getattr(tick, name) == getattr(decoded, name), name
        if decoded.mode == "ltp":
            assert tick.ohlc is None
            assert tick.change is None
        else:
            assert tick.ohlc is not None
            assert (tick.ohlc.open, tick.ohlc.high, tick.ohlc.low, tick.ohlc.close) == (
                decoded.open,
                decoded.high,
                decoded.low,
                decoded.close,
            )
        if decoded.depth_buy:
            assert tick.depth is not None
            assert tick.depth.buy == decoded.depth_buy
            assert tick.depth.sell == decoded.depth_sell
            assert len(tick.depth.buy) == len(tick.depth.sell) == 5
        else:
            assert tick.depth is None


@pytest.mark.parametrize(
    ("token", "raw", "price"),
    [(CDS, 123_456_789, 12.3456789), (BCD, 123_456, 12.3456), (EQUITY, 123_456, 1234.56)],
)
def test_prices_use_the_segment_divisor(token: int, raw: int, price: float) -> None:
    frame = encode_message([struct.pack(">II", token, raw)])
    (decoded,) = decode_message(frame, RECEIVED_NS).ticks
    tick = TickFormatter().format(decoded)
    assert tick is not None
    assert tick.last_price == price
    assert tick.tradable is True


def test_indices_are_not_tradable() -> None:
    by_token = {t.instrument_token: t for t in map(TickFormatter().format, _sample_ticks()) if t}
    assert by_token[INDEX].tradable is False
    assert by_token[EQUITY].tradable is True


def test_timestamps_are_tz_aware_utc_and_receive_time_keeps_ns() -> None:
    tick = TickFormatter().format(_wire_round_trip(full_tick()))
    assert tick is not None
    for value in (tick.last_trade_time, tick.exchange_timestamp, tick.received_at):
        assert value is not None
        assert value.tzinfo is not None
        assert value.utcoffset() == timedelta(0)
    assert tick.last_trade_time == _utc(NOW_S - 2)
    assert tick.exchange_timestamp == _utc(NOW_S - 1)
    assert tick.received_at == datetime(2025, 11, 25, 5, 20, 0, 123456, tzinfo=UTC)
    assert tick.received_at_ns == RECEIVED_NS


def test_epoch_zero_is_null_not_1970_and_not_malformed() -> None:
    formatter = TickFormatter()
    tick = formatter.format(_wire_round_trip(full_tick(last_trade_time=0, exchange_timestamp=0)))
    assert tick is not None
    assert tick.last_trade_time is None
    assert tick.exchange_timestamp is None
    assert formatter.malformed_by_reason() == {}


def test_heavy_fields_can_be_switched_off() -> None:
    decoded = _wire_round_trip(full_tick())
    plain = TickFormatter(include_depth=False, include_oi=False).format(decoded)
    assert plain is not None
    assert plain.depth is None
    assert (plain.oi, plain.oi_day_high, plain.oi_day_low) == (None, None, None)
    assert plain.volume_traded == decoded.volume_traded
    only_depth_off = TickFormatter(include_depth=False).format(decoded)
    assert only_depth_off is not None
    assert only_depth_off.depth is None
    assert only_depth_off.oi == decoded.oi


@pytest.mark.parametrize(
    ("changes", "reason", "nulled"),
    [
        ({"average_traded_price": -1.0}, REASON_INVALID_AVERAGE_PRICE, "average_traded_price"),
        ({"average_traded_price": math.nan}, REASON_INVALID_AVERAGE_PRICE, "average_traded_price"),
        ({"volume_traded": -5}, REASON_NEGATIVE_QUANTITY, "volume_traded"),
        ({"last_traded_quantity": -1}, REASON_NEGATIVE_QUANTITY, "last_traded_quantity"),
        ({"total_buy_quantity": -1}, REASON_NEGATIVE_QUANTITY, "total_buy_quantity"),
        ({"total_sell_quantity": -1}, REASON_NEGATIVE_QUANTITY, "total_sell_quantity"),
        ({"oi": -1}, REASON_NEGATIVE_OI, "oi"),
        ({"oi_day_low": -1}, REASON_NEGATIVE_OI, "oi_day_low"),
        ({"change": math.inf}, REASON_INVALID_CHANGE, "change"),
        ({"last_trade_time": 12345}, REASON_TIMESTAMP_OUT_OF_RANGE, "last_trade_time"),
        ({"exchange_timestamp": NOW_S + 2 * 86_400}, REASON_TIMESTAMP_OUT_OF_RANGE, "exchange_timestamp"),
        ({"depth_buy": (DepthEntry(-1, 10.0, 1),) * 5}, REASON_INVALID_DEPTH, "depth"),
        ({"depth_sell": (DepthEntry(1, math.nan, 1),) * 5}, REASON_INVALID_DEPTH, "depth"),
    ],
)  # fmt: skip
def test_malformed_field_is_nulled_and_counted_never_zeroed(
    changes: dict[str, Any], reason: str, nulled: str
) -> None:
    formatter = TickFormatter()
    tick = formatter.format(full_tick(**changes))
    assert tick is not None
    assert getattr(tick, nulled) is None
    good = TickFormatter().format(full_tick())
    assert good is not None
    for name in MarketTick.__struct_fields__:
        if name != nulled:
            assert getattr(tick, name) == getattr(good, name), name
    assert formatter.malformed_by_reason() == {reason: 1}
    assert formatter.malformed_by_instrument() == {(EQUITY, reason): 1}
    assert formatter.dropped == 0


def test_ohlc_high_below_low_nulls_high_and_low() -> None:
    formatter = TickFormatter()
    tick = formatter.format(full_tick(high=100.0, low=200.0))
    assert tick is not None
    assert tick.ohlc is not None
    assert (tick.ohlc.high, tick.ohlc.low) == (None, None)
    assert tick.ohlc.open is not None
    assert tick.ohlc.close is not None
    assert formatter.malformed_by_reason() == {REASON_OHLC_INCONSISTENT: 1}


def test_invalid_ohlc_price_nulls_that_price_only() -> None:
    formatter = TickFormatter()
    tick = formatter.format(full_tick(open=-3.0))
    assert tick is not None
    assert tick.ohlc is not None
    assert tick.ohlc.open is None
    assert tick.ohlc.close == full_tick().close
    assert formatter.malformed_by_reason() == {REASON_INVALID_OHLC_PRICE: 1}


@pytest.mark.parametrize("last_price", [-0.05, math.nan, math.inf, -math.inf])
@pytest.mark.parametrize("mode", ["ltp", "quote", "full"])
def test_unusable_last_price_drops_the_tick_and_counts_it(last_price: float, mode: str) -> None:
    formatter = TickFormatter()
    assert formatter.format(full_tick(mode=mode, last_price=last_price)) is None
    assert formatter.malformed_by_instrument() == {(EQUITY, REASON_INVALID_LAST_PRICE): 1}
    assert formatter.dropped == 1
    assert formatter.formatted == 0


def test_unknown_mode_drops_the_tick() -> None:
    formatter = TickFormatter()
    assert formatter.format(full_tick(mode="snapquote")) is None
    assert formatter.malformed_by_reason() == {REASON_UNKNOWN_MODE: 1}
    assert REASON_UNKNOWN_MODE in DROP_REASONS


def test_samples_report_counts_by_reason() -> None:
    formatter = TickFormatter()
    ticks = [full_tick(), full_tick(volume_traded=-1, oi=-2), full_tick(last_price=-1.0)]
    assert len(format_all(formatter, ticks)) == 2
    samples = {(s.name, s.labels): s for s in formatter.samples()}
    assert samples[("ticks_formatted_total", ())].value == 2
    assert samples[("ticks_malformed_dropped_total", ())].value == 1
    by_reason = {
        dict(labels)["reason"]: s.value
        for (name, labels), s in samples.items()
        if name == "ticks_malformed_total"
    }
    assert by_reason == {
        REASON_NEGATIVE_QUANTITY: 1,
        REASON_NEGATIVE_OI: 1,
        REASON_INVALID_LAST_PRICE: 1,
    }
    assert all(s.kind == "counter" for s in samples.values())


def test_timestamp_range_uses_the_ticks_own_receive_time() -> None:
    # A replayed recording from 2024 is judged against its own receive time, not today.
    old_received = 1_704_067_200 * 1_000_000_000  # 2024-01-01
    formatter = TickFormatter()
    tick = formatter.format(
        full_tick(
            last_trade_time=1_704_067_100,
            exchange_timestamp=NOW_S,  # nearly two years "ahead" of that receive time
            received_at_ns=old_received,
        )
    )
    assert tick is not None
    assert tick.last_trade_time == _utc(1_704_067_100)
    assert tick.exchange_timestamp is None
    assert formatter.malformed_by_reason() == {REASON_TIMESTAMP_OUT_OF_RANGE: 1}


# -- property tests -------------------------------------------------------------------

_u32 = st.integers(min_value=0, max_value=2**31 - 1)
_tokens = st.builds(
    lambda high, seg: (high << 8) | seg,
    st.integers(min_value=1, max_value=2**23),
    st.sampled_from([1, 2, 3, 4, 5, 6, 7, 8, 9, 12]),
)


@st.composite
def wire_ticks(draw: st.DrawFn) -> Tick:
    """Any tick the wire can carry, built from raw integers like a server would."""
    token = draw(_tokens)
    div = price_divisor(token)
    raw = [r / div for r in draw(st.lists(_u32, min_size=5, max_size=5))]
    mode = draw(st.sampled_from(["ltp", "quote", "full"]))
    epoch = st.one_of(st.just(0), st.integers(min_value=946_684_800, max_value=NOW_S))
    fields: dict[str, Any] = {
        "instrument_token": token,
        "mode": mode,
        "tradable": True,
        "last_price": raw[0],
        "last_traded_quantity": draw(_u32),
        "average_traded_price": raw[1],
        "volume_traded": draw(_u32),
        "total_buy_quantity": draw(_u32),
        "total_sell_quantity": draw(_u32),
        "open": raw[2],
        "high": max(raw[3], raw[4]),
        "low": min(raw[3], raw[4]),
        "close": draw(_u32) / div,
        "change": 0.0,
        "last_trade_time": draw(epoch),
        "oi": draw(_u32),
        "oi_day_high": draw(_u32),
        "oi_day_low": draw(_u32),
        "exchange_timestamp": draw(epoch),
        "depth_buy": tuple(DepthEntry(draw(_u32), draw(_u32) / div, 7) for _ in range(5)),
        "depth_sell": tuple(DepthEntry(draw(_u32), draw(_u32) / div, 3) for _ in range(5)),
    }
    # Prices as the wire integers of this segment: encode, then decode for real.
    encoded = Tick(**fields)
    return _wire_round_trip(encoded)


@settings(max_examples=150, deadline=None)
@given(wire_ticks())
def test_any_sane_wire_tick_formats_without_loss_or_malformed_counts(decoded: Tick) -> None:
    formatter = TickFormatter()
    tick = formatter.format(decoded)
    assert tick is not None
    assert formatter.malformed_by_reason() == {}
    (official,) = _official([decoded])
    assert _comparable(tick) == _official_comparable(official, decoded)


_PRICE_FIELDS = ["average_traded_price", "open", "high", "low", "close"]
_QUANTITY_FIELDS = ["volume_traded", "last_traded_quantity", "total_buy_quantity", "oi"]
_TIME_FIELDS = ["last_trade_time", "exchange_timestamp"]
_bad_prices = st.one_of(
    st.floats(max_value=-1e-9), st.sampled_from([math.nan, math.inf, -math.inf])
)
_bad_quantities = st.integers(min_value=-(2**31), max_value=-1)
_bad_times = st.one_of(
    st.integers(min_value=-(2**31), max_value=946_684_799).filter(bool),
    st.integers(min_value=NOW_S + 86_401, max_value=2**32 - 1),
)


@st.composite
def corruptions(draw: st.DrawFn) -> tuple[str, object]:
    kind = draw(st.sampled_from(["price", "quantity", "time"]))
    if kind == "price":
        return draw(st.sampled_from(_PRICE_FIELDS)), draw(_bad_prices)
    if kind == "quantity":
        return draw(st.sampled_from(_QUANTITY_FIELDS)), draw(_bad_quantities)
    return draw(st.sampled_from(_TIME_FIELDS)), draw(_bad_times)


@settings(max_examples=200, deadline=None)
@given(corruption=corruptions(), mode=st.sampled_from(["quote", "full"]))
def test_a_corrupted_field_is_counted_and_null_never_zero(
    corruption: tuple[str, object], mode: str
) -> None:
    field, value = corruption
    if mode == "quote" and field in ("oi", *_TIME_FIELDS):
        mode = "full"
    formatter = TickFormatter()
    tick = formatter.format(full_tick(mode=mode, **{field: value}))
    good = TickFormatter().format(full_tick(mode=mode))
    assert tick is not None
    assert good is not None
    published, expected = _flatten(_comparable(tick)), _flatten(_comparable(good))
    key = f"ohlc.{field}" if field in ("open", "high", "low", "close") else field
    # The corrupted field is gone (null), not zero and not the bad value...
    assert key not in published or published[key] is None
    # ...everything else is untouched, and exactly one malformed field was counted.
    assert {k: v for k, v in published.items() if k != key} == {
        k: v for k, v in expected.items() if k != key
    }
    assert sum(formatter.malformed_by_reason().values()) == 1
    assert formatter.dropped == 0


def _flatten(d: dict[str, Any], prefix: str = "") -> dict[str, Any]:
    out: dict[str, Any] = {}
    for key, value in d.items():
        if isinstance(value, dict):
            out.update(_flatten(value, f"{prefix}{key}."))
        else:
            out[f"{prefix}{key}"] = value
    return out
