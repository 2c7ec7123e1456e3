"""Example-based tests of the Kite v3 codec: layouts, segments, framing, text messages."""

from __future__ import annotations

import struct

import msgspec
import pytest

from alphapanda.kite.protocol import (
    HEARTBEAT,
    MODE_FULL,
    MODE_LTP,
    MODE_QUOTE,
    SKIP_TRUNCATED,
    SKIP_UNKNOWN_LENGTH,
    DepthEntry,
    ProtocolError,
    SkippedPacket,
    TextMessage,
    Tick,
    client_message,
    decode_message,
    encode_message,
    encode_tick,
    is_tradable,
    parse_text_message,
    price_divisor,
    segment_of,
)

NSE_TOKEN = 738561  # RELIANCE, segment 1
CDS_TOKEN = (1234 << 8) | 3
BCD_TOKEN = (1234 << 8) | 6
NIFTY_TOKEN = 256265  # NIFTY 50, segment 9
RECEIVED = 1_700_000_000_123_456_789


def _depth(price: float) -> tuple[DepthEntry, ...]:
    return tuple(DepthEntry(100 + i, price + i * 0.05, 3 + i) for i in range(5))


def full_tick(token: int = NSE_TOKEN) -> Tick:
    return Tick(
        instrument_token=token,
        mode=MODE_FULL,
        tradable=True,
        last_price=2501.5,
        last_traded_quantity=7,
        average_traded_price=2499.25,
        volume_traded=1_234_567,
        total_buy_quantity=40_000,
        total_sell_quantity=38_000,
        open=2480.0,
        high=2510.0,
        low=2475.5,
        close=2490.0,
        change=(2501.5 - 2490.0) * 100 / 2490.0,
        last_trade_time=1_700_000_000,
        oi=11,
        oi_day_high=12,
        oi_day_low=10,
        exchange_timestamp=1_700_000_001,
        depth_buy=_depth(2501.0),
        depth_sell=_depth(2502.0),
        received_at_ns=RECEIVED,
    )


def test_segment_rules() -> None:
    assert segment_of(NSE_TOKEN) == 1
    assert price_divisor(NSE_TOKEN) == 100.0
    assert price_divisor(CDS_TOKEN) == 10_000_000.0
    assert price_divisor(BCD_TOKEN) == 10_000.0
    assert price_divisor((5 << 8) | 12) == 10_000.0  # NCO, as the official client
    assert is_tradable(NSE_TOKEN)
    assert not is_tradable(NIFTY_TOKEN)


def test_full_packet_layout_matches_spec_offsets() -> None:
    packet = encode_tick(full_tick())
    assert len(packet) == 184
    token, last, ltq, atp, volume = struct.unpack_from(">5I", packet, 0)
    assert (token, last, ltq, atp, volume) == (NSE_TOKEN, 250150, 7, 249925, 1_234_567)
    assert struct.unpack_from(">4I", packet, 28) == (248000, 251000, 247550, 249000)
    assert struct.unpack_from(">I", packet, 60) == (1_700_000_001,)
    # First bid and first ask: quantity, price, orders, 2 bytes padding.
    assert struct.unpack_from(">IIH2x", packet, 64) == (100, 250100, 3)
    assert struct.unpack_from(">IIH2x", packet, 124) == (100, 250200, 3)


def test_full_round_trip() -> None:
    tick = full_tick()
    decoded = decode_message(encode_message([encode_tick(tick)]), RECEIVED)
    assert decoded.ticks == [tick]
    assert not decoded.heartbeat
    assert decoded.skipped == []


def test_quote_and_ltp_carry_only_their_fields() -> None:
    tick = full_tick()
    quote = msgspec.structs.replace(tick, mode=MODE_QUOTE)
    ltp = Tick(NSE_TOKEN, MODE_LTP, True, 2501.5, received_at_ns=RECEIVED)
    message = encode_message([encode_tick(quote), encode_tick(ltp)])
    got_quote, got_ltp = decode_message(message, RECEIVED).ticks
    assert got_quote.mode == MODE_QUOTE
    assert got_quote.volume_traded == 1_234_567
    assert got_quote.close == 2490.0
    assert got_quote.last_trade_time is None
    assert got_quote.oi is None
    assert got_quote.exchange_timestamp is None
    assert got_quote.depth_buy == ()
    assert got_ltp == ltp
    assert got_ltp.change is None
    assert got_ltp.volume_traded is None


@pytest.mark.parametrize(("mode", "length"), [(MODE_QUOTE, 28), (MODE_FULL, 32)])
def test_index_packets(mode: str, length: int) -> None:
    tick = Tick(
        NIFTY_TOKEN,
        mode,
        False,
        19_850.35,
        open=19_800.0,
        high=19_900.1,
        low=19_750.45,
        close=19_820.0,
        change=(19_850.35 - 19_820.0) * 100 / 19_820.0,
        exchange_timestamp=1_700_000_002 if mode == MODE_FULL else None,
        received_at_ns=RECEIVED,
    )
    packet = encode_tick(tick)
    assert len(packet) == length
    # Index packets order high, low before open, close.
    assert struct.unpack_from(">4I", packet, 8) == (1_990_010, 1_975_045, 1_980_000, 1_982_000)
    assert decode_message(encode_message([packet]), RECEIVED).ticks == [tick]


def test_currency_prices_use_their_divisor() -> None:
    tick = Tick(CDS_TOKEN, MODE_LTP, True, 83.1234567)
    packet = encode_tick(tick)
    assert struct.unpack_from(">I", packet, 4) == (831_234_567,)
    assert decode_message(encode_message([packet]), 0).ticks[0].last_price == 83.1234567


def test_change_is_zero_without_close() -> None:
    tick = msgspec.structs.replace(full_tick(), close=0.0, change=0.0)
    assert decode_message(encode_message([encode_tick(tick)]), RECEIVED).ticks == [tick]


def test_heartbeat() -> None:
    decoded = decode_message(HEARTBEAT, RECEIVED)
    assert decoded.heartbeat
    assert decoded.ticks == []
    assert decoded.skipped == []


def test_empty_message_is_truncated() -> None:
    assert decode_message(b"", 0).skipped == [SkippedPacket(0, 0, SKIP_TRUNCATED)]


def test_unknown_length_is_skipped_without_misaligning_later_packets() -> None:
    ltp = Tick(NSE_TOKEN, MODE_LTP, True, 10.5)
    message = encode_message([encode_tick(ltp), b"\x01" * 13, encode_tick(ltp)])
    decoded = decode_message(message, 0)
    assert decoded.ticks == [ltp, ltp]
    assert decoded.skipped == [SkippedPacket(1, 13, SKIP_UNKNOWN_LENGTH)]


def test_truncated_packet_is_reported_and_earlier_packets_kept() -> None:
    ltp = Tick(NSE_TOKEN, MODE_LTP, True, 10.5)
    message = encode_message([encode_tick(ltp), encode_tick(full_tick())])
    decoded = decode_message(message[:-10], 0)
    assert decoded.ticks == [ltp]
    assert decoded.skipped == [SkippedPacket(1, 184, SKIP_TRUNCATED)]


def test_truncated_length_header() -> None:
    ltp = Tick(NSE_TOKEN, MODE_LTP, True, 10.5)
    message = encode_message([encode_tick(ltp), encode_tick(ltp)])
    decoded = decode_message(message[: 2 + 10 + 1], 0)
    assert decoded.ticks == [ltp]
    assert decoded.skipped == [SkippedPacket(1, 1, SKIP_TRUNCATED)]


def test_declared_count_larger_than_packets() -> None:
    ltp = Tick(NSE_TOKEN, MODE_LTP, True, 10.5)
    message = b"\x00\x03" + encode_message([encode_tick(ltp)])[2:]
    decoded = decode_message(message, 0)
    assert decoded.ticks == [ltp]
    assert decoded.skipped == [SkippedPacket(1, 0, SKIP_TRUNCATED)]


def test_decode_accepts_memoryview_and_bytearray() -> None:
    message = encode_message([encode_tick(full_tick())])
    expected = decode_message(message, RECEIVED)
    assert decode_message(memoryview(message), RECEIVED) == expected  # type: ignore[arg-type]
    assert decode_message(bytearray(message), RECEIVED) == expected


@pytest.mark.parametrize(
    "tick",
    [
        Tick(NSE_TOKEN, MODE_LTP, True, -1.0),
        Tick(NSE_TOKEN, MODE_LTP, True, float("nan")),
        Tick(NSE_TOKEN, MODE_LTP, True, 2**32 / 100),
        Tick(2**32, MODE_LTP, True, 1.0),
        Tick(NSE_TOKEN, "depth", True, 1.0),
        msgspec.structs.replace(full_tick(), depth_buy=_depth(1.0) + _depth(2.0)),
        msgspec.structs.replace(full_tick(), oi=-5),
    ],
    ids=["negative", "nan", "too-large", "token", "mode", "depth-levels", "negative-oi"],
)
def test_encode_refuses_what_the_wire_cannot_carry(tick: Tick) -> None:
    with pytest.raises(ProtocolError):
        encode_tick(tick)


def test_encode_message_limits() -> None:
    with pytest.raises(ProtocolError):
        encode_message([b"x" * 70_000])


def test_short_depth_is_zero_filled() -> None:
    tick = msgspec.structs.replace(full_tick(), depth_buy=_depth(1.0)[:2])
    decoded = decode_message(encode_message([encode_tick(tick)]), RECEIVED).ticks[0]
    assert decoded.depth_buy[:2] == tick.depth_buy
    assert decoded.depth_buy[2:] == (DepthEntry(0, 0.0, 0),) * 3


@pytest.mark.parametrize(
    ("text", "expected"),
    [
        ('{"type": "error", "data": "Invalid token"}', TextMessage("error", "Invalid token")),
        (b'{"type": "order", "data": {"order_id": "1"}}', TextMessage("order", {"order_id": "1"})),
        ('{"type": "message", "data": "hello"}', TextMessage("message", "hello")),
        ('{"type": "future-kind"}', TextMessage("future-kind", None)),
    ],
)
def test_parse_text_message(text: str | bytes, expected: TextMessage) -> None:
    assert parse_text_message(text) == expected


@pytest.mark.parametrize(
    "text", ["", "not json", "[1, 2]", '{"data": 1}', '{"type": 5}', b"\xff\xfe", '"x"']
)
def test_parse_text_message_rejects(text: str | bytes) -> None:
    with pytest.raises(ProtocolError):
        parse_text_message(text)


def test_client_messages() -> None:
    assert msgspec.json.decode(client_message("subscribe", [1, 2])) == {
        "a": "subscribe",
        "v": [1, 2],
    }
    assert msgspec.json.decode(client_message("unsubscribe", (3,))) == {
        "a": "unsubscribe",
        "v": [3],
    }
    assert msgspec.json.decode(client_message("mode", [1], MODE_FULL)) == {
        "a": "mode",
        "v": ["full", [1]],
    }


@pytest.mark.parametrize(
    ("action", "mode"), [("mode", None), ("mode", "depth"), ("subscribe", "full"), ("hello", None)]
)
def test_client_message_rejects(action: str, mode: str | None) -> None:
    with pytest.raises(ProtocolError):
        client_message(action, [1], mode)


def test_runs_of_full_packets_interleaved_with_other_kinds() -> None:
    # Full packets are decoded in runs (length header read with the packet); a run must
    # stop cleanly at any other kind, at an unknown length and at a torn packet.
    full = full_tick()
    quote = msgspec.structs.replace(full, mode=MODE_QUOTE, last_trade_time=None, oi=None)
    quote = msgspec.structs.replace(
        quote,
        oi_day_high=None,
        oi_day_low=None,
        exchange_timestamp=None,
        depth_buy=(),
        depth_sell=(),
    )
    ltp = Tick(NSE_TOKEN, MODE_LTP, True, 10.5, received_at_ns=RECEIVED)
    junk = b"\x00" * 186  # an unknown length big enough to be mistaken for a full packet
    packets = [encode_tick(t) for t in (full, full, quote, full, ltp)] + [junk]
    packets += [encode_tick(full), encode_tick(full)]
    message = encode_message(packets)
    decoded = decode_message(message, RECEIVED)
    assert decoded.ticks == [full, full, quote, full, ltp, full, full]
    assert decoded.skipped == [SkippedPacket(5, 186, SKIP_UNKNOWN_LENGTH)]

    torn = decode_message(message[:-1], RECEIVED)
    assert torn.ticks == [full, full, quote, full, ltp, full]
    assert torn.skipped == [
        SkippedPacket(5, 186, SKIP_UNKNOWN_LENGTH),
        SkippedPacket(7, 184, SKIP_TRUNCATED),
    ]


def test_declared_count_smaller_than_packets_ignores_the_rest() -> None:
    full = full_tick()
    message = encode_message([encode_tick(full)] * 3)
    decoded = decode_message(b"\x00\x02" + message[2:], RECEIVED)
    assert decoded.ticks == [full, full]
    assert decoded.skipped == []
