"""The hot-standby benchmarks' reports (the runs themselves need the broker, PostgreSQL,
the simulator and feed processes: ``alphapanda bench chaos --faults failover`` and
``alphapanda bench fencing``, recorded in docs/benchmarks.md)."""

from __future__ import annotations

import pytest

from alphapanda.bench.failover import (
    KILL,
    PAUSE,
    FailoverResult,
    FencingPhase,
    Takeover,
    fencing_lines,
    summary_lines,
)
from alphapanda.bench.harness import LedgerFigures, StreamLedger
from alphapanda.ha.controller import EXIT_DEPOSED


def test_the_fencing_report_compares_the_median_of_each_mode() -> None:
    phases = [
        FencingPhase("lease", 40_000, 10.0, 40.0, 0.0, 0.0),
        FencingPhase("transactions", 40_000, 60.0, 200.0, 8.0, 30.0),
        FencingPhase("lease", 40_000, 12.0, 44.0, 0.0, 0.0),
        FencingPhase("transactions", 40_000, 66.0, 220.0, 9.0, 35.0),
    ]
    lines = fencing_lines(phases)
    assert len(lines) == 5
    assert lines[1].startswith("transactions: consumed 40,000") and "p50 60.0 ms" in lines[1]
    # Medians of two take the upper one: lease 12/44, transactions 66/220.
    assert lines[-1] == "transactions / lease: p50 5.5x (+54.0 ms), p99 5.0x (+176.0 ms)"


def test_without_a_lease_phase_there_is_no_ratio() -> None:
    lines = fencing_lines([FencingPhase("transactions", 10, 5.0, 9.0, 1.0, 2.0)])
    assert len(lines) == 1


def test_delay_percentiles_need_the_delays_kept() -> None:
    with pytest.raises(RuntimeError, match="keep_delays"):
        StreamLedger("127.0.0.1:9", "t").delay_percentiles_ms(0.5)
    assert StreamLedger("127.0.0.1:9", "t", keep_delays=True).delay_percentiles_ms(0.5) == [0.0]


def _result(fault: str, *takeovers: Takeover) -> FailoverResult:
    return FailoverResult(fault, 3000, list(takeovers), LedgerFigures(consumed=900), 900)


def test_a_paused_active_that_does_not_exit_deposed_fails_the_run() -> None:
    deposed = Takeover("a", 2.5, 2.7, 0, EXIT_DEPOSED)
    assert _result(PAUSE, deposed).passed
    lines = summary_lines(_result(PAUSE, deposed))
    assert lines[0].startswith("failover-pause: 1 SIGSTOPs (paused, resumed after) of the active")
    assert "lease 3000 ms" in lines[0] and lines[1].startswith("  pause -> publishing: min 2.70 s")
    assert any(line.endswith(f"exited with: {EXIT_DEPOSED} (75 = deposed)") for line in lines)
    # Still running a minute after it was resumed (killed), or exited otherwise: a failure.
    assert not _result(PAUSE, deposed, Takeover("b", 2.5, 2.7, 0, None)).passed
    assert not _result(PAUSE, Takeover("b", 2.5, 2.7, 0, 0)).passed


def test_a_takeover_slower_than_three_seconds_fails_the_run() -> None:
    assert _result(KILL, Takeover("a", 1.0, 1.4, 0)).passed
    assert not _result(KILL, Takeover("a", 1.0, 3.1, 0)).passed
    assert not _result(PAUSE, Takeover("a", 3.0, 3.4, 0, EXIT_DEPOSED)).passed
    assert summary_lines(_result(KILL, Takeover("a", 1.0, 1.4, 0)))[0].startswith(
        "failover: 1 SIGKILLs of the active"
    )
