"""Our decoder against the official ``kiteconnect`` parser, on the same bytes.

Hypothesis builds packets of every kind (ltp 8, index quote 28, index full 32, quote 44,
full 184) for every segment, with arbitrary 32-bit field values, frames them into
messages and checks that ``decode_message`` and ``KiteTicker._parse_binary`` agree field
for field: prices, quantities, OHLC, change, OI, depth, tradable, mode, and which fields
exist at all for each packet kind.

Where we differ on purpose (asserted below, not hidden):

* Timestamps: the official parser returns naive *local* datetimes from
  ``datetime.fromtimestamp`` (or ``None`` when the platform cannot convert); we keep the
  epoch seconds exactly as sent and the formatter makes them tz-aware UTC. We compare
  the official value converted back with ``.timestamp()``.
* A message cut short: the official parser raises ``struct.error`` when a length header
  is cut off, and decodes a cut-off packet by its *remaining* length (a 184-byte packet
  cut to 44 bytes comes out as a bogus quote). We report the packet as ``truncated`` and
  stop, so a torn frame never produces a wrong tick.
* Unknown packet lengths: both skip them; we also report them in ``skipped``. A packet
  shorter than 4 bytes makes the official parser raise ``struct.error`` (it reads the
  token before looking at the length), losing the whole message; we skip just it.
"""

from __future__ import annotations

import struct
from datetime import datetime
from typing import Any

import pytest
from hypothesis import HealthCheck, assume, given, settings
from hypothesis import strategies as st
from kiteconnect import KiteTicker

from alphapanda.bench.decode import build_full_frames
from alphapanda.kite.protocol import (
    MODE_FULL,
    MODE_LTP,
    MODE_QUOTE,
    SKIP_TRUNCATED,
    SKIP_UNKNOWN_LENGTH,
    DepthEntry,
    SkippedPacket,
    Tick,
    compute_change,
    decode_message,
    encode_message,
    encode_tick,
    price_divisor,
)

KNOWN_LENGTHS = (8, 28, 32, 44, 184)
# Segments 1..9 (NSE, NFO, CDS, BSE, BFO, BCD, MCX, MCXSX, indices), NCO 12, and a few
# the official client does not know (they fall back to the divisor 100).
SEGMENTS = (1, 2, 3, 4, 5, 6, 7, 8, 9, 12, 0, 13, 255)
U32 = st.integers(0, 2**32 - 1)
U16 = st.integers(0, 2**16 - 1)
RECEIVED = 1_700_000_000_000_000_000

tokens = st.builds(
    lambda ident, seg: (ident << 8) | seg, st.integers(0, 2**24 - 1), st.sampled_from(SEGMENTS)
)
index_tokens = st.builds(lambda ident: (ident << 8) | 9, st.integers(0, 2**24 - 1))


def _words(token: int, values: list[int]) -> bytes:
    return struct.pack(f">I{len(values)}I", token, *values)


def ltp_packets() -> st.SearchStrategy[bytes]:
    return st.builds(_words, tokens, st.lists(U32, min_size=1, max_size=1))


def index_packets(length: int, token: st.SearchStrategy[int] = tokens) -> st.SearchStrategy[bytes]:
    # Any token: the official parser picks the layout by length alone, so do we.
    words = length // 4 - 1
    return st.builds(_words, token, st.lists(U32, min_size=words, max_size=words))


def quote_packets() -> st.SearchStrategy[bytes]:
    return st.builds(_words, tokens, st.lists(U32, min_size=10, max_size=10))


@st.composite
def full_packets(draw: st.DrawFn, padding: bool = True) -> bytes:
    head = _words(draw(tokens), draw(st.lists(U32, min_size=15, max_size=15)))
    depth = b"".join(
        struct.pack(">IIH", draw(U32), draw(U32), draw(U16))
        + (draw(st.binary(min_size=2, max_size=2)) if padding else b"\x00\x00")
        for _ in range(10)
    )
    return head + depth


def unknown_packets(min_size: int = 0) -> st.SearchStrategy[bytes]:
    return st.binary(min_size=min_size, max_size=200).filter(lambda b: len(b) not in KNOWN_LENGTHS)


def known_packets() -> st.SearchStrategy[bytes]:
    return st.one_of(
        ltp_packets(), index_packets(28), index_packets(32), quote_packets(), full_packets()
    )


@pytest.fixture(scope="module")
def official() -> KiteTicker:
    # Constructing the ticker opens no connection; we only call its parser.
    return KiteTicker("key", "token")


def _official_normalised(value: Any) -> Any:
    """The official tick dicts with naive local datetimes turned back into epoch seconds."""
    if isinstance(value, dict):
        return {k: _official_normalised(v) for k, v in value.items()}
    if isinstance(value, list):
        return [_official_normalised(v) for v in value]
    if isinstance(value, datetime):
        assert value.tzinfo is None
        return int(value.timestamp())
    return value


def _as_official(tick: Tick) -> dict[str, Any]:
    """Our tick in the official dict shape; fields we leave ``None`` must be absent there."""
    d: dict[str, Any] = {
        "tradable": tick.tradable,
        "mode": tick.mode,
        "instrument_token": tick.instrument_token,
        "last_price": tick.last_price,
    }
    for name in (
        "last_traded_quantity",
        "average_traded_price",
        "volume_traded",
        "total_buy_quantity",
        "total_sell_quantity",
    ):
        if getattr(tick, name) is not None:
            d[name] = getattr(tick, name)
    ohlc = {"open": tick.open, "high": tick.high, "low": tick.low, "close": tick.close}
    if any(v is not None for v in ohlc.values()):
        d["ohlc"] = ohlc
    if tick.change is not None:
        d["change"] = tick.change
    for name in ("last_trade_time", "oi", "oi_day_high", "oi_day_low", "exchange_timestamp"):
        if getattr(tick, name) is not None:
            d[name] = getattr(tick, name)
    if tick.depth_buy or tick.depth_sell:
        d["depth"] = {
            side: [{"quantity": e.quantity, "price": e.price, "orders": e.orders} for e in entries]
            for side, entries in (("buy", tick.depth_buy), ("sell", tick.depth_sell))
        }
    return d


def _assert_agree(official: KiteTicker, message: bytes) -> list[Tick]:
    ours = decode_message(message, RECEIVED)
    theirs = _official_normalised(official._parse_binary(message))
    assert [_as_official(t) for t in ours.ticks] == theirs
    assert all(t.received_at_ns == RECEIVED for t in ours.ticks)
    return ours.ticks


DIFF_SETTINGS = settings(
    max_examples=150, deadline=None, suppress_health_check=[HealthCheck.too_slow]
)


@pytest.mark.parametrize(
    ("strategy", "mode"),
    [
        pytest.param(ltp_packets(), MODE_LTP, id="ltp"),
        pytest.param(index_packets(28), MODE_QUOTE, id="index-quote"),
        pytest.param(index_packets(32), MODE_FULL, id="index-full"),
        pytest.param(quote_packets(), MODE_QUOTE, id="quote"),
        pytest.param(full_packets(), MODE_FULL, id="full"),
    ],
)
@DIFF_SETTINGS
@given(data=st.data())
def test_every_packet_kind_agrees_with_official(
    official: KiteTicker, strategy: st.SearchStrategy[bytes], mode: str, data: st.DataObject
) -> None:
    (tick,) = _assert_agree(official, encode_message([data.draw(strategy)]))
    assert tick.mode == mode
    assert tick.tradable == (tick.instrument_token & 0xFF != 9)


@pytest.mark.parametrize("segment", SEGMENTS)
@settings(max_examples=20, deadline=None)
@given(packets=st.lists(known_packets(), min_size=1, max_size=5))
def test_every_segment_agrees_with_official(
    official: KiteTicker, segment: int, packets: list[bytes]
) -> None:
    # The same packet bytes under every segment: divisor and tradable follow the token.
    packets = [p[:3] + bytes([segment]) + p[4:] for p in packets]
    ticks = _assert_agree(official, encode_message(packets))
    assert len(ticks) == len(packets)
    for tick, packet in zip(ticks, packets, strict=True):
        assert tick.last_price == struct.unpack_from(">I", packet, 4)[0] / price_divisor(segment)
        assert tick.tradable == (segment != 9)


@DIFF_SETTINGS
# Unknown packets of at least 4 bytes: shorter ones crash the official parser (below).
@given(packets=st.lists(st.one_of(known_packets(), unknown_packets(min_size=4)), max_size=30))
def test_mixed_messages_agree_with_official(official: KiteTicker, packets: list[bytes]) -> None:
    message = encode_message(packets)
    _assert_agree(official, message)
    unknown = [i for i, p in enumerate(packets) if len(p) not in KNOWN_LENGTHS]
    assert decode_message(message, RECEIVED).skipped == [
        SkippedPacket(i, len(packets[i]), SKIP_UNKNOWN_LENGTH) for i in unknown
    ]


def test_tiny_unknown_packet_differs_on_purpose(official: KiteTicker) -> None:
    ltp = encode_tick(Tick(738561, MODE_LTP, True, 100.0))
    message = encode_message([ltp, b"\x01\x02", ltp])
    with pytest.raises(struct.error):
        official._parse_binary(message)
    decoded = decode_message(message, RECEIVED)
    assert [t.last_price for t in decoded.ticks] == [100.0, 100.0]
    assert decoded.skipped == [SkippedPacket(1, 2, SKIP_UNKNOWN_LENGTH)]


def test_torn_packet_differs_on_purpose(official: KiteTicker) -> None:
    full = Tick(738561, MODE_FULL, True, 100.0, close=99.0, change=compute_change(100.0, 99.0))
    message = encode_message([encode_tick(full)])
    torn = message[: 2 + 2 + 44]  # a full packet cut to exactly a quote's length
    assert official._parse_binary(torn)[0]["mode"] == "quote"  # the official quirk
    decoded = decode_message(torn, RECEIVED)
    assert decoded.ticks == []
    assert [s.reason for s in decoded.skipped] == [SKIP_TRUNCATED]


# --- round trips -------------------------------------------------------------------


@st.composite
def wire_ticks(draw: st.DrawFn) -> Tick:
    """Ticks whose every value is representable on the wire (integers ÷ divisor), with
    the derived fields (mode-dependent ``None``s, ``change``, ``tradable``) consistent."""
    token = draw(tokens)
    div = price_divisor(token)
    is_index = token & 0xFF == 9

    def price() -> float:
        return draw(U32) / div

    mode = draw(st.sampled_from((MODE_LTP, MODE_QUOTE, MODE_FULL)))
    last_price = price()
    if mode == MODE_LTP:
        return Tick(token, mode, not is_index, last_price, received_at_ns=RECEIVED)
    open_, high, low, close = price(), price(), price(), price()
    change = compute_change(last_price, close)
    if is_index:
        return Tick(
            token, mode, False, last_price, open=open_, high=high, low=low, close=close,
            change=change, exchange_timestamp=draw(U32) if mode == MODE_FULL else None,
            received_at_ns=RECEIVED,
        )  # fmt: skip
    quote = Tick(
        token, mode, True, last_price, draw(U32), price(), draw(U32), draw(U32), draw(U32),
        open_, high, low, close, change, received_at_ns=RECEIVED,
    )  # fmt: skip
    if mode == MODE_QUOTE:
        return quote

    def side() -> tuple[DepthEntry, ...]:
        return tuple(DepthEntry(draw(U32), price(), draw(U16)) for _ in range(5))

    return Tick(
        *(getattr(quote, f) for f in quote.__struct_fields__[:14]),
        draw(U32), draw(U32), draw(U32), draw(U32), draw(U32), side(), side(), RECEIVED,
    )  # fmt: skip


@settings(max_examples=300, deadline=None)
@given(st.lists(wire_ticks(), min_size=1, max_size=10))
def test_encode_then_decode_is_identity(ticks: list[Tick]) -> None:
    decoded = decode_message(encode_message([encode_tick(t) for t in ticks]), RECEIVED)
    assert decoded.ticks == ticks
    assert decoded.skipped == []


@settings(max_examples=200, deadline=None)
@given(st.one_of(ltp_packets(), quote_packets(), full_packets(padding=False)))
def test_decode_then_encode_is_identity_on_bytes(packet: bytes) -> None:
    # An index token picks the index layouts (28/32 B) when encoding, so a 44/184-byte
    # packet carrying an index token (which Kite never sends) cannot round-trip.
    assume(packet[3] != 9 or len(packet) == 8)
    (tick,) = decode_message(encode_message([packet]), RECEIVED).ticks
    assert encode_tick(tick) == packet


@settings(max_examples=100, deadline=None)
@given(st.one_of(index_packets(28, index_tokens), index_packets(32, index_tokens)))
def test_index_bytes_round_trip_except_the_ignored_change_field(packet: bytes) -> None:
    (tick,) = decode_message(encode_message([packet]), RECEIVED).ticks
    again = encode_tick(tick)
    assert again[:24] + again[28:] == packet[:24] + packet[28:]


def test_benchmark_frames_agree_with_official(official: KiteTicker) -> None:
    # The frames `alphapanda bench decode` times: realistic full-mode messages. Both
    # parsers must read them identically, or the benchmark compares different work.
    frames = build_full_frames(600, per_message=50, seed=3)
    assert frames == build_full_frames(600, per_message=50, seed=3)  # deterministic
    assert len(frames) == 12
    ticks = [t for frame in frames for t in _assert_agree(official, frame)]
    assert len(ticks) == 600
    assert {t.mode for t in ticks} == {MODE_FULL}
    assert {t.instrument_token & 0xFF for t in ticks} == {1, 2, 3, 4, 6, 7}
