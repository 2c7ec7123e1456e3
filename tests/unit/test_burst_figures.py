"""The burst benchmark's own parts: its consumer takes what is there instead of waiting
to fill a batch; the per-interval figures; the summary over rounds."""

from __future__ import annotations

from typing import Any

import pytest

from alphapanda.bench.burst import BurstResult, LatencyFigures, rounds_lines
from alphapanda.bench.burst_procs import take_available
from tests.support.burst import burst_result


class _Recorder:
    """Stands in for a confluent-kafka Consumer: records how it is asked for records."""

    def __init__(self, ready: list[str]) -> None:
        self.ready = ready
        self.calls: list[tuple[Any, ...]] = []

    def poll(self, timeout: float) -> str | None:
        self.calls.append(("poll", timeout))
        return self.ready.pop(0) if self.ready else None

    def consume(self, num_messages: int, timeout: float) -> list[str]:
        self.calls.append(("consume", num_messages, timeout))
        taken, self.ready = self.ready[:num_messages], self.ready[num_messages:]
        return taken


def test_waits_only_for_the_first_record_then_takes_what_is_already_there() -> None:
    consumer = _Recorder(["a", "b", "c"])
    assert take_available(consumer, 1000, 0.05) == ["a", "b", "c"]  # type: ignore[arg-type]
    # Never consume(n, timeout > 0): librdkafka would hold the records until n are in.
    assert consumer.calls == [("poll", 0.05), ("consume", 999, 0)]


def test_takes_at_most_the_limit_and_nothing_when_nothing_came() -> None:
    consumer = _Recorder(list("abcdef"))
    assert take_available(consumer, 4, 0.05) == list("abcd")  # type: ignore[arg-type]
    assert take_available(consumer, 4, 0.05) == list("ef")  # type: ignore[arg-type]
    assert take_available(consumer, 4, 0.05) == []  # type: ignore[arg-type]
    assert consumer.calls[-1] == ("poll", 0.05)


def test_latency_figures_per_frame_take_each_frames_first_and_last_tick() -> None:
    ms = 1_000_000
    # Three frames (stamps 1, 2, 3); their ticks arrive out of order.
    latencies = [30 * ms, 10 * ms, 20 * ms, 5 * ms, 50 * ms, 7 * ms, 8 * ms]
    stamps = [1, 1, 1, 2, 2, 3, 3]
    figures = LatencyFigures.of(latencies, stamps)
    assert figures.ticks == 7 and figures.intervals == 3 and figures.max == 50.0
    # First ticks 10, 5, 7 ms; last ticks 30, 50, 8 ms.
    assert figures.first_p50 == 7.0 and figures.last_p50 == 30.0
    assert "last tick p50 30.0 ms over 3 intervals" in figures.interval_line()
    assert LatencyFigures.of([], []) == LatencyFigures()


def test_latency_figures_group_the_frames_of_one_interval() -> None:
    ms = 1_000_000
    second = 1_000 * ms
    # Three connections' frames per interval, stamped a few ms apart; two intervals.
    stamps = [0, 2 * ms, 4 * ms, second + 1 * ms, second + 3 * ms, second + 5 * ms]
    latencies = [10 * ms, 40 * ms, 20 * ms, 15 * ms, 12 * ms, 60 * ms]
    figures = LatencyFigures.of(latencies, stamps, interval_ns=second)
    assert figures.intervals == 2
    # First ticks 10 and 12 ms, last 40 and 60 ms (nearest-rank median of two: the lower).
    assert figures.first_p50 == 10.0 and figures.last_p50 == 40.0
    assert LatencyFigures.of(latencies, stamps).intervals == 6


def _run(
    p99: float,
    reference_p99: float | None,
    *,
    feed_last: float | None = None,
    reference_last: float | None = None,
    lossless: bool = True,
) -> BurstResult:
    """A run's result: p99s as given, each side's last tick half its p99 unless given."""
    feed = LatencyFigures(ticks=10, p99=p99, intervals=2, last_p50=feed_last or p99 / 2)
    reference = None
    if reference_p99 is not None:
        last = reference_last or reference_p99 / 2
        reference = LatencyFigures(ticks=10, p99=reference_p99, intervals=2, last_p50=last)
    return burst_result(feed, reference, sent=10 if lossless else 11, consumed=10)


def test_the_last_tick_ratio_compares_the_medians_of_each_sides_frames() -> None:
    run = _run(40, 20, feed_last=30, reference_last=12)
    assert run.ratio == 2.0 and run.last_tick_ratio == 2.5
    assert _run(40, None).last_tick_ratio == 0.0 and _run(40, None).ratio == 0.0


def test_rounds_give_each_ratios_median_range_and_how_often_it_met_the_target() -> None:
    # Ratios 1.2, 2.0 and 3.0: median 2.0, one of three within 1.5x.
    lines = rounds_lines([_run(60, 50), _run(100, 50), _run(90, 30)])
    assert lines[0] == "burst over 3 run(s), medians:"
    assert "feed p99 90.0 ms, last tick 45.0 ms, CPU per tick 30.0 us" in lines[1]
    assert lines[2] == "  p99 ratio: median 2.00x (from 1.20 to 3.00), at most 1.5x in 1 of 3"
    assert lines[3].startswith("  last-tick ratio: median 2.00x") and lines[3].endswith("1 of 3")
    assert lines[4] == "  zero loss in 3 of 3"


def test_rounds_without_a_reference_report_the_feed_and_loss_only() -> None:
    lines = rounds_lines([_run(60, None), _run(80, None, lossless=False)])
    assert not any("ratio" in line for line in lines)
    assert lines[-1] == "  zero loss in 1 of 2"
    with pytest.raises(ValueError, match="no runs"):
        rounds_lines([])
