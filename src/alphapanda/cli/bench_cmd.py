"""``alphapanda bench …``: the performance benchmarks, side by side with their baselines.

This module owns the ``bench`` sub-app; each benchmark adds one command to
:data:`bench_app` (``decode`` here; end-to-end, soak and chaos benchmarks live in their
own modules and register on the same sub-app).
"""

from __future__ import annotations

import asyncio
import os
import platform
from collections.abc import Coroutine, Iterable
from functools import partial
from pathlib import Path
from typing import TYPE_CHECKING, Annotated, Any

import typer
from rich.console import Console
from rich.table import Table

from alphapanda.bench.decode import run_decode_benchmark
from alphapanda.bench.universe import simulator_csv
from alphapanda.cli.app import app, settings_from
from alphapanda.heap import keep_freed_memory
from alphapanda.settings import Settings

if TYPE_CHECKING:
    from alphapanda.bench.burst import BurstResult

bench_app = typer.Typer(
    name="bench",
    help="Benchmarks: ours vs the original design, same machine, same run.",
    no_args_is_help=True,
    epilog="Examples:\n\n"
    "  alphapanda bench decode\n\n"
    "  alphapanda bench e2e --seconds 10 --rate 100000",
)
app.add_typer(bench_app, name="bench")


def _print_lines(console: Console, lines: Iterable[str]) -> None:
    """A benchmark's report lines, as they are (no rich highlighting of numbers)."""
    for line in lines:
        console.print(line, highlight=False)


def universe_settings(ctx: typer.Context) -> Settings:
    """The settings of a benchmark that streams the simulator's instrument universe: one
    clear line and exit 2 when its CSV is not where the benchmark will read it."""
    settings = settings_from(ctx)
    csv = simulator_csv(settings)
    if not csv.is_file():
        typer.secho(
            f"instruments file {csv} not found: run the benchmark from the repository's "
            "folder (it holds data/instruments.csv) or set ALPHAPANDA_FEED__INSTRUMENTS_CSV",
            fg=typer.colors.RED,
            err=True,
        )
        raise typer.Exit(2)
    return settings


@bench_app.command(
    "decode",
    epilog="Examples:\n\n"
    "  alphapanda bench decode\n\n"
    "  alphapanda bench decode --packets 200000 --per-message 3000",
)
def decode(
    packets: Annotated[
        int, typer.Option("--packets", min=1, help="Full-mode packets per repeat.")
    ] = 50_000,
    repeat: Annotated[
        int, typer.Option("--repeat", min=1, help="Repeats; each decoder's best one counts.")
    ] = 7,
    seed: Annotated[int, typer.Option("--seed", help="Seed of the generated frames.")] = 7,
    per_message: Annotated[
        int,
        typer.Option(
            "--per-message", min=1, max=3000, help="Packets per frame (Kite's cadence: 3000)."
        ),
    ] = 50,
    feed_heap: Annotated[
        bool,
        typer.Option(
            "--feed-heap/--default-heap",
            help="Keep freed C heap memory as the feed process does, or glibc's default.",
        ),
    ] = True,
) -> None:
    """Full-mode packets per second: our decoder and both hot paths (frame bytes to Kafka
    records, native and Python) against the official kiteconnect parser, on the same
    frames. No services needed."""
    heap = "feed" if feed_heap and keep_freed_memory() else "default"
    result = run_decode_benchmark(
        packets=packets, repeat=repeat, seed=seed, per_message=per_message
    )
    table = Table(
        title=f"decode: {result.packets:,} full packets in {result.messages:,} messages, "
        f"{repeat} repeats"
    )
    for column in ("decoder", "best packets/s", "median packets/s"):
        table.add_column(column, justify="right" if column != "decoder" else "left")
    table.add_row(
        "alphapanda decode_message", f"{result.ours_best:,.0f}", f"{result.ours_median:,.0f}"
    )
    table.add_row(
        "kiteconnect _parse_binary",
        f"{result.official_best:,.0f}",
        f"{result.official_median:,.0f}",
    )
    table.add_row("ratio", f"{result.ratio_best:.1f}×", f"{result.ratio_median:.1f}×")
    for name in result.hot_paths:
        table.add_row(
            f"hot path: {name}",
            f"{result.best(name):,.0f}",
            f"{result.median(name):,.0f} ({result.ratio(name):.1f}× official)",
        )
    console = Console(width=120)
    console.print(table)
    console.print(
        f"python {platform.python_version()} on {platform.machine()}, "
        f"{os.cpu_count()} CPUs, {heap} C heap; the hot paths do more than decode "
        "(format, envelope, JSON): the ratio is conservative"
    )


@bench_app.command(
    "burst",
    epilog="Examples:\n\n"
    "  alphapanda bench burst\n\n"
    "  alphapanda bench burst --instruments 9000 --seconds 30 --hot-path python\n\n"
    "  alphapanda bench burst --wal-compare 8 --seconds 15\n\n"
    "  alphapanda bench burst --rounds 6 --seconds 15",
)
def burst(
    ctx: typer.Context,
    instruments: Annotated[
        int,
        typer.Option(
            "--instruments",
            min=1,
            max=9000,
            help="Instruments in full mode (3,000 per connection, at most 9,000).",
        ),
    ] = 3000,
    seconds: Annotated[
        float, typer.Option("--seconds", min=1, help="Measured seconds, after 2 warm-up frames.")
    ] = 10.0,
    frame_interval: Annotated[
        float,
        typer.Option("--frame-interval", min=0.05, help="Seconds between a connection's frames."),
    ] = 1.0,
    hot_path: Annotated[
        str, typer.Option("--hot-path", help="The feed's hot path: auto, native or python.")
    ] = "auto",
    reference: Annotated[
        bool,
        typer.Option(help="Also run a bare producer pushing the same records (same run)."),
    ] = True,
    wal: Annotated[
        bool,
        typer.Option(help="The feed's write-ahead log (on by default, as in production)."),
    ] = True,
    derived: Annotated[
        bool,
        typer.Option(
            help="The feed's derived streams: candles, latest quotes (on by default, as in "
            "production)."
        ),
    ] = True,
    wal_compare: Annotated[
        int,
        typer.Option(
            "--wal-compare",
            min=0,
            help="Instead: N pairs of runs with the write-ahead log off and on (no "
            "reference), and its cost per figure (0: off).",
        ),
    ] = 0,
    rounds: Annotated[
        int,
        typer.Option(
            "--rounds",
            min=1,
            help="Runs of this configuration, one after the other; with more than one, "
            "the median and range of each ratio, and in how many runs it met the target.",
        ),
    ] = 1,
) -> None:
    """Kite's cadence end to end: the simulator sends one frame per connection per
    interval → `alphapanda feed` → Kafka → a consumer process. Reports the frame →
    consumer latency of every tick, side by side with a bare producer pushing the same
    records. Exit code 1 if a tick was lost."""
    from alphapanda.bench.burst import rounds_lines, run_burst, summary_lines

    if hot_path not in ("auto", "native", "python"):
        raise typer.BadParameter("use auto, native or python", param_hint="--hot-path")
    if wal_compare and rounds > 1:
        raise typer.BadParameter(
            "--wal-compare runs its own pairs; give it or --rounds", param_hint="--rounds"
        )
    console = Console(width=160)
    settings = settings_from(ctx)

    def run(with_wal: bool, with_reference: bool) -> Coroutine[Any, Any, BurstResult]:
        return run_burst(
            settings,
            instruments=instruments,
            seconds=seconds,
            frame_interval=frame_interval,
            hot_path=hot_path,
            with_reference=with_reference,
            wal=with_wal,
            derived=derived,
        )

    def report(result: BurstResult) -> None:
        _print_lines(console, summary_lines(result))

    if wal_compare:
        from alphapanda.bench.walburst import compare_wal_burst, comparison_lines

        pairs, comparisons = asyncio.run(
            compare_wal_burst(partial(run, with_reference=False), wal_compare, report)
        )
        _print_lines(console, comparison_lines(comparisons))
        if not all(r.lossless for pair in pairs for r in pair):
            raise typer.Exit(1)
        return
    results = []
    for _ in range(rounds):
        result = asyncio.run(run(wal, reference))
        report(result)
        results.append(result)
    if rounds > 1:
        _print_lines(console, rounds_lines(results))
    if not all(r.lossless for r in results):
        raise typer.Exit(1)


SOAK_SECONDS = 600.0


def soak_seconds(seconds: float | None, minutes: float | None) -> float:
    """The soak's length from ``--seconds`` or its older spelling ``--minutes``."""
    if seconds is not None and minutes is not None:
        raise typer.BadParameter("give --seconds or --minutes, not both", param_hint="--seconds")
    if seconds is not None:
        return seconds
    return SOAK_SECONDS if minutes is None else minutes * 60


@bench_app.command(
    "soak",
    epilog="Examples:\n\n"
    "  alphapanda bench soak\n\n"
    "  alphapanda bench soak --seconds 3600 --rate 5000 --out-dir /tmp/soak",
)
def soak(
    ctx: typer.Context,
    seconds: Annotated[
        float | None,
        typer.Option(
            "--seconds",
            min=6,
            help="Length of the run. [default: 600]",
            show_default=False,
        ),
    ] = None,
    minutes: Annotated[float | None, typer.Option("--minutes", min=0.1, hidden=True)] = None,
    rate: Annotated[
        float, typer.Option("--rate", min=1, help="Simulator ticks/s across all instruments.")
    ] = 5000.0,
    out_dir: Annotated[
        Path | None,
        typer.Option(
            "--out-dir",
            help="Folder for soak.csv and soak.png. [default: .alphapanda/soak]",
            show_default=False,
        ),
    ] = None,
    out: Annotated[Path | None, typer.Option("--out", hidden=True)] = None,
    interval: Annotated[
        float, typer.Option("--interval", min=0.5, help="Seconds between samples.")
    ] = 5.0,
) -> None:
    """Simulator → `alphapanda feed` → Kafka at a fixed load for a long run: the feed's
    memory (RSS) must stay flat (within ±10 % after warm-up) and the consumer must see
    every tick. Exit code 1 if either fails."""
    from alphapanda.bench.soak import run_soak, summary_lines

    seconds = soak_seconds(seconds, minutes)
    if out_dir is None:
        out_dir = out if out is not None else Path(".alphapanda/soak")

    console = Console(width=120)

    def show(sample: Any) -> None:
        console.print(
            f"{sample.elapsed_s:6.0f} s  rss {sample.rss_mb:6.1f} MB  "
            f"buffer {sample.buffer_depth:6.0f}  p99 {sample.latency_p99_ms:6.1f} ms  "
            f"consumed {sample.consumed:,}",
            highlight=False,
        )

    result = asyncio.run(
        run_soak(
            universe_settings(ctx),
            minutes=seconds / 60,
            rate=rate,
            out_dir=out_dir,
            interval=interval,
            on_sample=show,
        )
    )
    _print_lines(console, summary_lines(result))
    console.print(f"wrote {out_dir / 'soak.csv'} and {out_dir / 'soak.png'}", highlight=False)
    if not result.passed:
        raise typer.Exit(1)


@bench_app.command(
    "chaos",
    epilog="Examples:\n\n"
    "  alphapanda bench chaos\n\n"
    "  alphapanda bench chaos --faults kill,pause --rate 5000\n\n"
    "  alphapanda bench chaos --faults feedkill",
)
def chaos(
    ctx: typer.Context,
    faults: Annotated[
        str,
        typer.Option(
            "--faults",
            help="Faults to run, comma-separated, in this order: kill, pause, drops, "
            "malformed, stall, redis, token, diskfull, spoolcorrupt, twoprocs, flap, fatal "
            "(diskfull needs root: it mounts a small tmpfs for the spool); feedkill (a feed "
            "process killed with SIGKILL 10 times), failover (the active of a hot-standby "
            "pair killed 10 times) and failover-pause (that active paused with SIGSTOP, as a "
            "host cut off from the network looks, and resumed after the takeover) run last. "
            "[default: kill,pause,drops,malformed,stall,redis,token]",
            show_default=False,
        ),
    ] = "kill,pause,drops,malformed,stall,redis,token",
    rate: Annotated[float, typer.Option("--rate", min=1, help="Simulator ticks/s.")] = 2000.0,
    drops: Annotated[
        int, typer.Option("--drops", min=1, help="How many socket drops the drops fault makes.")
    ] = 20,
) -> None:
    """The faults the feed must survive, one after another, against a private broker, a
    private Redis, the simulator and the feed; prints a table of what each cost. Exit code
    1 if a tick was lost."""
    from alphapanda.bench.chaos import run_chaos, summary_lines

    console = Console(width=140)
    table = Table(title=f"chaos: {rate:,.0f} ticks/s")
    for column in ("fault", "s", "max delay ms", "dropped", "spooled", "lost", "what happened"):
        table.add_column(
            column, justify="left" if column in ("fault", "what happened") else "right"
        )

    def show(cost: Any) -> None:
        console.print(f"{cost.fault}: done in {cost.seconds:.1f} s ({cost.note})", highlight=False)

    names = [name.strip() for name in faults.split(",") if name.strip()]
    # feedkill SIGKILLs the feed process, so it runs with a feed of its own (see
    # alphapanda.bench.feedkill), after the faults that share the in-process feed.
    feedkill = "feedkill" in names
    failovers = [name for name in names if name in ("failover", "failover-pause")]
    failover = bool(failovers)
    names = [name for name in names if name != "feedkill" and name not in failovers]
    if (feedkill or failover) and not names:
        if feedkill:
            _feedkill(ctx, console, rate, exit_on_failure=not failover)
        _failovers(ctx, console, rate, failovers)
        return
    try:
        result = asyncio.run(
            run_chaos(universe_settings(ctx), faults=names, rate=rate, drops=drops, on_fault=show)
        )
    except ValueError as exc:
        console.print(str(exc))
        raise typer.Exit(2) from None
    for cost in result.costs:
        table.add_row(
            cost.fault,
            f"{cost.seconds:.1f}",
            f"{cost.max_delay_ms:,.0f}",
            str(cost.dropped),
            f"{cost.spooled:,}",
            str(cost.lost),
            cost.note,
        )
    console.print(table)
    _print_lines(console, summary_lines(result))
    if feedkill:
        _feedkill(ctx, console, rate, failed=not result.passed, exit_on_failure=not failover)
    _failovers(ctx, console, rate, failovers)
    if not result.passed:
        raise typer.Exit(1)


@bench_app.command(
    "fencing",
    epilog="Examples:\n\n"
    "  alphapanda bench fencing\n\n"
    "  alphapanda bench fencing --rate 5000 --seconds 30 --rounds 3",
)
def fencing(
    ctx: typer.Context,
    rate: Annotated[float, typer.Option("--rate", min=1, help="Simulator ticks/s.")] = 2000.0,
    seconds: Annotated[
        float, typer.Option("--seconds", min=1, help="Length of each phase.")
    ] = 20.0,
    rounds: Annotated[
        int, typer.Option("--rounds", min=1, help="How many lease/transactions pairs.")
    ] = 2,
) -> None:
    """What hot-standby fencing with Kafka transactions costs a read_committed consumer:
    a lone group member streams from the simulator with ALPHAPANDA_HA__FENCING=lease and
    =transactions in turn (the broker and PostgreSQL of the settings); prints the frame
    receipt -> consumer latency of each phase and the ratio."""
    from alphapanda.bench.failover import fencing_lines, run_fencing_cost

    console = Console(width=140)
    phases = asyncio.run(
        run_fencing_cost(settings_from(ctx), rate=rate, seconds=seconds, rounds=rounds)
    )
    _print_lines(console, fencing_lines(phases))


def _failovers(ctx: typer.Context, console: Console, rate: float, faults: list[str]) -> None:
    """The ``failover`` faults, in order: 10 SIGKILLs (``failover``) or SIGSTOPs
    (``failover-pause``) of the active of a hot-standby pair. Exit code 1 if one failed."""
    from alphapanda.bench.failover import run_failover
    from alphapanda.bench.failover import summary_lines as failover_lines

    failed = False
    for fault in faults:

        def show(takeover: Any, fault: str = fault) -> None:
            resumed = (
                f"; resumed, it exited with {takeover.resumed_exit}"
                if fault == "failover-pause"
                else ""
            )
            console.print(
                f"{fault}: hit {takeover.killed}; the standby was active after "
                f"{takeover.to_active_seconds:.2f} s and published after "
                f"{takeover.to_publish_seconds:.2f} s; ledger gaps {takeover.gaps}{resumed}",
                highlight=False,
            )

        result = asyncio.run(
            run_failover(universe_settings(ctx), rate=rate, fault=fault, on_takeover=show)
        )
        _print_lines(console, failover_lines(result))
        failed = failed or not result.passed
    if failed:
        raise typer.Exit(1)


def _feedkill(
    ctx: typer.Context,
    console: Console,
    rate: float,
    failed: bool = False,
    exit_on_failure: bool = True,
) -> None:
    """The ``feedkill`` fault: 10 SIGKILLs of a feed process at random moments."""
    from alphapanda.bench.feedkill import run_feedkill
    from alphapanda.bench.feedkill import summary_lines as feedkill_lines

    def show(kill: Any) -> None:
        console.print(
            f"feedkill: killed at {kill.at_seconds:.1f} s after {kill.received:,} ticks; "
            f"its WAL held {kill.wal_frames:,} frames ({kill.wal_ticks:,} ticks)",
            highlight=False,
        )

    result = asyncio.run(run_feedkill(universe_settings(ctx), rate=rate, on_kill=show))
    _print_lines(console, feedkill_lines(result))
    if exit_on_failure and (failed or not result.passed):
        raise typer.Exit(1)


@bench_app.command(
    "e2e",
    epilog="Examples:\n\n"
    "  alphapanda bench e2e\n\n"
    "  alphapanda bench e2e --seconds 10 --rate 100000 --no-baseline\n\n"
    "  alphapanda bench e2e --wal-compare 2 --live-sim --rate 20000",
)
def e2e(
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
    baseline: Annotated[
        bool, typer.Option(help="Also run the original design, for comparison.")
    ] = True,
    ceiling: Annotated[
        bool,
        typer.Option(
            help="Also run a bare producer: flat out (the most the broker can take here), "
            "then paced at --latency-rate (the lowest frame → ack latency it gives)."
        ),
    ] = True,
    baseline_rates: Annotated[
        str,
        typer.Option(
            "--baseline-rates", help="Comma-separated simulator ticks/s for the baseline runs."
        ),
    ] = "2000,4000,5000",
    pregenerate: Annotated[
        bool,
        typer.Option(
            "--pregenerate/--live-sim",
            help="The simulator sends pre-built ticks, or generates them live.",
        ),
    ] = True,
    wal_compare: Annotated[
        int,
        typer.Option(
            "--wal-compare",
            min=0,
            help="Instead: N rounds of the feed with the write-ahead log off, then on (no "
            "baseline or ceiling), and its cost as ratios (0: off).",
        ),
    ] = 0,
) -> None:
    """Simulator → feed → Kafka acks, checked by a consumer: ticks/s at zero loss and the
    p50/p99 latency from frame receipt to broker ack, side by side with the original
    design and a bare producer loop. Exit code 1 if a tick was lost."""
    from alphapanda.bench.e2e import run_e2e

    console = Console(width=120)
    if wal_compare:
        from alphapanda.bench.walcost import compare_wal

        compare_wal(
            console,
            universe_settings(ctx),
            rounds=wal_compare,
            seconds=seconds,
            rate=rate,
            latency_rate=latency_rate,
            pregenerate=pregenerate,
        )
        return
    result = asyncio.run(
        run_e2e(
            universe_settings(ctx),
            seconds=seconds,
            rate=rate,
            latency_rate=latency_rate,
            with_baseline=baseline,
            with_ceiling=ceiling,
            baseline_rates=tuple(float(r) for r in baseline_rates.split(",") if r.strip()),
            pregenerate=pregenerate,
        )
    )
    table = Table(
        title=f"e2e: {result.instruments} instruments, full mode, {seconds:.0f} s windows"
    )
    for column in ("pipeline", "ticks/s acked", "p50 ms", "p99 ms", "note"):
        table.add_column(column, justify="left" if column in ("pipeline", "note") else "right")
    table.add_row(
        "alphapanda feed",
        f"{result.feed_acked_per_s:,.0f}",
        "",
        "",
        f"simulator sent {result.sim_sent_per_s:,.0f}/s (asked {rate:,.0f}"
        f"{', pre-built' if result.sim_pregenerated else ', live'})",
    )
    table.add_row(
        f"alphapanda feed @ {latency_rate:,.0f}/s",
        "",
        f"{result.latency_p50_ms:.1f}",
        f"{result.latency_p99_ms:.1f}",
        f"{result.latency_samples:,} acks; sim sent {result.latency_sent_per_s:,.0f}/s",
    )
    for run in result.baselines:
        name = f"baseline (original) @ {run.rate:,.0f}/s"
        if run.result is None:
            table.add_row(name, "failed", "", "", (run.error or "")[:60])
            continue
        b = run.result
        table.add_row(
            name,
            f"{b.ticks_per_s:,.0f}",
            f"{b.latency_p50_ms:,.1f}",
            f"{b.latency_p99_ms:,.1f}",
            f"received {b.received:,}, acked {b.acked:,}, unfinished {b.unfinished:,}",
        )
    if result.ceiling is not None:
        c = result.ceiling
        table.add_row(
            "ceiling (bare producer loop)",
            f"{c.messages_per_s:,.0f}",
            "",
            "",
            f"{c.message_bytes:,.0f} B/record, failed {c.failed}",
        )
    if result.paced is not None:
        paced = result.paced
        table.add_row(
            f"bare producer @ {paced.rate:,.0f}/s",
            "",
            f"{paced.p50_ms:.1f}",
            f"{paced.p99_ms:.1f}",
            f"{paced.acked:,} acks, failed {paced.failed}; frames every 20 ms (the floor)",
        )
    console.print(table)
    console.print(
        f"zero loss: {'yes' if result.zero_loss else 'NO'} — sent {result.sent:,}, "
        f"published {result.published:,}, consumed {result.consumed:,}, "
        f"ledger problems {result.ledger_problems}, instruments off {result.missing_instruments}, "
        f"dropped {result.dropped}; buffer high water {result.buffer_high_water:,}",
        highlight=False,
    )
    console.print(
        f"feed CPU per tick acked (throughput window): {result.feed_cpu_us_per_tick:.1f} µs "
        f"process, {result.feed_loop_cpu_us_per_tick:.1f} µs event-loop thread; cores busy: "
        f"feed {result.feed_cores:.2f}, simulator {result.sim_cores:.2f}",
        highlight=False,
    )
    if result.ratio_to_baseline is not None:
        console.print(
            f"feed / baseline (its best sustained run): {result.ratio_to_baseline:.1f}× "
            "(target ≥ 10×)"
        )
    if result.ratio_to_ceiling is not None:
        console.print(f"feed / ceiling: {result.ratio_to_ceiling:.0%} (target ≥ 60 %)")
    console.print(
        f"python {platform.python_version()} on {platform.machine()}, {os.cpu_count()} CPUs",
        highlight=False,
    )
    for error in result.errors:
        console.print(f"error: {error}", highlight=False)
    if not result.zero_loss or result.errors:
        raise typer.Exit(1)
