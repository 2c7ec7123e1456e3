"""``bench burst --wal-compare``: pairs in alternating order, and the cost per figure."""

from __future__ import annotations

import pytest

from alphapanda.bench.burst import BurstResult, LatencyFigures
from alphapanda.bench.walburst import compare, compare_wal_burst, comparison_lines
from tests.support.burst import burst_result


def result(wal: bool, p99: float, ack_p50: float = 10.0) -> BurstResult:
    feed = LatencyFigures(ticks=120, p50=p99 / 2, p90=p99 * 0.9, p99=p99, max=p99 + 1)
    return burst_result(feed, ack_p50_ms=ack_p50, ack_p99_ms=ack_p50 * 2, wal=wal)


async def test_rounds_alternate_the_order_and_pair_off_with_on() -> None:
    calls: list[bool] = []
    # p99 of the runs in the order they are made: off, on | on, off | off, on.
    script = iter([100.0, 104.0, 90.0, 95.0, 120.0, 110.0])

    async def run(wal: bool) -> BurstResult:
        calls.append(wal)
        return result(wal, next(script))

    seen: list[BurstResult] = []
    pairs, comparisons = await compare_wal_burst(run, 3, seen.append)
    assert calls == [False, True, True, False, False, True]
    assert len(seen) == 6
    assert [(off.feed.p99, on.feed.p99) for off, on in pairs] == [
        (100.0, 104.0),
        (95.0, 90.0),
        (120.0, 110.0),
    ]
    p99 = next(c for c in comparisons if c.label == "frame → consumer p99")
    assert (p99.off, p99.on) == (100.0, 104.0)
    assert (p99.difference, p99.lowest, p99.highest) == (-5.0, -10.0, 4.0)
    assert (p99.later, p99.pairs) == (1, 3)


def test_every_figure_is_compared_and_printed() -> None:
    pairs = [(result(False, 100.0, 30.0), result(True, 101.0, 31.0))]
    comparisons = compare(pairs)
    assert [c.label for c in comparisons] == [
        "frame → consumer p50",
        "frame → consumer p99",
        "frame → consumer max",
        "frame → ack p50",
        "frame → ack p99",
        "feed CPU per tick",
    ]
    ack = comparisons[3]
    assert (ack.off, ack.on, ack.difference, ack.later) == (30.0, 31.0, 1.0, 1)
    cpu = comparisons[5]
    assert cpu.difference == 0.0 and cpu.later == 0
    lines = comparison_lines(comparisons)
    assert lines[0].endswith("1 pair(s): median off / on, on − off per pair")
    assert "median +1.0 (from +1.0 to +1.0), WAL later in 1 of 1" in lines[2]


def test_nothing_to_compare_is_an_error() -> None:
    with pytest.raises(ValueError, match="no pairs"):
        compare([])
