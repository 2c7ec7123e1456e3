"""``alphapanda bench derived``: e2e with the derived streams off and on, side by side."""

from __future__ import annotations

import asyncio
import statistics
from typing import Annotated

import typer
from rich.console import Console
from rich.table import Table

from alphapanda.cli.bench_cmd import bench_app, universe_settings


@bench_app.command(
    "derived",
    epilog="Examples:\n\n"
    "  alphapanda bench derived\n\n"
    "  alphapanda bench derived --rounds 2 --seconds 8 --rate 10000 --latency-rate 10000",
)
def derived(
    ctx: typer.Context,
    seconds: Annotated[
        float, typer.Option("--seconds", min=1, help="Length of each measurement window.")
    ] = 10.0,
    rate: Annotated[
        float, typer.Option("--rate", min=1, help="Simulator ticks/s for the throughput window.")
    ] = 100_000.0,
    latency_rate: Annotated[
        float, typer.Option("--latency-rate", min=1, help="Simulator ticks/s for latency.")
    ] = 20_000.0,
    rounds: Annotated[
        int, typer.Option("--rounds", min=1, help="Pairs of runs, derived streams off then on.")
    ] = 2,
    intervals: Annotated[
        str,
        typer.Option(
            "--intervals", help="Candle intervals, comma-separated, while the streams are on."
        ),
    ] = "1m",
    pregenerate: Annotated[
        bool,
        typer.Option(
            "--pregenerate/--live-sim",
            help="The simulator sends pre-built ticks, or generates them live.",
        ),
    ] = True,
) -> None:
    """The cost of the derived streams (candles, latest quotes, feed events): `bench e2e`
    with ALPHAPANDA_STREAMS__ENABLED off and on, alternating, in one run; medians and
    on/off ratios. Exit code 1 if a tick was lost."""
    from alphapanda.bench.derived import run_derived_ab

    runs = asyncio.run(
        run_derived_ab(
            universe_settings(ctx),
            seconds=seconds,
            rate=rate,
            latency_rate=latency_rate,
            rounds=rounds,
            intervals=intervals,
            pregenerate=pregenerate,
            progress=lambda line: print(line, flush=True),
        )
    )
    table = Table(title=f"derived streams off vs on: e2e, {seconds:.0f} s windows")
    for column in (
        "derived",
        "ticks/s acked",
        "sim sent/s",
        f"p50 ms @{latency_rate:,.0f}",
        f"p99 ms @{latency_rate:,.0f}",
        "CPU µs/tick",
        "zero loss",
    ):
        table.add_column(column, justify="left" if column == "derived" else "right")
    for run in runs:
        r = run.result
        if r is None:
            label = "on" if run.derived else "off"
            table.add_row(label, "failed", "", "", "", "", (run.error or "")[:40])
            continue
        table.add_row(
            "on" if run.derived else "off",
            f"{r.feed_acked_per_s:,.0f}",
            f"{r.sim_sent_per_s:,.0f}",
            f"{r.latency_p50_ms:.1f}",
            f"{r.latency_p99_ms:.1f}",
            f"{r.feed_cpu_us_per_tick:.2f}",
            "yes" if r.zero_loss else "NO",
        )
    console = Console(width=120)
    console.print(table)

    def median(derived: bool, field: str) -> float:
        values = [getattr(r.result, field) for r in runs if r.derived == derived and r.result]
        return float(statistics.median(values)) if values else float("nan")

    for field, label in (
        ("feed_acked_per_s", "throughput"),
        ("latency_p50_ms", "p50"),
        ("latency_p99_ms", "p99"),
        ("feed_cpu_us_per_tick", "CPU per tick"),
    ):
        off, on = median(False, field), median(True, field)
        ratio = on / off if off else float("nan")
        console.print(f"median {label}: off {off:,.2f}, on {on:,.2f} (on/off {ratio:.3f})")
    if not all(r.result is not None and r.result.zero_loss for r in runs):
        raise typer.Exit(1)
