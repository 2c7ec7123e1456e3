"""What the Kite v3 ticker protocol carries: modes, decoded ticks and segment rules.

Field names follow the official ``kiteconnect`` tick dicts (``last_traded_quantity``,
``average_traded_price``, ...) so nobody has to translate between the two, and a field a
packet kind does not carry is ``None`` rather than a silent ``0``, which
would read as a real price or quantity.
"""

from __future__ import annotations

from typing import Final

import msgspec

# The protocol's modes are the feed's modes, defined once (re-exported here).
from alphapanda.modes import MODE_FULL as MODE_FULL
from alphapanda.modes import MODE_LTP as MODE_LTP
from alphapanda.modes import MODE_QUOTE as MODE_QUOTE
from alphapanda.modes import MODES as MODES

#: A 1-byte binary message: the server's "still alive" signal when it has no ticks to send.
HEARTBEAT: Final = b"\x00"

#: Reasons a packet is skipped by the decoder (stable: metrics are labelled with them).
SKIP_UNKNOWN_LENGTH: Final = "unknown_length"
SKIP_TRUNCATED: Final = "truncated"

# Exchange segments, as ``instrument_token & 0xFF`` (``KiteTicker.EXCHANGE_MAP``).
SEGMENT_CDS: Final = 3
SEGMENT_BCD: Final = 6
SEGMENT_INDICES: Final = 9
SEGMENT_NCO: Final = 12

# Prices travel as integers; currency derivatives need more decimals than equities.
# NCO (segment 12) is not in Kite's documentation but the official client divides it by 1e4 too,
# and we promise to agree with the official parser field for field.
_DIVISORS: Final[dict[int, int]] = {
    SEGMENT_CDS: 10_000_000,
    SEGMENT_BCD: 10_000,
    SEGMENT_NCO: 10_000,
}
# Integers on purpose: int / int true division is correctly rounded, so for wire values
# (< 2**32) it gives the very float the official ``raw / 100.0`` gives, ~35 % faster.
_DEFAULT_DIVISOR: Final = 100
#: The divisor of every segment (0..255), for a plain index instead of a dict lookup.
DIVISOR_BY_SEGMENT: Final[tuple[int, ...]] = tuple(
    _DIVISORS.get(segment, _DEFAULT_DIVISOR) for segment in range(256)
)


class ProtocolError(Exception):
    """The only error this protocol package raises: bytes or text that are not Kite v3."""


# gc=False: ticks are created by the hundred thousand per second, hold no reference
# cycles (only ints, floats, str and tuples of DepthEntry), and never need the cyclic GC.
class DepthEntry(msgspec.Struct, frozen=True, gc=False):
    """One level of market depth (full mode): 5 bids and 5 asks per packet."""

    quantity: int
    price: float
    orders: int


class Tick(msgspec.Struct, frozen=True, gc=False):
    """One decoded packet, named as the official ``kiteconnect`` tick dicts.

    ``mode`` is the packet kind: index packets of 28 bytes decode as ``quote`` and of 32
    bytes as ``full``. Timestamps are epoch seconds exactly as sent (the formatter makes
    them tz-aware UTC); ``received_at_ns`` is the caller's receive time.
    """

    instrument_token: int
    mode: str
    tradable: bool
    last_price: float
    last_traded_quantity: int | None = None
    average_traded_price: float | None = None
    volume_traded: int | None = None
    total_buy_quantity: int | None = None
    total_sell_quantity: int | None = None
    open: float | None = None
    high: float | None = None
    low: float | None = None
    close: float | None = None
    change: float | None = None
    last_trade_time: int | None = None
    oi: int | None = None
    oi_day_high: int | None = None
    oi_day_low: int | None = None
    exchange_timestamp: int | None = None
    depth_buy: tuple[DepthEntry, ...] = ()
    depth_sell: tuple[DepthEntry, ...] = ()
    received_at_ns: int = 0


class SkippedPacket(msgspec.Struct, frozen=True):
    """A packet the decoder could not use: its position in the message, its declared
    length (or the bytes left when even the length was cut off) and why."""

    index: int
    length: int
    reason: str


class DecodedMessage(msgspec.Struct):
    """Everything one binary WebSocket message carried."""

    ticks: list[Tick]
    heartbeat: bool
    skipped: list[SkippedPacket]


class TextMessage(msgspec.Struct, frozen=True):
    """A JSON text message from the server: ``type`` is ``order``, ``error`` or ``message``."""

    type: str
    data: object


def segment_of(token: int) -> int:
    """The exchange segment of an instrument token (its low byte)."""
    return token & 0xFF


def price_divisor(token: int) -> float:
    """What the wire integer of a price of this instrument is divided by."""
    return float(DIVISOR_BY_SEGMENT[token & 0xFF])


def is_tradable(token: int) -> bool:
    """Indices (segment 9) carry prices but cannot be traded."""
    return token & 0xFF != SEGMENT_INDICES


def compute_change(last_price: float, close: float) -> float:
    """Percent change vs the previous close, computed exactly as the official client
    does (so the floats are bit-identical), 0 when there is no close."""
    if close == 0:
        return 0.0
    return (last_price - close) * 100 / close
