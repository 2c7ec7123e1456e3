"""The rate limit is shared through Redis by every API process, keyed on the caller, and
degrades by the documented policy when Redis is down."""

from __future__ import annotations

import asyncio
import os
import subprocess
import sys
from collections.abc import Iterator
from contextlib import ExitStack, contextmanager
from typing import Any

import httpx

from tests.integration.test_api import SettingsFor, poll, running_feed
from tests.support.services import SHARED_REDIS, PrivateService, free_port

API_KEY = "ratelimit-test-key"


@contextmanager
def api_process(port: int, unique: str, **env: str) -> Iterator[str]:
    """``alphapanda api`` in a subprocess; yields its base URL; SIGTERM on exit."""
    full_env = {k: v for k, v in os.environ.items() if not k.startswith("ALPHAPANDA_")}
    full_env.update(
        ALPHAPANDA_REDIS__URL=SHARED_REDIS,
        ALPHAPANDA_API__PORT=str(port),
        ALPHAPANDA_API__API_KEY=API_KEY,
        ALPHAPANDA_API__RATE_LIMIT_KEY_PREFIX=f"test:{unique}:ratelimit",
        ALPHAPANDA_METRICS__NAMESPACE=f"test_{unique}",
    )
    full_env.update(env)
    proc = subprocess.Popen(
        [sys.executable, "-m", "alphapanda", "--env-file", "/nonexistent", "api"],
        env=full_env,
        stdout=subprocess.DEVNULL,
        stderr=subprocess.PIPE,
        text=True,
    )
    try:
        yield f"http://127.0.0.1:{port}"
    finally:
        proc.terminate()
        try:
            _, stderr = proc.communicate(timeout=15)
        except subprocess.TimeoutExpired:
            proc.kill()
            _, stderr = proc.communicate(timeout=15)
        # A clean SIGTERM shutdown exits 0; anything else is a bug worth seeing.
        assert proc.returncode == 0, stderr[-3000:]


async def _up(http: httpx.AsyncClient, base: str) -> bool:
    return (await http.get(f"{base}/health")).status_code == 200


async def test_two_api_processes_share_one_limit(unique: str) -> None:
    limits = {
        "ALPHAPANDA_API__RATE_LIMIT": "10/minute",
        "ALPHAPANDA_API__RATE_LIMIT_MUTATING": "3/minute",
    }
    with ExitStack() as stack:
        a = stack.enter_context(api_process(free_port(), unique, **limits))
        b = stack.enter_context(api_process(free_port(), unique, **limits))
        async with httpx.AsyncClient(timeout=10) as http:
            for base in (a, b):
                await poll(lambda base=base: _up(http, base), within=30)
            # /health never counts: polling it above used none of the budget.
            served: dict[str, list[int]] = {a: [], b: []}
            for i in range(16):
                base = (a, b)[i % 2]
                served[base].append((await http.get(f"{base}/status")).status_code)
            codes = served[a] + served[b]
            # The combined count is limited: 10 in all, not 10 each.
            assert codes.count(200) == 10, served
            assert codes.count(429) == 6, served
            assert served[a].count(200) == 5 and served[b].count(200) == 5
            limited = await http.get(f"{a}/status")
            assert limited.status_code == 429
            retry_after = int(limited.headers["Retry-After"])
            assert 1 <= retry_after <= 60

            # A spoofed X-Forwarded-For does not buy a fresh bucket (no trusted proxy).
            for fake in ("1.2.3.4", "5.6.7.8, 9.9.9.9"):
                spoofed = await http.get(f"{b}/status", headers={"X-Forwarded-For": fake})
                assert spoofed.status_code == 429
            # A wrong key is keyed on the address too; the right key is its own caller.
            wrong = await http.get(f"{a}/status", headers={"X-API-Key": "guess"})
            assert wrong.status_code == 429
            keyed = await http.get(f"{a}/status", headers={"X-API-Key": API_KEY})
            assert keyed.status_code == 200

            # Writes have their own, smaller budget, counted before routing and auth:
            # the monitor role has no subscription routes (404) but cannot be flooded.
            writes = [
                (await http.post(f"{(a, b)[i % 2]}/subscriptions", json={})).status_code
                for i in range(5)
            ]
            assert writes == [404, 404, 404, 429, 429]
            # /health stays open throughout.
            assert (await http.get(f"{a}/health")).status_code == 200


async def test_redis_down_reads_fail_open_and_writes_fail_closed(
    settings_for: SettingsFor, unique: str, private_redis: PrivateService
) -> None:
    async with running_feed(
        settings_for, unique, connections=1, redis={"url": private_redis.redis_url}
    ) as feed:
        http = feed.http
        token = int(next(iter((await http.get("/subscriptions")).json()["subscriptions"])))
        body: dict[str, Any] = {"tokens": [token], "mode": "full"}
        ok = await http.post("/subscriptions", json=body, headers=feed.key_header)
        assert ok.status_code == 200
        assert "X-RateLimit-Status" not in ok.headers

        await asyncio.to_thread(private_redis.stop)

        status = await http.get("/status")
        assert status.status_code == 200
        assert status.headers["X-RateLimit-Status"] == "unavailable"
        assert status.json()["connections"][0]["state"] == "connected"
        refused = await http.post("/subscriptions", json=body, headers=feed.key_header)
        assert refused.status_code == 503
        assert int(refused.headers["Retry-After"]) >= 1
        assert "Redis" in refused.json()["detail"]
        assert (await http.get("/health")).status_code == 200
        # The monitoring routes need Redis itself: they say so rather than hang.
        monitoring = await http.get("/monitoring/health")
        assert monitoring.status_code == 503
        metrics = (await http.get("/metrics")).text
        assert 'alphapanda_rate_limit_storage_errors_total{route_class="read"}' in metrics
        assert 'alphapanda_rate_limit_storage_errors_total{route_class="mutating"} 1.0' in metrics
        # The feed itself keeps streaming while Redis is away.
        before = (await http.get("/status")).json()["ticks_received"]

        async def more_ticks() -> bool:
            return (await http.get("/status")).json()["ticks_received"] > before

        await poll(more_ticks)

        await asyncio.to_thread(private_redis.start)

        async def writes_accepted_again() -> bool:
            response = await http.post("/subscriptions", json=body, headers=feed.key_header)
            return response.status_code == 200

        await poll(writes_accepted_again)
        recovered = await http.get("/status")
        assert "X-RateLimit-Status" not in recovered.headers


async def test_behind_a_trusted_proxy_each_forwarded_client_has_its_own_bucket(
    unique: str,
) -> None:
    with api_process(
        free_port(),
        unique,
        ALPHAPANDA_API__RATE_LIMIT="2/minute",
        ALPHAPANDA_API__TRUSTED_PROXIES='["127.0.0.0/8"]',
    ) as base:
        async with httpx.AsyncClient(timeout=10) as http:
            await poll(lambda: _up(http, base), within=30)

            async def get(forwarded: str) -> int:
                headers = {"X-Forwarded-For": forwarded}
                return (await http.get(f"{base}/status", headers=headers)).status_code

            assert [await get("203.0.113.1") for _ in range(3)] == [200, 200, 429]
            assert await get("203.0.113.2") == 200
            # Whatever the client wrote to the left, our proxy's entry names it.
            assert await get("6.6.6.6, 203.0.113.1") == 429
