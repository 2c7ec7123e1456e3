"""``MarketTick``: the record consumers read from ``market.ticks`` (inside its envelope).

One instrument's market state at one tick, with the field names of the official
``kiteconnect`` tick dicts. ``alphapanda.pipeline.formatter`` builds it from a decoded
Kite tick, ``alphapanda.pipeline.wire`` encodes it, the derived streams and the
consumer SDK read it back.
"""

from __future__ import annotations

from datetime import datetime

import msgspec

from alphapanda.kite.protocol import DepthEntry


class Ohlc(msgspec.Struct, frozen=True, gc=False):
    """The day's open/high/low/close. A price is ``None`` only when it was malformed."""

    open: float | None
    high: float | None
    low: float | None
    close: float | None


class Depth(msgspec.Struct, frozen=True, gc=False):
    """Five levels of the order book per side, best first, as Kite sends them."""

    buy: tuple[DepthEntry, ...]
    sell: tuple[DepthEntry, ...]


class MarketTick(msgspec.Struct, frozen=True, gc=False):
    """One instrument's market state at one tick; field names as the official
    ``kiteconnect`` tick dicts. Prices are floats in rupees (already divided by the
    segment's divisor); quantities are ints; timestamps are tz-aware UTC ``datetime``.
    """

    instrument_token: int
    mode: str
    tradable: bool
    last_price: float
    last_traded_quantity: int | None
    average_traded_price: float | None
    volume_traded: int | None
    total_buy_quantity: int | None
    total_sell_quantity: int | None
    ohlc: Ohlc | None
    change: float | None
    last_trade_time: datetime | None
    oi: int | None
    oi_day_high: int | None
    oi_day_low: int | None
    exchange_timestamp: datetime | None
    depth: Depth | None
    received_at: datetime
    received_at_ns: int
