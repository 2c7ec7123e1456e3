"""A ``bench burst`` result built by hand, for the tests of what reads one."""

from __future__ import annotations

from alphapanda.bench.burst import BurstResult, LatencyFigures


def burst_result(
    feed: LatencyFigures,
    reference: LatencyFigures | None = None,
    *,
    ack_p50_ms: float = 0.0,
    ack_p99_ms: float = 0.0,
    sent: int = 120,
    consumed: int = 120,
    wal: bool = True,
) -> BurstResult:
    """One run of 60 instruments over 1 connection, 30 µs of feed CPU per tick."""
    return BurstResult(
        instruments=60,
        connections=1,
        seconds=2,
        frame_interval=0.5,
        hot_path="native",
        record_bytes=1174,
        feed=feed,
        reference=reference,
        ack_p50_ms=ack_p50_ms,
        ack_p99_ms=ack_p99_ms,
        feed_cpu_us_per_tick=30.0,
        official_parse_ms=50.0,
        sent=sent,
        consumed=consumed,
        missing_instruments=0,
        ledger_problems=0,
        wal=wal,
    )
