"""Short versions of ``alphapanda bench soak`` and ``alphapanda bench chaos``.

The real runs (10 minutes; every fault) are benchmarks, recorded in docs/benchmarks.md.
These prove the machinery end to end against the real services: the soak's three
processes and its ledger, and a subset of the chaos faults on a private broker and a
private Redis, each finishing with zero loss by the consumer ledger.
"""

from __future__ import annotations

import csv
from pathlib import Path

import pytest

from alphapanda.bench.chaos import run_chaos
from alphapanda.bench.soak import SoakSample, rss_verdict, run_soak, warmup_seconds
from tests.support.sim import INSTRUMENTS_CSV

pytestmark = [pytest.mark.slow, pytest.mark.serial]


def _sample(elapsed: float, rss: float) -> SoakSample:
    return SoakSample(elapsed, rss, 0, 0, 0, 0, 0, 0)


def test_rss_verdict_judges_only_after_the_warm_up() -> None:
    assert warmup_seconds(600) == 120 and warmup_seconds(60) == 30 and warmup_seconds(18) == 9
    growing = [_sample(t, 100 + t) for t in range(0, 100, 10)]  # +1 MB/s: a leak
    assert rss_verdict(growing, 50)[0] is False
    settling = [_sample(0, 60), _sample(10, 90), _sample(60, 100), _sample(90, 108)]
    flat, baseline, low, high = rss_verdict(settling, 50)
    assert flat and (baseline, low, high) == (100, 100, 108)
    assert rss_verdict([_sample(60, 100), _sample(90, 111)], 50)[0] is False
    assert rss_verdict([_sample(60, 100), _sample(90, 89)], 50)[0] is False
    assert rss_verdict([_sample(1, 100)], 50)[0] is False  # nothing after the warm-up


async def test_short_soak_streams_through_the_feed_process_with_zero_loss(
    settings_for, tmp_path: Path
) -> None:  # type: ignore[no-untyped-def]
    settings = settings_for(feed={"instruments_csv": INSTRUMENTS_CSV})
    result = await run_soak(settings, minutes=0.3, rate=2000, out_dir=tmp_path, interval=2.0)
    assert not result.errors, result.errors
    assert result.feed_exit_code == 0
    assert result.sent > 10_000 and result.ledger.consumed == result.sent
    assert result.zero_loss and result.ledger.problems == 0 and not result.missing
    assert len(result.samples) >= 8 and all(s.rss_mb > 20 for s in result.samples)
    # The feed's own metrics reached Redis and were sampled.
    assert max(s.feed_received for s in result.samples) > 0
    with (tmp_path / "soak.csv").open() as f:
        rows = list(csv.DictReader(f))
    assert len(rows) == len(result.samples) and float(rows[-1]["rss_mb"]) > 0
    assert (tmp_path / "soak.png").read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"


async def test_chaos_subset_broker_kill_drops_redis_token_loses_nothing(
    settings_for, tmp_path: Path
) -> None:  # type: ignore[no-untyped-def]
    settings = settings_for(feed={"instruments_csv": INSTRUMENTS_CSV})
    result = await run_chaos(
        settings,
        faults=["kill", "drops", "redis", "token"],
        rate=1000,
        drops=5,
        workdir=tmp_path / "chaos",
    )
    assert not result.errors, result.errors
    assert [c.fault for c in result.costs] == ["kill", "drops", "redis", "token"]
    costs = {c.fault: c for c in result.costs}
    assert costs["kill"].spooled > 0  # the outage really went through the disk spool
    assert all(c.lost == 0 and c.dropped == 0 for c in result.costs), result.costs
    assert result.sent == result.received == result.published == result.ledger.consumed
    assert result.lost == 0 and result.imbalance == 0 and result.passed
