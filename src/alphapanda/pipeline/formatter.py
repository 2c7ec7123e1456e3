"""Decoded Kite ticks → ``MarketTick``, the record Alpha Panda consumers read.

``TickFormatter.format()`` runs once per tick on the hot path, so it is written for
speed: the common case (every field sane) is checked with one chained comparison per
field group and builds the ``MarketTick`` directly. Only a tick that fails that check
takes the slow path, which looks at each field, counts what is wrong per
``(instrument, reason)``, and either nulls the bad field or rejects the tick.

Null rules (also in ``docs/schema.md``):

* Fields the tick's mode does not carry are ``None`` (e.g. ``ohlc`` in ``ltp`` mode,
  ``depth``/``oi``/``last_trade_time`` outside ``full`` mode).
* A timestamp of epoch 0 is ``None``: Kite sends 0 for "no trade yet". It is not
  counted as malformed.
* ``depth`` is ``None`` when turned off (``include_depth=False``); ``oi``,
  ``oi_day_high`` and ``oi_day_low`` are ``None`` when ``include_oi=False``.
* A malformed field is ``None`` and counted, never replaced by 0. A malformed
  ``last_price`` or an unknown ``mode`` makes the whole tick unusable: ``format()``
  returns ``None`` and counts it.

Pure: no I/O and no clock reads; the receive time travels in the tick.
"""

from __future__ import annotations

from collections.abc import Iterable, Iterator
from datetime import UTC, datetime, timedelta
from typing import Final

import msgspec

from alphapanda.kite.protocol import DepthEntry, Tick
from alphapanda.metrics.samples import Sample
from alphapanda.modes import MODES

_INF: Final = float("inf")
_EPOCH: Final = datetime(1970, 1, 1, tzinfo=UTC)
# Kite's epoch timestamps before this are nonsense for a live feed (2000-01-01 UTC).
TIMESTAMP_MIN: Final = 946_684_800
# Timestamps further than this ahead of our own receive time are nonsense too. Judged
# against the receive time carried by the tick, not a clock read, so the formatter stays
# pure and replays of old recordings are judged against their own time.
TIMESTAMP_MAX_AHEAD: Final = 86_400
# Used only when a tick carries no receive time (received_at_ns == 0): 2100-01-01 UTC.
_TIMESTAMP_MAX_FALLBACK: Final = 4_102_444_800
# Bounded caches of epoch-second → datetime. Exchange timestamps repeat heavily (every
# tick of one second shares them), so a dict hit replaces a datetime construction.
_TS_CACHE_MAX: Final = 8192

# Reasons a field (or a whole tick) is counted as malformed.
REASON_INVALID_LAST_PRICE: Final = "invalid_last_price"  # tick dropped
REASON_UNKNOWN_MODE: Final = "unknown_mode"  # tick dropped
REASON_INVALID_AVERAGE_PRICE: Final = "invalid_average_traded_price"  # field nulled
REASON_NEGATIVE_QUANTITY: Final = "negative_quantity"  # field nulled
REASON_INVALID_OHLC_PRICE: Final = "invalid_ohlc_price"  # that price nulled
REASON_OHLC_INCONSISTENT: Final = "ohlc_high_below_low"  # high and low nulled
REASON_INVALID_CHANGE: Final = "invalid_change"  # field nulled
REASON_TIMESTAMP_OUT_OF_RANGE: Final = "timestamp_out_of_range"  # field nulled
REASON_NEGATIVE_OI: Final = "negative_oi"  # field nulled
REASON_INVALID_DEPTH: Final = "invalid_depth"  # whole depth nulled

#: Reasons that make ``format()`` return ``None``.
DROP_REASONS: Final = frozenset({REASON_INVALID_LAST_PRICE, REASON_UNKNOWN_MODE})

_MODES: Final = frozenset(MODES)


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


class TickFormatter:
    """Turns decoded ticks into ``MarketTick``s and counts what was malformed.

    Not thread-safe; one per publisher task. ``samples()`` is cheap (no I/O).
    """

    def __init__(self, *, include_depth: bool = True, include_oi: bool = True) -> None:
        self._include_depth = include_depth
        self._include_oi = include_oi
        self._ts_cache: dict[int, datetime] = {}
        self._last_received_ns = -1
        self._last_received_at = _EPOCH
        self._malformed: dict[tuple[int, str], int] = {}
        self._malformed_by_reason: dict[str, int] = {}
        self.formatted = 0
        self.dropped = 0

    # -- hot path -----------------------------------------------------------------

    def format(self, tick: Tick) -> MarketTick | None:
        """The ``MarketTick`` for ``tick``, or ``None`` if the tick is unusable (counted)."""
        received_ns = tick.received_at_ns
        if received_ns != self._last_received_ns:
            # Every tick of one WebSocket frame shares its receive time: compute once.
            self._last_received_at = _EPOCH + timedelta(microseconds=received_ns // 1000)
            self._last_received_ns = received_ns
        received_at = self._last_received_at
        mode = tick.mode
        lp = tick.last_price
        if not 0.0 <= lp < _INF or mode not in _MODES:
            return self._slow(tick, received_at)

        if mode == "ltp":
            self.formatted += 1
            return MarketTick(
                tick.instrument_token, mode, tick.tradable, lp,
                None, None, None, None, None, None, None, None,
                None, None, None, None, None, received_at, received_ns,
            )  # fmt: skip

        o = tick.open
        h = tick.high
        low = tick.low
        c = tick.close
        ch = tick.change
        ltq = tick.last_traded_quantity
        atp = tick.average_traded_price
        vol = tick.volume_traded
        tbq = tick.total_buy_quantity
        tsq = tick.total_sell_quantity
        ltt = tick.last_trade_time
        ets = tick.exchange_timestamp
        ts_max = (
            received_ns // 1_000_000_000 + TIMESTAMP_MAX_AHEAD
            if received_ns > 0
            else _TIMESTAMP_MAX_FALLBACK
        )
        # One chained comparison per group: NaN and ±inf fail `0 <= x < inf`; a missing
        # (None) field fails too and takes the slow path, which handles it field by field.
        try:
            sane = (
                0.0 <= o < _INF  # type: ignore[operator]
                and 0.0 <= low <= h < _INF  # type: ignore[operator]
                and 0.0 <= c < _INF  # type: ignore[operator]
                and -_INF < ch < _INF  # type: ignore[operator]
            )
            if sane and ltq is not None:  # quote/full of a tradable instrument
                sane = (
                    ltq >= 0
                    and vol >= 0  # type: ignore[operator]
                    and tbq >= 0  # type: ignore[operator]
                    and tsq >= 0  # type: ignore[operator]
                    and 0.0 <= atp < _INF  # type: ignore[operator]
                )
            if sane and ltt:
                sane = TIMESTAMP_MIN <= ltt <= ts_max
            if sane and ets:
                sane = TIMESTAMP_MIN <= ets <= ts_max
        except TypeError:
            sane = False
        if not sane:
            return self._slow(tick, received_at)

        # Whatever the packet carried passes through; which fields each packet kind
        # carries is the decoder's business (quote packets simply leave these None).
        cache = self._ts_cache
        ltt_dt = (cache.get(ltt) or self._datetime(ltt)) if ltt else None
        ets_dt = (cache.get(ets) or self._datetime(ets)) if ets else None
        depth = None
        buy = tick.depth_buy
        if buy and self._include_depth:
            # _depth() inlined (this runs for every full tick): any insane level → slow path.
            sell = tick.depth_sell
            for entry in buy:
                if not (entry.quantity >= 0 and entry.orders >= 0 and 0.0 <= entry.price < _INF):
                    return self._slow(tick, received_at)
            for entry in sell:
                if not (entry.quantity >= 0 and entry.orders >= 0 and 0.0 <= entry.price < _INF):
                    return self._slow(tick, received_at)
            depth = Depth(buy, sell)
        oi = oih = oil = None
        if self._include_oi and tick.oi is not None:
            oi = tick.oi
            oih = tick.oi_day_high
            oil = tick.oi_day_low
            if not (oi >= 0 and oih >= 0 and oil >= 0):  # type: ignore[operator]
                return self._slow(tick, received_at)

        self.formatted += 1
        return MarketTick(
            tick.instrument_token, mode, tick.tradable, lp,
            ltq, atp, vol, tbq, tsq, Ohlc(o, h, low, c), ch, ltt_dt,
            oi, oih, oil, ets_dt, depth, received_at, received_ns,
        )  # fmt: skip

    def _datetime(self, epoch: int) -> datetime:
        cache = self._ts_cache
        if len(cache) >= _TS_CACHE_MAX:
            cache.clear()
        dt = cache[epoch] = _EPOCH + timedelta(seconds=epoch)
        return dt

    @staticmethod
    def _depth(tick: Tick) -> Depth | None:
        """The depth as-is if every level is sane, else ``None`` (slow path decides)."""
        for entry in tick.depth_buy:
            if not (entry.quantity >= 0 and entry.orders >= 0 and 0.0 <= entry.price < _INF):
                return None
        for entry in tick.depth_sell:
            if not (entry.quantity >= 0 and entry.orders >= 0 and 0.0 <= entry.price < _INF):
                return None
        return Depth(tick.depth_buy, tick.depth_sell)

    # -- slow path: something is off; look at each field --------------------------------

    def _slow(self, tick: Tick, received_at: datetime) -> MarketTick | None:
        token = tick.instrument_token
        bad: list[str] = []
        mode = tick.mode
        if mode not in _MODES:
            bad.append(REASON_UNKNOWN_MODE)
        if not _price_ok(tick.last_price):
            bad.append(REASON_INVALID_LAST_PRICE)
        if bad:
            for reason in bad:
                self._count(token, reason)
            self.dropped += 1
            return None

        ltq = _quantity(tick.last_traded_quantity, bad)
        vol = _quantity(tick.volume_traded, bad)
        tbq = _quantity(tick.total_buy_quantity, bad)
        tsq = _quantity(tick.total_sell_quantity, bad)
        atp = tick.average_traded_price
        if atp is not None and not _price_ok(atp):
            bad.append(REASON_INVALID_AVERAGE_PRICE)
            atp = None

        ohlc = None
        if mode != "ltp" and tick.close is not None:
            prices = []
            for value in (tick.open, tick.high, tick.low, tick.close):
                if value is not None and not _price_ok(value):
                    bad.append(REASON_INVALID_OHLC_PRICE)
                    value = None
                prices.append(value)
            o, h, low, c = prices
            if h is not None and low is not None and h < low:
                # Which one is wrong is unknowable; publishing either would mislead.
                bad.append(REASON_OHLC_INCONSISTENT)
                h = low = None
            ohlc = Ohlc(o, h, low, c)
        change = tick.change
        if change is not None and not -_INF < change < _INF:
            bad.append(REASON_INVALID_CHANGE)
            change = None

        received_ns = tick.received_at_ns
        ts_max = (
            received_ns // 1_000_000_000 + TIMESTAMP_MAX_AHEAD
            if received_ns > 0
            else _TIMESTAMP_MAX_FALLBACK
        )
        ltt = self._timestamp(tick.last_trade_time, ts_max, bad)
        ets = self._timestamp(tick.exchange_timestamp, ts_max, bad)

        oi = oih = oil = None
        if self._include_oi and tick.oi is not None:
            oi = _quantity(tick.oi, bad, REASON_NEGATIVE_OI)
            oih = _quantity(tick.oi_day_high, bad, REASON_NEGATIVE_OI)
            oil = _quantity(tick.oi_day_low, bad, REASON_NEGATIVE_OI)

        depth = None
        if self._include_depth and tick.depth_buy:
            depth = self._depth(tick)
            if depth is None:
                bad.append(REASON_INVALID_DEPTH)

        for reason in bad:
            self._count(token, reason)
        self.formatted += 1
        return MarketTick(
            token, mode, tick.tradable, tick.last_price,
            ltq, atp, vol, tbq, tsq, ohlc, change, ltt,
            oi, oih, oil, ets, depth, received_at, received_ns,
        )  # fmt: skip

    def _timestamp(self, epoch: int | None, ts_max: int, bad: list[str]) -> datetime | None:
        if not epoch:  # None (not in this mode) or 0 (Kite's "no value")
            return None
        if not TIMESTAMP_MIN <= epoch <= ts_max:
            bad.append(REASON_TIMESTAMP_OUT_OF_RANGE)
            return None
        return self._datetime(epoch)

    def _count(self, token: int, reason: str) -> None:
        key = (token, reason)
        self._malformed[key] = self._malformed.get(key, 0) + 1
        self._malformed_by_reason[reason] = self._malformed_by_reason.get(reason, 0) + 1

    # -- reporting --------------------------------------------------------------------

    def malformed_by_reason(self) -> dict[str, int]:
        """Malformed-field counts by reason (a tick can count under several reasons)."""
        return dict(self._malformed_by_reason)

    def malformed_by_instrument(self) -> dict[tuple[int, str], int]:
        """Malformed-field counts per ``(instrument_token, reason)``."""
        return dict(self._malformed)

    def samples(self) -> Iterator[Sample]:
        """Formatter figures for the metrics collector (per-reason, not per-instrument,
        to keep label cardinality bounded; the per-instrument detail is
        ``malformed_by_instrument()``)."""
        yield Sample(
            "ticks_formatted_total", "counter", self.formatted, (), "Ticks turned into MarketTick"
        )
        yield Sample(
            "ticks_malformed_dropped_total",
            "counter",
            self.dropped,
            (),
            "Ticks rejected as unusable by the formatter",
        )
        for reason, count in sorted(self._malformed_by_reason.items()):
            yield Sample(
                "ticks_malformed_total",
                "counter",
                count,
                (("reason", reason),),
                "Malformed tick fields by reason",
            )


def _price_ok(value: float) -> bool:
    return 0.0 <= value < _INF


def _quantity(
    value: int | None, bad: list[str], reason: str = REASON_NEGATIVE_QUANTITY
) -> int | None:
    if value is not None and value < 0:
        bad.append(reason)
        return None
    return value


def format_all(formatter: TickFormatter, ticks: Iterable[Tick]) -> list[MarketTick]:
    """Format a batch, leaving out the unusable ticks (which the formatter counts)."""
    out = []
    fmt = formatter.format
    for tick in ticks:
        market_tick = fmt(tick)
        if market_tick is not None:
            out.append(market_tick)
    return out
