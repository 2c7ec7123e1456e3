"""The native hot path against the Python path, on the same frames: identical bytes.

Hypothesis builds frames of every packet kind (ltp 8, index quote 28, index full 32,
quote 44, full 184) for every segment divisor, with arbitrary 32-bit fields (so OHLCs
with high below low, timestamps of 0, in range and out of range on both sides), plus
packets of unknown length, cut-off frames, heartbeats and empty messages; and encodes
them as JSON and msgpack, with and without depth and OI. Both paths must give the same
records (key, value, headers, receive time), the same skipped packets, the same
malformed counts per instrument and reason, and leave the id counter in the same place.
"""

from __future__ import annotations

import struct
from pathlib import Path
from typing import TYPE_CHECKING, cast

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from alphapanda.kite.protocol import Tick, decode_message
from alphapanda.kite.protocol.encoder import encode_message, encode_tick
from alphapanda.pipeline.accounting import Accounting
from alphapanda.pipeline.formatter import TickFormatter, format_all
from alphapanda.pipeline.hotpath import FrameRecordBuilder, HotPath, load_native
from alphapanda.pipeline.publisher import RecordBuilder
from alphapanda.pipeline.wire import WireEncoder
from alphapanda.settings import Settings
from alphapanda.streams.candles import Candle
from alphapanda.streams.runner import DerivedStreams

if TYPE_CHECKING:
    from alphapanda._native import NativeTick

pytestmark = pytest.mark.unit

native, _why = load_native()
requires_native = pytest.mark.skipif(native is None, reason=f"extension not built: {_why}")

SEGMENTS = (1, 2, 3, 4, 6, 7, 9, 12, 0, 255)
U32 = st.integers(0, 2**32 - 1)
RECEIVED = 1_764_556_000_123_456_789
# Around the formatter's bounds: 0 (no value), before 2000, in range, just past the
# receive time + 1 day, and anything.
TIMESTAMPS = st.one_of(
    st.just(0),
    st.integers(1, 946_684_799),
    st.integers(946_684_800, RECEIVED // 10**9 + 86_400),
    st.integers(RECEIVED // 10**9 + 86_401, 2**32 - 1),
    U32,
)
tokens = st.builds(
    lambda ident, seg: (ident << 8) | seg, st.integers(0, 2**24 - 1), st.sampled_from(SEGMENTS)
)


def _packet(token: int, words: list[int]) -> bytes:
    return struct.pack(f">I{len(words)}I", token, *words)


def _full(token: int, head: list[int], stamps: list[int], oi: list[int], depth: bytes) -> bytes:
    ltt, ets = stamps
    return struct.pack(">I10I", token, *head) + struct.pack(">5I", ltt, *oi, ets) + depth


depth_levels = st.lists(
    st.builds(lambda q, p, o: struct.pack(">IIH2x", q, p, o), U32, U32, st.integers(0, 65535)),
    min_size=10,
    max_size=10,
).map(b"".join)

packets = st.one_of(
    st.builds(_packet, tokens, st.lists(U32, min_size=1, max_size=1)),
    st.builds(_packet, tokens, st.lists(U32, min_size=6, max_size=6)),  # index quote
    st.builds(
        lambda t, w, ets: _packet(t, [*w, ets]),
        tokens,
        st.lists(U32, min_size=6, max_size=6),
        TIMESTAMPS,
    ),  # index full
    st.builds(_packet, tokens, st.lists(U32, min_size=10, max_size=10)),  # quote
    st.builds(
        _full,
        tokens,
        st.lists(U32, min_size=10, max_size=10),
        st.lists(TIMESTAMPS, min_size=2, max_size=2),
        st.lists(U32, min_size=3, max_size=3),
        depth_levels,
    ),
    st.binary(min_size=0, max_size=60).filter(lambda b: len(b) not in (8, 28, 32, 44)),
)


@st.composite
def frames(draw: st.DrawFn) -> bytes:
    body = draw(st.lists(packets, max_size=12))
    frame = struct.pack(">H", len(body)) + b"".join(struct.pack(">H", len(p)) + p for p in body)
    how = draw(st.sampled_from(["whole", "whole", "whole", "cut", "count", "tiny"]))
    if how == "cut" and len(frame) > 2:
        frame = frame[: draw(st.integers(0, len(frame) - 1))]
    elif how == "count":
        frame = struct.pack(">H", draw(st.integers(0, 65535))) + frame[2:]
    elif how == "tiny":
        frame = draw(st.binary(max_size=3))
    return frame


received_times = st.one_of(st.just(RECEIVED), st.just(0), st.integers(1, 2**63 - 1))
emitted_times = st.one_of(st.just(RECEIVED + 777_000), st.integers(0, 2**62))


def _pair(
    fmt: str, include_depth: bool, include_oi: bool
) -> tuple[FrameRecordBuilder, FrameRecordBuilder]:
    wire = WireEncoder(fmt)  # type: ignore[arg-type]
    twin = WireEncoder(fmt)  # type: ignore[arg-type]
    twin._id_mid = wire._id_mid  # the same random id bits, so ids can be compared
    python = FrameRecordBuilder(
        TickFormatter(include_depth=include_depth, include_oi=include_oi), wire, None
    )
    fast = FrameRecordBuilder(
        TickFormatter(include_depth=include_depth, include_oi=include_oi), twin, native
    )
    return python, fast


@requires_native
@settings(max_examples=400, deadline=None)
@given(
    batch=st.lists(st.tuples(frames(), received_times, emitted_times), min_size=1, max_size=3),
    fmt=st.sampled_from(["json", "msgpack"]),
    include_depth=st.booleans(),
    include_oi=st.booleans(),
)
def test_native_frames_encode_to_the_python_bytes(
    batch: list[tuple[bytes, int, int]], fmt: str, include_depth: bool, include_oi: bool
) -> None:
    python, fast = _pair(fmt, include_depth, include_oi)
    for frame, received, emitted in batch:
        expected = python.encode(frame, received, emitted)
        got = fast.encode(frame, received, emitted)
        assert got.records == expected.records
        assert [type(r) for r in got.records] == [type(r) for r in expected.records]
        assert got.heartbeat == expected.heartbeat
        assert got.skipped == expected.skipped
    assert fast.wire.seq == python.wire.seq
    assert fast.formatter.formatted == python.formatter.formatted
    assert fast.formatter.malformed_by_instrument() == python.formatter.malformed_by_instrument()
    assert list(fast.formatter.samples()) == list(python.formatter.samples())


@requires_native
@settings(max_examples=200, deadline=None)
@given(frame=frames(), fmt=st.sampled_from(["json", "msgpack"]))
def test_the_feed_path_native_ticks_through_tick_encoder_match_the_python_path(
    frame: bytes, fmt: str
) -> None:
    # As the feed runs it: the socket reader decodes, the publisher's RecordBuilder encodes.
    decoded_py = decode_message(frame, RECEIVED)
    decoded_native = HotPath(native).decode(frame, RECEIVED)
    assert decoded_native.heartbeat == decoded_py.heartbeat
    assert decoded_native.skipped == decoded_py.skipped
    for ours, reference in zip(decoded_native.ticks, decoded_py.ticks, strict=True):
        assert not isinstance(ours, Tick)
        assert ours.instrument_token == reference.instrument_token
        assert ours.mode == reference.mode
        assert ours.last_price == reference.last_price
        assert ours.volume_traded == reference.volume_traded
        assert ours.oi == reference.oi
        assert ours.exchange_timestamp == reference.exchange_timestamp
        assert ours.received_at_ns == reference.received_at_ns
    wire, twin = WireEncoder(fmt), WireEncoder(fmt)  # type: ignore[arg-type]
    twin._id_mid = wire._id_mid
    reference_encoder = RecordBuilder(TickFormatter(), wire, Accounting())
    native_encoder = RecordBuilder(TickFormatter(), twin, Accounting())
    # The emit time is the publisher's clock read; the same for both here.
    reference_encoder._clock = native_encoder._clock = lambda: RECEIVED + 5  # type: ignore[method-assign]
    expected = reference_encoder.encode(decoded_py.ticks)
    got = native_encoder.encode(decoded_native.ticks)
    assert got == expected
    assert twin.seq == wire.seq


def test_python_frame_encoder_is_today_s_pipeline() -> None:
    # The reference itself: decode + format + wire, nothing added.
    wire = WireEncoder("json")
    encoder = FrameRecordBuilder(TickFormatter(), wire, None)
    frame = struct.pack(">HH", 1, 8) + _packet(256265, [2415000])
    (record,) = encoder.encode(frame, RECEIVED, RECEIVED).records
    assert record.key == b"256265"
    assert b'"last_price":24150.0' in record.value
    assert b'"tradable":false' in record.value
    assert record.headers is wire.shared_headers


# -- the derived streams on the native path ---------------------------------------------

frame_runs = st.lists(st.tuples(frames(), received_times), min_size=1, max_size=4)


@requires_native
@settings(max_examples=300, deadline=None)
@given(runs=frame_runs, include_oi=st.booleans())
def test_candle_fields_are_what_the_python_path_s_market_ticks_carry(
    runs: list[tuple[bytes, int]], include_oi: bool
) -> None:
    # Candles on the native path read these instead of formatting every tick.
    hot_path = HotPath(native)
    reference = TickFormatter(include_oi=include_oi)
    for frame, received in runs:
        ticks = cast("list[NativeTick]", hot_path.decode(frame, received).ticks)
        expected = [
            (
                mt.instrument_token,
                mt.last_price,
                mt.volume_traded,
                mt.oi,
                None if mt.exchange_timestamp is None else int(mt.exchange_timestamp.timestamp()),
                mt.received_at_ns,
            )
            for mt in format_all(reference, decode_message(frame, received).ticks)
        ]
        assert [tick.candle_fields(include_oi) for tick in ticks] == expected


def _derived(tmp_path: Path) -> tuple[DerivedStreams, list[Candle]]:
    settings = Settings(
        _env_file=None,
        feed={"spool_dir": tmp_path / "spool", "wal_dir": tmp_path / "wal"},
        candles={"intervals": "1s,1m"},
    )
    derived = DerivedStreams(settings)
    closed: list[Candle] = []
    derived._send_candles = closed.extend  # type: ignore[method-assign,assignment]
    return derived, closed


@requires_native
def test_derived_streams_see_the_same_ticks_on_both_paths(tmp_path: Path) -> None:
    # As the feed runs: the socket reader decodes, the RecordBuilder encodes and hands
    # the batch to the derived streams (their observer), which work on it later.
    packets = []
    for second in range(5):
        for token, price in ((738561, 250_000), (256265, 2_415_000), (5633, 180_000)):
            tick = Tick(
                instrument_token=token,
                mode="full" if token != 256265 else "quote",
                tradable=token != 256265,
                last_price=(price + 500 * second) / 100,
                received_at_ns=0,
                volume_traded=1000 + 10 * second if token != 256265 else None,
                exchange_timestamp=1_764_556_000 + second if token != 256265 else None,
            )
            packets.append((second, encode_tick(tick)))
    frames_ = [
        (encode_message([p for s, p in packets if s == second]), RECEIVED + second * 10**9)
        for second in range(5)
    ]
    seen: dict[str, tuple[DerivedStreams, list[Candle]]] = {}
    wire = WireEncoder("json")
    for path, decoder in (("python", HotPath(None)), ("native", HotPath(native))):
        derived, closed = _derived(tmp_path / path)
        twin = WireEncoder("json")
        twin._id_mid = wire._id_mid  # the same random id bits, so records can be compared
        records = RecordBuilder(TickFormatter(), twin, Accounting())
        records._clock = lambda: RECEIVED + 5  # type: ignore[method-assign]
        records.observer = derived.offer
        for frame, received in frames_:
            records.encode(decoder.decode(frame, received).ticks)
        assert derived.ticks_offered == 15
        derived._process(1_000)
        seen[path] = derived, closed
    (python, python_closed), (fast, fast_closed) = seen["python"], seen["native"]
    assert len(python_closed) >= 8 and fast_closed == python_closed
    assert fast.quotes.many(fast.quotes.tokens()) == python.quotes.many(python.quotes.tokens())
    # The quote records are the ticks' own records: equal byte for byte on both paths.
    native_quotes = sorted(fast.quotes.take_dirty(), key=lambda r: r.key)
    assert native_quotes == sorted(python.quotes.take_dirty(), key=lambda r: r.key)
    assert len(native_quotes) == 3
    for agg_native, agg_python in zip(fast.aggregators, python.aggregators, strict=True):
        for token in (738561, 256265, 5633):
            assert agg_native.open_bar(token) == agg_python.open_bar(token) is not None


def _ltp_frame(tokens: list[int]) -> bytes:
    body = [_packet(t, [t & 0xFFFF]) for t in tokens]
    return struct.pack(">H", len(body)) + b"".join(struct.pack(">H", len(p)) + p for p in body)


@requires_native
@settings(max_examples=200, deadline=None)
@given(
    frames_=st.lists(
        st.tuples(
            st.lists(st.sampled_from([256 + 1, 512 + 1, 768 + 1]), max_size=8), received_times
        ),
        min_size=1,
        max_size=4,
    ),
    chunk=st.integers(1, 9),
    seeds=st.lists(st.tuples(st.sampled_from([257, 513]), st.integers(1, 3)), max_size=2),
)
def test_packet_positions_match_the_python_path_across_chunks_and_seeds(
    frames_: list[tuple[list[int], int]], chunk: int, seeds: list[tuple[int, int]]
) -> None:
    # Instruments repeat within a frame, frames of two shards interleave in one batch,
    # a frame's ticks are split over several encode calls (the publisher's chunks), and
    # a crash recovery may have seeded where a partly published frame resumes.
    wire, twin = WireEncoder(), WireEncoder()
    twin._id_mid = wire._id_mid
    reference = RecordBuilder(TickFormatter(), wire, Accounting())
    fast = RecordBuilder(TickFormatter(), twin, Accounting())
    reference._clock = fast._clock = lambda: RECEIVED  # type: ignore[method-assign]
    first_received = frames_[0][1]
    for token, index in seeds:
        wire.seed_position(token, first_received, index)
        twin.seed_position(token, first_received, index)
    ours: list[object] = []
    theirs: list[object] = []
    for tokens, received in frames_:
        frame = _ltp_frame(tokens)
        py_ticks = decode_message(frame, received).ticks
        native_ticks = HotPath(native).decode(frame, received).ticks
        for start in range(0, len(py_ticks), chunk):
            theirs += reference.encode(py_ticks[start : start + chunk])
            ours += fast.encode(native_ticks[start : start + chunk])
    assert ours == theirs
    assert twin._positions == wire._positions
