"""The ``pkt`` header: a record's packet index among its instrument's packets in a frame."""

from __future__ import annotations

from alphapanda.pipeline.wire import POSITION_HEADER, WireEncoder, position_of


def pkt(encoder: WireEncoder, token: int, ns: int) -> int | None:
    return position_of(encoder.position_headers(token, ns))


def test_packet_index_counts_per_instrument_within_one_frame() -> None:
    encoder = WireEncoder()
    # Frame 100 holds A, B, A, A; frame 200 holds A, B.
    assert [pkt(encoder, t, 100) for t in (1, 2, 1, 1)] == [0, 0, 1, 2]
    assert [pkt(encoder, t, 200) for t in (1, 2)] == [0, 0]


def test_frames_of_two_shards_may_interleave() -> None:
    encoder = WireEncoder()
    # Shard 0's frame (100: tokens 1, 1) and shard 1's (101: token 2) interleaved.
    assert [pkt(encoder, 1, 100), pkt(encoder, 2, 101), pkt(encoder, 1, 100)] == [0, 0, 1]


def test_seeded_position_continues_a_partly_published_frame() -> None:
    encoder = WireEncoder()
    encoder.seed_position(7, 500, 2)  # packets 0 and 1 of frame 500 are in the topic
    encoder.seed_position(8, 500, 1)
    assert pkt(encoder, 7, 400) == 0
    assert pkt(encoder, 7, 500) == 2
    assert pkt(encoder, 7, 500) == 3
    assert pkt(encoder, 7, 600) == 0
    assert pkt(encoder, 8, 500) == 1


def test_headers_are_the_shared_ones_plus_pkt() -> None:
    encoder = WireEncoder()
    headers = encoder.position_headers(1, 1)
    assert headers[:-1] == encoder.shared_headers
    assert headers[-1] == (POSITION_HEADER, b"0")
    assert position_of(encoder.shared_headers) is None
