"""Helpers for testing the ticker client against the simulator: a recording sink, a
token provider whose token a test can change, and a running-client context."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from typing import Any

from pydantic import SecretStr

from alphapanda.kite.client import TickerClient
from alphapanda.kite.protocol import Tick
from alphapanda.settings import KiteSettings
from tests.support.sim import SimHandle


class RecordingSink:
    """The downstream of the client under test: keeps every tick it is handed."""

    def __init__(self) -> None:
        self.ticks: list[Tick] = []

    async def put_many(self, ticks: list[Tick]) -> None:
        self.ticks.extend(ticks)


class MutableTokens:
    """A token provider whose answer the test changes (as AuthService would after login)."""

    def __init__(self, token: str) -> None:
        self.token = token
        self.calls = 0

    async def get_access_token(self) -> str:
        self.calls += 1
        return self.token


def kite_settings(sim: SimHandle, **overrides: Any) -> KiteSettings:
    """Settings pointed at ``sim`` with short delays, so recovery takes milliseconds."""
    values: dict[str, Any] = {
        "ws_url": sim.ws_url,
        "api_key": sim.api_key,
        "access_token": SecretStr(sim.access_token),
        "reconnect_base_delay": 0.02,
        "reconnect_max_delay": 0.2,
        "healthy_reset_after": 1.0,
        "liveness_timeout": 3.0,
        "connect_timeout": 3.0,
        "auth_retry_delay": 30.0,
        "auth_poll_interval": 0.2,
        "capacity_retry_delay": 1.0,
    }
    values.update(overrides)
    return KiteSettings(**values)


@asynccontextmanager
async def running(client: TickerClient) -> AsyncIterator[TickerClient]:
    """Run ``client`` for the body of the ``async with``; stop it afterwards."""
    async with asyncio.TaskGroup() as tg:
        tg.create_task(client.run())
        try:
            yield client
        finally:
            await client.stop()


def sim_subscriptions(stats: dict[str, Any]) -> dict[int, str]:
    """The simulator's subscription table merged across connections (token -> mode)."""
    merged: dict[int, str] = {}
    for subs in stats["subscriptions"].values():
        merged.update({int(token): mode for token, mode in subs.items()})
    return merged


def counter(client: TickerClient, name: str, **labels: str) -> float:
    """The value of one sample of ``client.samples()``."""
    wanted = tuple(sorted(labels.items()))
    for sample in client.samples():
        if sample.name == name and tuple(sorted(sample.labels)) == wanted:
            return sample.value
    raise KeyError((name, labels))
