"""The ledger checker itself catches gaps, duplicates, reordering and bad starts."""

from __future__ import annotations

from typing import Any

import pytest

from tests.support.ledger import TickRecord, check_ledger


def rec(token: int, volume: int, ltq: int, event_id: str, partition: int = 0) -> TickRecord:
    tick: Any = None
    return TickRecord(partition, 0, b"", event_id, token, volume, ltq, 1.0, 0, tick)


def stream(token: int, quantities: list[int], prefix: str) -> list[TickRecord]:
    out, volume = [], 0
    for i, q in enumerate(quantities):
        volume += q
        out.append(rec(token, volume, q, f"{prefix}{i}"))
    return out


def test_clean_stream_passes_with_counts() -> None:
    records = stream(1, [3, 1, 4], "a") + stream(2, [1, 5], "b")
    report = check_ledger(records)
    report.assert_complete(sent={"1": 3, "2": 2})
    with pytest.raises(AssertionError, match="counts differ"):
        report.assert_complete(sent={"1": 4, "2": 2})


def test_gap_duplicate_reorder_and_bad_start_are_found() -> None:
    base = stream(1, [3, 1, 4, 2], "a")
    assert check_ledger([base[0], base[2], base[3]]).gaps == [(1, 7, 8)]
    dup = check_ledger([*base[:2], base[1], *base[2:]])
    assert dup.duplicate_ids == ["a1"] and dup.duplicate_volumes == [(1, 4)]
    assert check_ledger([base[0], base[2], base[1], base[3]]).reordered
    assert check_ledger(base[1:]).bad_start == [(1, 4, 1)]
    assert check_ledger(base[1:], from_zero=False).problems == {}
    moved = [base[0], rec(1, 4, 1, "x", partition=3)]
    assert check_ledger(moved).wrong_partition == [1]
