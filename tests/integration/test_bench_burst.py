"""``bench burst`` run briefly for real: simulator in Kite cadence, the feed as its own
process, Kafka, a consumer process and the bare-producer reference."""

from __future__ import annotations

import pytest

from alphapanda.bench.burst import run_burst, summary_lines

pytestmark = [pytest.mark.integration, pytest.mark.slow, pytest.mark.serial]


@pytest.mark.parametrize("hot_path", ["native", "python"])
async def test_short_burst_measures_every_tick_of_both_sides_with_zero_loss(  # type: ignore[no-untyped-def]
    settings_for, hot_path: str
) -> None:
    result = await run_burst(
        settings_for(), instruments=120, seconds=2, frame_interval=0.5, hot_path=hot_path
    )
    assert result.lossless, summary_lines(result)
    assert result.connections == 1 and result.hot_path == hot_path
    # Every tick of the measured frames was timed: whole frames of 120 instruments.
    assert result.feed.ticks > 0 and result.feed.ticks % 120 == 0
    assert 0 < result.feed.p50 <= result.feed.p99 <= result.feed.max
    assert result.reference is not None and result.reference.ticks % 120 == 0
    assert result.reference.ticks > 0 and result.ratio > 0
    assert result.feed_cpu_us_per_tick > 0 and result.official_parse_ms > 0
    assert result.sent == result.consumed > 0
    assert any("zero loss" in line for line in summary_lines(result))
