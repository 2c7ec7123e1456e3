"""Token expiry through the real feed: the token expires, an operator stores a new one.

The feed runs as ``alphapanda feed`` wires it (``open_feed``: AuthService tokens via
BrokerAuthenticator, registry, control API) against the in-process simulator, the shared
Kafka (unique topic prefix) and the shared PostgreSQL (unique schema). The new token is
stored by the real ``alphapanda auth set-token`` CLI in a subprocess.
"""

from __future__ import annotations

import asyncio
import math
import os
import subprocess
import sys
import time
from collections.abc import Awaitable, Callable
from typing import Any

import httpx
import pytest
from pydantic import SecretStr

from alphapanda.assembly import open_feed
from alphapanda.settings import Settings
from tests.support.feed import assert_books_balance, feed_settings, quiesce
from tests.support.ledger import check_ledger, read_topic
from tests.support.services import SHARED_DATABASE, SHARED_KAFKA, free_port
from tests.support.sim import ROOT, running_simulator

pytestmark = pytest.mark.slow

NEW_TOKEN = "day-2-access-token"
ALPHAPANDA = [sys.executable, "-m", "alphapanda", "--env-file", "/nonexistent"]


def set_token_cli(schema: str, api_key: str, token: str) -> subprocess.CompletedProcess[str]:
    env = {k: v for k, v in os.environ.items() if not k.startswith("ALPHAPANDA_")}
    env.update(
        ALPHAPANDA_DATABASE__URL=SHARED_DATABASE,
        ALPHAPANDA_DATABASE__SCHEMA_NAME=schema,
        ALPHAPANDA_KITE__API_KEY=api_key,
    )
    return subprocess.run(
        [*ALPHAPANDA, "auth", "set-token", token],
        cwd=ROOT,
        env=env,
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
    )


async def until(check: Callable[[], Awaitable[Any]], within: float, what: str) -> Any:
    deadline = time.monotonic() + within
    while not (result := await check()):
        if time.monotonic() > deadline:
            raise AssertionError(f"timed out waiting for {what}")
        await asyncio.sleep(0.1)
    return result


async def test_expired_token_then_set_token_cli_resumes_the_feed(
    settings_for: Callable[..., Settings], schema: str, unique: str
) -> None:
    async with running_simulator(ticks_per_second=400) as sim:
        base = feed_settings(settings_for, sim)
        # Default retry pacing (auth_retry_delay 15 s, auth_poll_interval 1 s): the
        # test proves the shipped configuration, not a sped-up one.
        settings = base.model_copy(
            update={
                "database": base.database.model_copy(
                    update={"url": SecretStr(SHARED_DATABASE), "schema_name": schema}
                ),
                "api": base.api.model_copy(update={"port": free_port()}),
            }
        )
        retry_delay = settings.kite.auth_retry_delay
        http = httpx.AsyncClient(base_url=f"http://127.0.0.1:{settings.api.port}", timeout=5)

        async def states() -> list[str]:
            try:
                body = (await http.get("/status")).json()
            except httpx.HTTPError:
                return []
            return [c["state"] for c in body["connections"]]

        async def streaming() -> bool:
            return (await states()) == ["connected"]

        try:
            async with open_feed(settings, metrics=False) as service, asyncio.TaskGroup() as tg:
                runner = tg.create_task(service.run())
                # No token stored yet: the configured one (the settings fallback) streams.
                await until(streaming, 30, "streaming with the configured token")
                received = service.accounting.received_socket

                assert await sim.expire_token() == 1
                await until(
                    lambda: _eq(states(), ["auth_required"]), 30, "auth_required in /status"
                )
                stats = await sim.stats()
                rejected_at, since = stats["handshakes"]["403"], time.monotonic()
                accepted = stats["handshakes"]["accepted"]
                assert rejected_at >= 1
                # The rejected token is not hammered: the next handshake comes one
                # auth_retry_delay later (15 s: 4 a minute), however long the wait.
                await sim.wait_for(
                    lambda s: s["handshakes"]["403"] > rejected_at, 3 * retry_delay, 0.2
                )
                gap = time.monotonic() - since
                assert gap >= 0.8 * retry_delay, f"403 handshakes {gap:.1f} s apart"
                await until(lambda: _eq(states(), ["auth_required"]), 5, "still auth_required")

                await sim.set_token(NEW_TOKEN)
                result = await asyncio.to_thread(
                    set_token_cli, schema, settings.kite.api_key, NEW_TOKEN
                )
                assert result.returncode == 0, result.stderr[-2000:]
                assert NEW_TOKEN not in result.stdout + result.stderr
                await until(streaming, 15, "streaming again after set-token")
                stats = await sim.stats()
                elapsed = time.monotonic() - since
                rejected = stats["handshakes"]["403"] - rejected_at
                # Over the whole wait: one rejected handshake per auth_retry_delay at most
                # (the first one included), and one accepted handshake to resume.
                assert rejected <= 1 + math.ceil(elapsed / retry_delay), (rejected, elapsed)
                assert stats["handshakes"]["accepted"] == accepted + 1
                await until(
                    lambda: _true(service.accounting.received_socket > received + 200),
                    30,
                    "ticks after the recovery",
                )
                metrics_text = (await http.get("/metrics")).text
                assert 'alphapanda_auth_token_valid{source="database"} 1.0' in metrics_text
                auth = (await http.get("/status")).json()["auth"]
                assert auth["token_valid"] is True
                assert auth["source"] == "database"
                assert 0 < auth["seconds_left"] <= 24 * 3600

                final = await quiesce(sim, service)
                service.request_stop()
                await runner
        finally:
            await http.aclose()

    assert_books_balance(service)
    records = await asyncio.to_thread(read_topic, SHARED_KAFKA, service.topic)
    check_ledger(records).assert_complete(final["ticks_sent"])


async def _eq(value: Awaitable[list[str]], expected: list[str]) -> bool:
    return (await value) == expected


async def _true(value: bool) -> bool:
    return value
