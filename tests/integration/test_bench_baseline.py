"""The benchmark's comparison points, run briefly against the real shared Kafka and Redis.

These check that the numbers are real and consistent (every ack is a record on the
broker, acked ≤ sent, Redis saw two calls per tick), not how fast anything is.
"""

from __future__ import annotations

import asyncio
import json
from collections.abc import AsyncIterator, Callable

import pytest
import redis.asyncio as aioredis
from confluent_kafka import Consumer, TopicPartition
from confluent_kafka.admin import AdminClient

from alphapanda.bench.baseline import BaselineError, run_baseline
from alphapanda.bench.ceiling import run_ceiling, run_paced, sample_records
from alphapanda.instruments import load_instrument_dump
from alphapanda.pipeline.topics_admin import ensure_topic
from alphapanda.pipeline.wire import WireDecoder
from alphapanda.settings import KafkaSettings, Settings
from alphapanda.sim.config import SimConfig
from alphapanda.sim.server import Simulator
from alphapanda.topics import TopicNames
from tests.support.services import ROOT, SHARED_KAFKA, SHARED_REDIS

# Measures speed or timing: runs alone, after the parallel part of the suite.
pytestmark = pytest.mark.serial

INSTRUMENTS = ROOT / "data" / "instruments.csv"


def _records_on(topic: str) -> int:
    """How many records the broker holds for ``topic`` (sum of high watermarks)."""
    consumer = Consumer({"bootstrap.servers": SHARED_KAFKA, "group.id": f"wm-{topic}"})
    try:
        metadata = consumer.list_topics(topic, timeout=10)
        total = 0
        for partition in metadata.topics[topic].partitions:
            low, high = consumer.get_watermark_offsets(TopicPartition(topic, partition), timeout=10)
            total += high - low
        return total
    finally:
        consumer.close()


@pytest.fixture
async def topic(settings_for: Callable[..., Settings]) -> AsyncIterator[tuple[Settings, str]]:
    settings = settings_for(kafka={"topic_partitions": 3})
    name = TopicNames.market_ticks(settings.kafka.topic_prefix)
    assert await ensure_topic(settings.kafka, name)
    yield settings, name
    admin = AdminClient({"bootstrap.servers": SHARED_KAFKA})
    for future in admin.delete_topics([name], operation_timeout=10).values():
        await asyncio.wrap_future(future)


@pytest.fixture
def missing_topic(settings_for: Callable[..., Settings]) -> tuple[KafkaSettings, str]:
    """Kafka settings that give up on a record after 2 s, and a topic that does not
    exist (auto-creation is off): every record fails."""
    kafka = settings_for().kafka
    quick = kafka.model_copy(update={"message_timeout_ms": 2000})
    return quick, f"{kafka.topic_prefix}does.not.exist"


def test_sample_records_are_real_feed_records() -> None:
    records = sample_records(instruments=50)
    assert len({key for key, _, _ in records}) == 50
    decoder = WireDecoder()
    for key, value, headers in records:
        event = decoder.decode(value)
        assert event.data.mode == "full"
        assert event.data.depth is not None
        assert key == str(event.data.instrument_token).encode()
        assert dict(headers)["content-type"] == b"application/json"
        assert 900 < len(value) < 1400  # the size of a full tick on the wire


async def test_ceiling_acks_exactly_what_it_sent_and_the_broker_holds_it(
    topic: tuple[Settings, str],
) -> None:
    settings, name = topic
    result = await asyncio.to_thread(
        run_ceiling, settings.kafka, name, duration_s=60.0, max_messages=20_000
    )
    assert result.first_error is None
    assert result.sent == 20_000
    assert result.acked == result.sent
    assert result.failed == 0
    assert result.elapsed_s > 0
    assert result.messages_per_s == pytest.approx(result.acked / result.elapsed_s)
    assert result.bytes_per_s == pytest.approx(
        result.messages_per_s * result.message_bytes, rel=0.05
    )
    assert _records_on(name) == 20_000


async def test_ceiling_runs_for_its_duration_and_reports_a_rate(
    topic: tuple[Settings, str],
) -> None:
    settings, name = topic
    result = await asyncio.to_thread(run_ceiling, settings.kafka, name, duration_s=1.0)
    assert result.first_error is None
    assert 0 < result.acked == result.sent
    assert result.elapsed_s >= 1.0
    assert result.messages_per_s > 0
    assert _records_on(name) == result.acked


async def test_ceiling_reports_failures_instead_of_hiding_them(
    missing_topic: tuple[KafkaSettings, str],
) -> None:
    quick, missing = missing_topic
    result = await asyncio.to_thread(
        run_ceiling, quick, missing, duration_s=30.0, max_messages=100, flush_timeout_s=15.0
    )
    assert result.sent == 100
    assert result.acked == 0
    assert result.failed == 100
    assert result.first_error is not None


async def test_the_paced_producer_sends_its_rate_in_frames_and_times_every_record(
    topic: tuple[Settings, str],
) -> None:
    settings, name = topic
    result = await asyncio.to_thread(
        run_paced, settings.kafka, name, rate=2_000, duration_s=1.0, frame_interval_s=0.05
    )
    assert result.first_error is None and result.failed == 0
    assert result.sent == 2_000  # 20 frames of 100
    assert result.acked == result.sent == _records_on(name) - result.warmup
    assert 0 < result.p50_ms <= result.p99_ms


async def test_the_paced_producer_reports_failures_instead_of_timing_them(
    missing_topic: tuple[KafkaSettings, str],
) -> None:
    quick, missing = missing_topic
    result = await asyncio.to_thread(
        run_paced, quick, missing, rate=100, duration_s=0.5, flush_timeout_s=15.0
    )
    assert result.sent == 50
    assert result.acked == 0 and result.failed == 50
    assert result.p50_ms == result.p99_ms == 0.0
    assert result.first_error is not None


@pytest.fixture
async def simulator() -> AsyncIterator[Simulator]:
    """The Kite exchange simulator on free ports, in this test's event loop."""
    config = SimConfig(
        port=0, admin_port=0, instruments=INSTRUMENTS, ticks_per_second=1000.0, seed=7
    )
    sim = Simulator.from_config(config)
    async with asyncio.TaskGroup() as tasks:
        tasks.create_task(sim.run())
        await sim.ready.wait()
        try:
            yield sim
        finally:
            sim.stop()


def _tokens(count: int) -> list[int]:
    instruments, _ = load_instrument_dump(INSTRUMENTS)
    return [i.instrument_token for i in instruments][:count]


@pytest.mark.slow
async def test_baseline_runs_the_original_design_against_the_simulator(
    simulator: Simulator, topic: tuple[Settings, str], unique: str
) -> None:
    _, name = topic
    prefix = f"test:{unique}:pipeline:market_ticks:market"
    config = simulator.config
    result = await run_baseline(
        ws_url=simulator.ws_url,
        api_key=config.api_key,
        access_token=config.access_token.get_secret_value(),
        tokens=_tokens(100),
        bootstrap_servers=SHARED_KAFKA,
        topic=name,
        redis_url=SHARED_REDIS,
        redis_prefix=prefix,
        mode="full",
        duration_s=2.0,
        drain_timeout_s=30.0,  # far more than 2 s of ticks need, even on a busy machine
    )
    redis = aioredis.from_url(SHARED_REDIS)
    try:
        count = int(await redis.get(f"{prefix}:count") or 0)
        last_activity = await redis.get(f"{prefix}:last_activity")
        await redis.delete(f"{prefix}:count", f"{prefix}:last_activity")
    finally:
        await redis.aclose()

    print(result)  # shown with -s: the numbers of a short run
    assert result.first_error is None
    assert result.connected
    assert result.received > 0
    assert result.submitted == result.received
    assert result.failed == 0
    assert result.acked + result.failed + result.unfinished == result.submitted
    # Everything submitted was finished by the end of the drain.
    assert result.unfinished == 0
    assert result.acked == result.submitted
    assert 0 <= result.pending_at_stop <= result.submitted
    assert result.redis_calls == 2 * result.acked
    assert result.elapsed_s > 0
    assert result.ticks_per_s == pytest.approx(result.acked / result.elapsed_s)
    assert 0 < result.latency_p50_ms <= result.latency_p99_ms
    # The numbers are real: each ack is a record on the broker and a Redis INCR.
    assert _records_on(name) == result.acked
    assert count == result.acked
    assert last_activity is not None
    # And the records are the official client's tick dicts, JSON-encoded per tick.
    consumer = Consumer(
        {
            "bootstrap.servers": SHARED_KAFKA,
            "group.id": f"read-{name}",
            "auto.offset.reset": "earliest",
        }
    )
    try:
        consumer.subscribe([name])
        message = None
        for _ in range(30):
            message = await asyncio.to_thread(consumer.poll, 1.0)
            if message is not None and message.error() is None:
                break
        assert message is not None
        tick = json.loads(message.value())
        assert message.key() == str(tick["instrument_token"]).encode()
        assert tick["mode"] == "full"
        assert "ohlc" in tick  # (indices carry no depth)
    finally:
        consumer.close()


async def test_baseline_with_a_bad_token_reports_no_connection(
    simulator: Simulator, topic: tuple[Settings, str], unique: str
) -> None:
    _, name = topic
    result = await run_baseline(
        ws_url=simulator.ws_url,
        api_key=simulator.config.api_key,
        access_token="not-the-token",
        tokens=_tokens(5),
        bootstrap_servers=SHARED_KAFKA,
        topic=name,
        redis_url=SHARED_REDIS,
        redis_prefix=f"test:{unique}:baseline",
        duration_s=1.0,
        connect_timeout_s=3.0,
    )
    assert not result.connected
    assert result.received == result.acked == 0
    assert result.ticks_per_s == 0.0


async def test_baseline_child_failure_is_an_error_not_a_zero() -> None:
    with pytest.raises(BaselineError, match="exited"):
        await run_baseline(
            ws_url="ws://127.0.0.1:1",
            api_key="k",
            access_token="t",
            tokens=[1],
            bootstrap_servers="127.0.0.1:1",  # nothing listens: the producer cannot start
            topic="x",
            redis_url=SHARED_REDIS,
            duration_s=0.5,
            connect_timeout_s=1.0,
        )
