"""PipelineMetricsCollector against a real Redis: the key layout, TTLs, and outages."""

from __future__ import annotations

import asyncio
import time
from collections.abc import AsyncIterator, Callable, Iterable
from dataclasses import dataclass, field

import msgspec
import pytest
import redis.asyncio as aioredis

from alphapanda.metrics import keys as k
from alphapanda.metrics.collector import PipelineMetricsCollector
from alphapanda.metrics.reader import MetricsReader
from alphapanda.metrics.samples import Sample
from alphapanda.settings import Settings
from alphapanda.testing import eventually
from tests.support.services import SHARED_REDIS, PrivateService

TTL = 120


@dataclass
class FeedSource:
    """A stand-in for the tick path: plain ints bumped in the event loop."""

    received: int = 0
    sent_ok: int = 0
    last_tick_at: float = 0.0
    drops: dict[str, int] = field(default_factory=lambda: {"conflated": 2})
    # Which flush attempt the tick loop saw on each iteration (to prove interleaving).
    seen_flushes: set[int] = field(default_factory=set)

    def tick(self) -> None:
        self.received += 1
        self.sent_ok += 1
        self.last_tick_at = time.time()

    def samples(self) -> Iterable[Sample]:
        yield Sample(k.TICKS_RECEIVED, "counter", self.received)
        yield Sample(k.SENDS_OK_SAMPLE, "counter", self.sent_ok)
        yield Sample(k.SENDS_FAILED_SAMPLE, "counter", 0)
        yield Sample(k.LAST_TICK_TIMESTAMP, "gauge", self.last_tick_at)
        for quantile, value in (("0.5", 0.002), ("0.9", 0.004), ("0.99", 0.009), ("1", 0.02)):
            yield Sample(k.SEND_LATENCY, "gauge", value, (("quantile", quantile),))
        for reason, count in self.drops.items():
            yield Sample(k.DROPS_SAMPLE, "counter", count, (("reason", reason),))
        yield Sample(k.RECONNECTS_SAMPLE, "counter", 1, (("shard", "0"), ("reason", "refused")))
        yield Sample(
            k.PACKETS_SKIPPED_SAMPLE, "counter", 4, (("shard", "0"), ("reason", "truncated"))
        )
        yield Sample(k.CONNECTION_STATE, "gauge", 1, (("shard", "0"), ("state", "connected")))
        yield Sample(k.BUFFER_DEPTH_SAMPLE, "gauge", 17)
        yield Sample(k.SPOOL_BYTES_SAMPLE, "gauge", 4096)
        yield Sample(k.SPOOL_MESSAGES_SAMPLE, "gauge", 8)


@pytest.fixture
async def shared_redis(unique: str) -> AsyncIterator[aioredis.Redis]:
    client = aioredis.Redis.from_url(SHARED_REDIS)
    try:
        yield client
    finally:
        # Leave nothing behind in the shared Redis.
        stale = [
            key async for key in client.scan_iter(match=f"pipeline:market_ticks:test{unique}:*")
        ]
        if stale:
            await client.delete(*stale)
        await client.aclose()


async def test_flush_writes_the_documented_keys_with_ttls(
    settings_for: Callable[..., Settings], unique: str, shared_redis: aioredis.Redis
) -> None:
    namespace = f"test{unique}"
    settings = settings_for(metrics={"namespace": namespace, "key_ttl_seconds": TTL})
    feed = FeedSource()
    for _ in range(25):
        feed.tick()
    collector = PipelineMetricsCollector(settings, [feed])
    try:
        assert await collector.flush()
        feed.tick()
        assert await collector.flush()
    finally:
        await collector.aclose()

    keys = k.MetricsKeys(namespace)
    assert keys.prefix == f"pipeline:market_ticks:{namespace}:"
    for key in keys.all_keys():
        assert await shared_redis.exists(key), key
        assert 0 < await shared_redis.ttl(key) <= TTL, key
    for suffix in k.HASH_SUFFIXES:
        assert await shared_redis.type(keys.key(suffix)) == b"hash", suffix

    reader = MetricsReader(shared_redis, namespace)
    assert await reader.value(k.COUNT) == "26"
    assert await reader.value(k.SENDS_OK) == "26"
    assert await reader.value(k.SENDS_FAILED) == "0"
    assert await reader.value(k.LATENCY_P99) == "0.009"
    assert await reader.value(k.LATENCY_MAX) == "0.02"
    assert await reader.value(k.BUFFER_DEPTH) == "17"
    assert await reader.value(k.SPOOL_BYTES) == "4096"
    assert await reader.value(k.SPOOL_MESSAGES) == "8"
    assert float(await reader.value(k.TICKS_PER_SECOND) or "nan") > 0
    assert float(await reader.value(k.LAST_TICK_AGE) or "nan") >= 0
    assert (await reader.value(k.LAST_ACTIVITY) or "").endswith("+00:00")
    assert await reader.hash(k.DROPS) == {"conflated": "2"}
    assert await reader.hash(k.RECONNECTS) == {"refused": "1"}
    assert await reader.hash(k.MALFORMED) == {"truncated": "4"}
    connections = await reader.hash(k.CONNECTIONS)
    assert msgspec.json.decode(connections["0"])["state"] == "connected"

    snapshot = await reader.snapshot()
    assert snapshot is not None
    assert snapshot[k.COUNT] == 26
    assert snapshot["namespace"] == namespace
    health = await reader.health(time.time())
    assert health.status == "ok", health.reasons
    assert health.ticks_total == 26
    assert {s.name for s in await reader.samples()} >= {k.TICKS_RECEIVED, k.DROPS_SAMPLE}


async def test_a_vanished_reason_or_shard_does_not_linger(
    settings_for: Callable[..., Settings], unique: str, shared_redis: aioredis.Redis
) -> None:
    namespace = f"test{unique}"
    feed = FeedSource(drops={"conflated": 1, "drop_oldest": 1})
    collector = PipelineMetricsCollector(settings_for(metrics={"namespace": namespace}), [feed])
    reader = MetricsReader(shared_redis, namespace)
    try:
        assert await collector.flush()
        assert set(await reader.hash(k.DROPS)) == {"conflated", "drop_oldest"}
        feed.drops = {}
        assert await collector.flush()
        assert await reader.hash(k.DROPS) == {}
    finally:
        await collector.aclose()


async def test_run_flushes_periodically_until_stopped(
    settings_for: Callable[..., Settings], unique: str, shared_redis: aioredis.Redis
) -> None:
    namespace = f"test{unique}"
    settings = settings_for(metrics={"namespace": namespace, "flush_interval_ms": 50})
    feed = FeedSource()
    collector = PipelineMetricsCollector(settings, [feed])
    reader = MetricsReader(shared_redis, namespace)
    counts: list[int] = []

    async def watch() -> None:
        while len(counts) < 3:
            feed.tick()
            snapshot = await reader.snapshot()
            if snapshot is not None and snapshot[k.COUNT] not in counts:
                counts.append(snapshot[k.COUNT])
            await asyncio.sleep(0.01)
        collector.stop()

    async with asyncio.timeout(30), asyncio.TaskGroup() as tasks:
        tasks.create_task(collector.run())
        tasks.create_task(watch())
    # Three distinct, growing counts seen in Redis; the final flush on stop wrote the last.
    assert counts == sorted(counts)
    snapshot = await reader.snapshot()
    assert snapshot is not None
    assert snapshot[k.COUNT] == feed.received
    assert collector.flush_failures == {"timeout": 0, "error": 0}


async def test_redis_outages_never_block_the_tick_path_and_flushing_recovers(
    settings_for: Callable[..., Settings], private_redis: PrivateService
) -> None:
    settings = settings_for(
        redis={"url": private_redis.redis_url}, metrics={"flush_interval_ms": 100}
    )
    feed = FeedSource()
    collector = PipelineMetricsCollector(settings, [feed])
    reader_client = aioredis.Redis.from_url(private_redis.redis_url, socket_timeout=2)
    reader = MetricsReader(reader_client, settings.metrics.namespace)
    running = True

    async def tick_path() -> None:
        # The hot loop shares the event loop with the collector, as in the feed.
        while running:
            feed.tick()
            feed.seen_flushes.add(collector.flushes)
            await asyncio.sleep(0.001)

    async def stored_count() -> int:
        try:
            snapshot = await reader.snapshot()
        except (aioredis.ConnectionError, aioredis.TimeoutError):
            return -1
        return -1 if snapshot is None else int(snapshot[k.COUNT])

    async def wait_for_flush_beyond(count: int, what: str) -> None:
        async def beyond() -> bool:
            return await stored_count() > count

        await eventually(beyond, timeout=30, interval=0.05, what=what)

    async def outage(begin: Callable[[], None], end: Callable[[], None], reason: str) -> None:
        before_failures = collector.flush_failures[reason]
        flushes_at_start, ticks_at_start = collector.flushes, feed.received
        feed.seen_flushes.clear()
        await asyncio.to_thread(begin)
        await eventually(
            lambda: collector.flush_failures[reason] >= before_failures + 3,
            timeout=20,
            what=f"three {reason} failures",
        )
        flushes_at_end = collector.flushes
        # The tick loop ran between every pair of flush attempts during the outage, so
        # no flush held the event loop, and the ticks kept counting.
        assert set(range(flushes_at_start, flushes_at_end + 1)) <= feed.seen_flushes
        assert feed.received > ticks_at_start
        await asyncio.to_thread(end)
        await wait_for_flush_beyond(feed.received, f"flushing to resume after {reason}")

    async def scenario() -> None:
        nonlocal running
        try:
            await wait_for_flush_beyond(0, "the first flush")
            # Stopped: connections are refused at once.
            await outage(private_redis.stop, private_redis.start, "error")
            # Frozen: the socket accepts nothing and only our deadline ends the write.
            await outage(private_redis.pause, private_redis.resume, "timeout")
        finally:
            running = False
            collector.stop()

    try:
        async with asyncio.timeout(120), asyncio.TaskGroup() as tasks:
            tasks.create_task(collector.run())
            tasks.create_task(tick_path())
            tasks.create_task(scenario())
        snapshot = await reader.snapshot()
    finally:
        await reader_client.aclose()
    assert snapshot is not None
    # The flush after recovery reports the failures it lived through.
    assert snapshot["flush"]["failures"]["error"] >= 3
    assert snapshot["flush"]["failures"]["timeout"] >= 3
    assert snapshot[k.COUNT] == feed.received
