"""The control API served by the running feed: simulator → MarketFeedService → Kafka,
metrics in Redis, the API in the feed's own TaskGroup.

``running_feed`` is also used by the status-page, status-CLI and schemathesis tests.
"""

from __future__ import annotations

import asyncio
import socket
import time
from collections.abc import AsyncIterator, Awaitable, Callable
from contextlib import AbstractAsyncContextManager, AsyncExitStack, asynccontextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import httpx
import pytest
from pydantic import SecretStr

from alphapanda.api.control import ServiceControl
from alphapanda.api.server import ApiServer, ApiStartupError, serve_api
from alphapanda.db.engine import Database
from alphapanda.metrics.collector import PipelineMetricsCollector
from alphapanda.metrics.keys import SNAPSHOT, MetricsKeys
from alphapanda.registry.service import InstrumentRegistryService
from alphapanda.service import InstrumentSource, MarketFeedService
from alphapanda.settings import Settings
from tests.support.services import SHARED_DATABASE, free_port
from tests.support.sim import INSTRUMENTS_CSV, SimHandle, default_instruments, running_simulator
from tests.support.ticker import sim_subscriptions

API_KEY = "test-api-key-0123456789"
SettingsFor = Callable[..., Settings]


@dataclass
class RunningFeed:
    """A feed with its API up: ``http`` talks to the API, ``sim`` drives the exchange."""

    settings: Settings
    service: MarketFeedService
    sim: SimHandle
    http: httpx.AsyncClient
    base_url: str

    @property
    def key_header(self) -> dict[str, str]:
        return {"X-API-Key": self.settings.api.api_key.get_secret_value()}


async def poll(
    check: Callable[[], Awaitable[Any]], within: float = 20.0, interval: float = 0.1
) -> Any:
    """Await ``check()`` until it returns something truthy; fail after ``within`` s."""
    deadline = time.monotonic() + within
    last: Any = None
    while True:
        try:
            last = await check()
        except (httpx.TransportError, AssertionError) as exc:
            last = exc
        else:
            if last:
                return last
        if time.monotonic() > deadline:
            raise AssertionError(f"condition not reached within {within}s; last: {last!r}")
        await asyncio.sleep(interval)


def feed_settings(
    settings_for: SettingsFor,
    unique: str,
    sim: SimHandle,
    *,
    connections: int = 2,
    per_connection: int = 50,
    **groups: dict[str, Any],
) -> Settings:
    """Settings for a feed on ``sim``: ``connections x per_connection`` instruments from
    the shipped dump, a unique metrics namespace and rate-limit prefix, a free API port."""
    base: dict[str, dict[str, Any]] = {
        "kite": {
            "ws_url": sim.ws_url,
            "api_key": sim.api_key,
            "access_token": SecretStr(sim.access_token),
            "max_connections": connections,
            "max_instruments_per_connection": per_connection,
            "reconnect_base_delay": 0.05,
            "reconnect_max_delay": 0.5,
            "auth_retry_delay": 0.5,
            "auth_poll_interval": 0.2,
            "liveness_timeout": 3.0,
        },
        "feed": {"instruments_csv": INSTRUMENTS_CSV, "mode": "quote", "shutdown_deadline": 3.0},
        "api": {
            "port": free_port(),
            "api_key": SecretStr(API_KEY),
            "rate_limit_key_prefix": f"test:{unique}:ratelimit",
            "rate_limit": "100000/minute",
            "rate_limit_mutating": "100000/minute",
        },
        "metrics": {"namespace": f"test_{unique}", "flush_interval_ms": 200},
    }
    for group, values in groups.items():
        base.setdefault(group, {}).update(values)
    return settings_for(**base)


@asynccontextmanager
async def running_feed(
    settings_for: SettingsFor,
    unique: str,
    *,
    sim_options: dict[str, Any] | None = None,
    instruments: Callable[[Settings], AbstractAsyncContextManager[InstrumentSource]] | None = None,
    **settings_options: Any,
) -> AsyncIterator[RunningFeed]:
    """Simulator + MarketFeedService (+ metrics collector + API) in this event loop,
    until the API answers and the feed is ready. ``instruments`` builds the feed's
    instrument source from its settings (default: the shipped dump)."""
    options = {"ticks_per_second": 300, "heartbeat_interval": 0.5, **(sim_options or {})}
    async with AsyncExitStack() as stack:
        sim = await stack.enter_async_context(running_simulator(**options))
        settings = feed_settings(settings_for, unique, sim, **settings_options)
        source = None
        if instruments is not None:
            source = await stack.enter_async_context(instruments(settings))
        service = MarketFeedService(settings, instruments=source)
        control = ServiceControl(service)
        service.attach(PipelineMetricsCollector(settings, control.metrics_sources()))
        service.attach(ApiServer(settings, control))
        base_url = f"http://127.0.0.1:{settings.api.port}"
        async with asyncio.TaskGroup() as tg:
            tg.create_task(service.run())
            try:
                async with httpx.AsyncClient(base_url=base_url, timeout=10) as http:
                    feed = RunningFeed(settings, service, sim, http, base_url)

                    async def is_ready() -> bool:
                        # /health is not rate limited; readiness asked of the service
                        # directly, so tests with tiny limits start with a full bucket.
                        up = (await http.get("/health")).status_code == 200
                        return up and service.is_ready()

                    await poll(is_ready)
                    yield feed
            finally:
                service.request_stop()


async def test_health_ready_status_and_metrics_reflect_the_live_feed(
    settings_for: SettingsFor, unique: str
) -> None:
    async with running_feed(settings_for, unique) as feed:
        http = feed.http
        health = await http.get("/health")
        assert health.status_code == 200
        assert health.json() == {"status": "ok", "role": "feed"}
        ready = await http.get("/ready")
        assert ready.json() == {"ready": True, "reasons": []}

        async def streaming_status() -> dict[str, Any] | None:
            body = (await http.get("/status")).json()
            ok = (body["ticks_received"] or 0) > 0 and body["ticks_per_second"]
            return body if ok and (body["sends_ok"] or 0) > 0 else None

        status = await poll(streaming_status)
        assert status["source"] == "feed" and status["ready"] is True
        assert [(c["shard"], c["state"], c["instruments"]) for c in status["connections"]] == [
            ("0", "connected", 50),
            ("1", "connected", 50),
        ]
        assert status["subscriptions"] == {"quote": 100}
        assert status["buffer"]["capacity"] == feed.settings.feed.buffer_capacity
        assert status["buffer"]["policy"] == feed.settings.feed.buffer_policy
        assert status["send_latency_seconds"]["p99"] is not None

        metrics = await http.get("/metrics")
        assert metrics.status_code == 200
        assert metrics.headers["content-type"].startswith("text/plain")
        text = metrics.text
        assert "alphapanda_ticks_received_total" in text
        assert 'alphapanda_api_requests_allowed_total{route_class="read"}' in text
        assert 'alphapanda_connection_state{shard="0",state="connected"} 1.0' in text
        assert "process_resident_memory_bytes" in text


async def test_monitoring_routes_read_the_feeds_namespace_in_redis(
    settings_for: SettingsFor, unique: str
) -> None:
    import redis.asyncio as aioredis

    async with running_feed(settings_for, unique) as feed:
        http = feed.http

        async def flushed_with_ticks() -> dict[str, Any] | None:
            response = await http.get("/monitoring/pipeline")
            body = response.json()
            return body if response.status_code == 200 and (body.get("count") or 0) > 0 else None

        pipeline = await poll(flushed_with_ticks)
        assert pipeline["namespace"] == f"test_{unique}"
        assert "samples" not in pipeline
        assert set(pipeline["connections"]) == {"0", "1"}

        health = await http.get("/monitoring/health")
        assert health.status_code == 200, health.text
        assert health.json()["namespace"] == f"test_{unique}"
        assert health.json()["status"] in ("ok", "degraded")

        # The figures come from this feed's own keys, not the default "market" namespace.
        client = aioredis.Redis.from_url(feed.settings.redis.url.get_secret_value())
        try:
            key = MetricsKeys(f"test_{unique}").key(SNAPSHOT)
            assert key == f"pipeline:market_ticks:test_{unique}:snapshot"
            assert await client.exists(key) == 1
        finally:
            await client.aclose()


async def test_subscriptions_are_listed_changed_and_validated(
    settings_for: SettingsFor, unique: str
) -> None:
    async with running_feed(settings_for, unique, connections=1, per_connection=60) as feed:
        http, sim = feed.http, feed.sim
        listed = (await http.get("/subscriptions")).json()
        assert listed["total"] == 60 and listed["by_mode"] == {"quote": 60}
        tokens = sorted(int(t) for t in listed["subscriptions"])
        first_ten = tokens[:10]

        removed = await http.request(
            "DELETE", "/subscriptions", json={"tokens": first_ten}, headers=feed.key_header
        )
        assert removed.status_code == 200, removed.text
        assert removed.json()["changed"] == 10 and removed.json()["total"] == 50
        await sim.wait_for(lambda s: not set(first_ten) & set(sim_subscriptions(s)))

        added = await http.post(
            "/subscriptions", json={"tokens": first_ten, "mode": "full"}, headers=feed.key_header
        )
        assert added.status_code == 200, added.text
        assert added.json() == {"changed": 10, "total": 60, "by_mode": {"full": 10, "quote": 50}}
        # Applied on the live connection, not just recorded.
        await sim.wait_for(lambda s: all(sim_subscriptions(s).get(t) == "full" for t in first_ten))

        # Changing a mode is a POST of subscribed tokens with the new mode.
        moved = await http.post(
            "/subscriptions", json={"tokens": first_ten[:3], "mode": "ltp"}, headers=feed.key_header
        )
        assert moved.json()["by_mode"] == {"full": 7, "ltp": 3, "quote": 50}

        # Capacity is 1 x 60: one more known instrument is refused with the numbers.
        spare = next(
            i.instrument_token for i in default_instruments() if i.instrument_token not in tokens
        )
        over = await http.post(
            "/subscriptions", json={"tokens": [spare], "mode": "quote"}, headers=feed.key_header
        )
        assert over.status_code == 409
        assert over.json()["requested"] == 61 and over.json()["capacity"] == 60

        unknown = await http.post(
            "/subscriptions",
            json={"tokens": [tokens[0], 999_999_999], "mode": "quote"},
            headers=feed.key_header,
        )
        assert unknown.status_code == 422
        assert unknown.json()["unknown_tokens"] == [999_999_999]
        assert "999999999" in unknown.json()["detail"]

        bad_mode = await http.post(
            "/subscriptions",
            json={"tokens": [tokens[0]], "mode": "snapshot"},
            headers=feed.key_header,
        )
        assert bad_mode.status_code == 422
        assert bad_mode.json()["detail"].startswith("mode:")
        empty = await http.post("/subscriptions", json={"tokens": []}, headers=feed.key_header)
        assert empty.status_code == 422 and "tokens" in empty.json()["detail"]

        for headers in ({}, {"X-API-Key": "wrong"}, {"X-API-Key": ""}):
            denied = await http.post(
                "/subscriptions", json={"tokens": [tokens[0]], "mode": "full"}, headers=headers
            )
            assert denied.status_code == 401, headers
            denied = await http.request(
                "DELETE", "/subscriptions", json={"tokens": [tokens[0]]}, headers=headers
            )
            assert denied.status_code == 401, headers

        # Nothing refused above changed anything.
        final = (await http.get("/subscriptions")).json()
        assert final["total"] == 60 and final["by_mode"] == {"full": 7, "ltp": 3, "quote": 50}


async def test_ready_is_503_with_the_reason_while_no_connection_streams(
    settings_for: SettingsFor, unique: str
) -> None:
    async with running_feed(settings_for, unique, connections=1) as feed:
        await feed.sim.expire_token()

        async def not_ready() -> httpx.Response | None:
            response = await feed.http.get("/ready")
            return response if response.status_code == 503 else None

        response = await poll(not_ready)
        assert response.json()["ready"] is False
        assert "no Kite connection is streaming" in response.json()["reasons"]
        status = (await feed.http.get("/status")).json()
        assert status["ready"] is False
        assert status["connections"][0]["state"] in ("auth_required", "connecting", "backoff")
        # Liveness is not readiness.
        assert (await feed.http.get("/health")).status_code == 200

        await feed.sim.set_token(feed.sim.access_token)

        async def ready_again() -> bool:
            return (await feed.http.get("/ready")).status_code == 200

        await poll(ready_again)


SECRETS = {
    "access_token": "tok-SECRET-a1b2c3d4e5",
    "api_secret": "apisecret-SECRET-f6g7h8",
    "api_key": "apikey-SECRET-i9j0k1l2",
    "db_password": "pgpass-SECRET-m3n4o5",
}


async def test_no_secret_appears_in_any_response(settings_for: SettingsFor, unique: str) -> None:
    async with running_feed(
        settings_for,
        unique,
        connections=1,
        sim_options={"access_token": SECRETS["access_token"], "api_secret": SECRETS["api_secret"]},
        kite={"api_secret": SecretStr(SECRETS["api_secret"])},
        api={"api_key": SecretStr(SECRETS["api_key"])},
        database={
            "url": SecretStr(
                f"postgresql+asyncpg://alphapanda:{SECRETS['db_password']}@127.0.0.1:15432/x"
            )
        },
    ) as feed:
        http = feed.http
        # A disconnect gives the connection a last_disconnect_reason to show.
        await feed.sim.fault_drop()

        async def reconnected() -> bool:
            body = (await http.get("/status")).json()
            conn = body["connections"][0]
            return bool(conn["reconnect_count"]) and conn["state"] == "connected"

        await poll(reconnected)
        await poll(lambda: _has_snapshot(http))

        schema = (await http.get("/openapi.json")).json()
        responses: list[httpx.Response] = [
            await http.get("/"),
            await http.get("/openapi.json"),
            await http.get("/docs"),
            await http.get("/no-such-route"),
        ]
        for path, operations in schema["paths"].items():
            for method in operations:
                for headers in ({}, feed.key_header, {"X-API-Key": "wrong"}):
                    body: dict[str, Any] | None = None
                    if method in ("post", "delete"):
                        body = {"tokens": [999_999_999], "mode": "quote"}
                    responses.append(
                        await http.request(method.upper(), path, json=body, headers=headers)
                    )
        # Error bodies too: validation, capacity, unknown tokens.
        responses.append(
            await http.post("/subscriptions", json={"tokens": "x"}, headers=feed.key_header)
        )
        assert {r.status_code for r in responses} >= {200, 401, 404, 422}
        for response in responses:
            seen = response.text + "\n".join(f"{k}: {v}" for k, v in response.headers.items())
            for name, secret in SECRETS.items():
                assert secret not in seen, f"{name} leaked by {response.request.url}"
            assert "SECRET" not in seen, response.request.url


async def _has_snapshot(http: httpx.AsyncClient) -> bool:
    return (await http.get("/monitoring/pipeline")).status_code == 200


@pytest.mark.parametrize("method", ["GET", "HEAD"])
async def test_health_is_never_rate_limited(
    settings_for: SettingsFor, unique: str, method: str
) -> None:
    async with running_feed(
        settings_for, unique, connections=1, api={"rate_limit": "2/minute"}
    ) as feed:
        statuses = [(await feed.http.request(method, "/health")).status_code for _ in range(10)]
        assert statuses == [200] * 10
        # …while a read route of the same caller is limited after two requests.
        reads = [(await feed.http.get("/status")).status_code for _ in range(3)]
        assert reads == [200, 200, 429]
        limited = await feed.http.get("/subscriptions")
        assert limited.status_code == 429
        assert int(limited.headers["Retry-After"]) >= 1
        assert "rate limit" in limited.json()["detail"]


@asynccontextmanager
async def registry_with(
    settings: Settings, dump: Path, schema: str
) -> AsyncIterator[InstrumentRegistryService]:
    """A registry in its own schema holding ``dump`` (all streamed); schema dropped after."""
    try:
        async with InstrumentRegistryService(settings) as registry:
            report = await registry.load_dump(dump, stream_mode="quote")
            assert report.good > 0
            yield registry
    finally:
        conn = await Database(SecretStr(SHARED_DATABASE)).connect_raw()
        try:
            await conn.execute(f'DROP SCHEMA IF EXISTS "{schema}" CASCADE')
        finally:
            await conn.close()


@pytest.fixture
def small_dump(tmp_path: Path) -> Path:
    """The first 20 instruments of the shipped dump."""
    lines = INSTRUMENTS_CSV.read_text(encoding="utf-8").splitlines()
    dump = tmp_path / "small.csv"
    dump.write_text("\n".join(lines[:21]) + "\n", encoding="utf-8")
    return dump


async def test_unknown_means_not_in_the_registry_when_the_feed_streams_from_it(
    settings_for: SettingsFor, unique: str, small_dump: Path
) -> None:
    # The registry knows only the 20 instruments of small_dump; the shipped dump has more.
    dump = small_dump
    schema = f"test_api_{unique}"
    async with running_feed(
        settings_for,
        unique,
        connections=1,
        database={"url": SHARED_DATABASE, "schema_name": schema},
        instruments=lambda settings: registry_with(settings, dump, schema),
    ) as feed:
        listed = (await feed.http.get("/subscriptions")).json()
        assert listed["total"] == 20
        in_dump_only = default_instruments()[30].instrument_token
        refused = await feed.http.post(
            "/subscriptions", json={"tokens": [in_dump_only]}, headers=feed.key_header
        )
        assert refused.status_code == 422
        assert refused.json()["unknown_tokens"] == [in_dump_only]
        first = int(next(iter(listed["subscriptions"])))
        moved = await feed.http.post(
            "/subscriptions", json={"tokens": [first], "mode": "ltp"}, headers=feed.key_header
        )
        assert moved.status_code == 200 and moved.json()["by_mode"] == {"ltp": 1, "quote": 19}


async def test_serve_api_releases_its_port_when_stopped_or_cancelled(
    settings_for: SettingsFor,
) -> None:
    port = free_port()
    settings = settings_for(api={"port": port})
    url = f"http://127.0.0.1:{port}/health"
    async with httpx.AsyncClient(timeout=5) as http:
        # Stopped through its event, as MarketFeedService stops its background services.
        stop = asyncio.Event()
        async with asyncio.TaskGroup() as tg:
            tg.create_task(serve_api(settings, None, stop=stop))
            await poll(lambda: _is_up(http, url))
            stop.set()
        with pytest.raises(httpx.ConnectError):
            await http.get(url)

        # Cancelled, as a TaskGroup does when a sibling task fails.
        async with asyncio.TaskGroup() as tg:
            task = tg.create_task(serve_api(settings, None))
            await poll(lambda: _is_up(http, url))
            task.cancel()
        assert task.cancelled()
        with pytest.raises(httpx.ConnectError):
            await http.get(url)

        # A taken port is an ordinary error, not a process exit from inside a task.
        with socket.socket() as blocker:
            blocker.bind(("127.0.0.1", 0))
            blocker.listen()
            taken = blocker.getsockname()[1]
            with pytest.raises(ApiStartupError, match=str(taken)):
                await serve_api(settings, None, port=taken)


async def _is_up(http: httpx.AsyncClient, url: str) -> bool:
    return (await http.get(url)).status_code == 200
