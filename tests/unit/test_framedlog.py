"""The framed log: round trip, resync after damage, exact reports of what was skipped."""

from __future__ import annotations

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from alphapanda import framedlog
from alphapanda.framedlog import Damage, Record

pytestmark = pytest.mark.unit


def _payloads(items: list[Record | Damage]) -> list[bytes]:
    return [item.payload for item in items if isinstance(item, Record)]


def test_round_trip_and_offsets() -> None:
    payloads = [b"", b"a", b"x" * 1000, framedlog.MAGIC * 3]
    data = b"".join(framedlog.encode(p) for p in payloads)
    items = list(framedlog.parse(data))
    assert _payloads(items) == payloads
    assert all(isinstance(i, Record) for i in items)
    assert items[-1].end == len(data)  # type: ignore[union-attr]


def test_flipped_byte_loses_one_record_and_reports_it() -> None:
    records = [framedlog.encode(i.to_bytes(2, "big") * 25) for i in range(1000)]
    data = bytearray(b"".join(records))
    offset = sum(len(r) for r in records[:10])
    data[offset + 20] ^= 0x01
    items = list(framedlog.parse(bytes(data)))
    assert len(_payloads(items)) == 999
    assert [d for d in items if isinstance(d, Damage)] == [Damage(offset, len(records[10]), 1)]


def test_corrupt_length_is_not_trusted() -> None:
    records = [framedlog.encode(b"p%d" % i) for i in range(5)]
    data = bytearray(b"".join(records))
    data[len(records[0]) + 7] ^= 0x40  # record 1's length now says 64 bytes more
    items = list(framedlog.parse(bytes(data)))
    assert _payloads(items) == [b"p0", b"p2", b"p3", b"p4"]


def test_incomplete_tail_waits_unless_final() -> None:
    data = framedlog.encode(b"one") + framedlog.encode(b"two")[:-1]
    assert _payloads(list(framedlog.parse(data, final=False))) == [b"one"]
    items = list(framedlog.parse(data))
    assert isinstance(items[-1], Damage) and items[-1].offset == len(framedlog.encode(b"one"))


@settings(max_examples=300, deadline=None)
@given(
    payloads=st.lists(st.binary(max_size=200), min_size=1, max_size=30),
    flips=st.lists(st.tuples(st.integers(0, 10**6), st.integers(1, 255)), max_size=5),
)
def test_damage_loses_only_damaged_records_and_accounts_for_every_byte(
    payloads: list[bytes], flips: list[tuple[int, int]]
) -> None:
    records = [framedlog.encode(p) for p in payloads]
    starts = [sum(len(r) for r in records[:i]) for i in range(len(records))]
    data = bytearray(b"".join(records))
    touched: set[int] = set()
    for position, mask in flips:
        position %= len(data)
        data[position] ^= mask
        touched.add(next(i for i in reversed(range(len(starts))) if starts[i] <= position))
    items = list(framedlog.parse(bytes(data)))
    # Every byte is either in a record or in a damage report, in order, no overlap.
    position = 0
    for item in items:
        assert item.offset == position
        position = item.end if isinstance(item, Record) else item.offset + item.length
    assert position == len(data)
    # Every untouched record comes through, in order (a CRC-32 collision aside).
    got = [(i.offset, i.payload) for i in items if isinstance(i, Record)]
    expected = [(starts[i], payloads[i]) for i in range(len(payloads)) if i not in touched]
    assert [g for g in got if g in expected] == expected
    # A damaged record never comes back with other bytes than it was written with.
    assert all(p in payloads for _, p in got)
