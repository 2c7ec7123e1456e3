"""Ticks → binary WebSocket messages: the exact inverse of :mod:`.decoder`.

Used by the exchange simulator and by tests. Not on the feed's hot path, so it favours
clear errors over speed: any value the wire cannot carry (negative, too large, NaN, more
than 5 depth levels, an unknown mode) raises :class:`ProtocolError` instead of being
silently wrapped or truncated.
"""

from __future__ import annotations

import math
import struct
from collections.abc import Sequence
from typing import Final

from alphapanda.kite.protocol.ticks import (
    MODE_FULL,
    MODE_LTP,
    MODE_QUOTE,
    SEGMENT_INDICES,
    DepthEntry,
    ProtocolError,
    Tick,
    price_divisor,
)

DEPTH_LEVELS: Final = 5

_LTP = struct.Struct(">II")
# The index change field (offset 24) is signed: it is a net change that can be negative.
_INDEX_QUOTE = struct.Struct(">6Ii")
_INDEX_FULL = struct.Struct(">6IiI")
_QUOTE = struct.Struct(">11I")
_FULL_HEAD = struct.Struct(">16I")
_DEPTH = struct.Struct(">IIH2x")
# The whole 184-byte full packet in one pack call: the simulator emits ~100k of these a
# second, and one call instead of eleven halves its encoding cost.
_FULL = struct.Struct(">16I" + "IIH2x" * (2 * 5))
_EMPTY_DEPTH: Final = DepthEntry(0, 0.0, 0)
_U16 = struct.Struct(">H")
_I32_MIN, _I32_MAX = -(2**31), 2**31 - 1


def _raw_price(price: float | None, divisor: float) -> int:
    # round(), not int(): 1234.56 * 100 is 123455.99999999999 in binary floating point.
    if price is None:
        return 0
    if not math.isfinite(price):
        raise ProtocolError(f"price {price!r} cannot be encoded")
    return round(price * divisor)


def _int(value: int | None) -> int:
    return 0 if value is None else value


def encode_tick(tick: Tick) -> bytes:
    """One packet in the binary layout of ``tick.mode``.

    ltp → 8 bytes, quote → 44, full → 184; for index tokens (segment 9) quote → 28 and
    full → 32. Prices are multiplied by the instrument's divisor and rounded; fields the
    tick leaves ``None`` go out as 0; missing depth levels are zero-filled.
    """
    try:
        return _encode(tick)
    except (struct.error, OverflowError, TypeError, ValueError) as exc:
        raise ProtocolError(f"tick of {tick.instrument_token!r} cannot be encoded: {exc}") from exc


def _encode(tick: Tick) -> bytes:
    token = tick.instrument_token
    div = price_divisor(token)
    last = _raw_price(tick.last_price, div)
    mode = tick.mode
    if mode == MODE_LTP:
        return _LTP.pack(token, last)
    if mode not in (MODE_QUOTE, MODE_FULL):
        raise ProtocolError(f"unknown mode {mode!r}")

    open_, high, low, close = (
        _raw_price(p, div) for p in (tick.open, tick.high, tick.low, tick.close)
    )
    if token & 0xFF == SEGMENT_INDICES:
        # The decoder ignores this field (as the official parser does); send the net
        # change in wire units, clamped, so a third-party client sees a sane value.
        net_change = min(max(last - close, _I32_MIN), _I32_MAX)
        if mode == MODE_QUOTE:
            return _INDEX_QUOTE.pack(token, last, high, low, open_, close, net_change)
        return _INDEX_FULL.pack(
            token, last, high, low, open_, close, net_change, _int(tick.exchange_timestamp)
        )

    quote = (
        token,
        last,
        _int(tick.last_traded_quantity),
        _raw_price(tick.average_traded_price, div),
        _int(tick.volume_traded),
        _int(tick.total_buy_quantity),
        _int(tick.total_sell_quantity),
        open_,
        high,
        low,
        close,
    )
    if mode == MODE_QUOTE:
        return _QUOTE.pack(*quote)
    buy, sell = tick.depth_buy, tick.depth_sell
    if len(buy) == DEPTH_LEVELS and len(sell) == DEPTH_LEVELS:
        # round() raises on NaN/inf (ValueError/OverflowError), reported as ProtocolError.
        depth = [
            value
            for level in (*buy, *sell)
            for value in (level.quantity, round(level.price * div), level.orders)
        ]
        return _FULL.pack(
            *quote,
            _int(tick.last_trade_time),
            _int(tick.oi),
            _int(tick.oi_day_high),
            _int(tick.oi_day_low),
            _int(tick.exchange_timestamp),
            *depth,
        )
    head = _FULL_HEAD.pack(
        *quote,
        _int(tick.last_trade_time),
        _int(tick.oi),
        _int(tick.oi_day_high),
        _int(tick.oi_day_low),
        _int(tick.exchange_timestamp),
    )
    return head + _encode_depth(tick.depth_buy, div) + _encode_depth(tick.depth_sell, div)


def _encode_depth(levels: Sequence[DepthEntry], divisor: float) -> bytes:
    if len(levels) > DEPTH_LEVELS:
        raise ProtocolError(f"{len(levels)} depth levels, the wire carries {DEPTH_LEVELS}")
    padded = list(levels) + [_EMPTY_DEPTH] * (DEPTH_LEVELS - len(levels))
    return b"".join(
        _DEPTH.pack(level.quantity, _raw_price(level.price, divisor), level.orders)
        for level in padded
    )


def encode_message(packets: Sequence[bytes]) -> bytes:
    """Frame packets into one binary message: uint16 count + (uint16 length + packet)*."""
    if len(packets) > 0xFFFF:
        raise ProtocolError(f"{len(packets)} packets do not fit one message (max 65535)")
    parts = [_U16.pack(len(packets))]
    for packet in packets:
        if len(packet) > 0xFFFF:
            raise ProtocolError(f"packet of {len(packet)} bytes is too long (max 65535)")
        parts.append(_U16.pack(len(packet)))
        parts.append(packet)
    return b"".join(parts)
