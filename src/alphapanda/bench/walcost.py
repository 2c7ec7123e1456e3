"""What the write-ahead log costs: ``alphapanda bench e2e --wal-compare N``.

Runs the end-to-end benchmark ``N`` times with the WAL off and ``N`` times with it on,
alternating (off, on, off, on, ...) so that drift of a shared machine hits both alike,
and prints each run and the ratios of the medians: throughput acked (on / off) and the
p99 of frame receipt → broker ack (on - off, in ms).
"""

from __future__ import annotations

import asyncio
import statistics

from rich.console import Console
from rich.table import Table

from alphapanda.bench.e2e import E2EResult, run_e2e
from alphapanda.settings import Settings


def compare_wal(
    console: Console,
    settings: Settings,
    *,
    rounds: int,
    seconds: float,
    rate: float,
    latency_rate: float,
    pregenerate: bool,
) -> list[E2EResult]:
    results: list[E2EResult] = []
    for _ in range(rounds):
        for wal in (False, True):
            result = asyncio.run(
                run_e2e(
                    settings,
                    seconds=seconds,
                    rate=rate,
                    latency_rate=latency_rate,
                    with_baseline=False,
                    with_ceiling=False,
                    pregenerate=pregenerate,
                    wal=wal,
                )
            )
            console.print(
                f"WAL {'on ' if wal else 'off'}: {result.feed_acked_per_s:,.0f} ticks/s acked, "
                f"p50 {result.latency_p50_ms:.1f} ms, p99 {result.latency_p99_ms:.1f} ms "
                f"@ {latency_rate:,.0f}/s, CPU {result.feed_cpu_us_per_tick:.1f} µs/tick, "
                f"zero loss {'yes' if result.zero_loss else 'NO'}",
                highlight=False,
            )
            results.append(result)
    table = Table(title=f"WAL cost: {rounds} round(s), {seconds:.0f} s windows, full mode")
    for column in ("WAL", "ticks/s acked", "p50 ms", "p99 ms", "CPU µs/tick"):
        table.add_column(column, justify="left" if column == "WAL" else "right")
    medians = {}
    for wal in (False, True):
        runs = [r for r in results if r.wal == wal]
        figures = (
            statistics.median(r.feed_acked_per_s for r in runs),
            statistics.median(r.latency_p50_ms for r in runs),
            statistics.median(r.latency_p99_ms for r in runs),
            statistics.median(r.feed_cpu_us_per_tick for r in runs),
        )
        medians[wal] = figures
        table.add_row(
            "on" if wal else "off",
            f"{figures[0]:,.0f}",
            f"{figures[1]:.1f}",
            f"{figures[2]:.1f}",
            f"{figures[3]:.1f}",
        )
    console.print(table)
    off, on = medians[False], medians[True]
    console.print(
        f"WAL on / off: throughput {on[0] / off[0]:.3f}× (target ≥ 0.90), "
        f"p99 {on[2] - off[2]:+.2f} ms (target ≤ +1 ms), CPU per tick {on[3] / off[3]:.3f}×",
        highlight=False,
    )
    return results
