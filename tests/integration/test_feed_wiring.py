"""The feed as ``alphapanda feed`` wires it (``open_feed``): registry, auth, metrics, API.

Real simulator (in-process), the shared Kafka (unique topic prefix), the shared Redis
(unique metrics namespace) and the shared PostgreSQL (a unique schema per test).
"""

from __future__ import annotations

import asyncio
import json
import os
import subprocess
import sys
import time
from collections.abc import Awaitable, Callable
from typing import Any

import pytest
import redis.asyncio as aioredis
from pydantic import SecretStr

from alphapanda.assembly import open_feed
from alphapanda.instruments.sources import RegistryInstruments
from alphapanda.metrics import redis_layout
from alphapanda.parts import FeedParts
from alphapanda.service import MarketFeedService
from alphapanda.settings import Settings
from alphapanda.testing import eventually
from tests.support.feed import feed_settings
from tests.support.services import SHARED_DATABASE, SHARED_REDIS, PrivateService
from tests.support.sim import INSTRUMENTS_CSV, ROOT, SimHandle, running_simulator

ALPHAPANDA = [sys.executable, "-m", "alphapanda"]


def wired_settings(
    settings_for: Callable[..., Settings], sim: SimHandle, schema: str, unique: str, **feed: Any
) -> Settings:
    base = feed_settings(settings_for, sim, **feed)
    return base.model_copy(
        update={
            "database": base.database.model_copy(
                update={"url": SecretStr(SHARED_DATABASE), "schema_name": schema}
            ),
            "metrics": base.metrics.model_copy(
                update={"namespace": f"test_{unique}", "flush_interval_ms": 200}
            ),
        }
    )


def run_cli(
    schema: str, *args: str, database: str = SHARED_DATABASE
) -> subprocess.CompletedProcess[str]:
    """The real ``alphapanda`` CLI against the test's schema."""
    env = {k: v for k, v in os.environ.items() if not k.startswith("ALPHAPANDA_")}
    env.update(
        ALPHAPANDA_DATABASE__URL=database,
        ALPHAPANDA_DATABASE__SCHEMA_NAME=schema,
        COLUMNS="200",
    )
    return subprocess.run(
        [*ALPHAPANDA, "--env-file", "/nonexistent", *args],
        cwd=ROOT,
        env=env,
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
    )


async def cli(schema: str, *args: str, database: str = SHARED_DATABASE) -> str:
    result = await asyncio.to_thread(run_cli, schema, *args, database=database)
    assert result.returncode == 0, result.stderr[-2000:]
    return result.stdout


async def wait_async(
    check: Callable[[], Awaitable[bool]], within: float = 20.0, what: str = "condition"
) -> None:
    deadline = time.monotonic() + within
    while not await check():
        if time.monotonic() > deadline:
            raise AssertionError(f"timed out waiting for {what}")
        await asyncio.sleep(0.05)


def counter(feed: FeedParts, name: str, **labels: str) -> float:
    wanted = set(labels.items())
    return sum(
        s.value
        for source in feed.sources
        for s in source.samples()
        if s.name == name and wanted <= set(s.labels)
    )


async def test_every_redis_key_fills_from_the_real_feed(
    settings_for: Callable[..., Settings], schema: str, unique: str
) -> None:
    async with running_simulator(ticks_per_second=400, max_connections=3) as sim:
        # A one-tick drop_oldest buffer: every multi-tick frame overflows it, so the
        # drops key has something to show (the ledger is not the point here).
        settings = wired_settings(
            settings_for, sim, schema, unique, buffer_policy="drop_oldest", buffer_capacity=1
        )
        metrics_keys = redis_layout.MetricsKeys(settings.metrics.namespace)
        store = aioredis.Redis.from_url(SHARED_REDIS, decode_responses=True)
        try:
            async with open_feed(settings, api=False) as feed, asyncio.TaskGroup() as tg:
                service = MarketFeedService(feed)
                runner = tg.create_task(service.run())
                await eventually(feed.client.is_streaming, timeout=20, what="streaming")
                # Fresh schema: the registry is reachable but unconfigured -> the CSV.
                assert isinstance(feed.instruments, RegistryInstruments)
                assert feed.instruments.source == "csv-unconfigured"
                assert len(feed.client.subscriptions()) == 724
                # Faults: a socket drop (-> reconnects), a malformed frame (-> malformed).
                await sim.fault_drop()
                await eventually(
                    lambda: (
                        counter(feed, "kite_reconnect_attempts_total", reason="connect_ok") >= 2
                    ),
                    timeout=20,
                    what="reconnect after the drop",
                )
                await eventually(feed.client.is_streaming, timeout=20, what="streaming again")
                await sim.fault_malformed()
                await eventually(
                    lambda: counter(feed, "kite_skipped_packets_total") >= 1,
                    timeout=20,
                    what="the malformed frame counted",
                )

                found: list[str] = []

                async def all_keys_plausible() -> bool:
                    found[:] = problems(await read_all(store, metrics_keys))
                    return not found

                try:
                    await wait_async(all_keys_plausible, 20, "every documented key filled")
                except AssertionError as exc:
                    raise AssertionError(f"{exc}; problems: {found}") from None
                values = await read_all(store, metrics_keys)
                service.request_stop()
                await runner
        finally:
            await store.delete(*metrics_keys.all_keys())
            await store.aclose()

    assert not problems(values)
    snapshot = json.loads(str(values[redis_layout.SNAPSHOT]))
    names = {s["name"] for s in snapshot["samples"]}
    # The auth and registry figures ride along with the pipeline's.
    assert {"auth_token_lookups_total", "registry_source", "last_tick_timestamp_seconds"} <= names


def problems(values: dict[str, str | dict[str, str]]) -> list[str]:
    """What is missing or implausible in the Redis figures (empty: all good)."""
    found = [f"{suffix} empty" for suffix, value in values.items() if not value]
    if found:
        return found

    def total(suffix: str) -> int:
        value = values[suffix]
        assert isinstance(value, dict)
        return sum(int(v) for v in value.values())

    reconnects = values[redis_layout.RECONNECTS]
    connections = values[redis_layout.CONNECTIONS]
    assert isinstance(reconnects, dict) and isinstance(connections, dict)
    checks = {
        "count > 0": int(str(values[redis_layout.COUNT])) > 0,
        "sends:ok > 0": int(str(values[redis_layout.SENDS_OK])) > 0,
        "sends:failed == 0": int(str(values[redis_layout.SENDS_FAILED])) == 0,
        "last tick recent": float(str(values[redis_layout.LAST_TICK_AGE])) < 5.0,
        "last_activity a timestamp": str(values[redis_layout.LAST_ACTIVITY]).startswith("20"),
        "p99 >= p50 > 0": float(str(values[redis_layout.LATENCY_P99]))
        >= float(str(values[redis_layout.LATENCY_P50]))
        > 0,
        "a reconnect after the drop": int(reconnects.get("connect_ok", 0)) >= 2,
        "malformed counted": total(redis_layout.MALFORMED) >= 1,
        "drop_oldest counted": total(redis_layout.DROPS) >= 1,
        # 724 instruments at 3000 per connection: one shard in use, one entry.
        "one connection entry, connected": list(connections) == ["0"]
        and json.loads(connections["0"]).get("state") == "connected",
        "spool empty": int(str(values[redis_layout.SPOOL_MESSAGES])) == 0,
    }
    return [name for name, ok in checks.items() if not ok]


async def read_all(
    store: aioredis.Redis, metrics_keys: redis_layout.MetricsKeys
) -> dict[str, str | dict[str, str]]:
    values: dict[str, str | dict[str, str]] = {}
    for suffix in redis_layout.ALL_SUFFIXES:
        key = metrics_keys.key(suffix)
        if suffix in redis_layout.HASH_SUFFIXES:
            values[suffix] = await store.hgetall(key)
        else:
            values[suffix] = await store.get(key) or ""
    return values


async def test_registry_changes_reach_the_running_feed_without_reconnecting(
    settings_for: Callable[..., Settings], schema: str, unique: str
) -> None:
    async with running_simulator(ticks_per_second=200) as sim:
        settings = wired_settings(settings_for, sim, schema, unique)
        async with (
            open_feed(settings, api=False, metrics=False) as feed,
            asyncio.TaskGroup() as tg,
        ):
            service = MarketFeedService(feed)
            runner = tg.create_task(service.run())
            await eventually(feed.client.is_streaming, timeout=20, what="streaming")
            stats = await sim.wait_for(lambda s: s["subscriptions"], 10)
            handshakes = stats["handshakes"]["accepted"]
            assert len(next(iter(stats["subscriptions"].values()))) == 724

            # The registry learns the instruments, then two of them are marked for streaming.
            await cli(schema, "instruments", "load", str(INSTRUMENTS_CSV))
            await cli(schema, "instruments", "stream", "514049", "514305", "--mode", "ltp")

            def table_is(expected: dict[str, str]) -> Callable[[dict[str, Any]], bool]:
                return lambda s: list(s["subscriptions"].values()) == [expected]

            stats = await sim.wait_for(
                table_is({"514049": "ltp", "514305": "ltp"}), 15, interval=0.1
            )
            assert stats["handshakes"]["accepted"] == handshakes
            assert feed.instruments.source == "database"  # type: ignore[attr-defined]

            await cli(schema, "instruments", "unstream", "514305")
            stats = await sim.wait_for(table_is({"514049": "ltp"}), 15, interval=0.1)
            assert stats["handshakes"]["accepted"] == handshakes
            assert feed.client.subscriptions() == {514049: "ltp"}
            assert counter(feed, "registry_changes_applied_total") == 2
            service.request_stop()
            await runner


async def test_postgres_down_at_start_streams_the_csv_then_follows_the_registry(
    settings_for: Callable[..., Settings],
    private_postgres: PrivateService,
    caplog: pytest.LogCaptureFixture,
) -> None:
    await asyncio.to_thread(private_postgres.stop)
    async with running_simulator(ticks_per_second=200) as sim:
        base = feed_settings(settings_for, sim)
        settings = base.model_copy(
            update={
                "database": base.database.model_copy(
                    update={"url": SecretStr(private_postgres.database_url)}
                )
            }
        )
        async with (
            open_feed(settings, api=False, metrics=False) as feed,
            asyncio.TaskGroup() as tg,
        ):
            service = MarketFeedService(feed)
            runner = tg.create_task(service.run())
            # No database: the CSV (said at ERROR) and the configured token stream.
            await eventually(
                feed.client.is_streaming, timeout=30, what="streaming without PostgreSQL"
            )
            assert feed.instruments.source == "csv"  # type: ignore[attr-defined]
            assert len(feed.client.subscriptions()) == 724
            assert any(
                r.levelname == "ERROR" and "fallback CSV" in r.getMessage() for r in caplog.records
            )
            handshakes = (await sim.stats())["handshakes"]["accepted"]

            # PostgreSQL comes up and gets configured: the feed follows, no reconnect.
            await asyncio.to_thread(private_postgres.start)
            db = private_postgres.database_url
            await cli("public", "instruments", "load", str(INSTRUMENTS_CSV), database=db)
            await cli("public", "instruments", "stream", "514561", "--mode", "quote", database=db)
            stats = await sim.wait_for(
                lambda s: list(s["subscriptions"].values()) == [{"514561": "quote"}],
                30,
                interval=0.1,
            )
            assert stats["handshakes"]["accepted"] == handshakes
            assert feed.instruments.source == "database"  # type: ignore[attr-defined]
            service.request_stop()
            await runner
