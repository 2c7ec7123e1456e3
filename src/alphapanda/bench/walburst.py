"""What the write-ahead log costs at Kite's cadence: ``alphapanda bench burst --wal-compare N``.

Runs the burst benchmark ``N`` rounds, each a pair of runs with the WAL off and on. The
order within a pair alternates (off first in odd rounds) so that drift of a shared
machine hits both alike. Only the feed is measured (no bare-producer reference).

Prints each run, then per figure (frame → consumer p50/p99/max, frame → ack p50/p99, feed
CPU per tick) the medians of both sides and the pairwise difference on − off: its
median, its range and in how many pairs the WAL run was the later one. On a shared
machine one pair spreads by tens of milliseconds, so the medians and that count are the
figures to read, not any single pair.
"""

from __future__ import annotations

import statistics
from collections.abc import Awaitable, Callable, Sequence
from dataclasses import dataclass

from alphapanda.bench.burst import BurstResult

#: (label, unit, how to read it from a result)
FIGURES: tuple[tuple[str, str, Callable[[BurstResult], float]], ...] = (
    ("frame → consumer p50", "ms", lambda r: r.feed.p50),
    ("frame → consumer p99", "ms", lambda r: r.feed.p99),
    ("frame → consumer max", "ms", lambda r: r.feed.max),
    ("frame → ack p50", "ms", lambda r: r.ack_p50_ms),
    ("frame → ack p99", "ms", lambda r: r.ack_p99_ms),
    ("feed CPU per tick", "µs", lambda r: r.feed_cpu_us_per_tick),
)


@dataclass(frozen=True, slots=True)
class Comparison:
    """One figure over every pair: medians of both sides and the pairwise differences."""

    label: str
    unit: str
    off: float
    on: float
    difference: float  # median of (on − off) over the pairs
    lowest: float
    highest: float
    later: int  # pairs where the WAL run's figure was the higher one
    pairs: int


def compare(pairs: Sequence[tuple[BurstResult, BurstResult]]) -> list[Comparison]:
    """``pairs`` of (WAL off, WAL on) results, one per round."""
    if not pairs:
        raise ValueError("no pairs to compare")
    out = []
    for label, unit, read in FIGURES:
        differences = [read(on) - read(off) for off, on in pairs]
        out.append(
            Comparison(
                label,
                unit,
                statistics.median(read(off) for off, _ in pairs),
                statistics.median(read(on) for _, on in pairs),
                statistics.median(differences),
                min(differences),
                max(differences),
                sum(1 for d in differences if d > 0),
                len(pairs),
            )
        )
    return out


def comparison_lines(comparisons: Sequence[Comparison]) -> list[str]:
    pairs = comparisons[0].pairs
    lines = [f"WAL cost at Kite's cadence, {pairs} pair(s): median off / on, on − off per pair"]
    for c in comparisons:
        lines.append(
            f"  {c.label:<22} off {c.off:8.1f}  on {c.on:8.1f} {c.unit:<2}  "
            f"on − off: median {c.difference:+.1f} (from {c.lowest:+.1f} to {c.highest:+.1f}), "
            f"WAL later in {c.later} of {c.pairs}"
        )
    return lines


async def compare_wal_burst(
    run: Callable[[bool], Awaitable[BurstResult]],
    rounds: int,
    report: Callable[[BurstResult], None],
) -> tuple[list[tuple[BurstResult, BurstResult]], list[Comparison]]:
    """``rounds`` pairs of ``run(wal)``; ``report`` sees each result as it arrives."""
    pairs = []
    for index in range(rounds):
        order = (False, True) if index % 2 == 0 else (True, False)
        results = {}
        for wal in order:
            result = await run(wal)
            report(result)
            results[wal] = result
        pairs.append((results[False], results[True]))
    return pairs, compare(pairs)
