"""Recovery: exactly the WAL ticks later than their instrument's newest position."""

from __future__ import annotations

from alphapanda.kite.protocol import encode_message, encode_tick
from alphapanda.kite.protocol.ticks import MODE_LTP, Tick
from alphapanda.pipeline.wire import WireEncoder, position_of
from alphapanda.wal.recovery import RecoveryCounts, recover
from alphapanda.wal.segments import WalFrame
from alphapanda.wal.tails import TailRecord, newest_positions, parse_record

A, B = 408065, 738561


def ltp(token: int, volume: int) -> Tick:
    # LTP packets carry only the price: the price tells ticks apart here.
    return Tick(instrument_token=token, mode=MODE_LTP, tradable=True, last_price=float(volume))


def frame(ns: int, *ticks: Tick) -> WalFrame:
    return WalFrame(ns, 0, encode_message([encode_tick(t) for t in ticks]))


def prices(result: list[tuple[int, list[Tick]]]) -> list[tuple[int, float]]:
    return [(t.instrument_token, t.last_price) for _, ticks in result for t in ticks]


WAL = [
    frame(100, ltp(A, 1), ltp(B, 1)),
    frame(200, ltp(A, 2), ltp(A, 3), ltp(B, 2)),  # two packets of A in one frame
    frame(300, ltp(A, 4), ltp(B, 3)),
]


def test_an_instrument_missing_from_the_topic_gets_all_its_wal_ticks() -> None:
    counts = RecoveryCounts()
    out = list(recover(WAL, {}, counts))
    assert prices(out) == [(A, 1), (B, 1), (A, 2), (A, 3), (B, 2), (A, 4), (B, 3)]
    assert counts.wal_recovered == 7 and counts.wal_already_published == 0


def test_the_packet_index_breaks_ties_inside_a_frame() -> None:
    counts = RecoveryCounts()
    # The topic holds A up to the first of its two packets in frame 200, B up to 300.
    out = list(recover(WAL, {A: (200, 0), B: (300, 0)}, counts))
    assert prices(out) == [(A, 3), (A, 4)]
    assert counts.wal_recovered == 2 and counts.wal_already_published == 5
    assert counts.per_instrument == {A: 2}


def test_everything_published_means_nothing_is_recovered() -> None:
    counts = RecoveryCounts()
    out = list(recover(WAL, {A: (300, 0), B: (300, 0)}, counts))
    assert prices(out) == []
    assert counts.wal_already_published == 7


def test_positions_written_by_the_encoder_match_what_recovery_computes() -> None:
    # The ``pkt`` header the publisher writes and the index recovery derives agree.
    encoder = WireEncoder()
    written = [
        (
            t.instrument_token,
            (
                f.received_at_ns,
                position_of(encoder.position_headers(t.instrument_token, f.received_at_ns)),
            ),
        )
        for f in WAL
        for _, ticks in recover([f], {})
        for t in ticks
    ]
    newest: dict[int, tuple[int, int]] = {}
    newest_positions(
        (TailRecord(i, tok, (ns, k or 0)) for i, (tok, (ns, k)) in enumerate(written[:3])), newest
    )
    assert newest == {A: (200, 0), B: (100, 0)}
    assert prices(list(recover(WAL, newest))) == [(A, 3), (B, 2), (A, 4), (B, 3)]


def test_tail_records_parse_token_and_position_from_value_and_header() -> None:
    from alphapanda.pipeline.formatter import TickFormatter

    encoder = WireEncoder()
    market_tick = TickFormatter().format(
        Tick(instrument_token=A, mode=MODE_LTP, tradable=True, last_price=5.0, received_at_ns=777)
    )
    assert market_tick is not None
    key, value, _ = encoder.encode(market_tick, 1)
    headers = encoder.position_headers(A, 777)
    headers = encoder.position_headers(A, 777)  # the second packet of A in that frame
    assert parse_record(value, headers) == (A, (777, 1))
    assert key == b"%d" % A
    msgpack = WireEncoder("msgpack")
    _, packed, _ = msgpack.encode(market_tick, 1)
    assert parse_record(packed, msgpack.position_headers(A, 777)) == (A, (777, 0))


def test_ticks_in_the_spool_are_not_recovered_even_when_older_than_the_newest() -> None:
    # The spool holds A's tick of frame 300 (newer) but not those of frame 200, which a
    # crash left in librdkafka's queue: they are recovered; 300's is not.
    counts = RecoveryCounts()
    first: list[tuple[int, int, int]] = []
    out = list(
        recover_with(
            WAL,
            {A: (100, 0), B: (300, 0)},
            counts,
            spooled={(A, 300, 0)},
            on_first_index=lambda *a: first.append(a),
        )
    )
    assert prices(out) == [(A, 2), (A, 3)]
    assert counts.wal_already_published == 5
    assert first == []  # A's first recovered packet of frame 200 is its packet 0


def test_the_encoder_is_told_where_a_partly_published_frame_resumes() -> None:
    first: list[tuple[int, int, int]] = []
    out = list(
        recover_with(
            WAL, {A: (200, 0)}, RecoveryCounts(), on_first_index=lambda *a: first.append(a)
        )
    )
    assert prices(out) == [(B, 1), (A, 3), (B, 2), (A, 4), (B, 3)]
    assert first == [(A, 200, 1)]


def recover_with(frames, newest, counts, **kwargs):  # type: ignore[no-untyped-def]
    from alphapanda.wal.recovery import RecoveryFilter

    selector = RecoveryFilter(newest, counts, **kwargs)
    for frame in frames:
        yield frame.received_at_ns, selector.select(frame.received_at_ns, frame.frame)


def test_spooled_positions_reads_the_spool_segments(tmp_path) -> None:  # type: ignore[no-untyped-def]
    from alphapanda.pipeline.producer import EncodedMessage
    from alphapanda.pipeline.spool import Spool
    from alphapanda.wal.spooled import spooled_positions

    encoder = WireEncoder()
    spool = Spool(tmp_path, 1 << 30)
    spool.open()
    messages = [
        EncodedMessage(b"%d" % A, b"{}", encoder.position_headers(A, ns), ns)
        for ns in (100, 100, 200)
    ]
    assert spool.append_many(messages).written == 3
    spool.close()
    assert spooled_positions(tmp_path) == {(A, 100, 0), (A, 100, 1), (A, 200, 0)}


def test_ticks_newer_than_the_spool_of_their_instrument_are_deferred_behind_it() -> None:
    # At the crash the spool held A's packet 0 of frame 200 (the broker was away): A's
    # older ticks (in librdkafka's queue) come before the spool's replay, its newer ones
    # (in the buffer) after it. B has nothing in the spool: all of it goes first.
    from alphapanda.wal.recovery import RecoveryFilter

    counts = RecoveryCounts()
    selector = RecoveryFilter({}, counts, spooled={(A, 200, 0)}, spool_first={A: (200, 0)})
    now = [t for f in WAL for t in selector.select(f.received_at_ns, f.frame)]
    assert [(t.instrument_token, t.last_price) for t in now] == [(A, 1), (B, 1), (B, 2), (B, 3)]
    assert [(t.instrument_token, t.last_price) for t in selector.deferred] == [(A, 3), (A, 4)]
    assert counts.wal_recovered == 6 and counts.wal_already_published == 1
