"""``bench burst`` run briefly for real: simulator in Kite cadence, the feed as its own
process, Kafka, a consumer process and the bare-producer reference."""

from __future__ import annotations

import os
import subprocess
import sys

import pytest

from alphapanda.bench.burst import run_burst, summary_lines
from tests.support.services import ROOT, SHARED_DATABASE, SHARED_KAFKA, SHARED_REDIS

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
    # Per frame: each measured frame's first and last tick (a frame is one stamp).
    assert result.feed.intervals == result.feed.ticks // 120
    assert 0 < result.feed.first_p50 <= result.feed.last_p50 <= result.feed.max
    assert result.last_tick_ratio > 0
    assert result.feed_cpu_us_per_tick > 0 and result.official_parse_ms > 0
    assert result.sent == result.consumed > 0
    assert any("zero loss" in line for line in summary_lines(result))


def test_wal_compare_runs_pairs_with_the_wal_off_and_on_and_reports_its_cost(
    unique: str,
) -> None:
    out = _short_burst_cli(unique, "--wal-compare", "1")
    # One pair, off first, both lossless; no reference; the cost per figure.
    assert out.index("WAL off") < out.index("WAL on") and out.count("-> zero loss") == 2
    assert "reference" not in out
    assert "WAL cost at Kite's cadence, 1 pair(s)" in out
    assert out.count("WAL later in") == 6 and "of 1" in out


def test_the_consumer_takes_every_record_of_a_partial_batch_from_kafka(unique: str) -> None:
    # Five records, a batch of up to 1,000: all five come back from the real broker.
    from confluent_kafka import Consumer, Producer, TopicPartition
    from confluent_kafka.admin import AdminClient, NewTopic

    from alphapanda.bench.burst_procs import take_available

    topic = f"test.{unique}.burst-consumer"
    admin = AdminClient({"bootstrap.servers": SHARED_KAFKA})
    admin.create_topics([NewTopic(topic, 1, 1)])[topic].result(30)
    try:
        producer = Producer({"bootstrap.servers": SHARED_KAFKA})
        for i in range(5):
            producer.produce(topic, b"%d" % i)
        assert producer.flush(30) == 0
        consumer = Consumer(
            {
                "bootstrap.servers": SHARED_KAFKA,
                "group.id": f"test-{unique}",
                "enable.auto.commit": False,
            }
        )
        consumer.assign([TopicPartition(topic, 0, 0)])
        taken: list[bytes] = []
        try:
            for _ in range(20):
                taken += [m.value() or b"" for m in take_available(consumer, 1000, 1.0)]
                if len(taken) >= 5:
                    break
        finally:
            consumer.close()
        assert taken == [b"0", b"1", b"2", b"3", b"4"]
    finally:
        admin.delete_topics([topic])[topic].result(30)


def test_rounds_run_the_burst_again_and_summarise_the_ratios(unique: str) -> None:
    out = _short_burst_cli(unique, "--rounds", "2")
    assert out.count("ratio feed p99 / reference p99") == 2 and out.count("-> zero loss") == 2
    assert "burst over 2 run(s), medians:" in out and "zero loss in 2 of 2" in out
    assert "p99 ratio: median" in out and "last-tick ratio: median" in out


def test_rounds_and_wal_compare_do_not_mix() -> None:
    command = [sys.executable, "-m", "alphapanda", "bench", "burst", "--rounds", "2"]
    command += ["--wal-compare", "1"]
    done = subprocess.run(command, cwd=ROOT, capture_output=True, text=True, timeout=60)
    assert done.returncode == 2 and "--rounds" in done.stderr


def _short_burst_cli(unique: str, *args: str) -> str:
    """``alphapanda bench burst ARGS`` on 60 instruments for 2 s against the shared stack;
    its output (it must exit 0)."""
    env = {
        **os.environ,
        "ALPHAPANDA_KAFKA__BOOTSTRAP_SERVERS": SHARED_KAFKA,
        "ALPHAPANDA_KAFKA__TOPIC_PREFIX": f"test.{unique}.",
        "ALPHAPANDA_REDIS__URL": SHARED_REDIS,
        "ALPHAPANDA_DATABASE__URL": SHARED_DATABASE,
    }
    command = [sys.executable, "-m", "alphapanda", "bench", "burst", *args]
    command += ["--instruments", "60", "--seconds", "2", "--frame-interval", "0.5"]
    done = subprocess.run(command, env=env, cwd=ROOT, capture_output=True, text=True, timeout=300)
    assert done.returncode == 0, done.stdout + done.stderr
    return done.stdout
