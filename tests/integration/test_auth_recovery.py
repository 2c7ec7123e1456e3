"""Token expiry end to end: the token expires mid-stream → the client goes ``auth_required``
without a reconnect storm → ``alphapanda auth set-token`` (a real CLI process) stores a
new one → the running client picks it up through BrokerAuthenticator → AuthService and
streams again. Real simulator, real PostgreSQL (own schema), real sockets."""

from __future__ import annotations

import asyncio
import os
import subprocess
import sys
from collections.abc import AsyncIterator, Callable
from typing import Any

import pytest

from alphapanda.auth import AuthService, BrokerAuthenticator
from alphapanda.kite.client import TickerClient
from alphapanda.kite.protocol import Tick
from alphapanda.settings import Settings
from alphapanda.testing import eventually
from tests.support.services import SHARED_DATABASE
from tests.support.sim import SimHandle, default_instruments, running_simulator

ALPHAPANDA = [sys.executable, "-m", "alphapanda"]
DEADLINE = 20.0


class CountingSink:
    """The client's downstream: counts ticks per instrument, keeps nothing else."""

    def __init__(self) -> None:
        self.ticks = 0

    async def put_many(self, ticks: list[Tick]) -> None:
        self.ticks += len(ticks)


def attempts(client: TickerClient, reason: str) -> float:
    for sample in client.samples():
        if sample.name == "kite_reconnect_attempts_total" and ("reason", reason) in sample.labels:
            return sample.value
    return 0.0


@pytest.fixture
async def sim(unique: str) -> AsyncIterator[SimHandle]:
    async with running_simulator(
        api_key=f"key{unique}",
        ticks_per_second=200,
        heartbeat_interval=0.2,
        send_interval=0.02,
    ) as handle:
        yield handle


def set_token_cli(schema: str, api_key: str, token: str) -> subprocess.CompletedProcess[str]:
    env: dict[str, Any] = {k: v for k, v in os.environ.items() if not k.startswith("ALPHAPANDA_")}
    env.update(
        ALPHAPANDA_DATABASE__URL=SHARED_DATABASE,
        ALPHAPANDA_DATABASE__SCHEMA_NAME=schema,
        ALPHAPANDA_KITE__API_KEY=api_key,
    )
    return subprocess.run(
        [*ALPHAPANDA, "--env-file", "/nonexistent", "auth", "set-token", token],
        env=env,
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
    )


async def test_expired_token_auth_required_then_set_token_resumes_streaming(
    sim: SimHandle, schema: str, settings_for: Callable[..., Settings]
) -> None:
    settings = settings_for(
        database={"url": SHARED_DATABASE, "schema_name": schema},
        kite={
            "ws_url": sim.ws_url,
            "api_key": sim.api_key,
            "access_token": "",  # no configured fallback: only stored tokens count
            "reconnect_base_delay": 0.02,
            "reconnect_max_delay": 0.2,
            "auth_retry_delay": 30.0,
            "auth_poll_interval": 0.2,
        },
    )
    desired = {i.instrument_token: "full" for i in default_instruments()[:5]}
    sink = CountingSink()
    async with AuthService(settings) as auth:
        await auth.set_token(sim.access_token)
        client = TickerClient(settings.kite, BrokerAuthenticator(settings.kite.api_key, auth), sink)
        await client.set_subscriptions(desired)
        async with asyncio.TaskGroup() as tg:
            tg.create_task(client.run())
            await eventually(
                lambda: sink.ticks > 20,
                timeout=DEADLINE,
                what="streaming with the stored token",
            )

            assert await sim.expire_token() == 1
            await eventually(
                lambda: any(s.state == "auth_required" for s in client.statuses()),
                timeout=DEADLINE,
                what="auth_required",
            )
            rejected = attempts(client, "auth_403")
            assert rejected >= 1

            # An operator stores a new token from another process; the simulator (Kite)
            # accepts it from now on.
            await sim.set_token("fresh-token-for-day-2")
            result = await asyncio.to_thread(
                set_token_cli, schema, settings.kite.api_key, "fresh-token-for-day-2"
            )
            assert result.returncode == 0, result.stderr
            before = sink.ticks
            await eventually(
                lambda: client.is_streaming() and sink.ticks > before + 20,
                timeout=DEADLINE,
                what="streaming again after set-token",
            )
            # Waiting in auth_required polled the token provider, not Kite: the stale
            # token was tried at most once more after the first 403 (no storm).
            assert attempts(client, "auth_403") <= rejected + 1
            assert all(s.state == "connected" for s in client.statuses())
            await client.stop()
        status = await auth.status()
    assert status.source == "database" and status.has_token
    stats = await sim.stats()
    assert stats["handshakes"]["accepted"] == 2
