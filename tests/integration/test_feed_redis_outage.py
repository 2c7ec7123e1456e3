"""A Redis outage at the feed level: Redis goes away mid-stream, the ticks do not notice.

The feed runs as ``alphapanda feed`` wires it (``open_feed``: registry, auth, metrics
collector, control API) against the in-process simulator, the shared Kafka and
PostgreSQL (unique topic prefix and schema) and a private Redis this test stops and
starts again.
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import Callable
from datetime import datetime
from typing import Any

import httpx
import pytest
import redis.asyncio as aioredis
from pydantic import SecretStr

from alphapanda.assembly import open_feed
from alphapanda.metrics import redis_layout
from alphapanda.metrics.collector import PipelineMetricsCollector
from alphapanda.parts import FeedParts
from alphapanda.service import MarketFeedService
from alphapanda.settings import Settings
from alphapanda.testing import eventually
from tests.support.feed import assert_books_balance, feed_settings, quiesce
from tests.support.ledger import check_ledger, read_topic
from tests.support.services import SHARED_DATABASE, SHARED_KAFKA, PrivateService, free_port
from tests.support.sim import running_simulator

pytestmark = pytest.mark.slow


def collector_of(feed: FeedParts) -> PipelineMetricsCollector:
    assert feed.collector is not None
    return feed.collector


async def test_ticks_keep_flowing_while_redis_is_down(
    settings_for: Callable[..., Settings],
    private_redis: PrivateService,
    schema: str,
    unique: str,
) -> None:
    async with running_simulator(ticks_per_second=800) as sim:
        base = feed_settings(settings_for, sim)
        settings = base.model_copy(
            update={
                "redis": base.redis.model_copy(update={"url": SecretStr(private_redis.redis_url)}),
                "database": base.database.model_copy(
                    update={"url": SecretStr(SHARED_DATABASE), "schema_name": schema}
                ),
                "metrics": base.metrics.model_copy(
                    update={"namespace": f"test_{unique}", "flush_interval_ms": 200}
                ),
                "api": base.api.model_copy(update={"port": free_port()}),
            }
        )
        count_key = redis_layout.MetricsKeys(settings.metrics.namespace).key(redis_layout.COUNT)
        updated_key = redis_layout.MetricsKeys(settings.metrics.namespace).key(
            redis_layout.UPDATED_AT
        )
        store = aioredis.Redis.from_url(private_redis.redis_url, decode_responses=True)
        http = httpx.AsyncClient(base_url=f"http://127.0.0.1:{settings.api.port}", timeout=5)
        try:
            async with open_feed(settings) as feed, asyncio.TaskGroup() as tg:
                service = MarketFeedService(feed)
                runner = tg.create_task(service.run())
                collector = collector_of(feed)
                acct = feed.accounting

                async def count_in_redis() -> bool:
                    try:
                        return int(await store.get(count_key) or 0) > 0
                    except (aioredis.RedisError, OSError):
                        return False

                await eventually(count_in_redis, timeout=30, what="figures in Redis")

                async def api_answers() -> bool:
                    # The API runs in a child process, up a moment after the feed (its
                    # imports take seconds on a busy machine): up before the outage.
                    try:
                        return (await http.get("/status")).status_code == 200
                    except httpx.TransportError:
                        return False

                await eventually(api_answers, timeout=30, what="the API serving")

                # -- outage ------------------------------------------------------------
                await asyncio.to_thread(private_redis.stop)
                failures_at_stop = sum(collector.flush_failures.values())
                sent_at_stop = (await sim.stats())["total_ticks_sent"]
                published_at_stop = acct.published
                # Let the simulator send a good stretch while Redis is away ...
                stats = await sim.wait_for(
                    lambda s: s["total_ticks_sent"] >= sent_at_stop + 2000, 30, interval=0.1
                )
                sent_in_outage = stats["total_ticks_sent"] - sent_at_stop
                # ... and every one of them is published while Redis is still away.
                await eventually(
                    lambda: acct.published >= stats["total_ticks_sent"],
                    timeout=30,
                    what="the outage's ticks published",
                )
                published_in_outage = acct.published - published_at_stop
                assert published_in_outage >= sent_in_outage, (published_in_outage, sent_in_outage)
                await eventually(
                    lambda: sum(collector.flush_failures.values()) >= failures_at_stop + 3,
                    timeout=30,
                    what="failed flushes counted",
                )
                # The live API does not need Redis for the feed's own figures.
                status = (await http.get("/status")).json()
                assert status["source"] == "feed" and status["ticks_received"] > sent_at_stop
                with pytest.raises((aioredis.RedisError, OSError)):
                    await store.ping()  # really still down: the window above was an outage
                failures_in_outage = sum(collector.flush_failures.values()) - failures_at_stop

                # -- recovery ----------------------------------------------------------
                restarted_at = time.time()
                await asyncio.to_thread(private_redis.start)

                async def figures_current() -> bool:
                    try:
                        count, updated = await store.mget(count_key, updated_key)
                    except (aioredis.RedisError, OSError):
                        return False
                    return (
                        count is not None
                        and int(count) >= stats["total_ticks_sent"]
                        and _epoch(updated) > restarted_at
                    )

                await eventually(figures_current, timeout=30, what="current figures in Redis again")
                flushes_after = collector.flushes

                final = await quiesce(sim, feed)
                service.request_stop()
                await runner
        finally:
            await http.aclose()
            await store.aclose()

    assert failures_in_outage >= 3
    assert flushes_after > 0
    assert_books_balance(feed)
    assert acct.dropped_total == 0, acct.snapshot()
    records = await asyncio.to_thread(read_topic, SHARED_KAFKA, feed.topic)
    check_ledger(records).assert_complete(final["ticks_sent"])


def _epoch(iso: Any) -> float:
    return datetime.fromisoformat(str(iso)).timestamp() if iso else 0.0
