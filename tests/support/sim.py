"""Run the Kite exchange simulator for a test, and drive its admin API over real HTTP.

In-process (same event loop as the test)::

    async with running_simulator(ticks_per_second=2000) as sim:
        async with websockets.connect(sim.ws_url_with_auth()) as ws: ...
        await sim.fault_drop()
        stats = await sim.stats()

As a separate process (``alphapanda sim`` in a subprocess, for tests that need the
simulator out of the test's loop or GIL)::

    with simulator_process(ticks_per_second=20000) as sim:   # same SimHandle API
        ...

Both pick free ports, so parallel tests never collide. ``SimHandle`` is the same for
both: ``ws_url``, ``admin_url``, ``api_key``, ``access_token``, ``api_secret`` and async
helpers that call the real admin routes.
"""

from __future__ import annotations

import asyncio
import json
import os
import subprocess
import sys
import tempfile
import time
from collections.abc import AsyncIterator, Iterator
from contextlib import asynccontextmanager, contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import httpx
from pydantic import SecretStr

from alphapanda.instruments import Instrument, load_instrument_dump
from alphapanda.sim.config import SimConfig
from alphapanda.sim.market import Market
from alphapanda.sim.server import Simulator

ROOT = Path(__file__).resolve().parents[2]
INSTRUMENTS_CSV = ROOT / "data" / "instruments.csv"


def default_instruments() -> list[Instrument]:
    """The shipped universe (data/instruments.csv)."""
    instruments, errors = load_instrument_dump(INSTRUMENTS_CSV)
    assert not errors, errors
    return instruments


@dataclass(frozen=True)
class SimHandle:
    """Where a running simulator is and how to poke it."""

    ws_url: str
    admin_url: str
    api_key: str = "alphapanda-dev"
    access_token: str = "dev-access-token"
    api_secret: str = "dev-api-secret"

    def ws_url_with_auth(self, api_key: str | None = None, access_token: str | None = None) -> str:
        """The URL a Kite client connects to: ``ws://host:port/?api_key=…&access_token=…``."""
        key = self.api_key if api_key is None else api_key
        token = self.access_token if access_token is None else access_token
        return f"{self.ws_url}/?api_key={key}&access_token={token}"

    async def _call(self, method: str, path: str, **kwargs: Any) -> Any:
        async with httpx.AsyncClient(base_url=self.admin_url, timeout=10) as client:
            response = await client.request(method, path, **kwargs)
            response.raise_for_status()
            return response.json()

    async def stats(self) -> dict[str, Any]:
        """``GET /stats``."""
        result: dict[str, Any] = await self._call("GET", "/stats")
        return result

    async def fault_drop(self) -> int:
        """``POST /faults/drop``: abort every socket; returns how many."""
        return int((await self._call("POST", "/faults/drop"))["dropped"])

    async def fault_stall(self, seconds: float) -> None:
        """``POST /faults/stall?seconds=S``: send and read nothing for S seconds."""
        await self._call("POST", "/faults/stall", params={"seconds": seconds})

    async def fault_malformed(self) -> int:
        """``POST /faults/malformed``: one bad frame to every connection; returns how many."""
        return int((await self._call("POST", "/faults/malformed"))["sent"])

    async def expire_token(self) -> int:
        """``POST /faults/expire-token``: all tokens invalid, sockets closed; returns how many."""
        return int((await self._call("POST", "/faults/expire-token"))["closed"])

    async def set_token(self, access_token: str) -> None:
        """``POST /token``: accept ``access_token`` at the handshake from now on."""
        await self._call("POST", "/token", json={"access_token": access_token})

    async def order_postback(self, api_key: str | None = None, **fields: Any) -> dict[str, Any]:
        """``POST /orders/postback``: a Kite order update to the key's sockets;
        returns ``{"sent": n, "order": {...}}``."""
        params = {"api_key": api_key or self.api_key}
        result: dict[str, Any] = await self._call(
            "POST", "/orders/postback", params=params, json=fields
        )
        return result

    async def set_rate(self, ticks_per_second: float) -> None:
        """``POST /rate?ticks_per_second=N``."""
        await self._call("POST", "/rate", params={"ticks_per_second": ticks_per_second})

    async def wait_for(
        self, predicate: Any, within: float = 10.0, interval: float = 0.05
    ) -> dict[str, Any]:
        """Poll ``/stats`` until ``predicate(stats)`` holds; returns those stats."""
        deadline = time.monotonic() + within
        while True:
            stats = await self.stats()
            if predicate(stats):
                return stats
            if time.monotonic() > deadline:
                raise AssertionError(f"simulator never reached the condition; last stats: {stats}")
            await asyncio.sleep(interval)


@asynccontextmanager
async def running_simulator(
    instruments: list[Instrument] | None = None, **options: Any
) -> AsyncIterator[SimHandle]:
    """Run a simulator in the current event loop on free ports. ``options`` are
    ``SimConfig`` fields (``ticks_per_second``, ``max_connections``, ``seed``, ...)."""
    options.setdefault("port", 0)
    options.setdefault("admin_port", 0)
    for secret in ("access_token", "api_secret"):
        if isinstance(options.get(secret), str):
            options[secret] = SecretStr(options[secret])
    config = SimConfig(**options)
    simulator = Simulator(config, Market(instruments or default_instruments(), seed=config.seed))
    handle = SimHandle(
        ws_url=simulator.ws_url,
        admin_url=simulator.admin_url,
        api_key=config.api_key,
        access_token=config.access_token.get_secret_value(),
        api_secret=config.api_secret.get_secret_value(),
    )
    # The test body's own exception is re-raised as it is, not wrapped in the
    # TaskGroup's ExceptionGroup, so failures read as plain assertion errors.
    failure: BaseException | None = None
    async with asyncio.TaskGroup() as tasks:
        tasks.create_task(simulator.run())
        await simulator.ready.wait()
        try:
            yield handle
        except BaseException as exc:
            failure = exc
        finally:
            simulator.stop()
    if failure is not None:
        raise failure


@contextmanager
def simulator_process(*args: str, **options: Any) -> Iterator[SimHandle]:
    """Run ``alphapanda sim`` in a subprocess on free ports. ``options`` become flags
    (``ticks_per_second=5000`` → ``--ticks-per-second 5000``); ``args`` are extra raw
    arguments. Stops it with SIGTERM (then SIGKILL) on exit."""
    flags = {"port": 0, "admin_port": 0, **options}
    argv = [sys.executable, "-m", "alphapanda", "sim"]
    for name, value in flags.items():
        argv += [f"--{name.replace('_', '-')}", str(value)]
    argv += list(args)
    env = {k: v for k, v in os.environ.items() if not k.startswith("ALPHAPANDA_")}
    # stderr to a file, not a pipe: nobody drains a pipe during the test, and a full
    # one would block the simulator.
    with tempfile.TemporaryFile("w+") as stderr:
        proc = subprocess.Popen(
            argv, cwd=ROOT, env=env, stdout=subprocess.PIPE, stderr=stderr, text=True
        )
        try:
            assert proc.stdout is not None
            line = proc.stdout.readline()  # the sim_ready line (or EOF if it failed)
            if not line:
                proc.wait(timeout=10)
                stderr.seek(0)
                raise RuntimeError(f"alphapanda sim failed to start:\n{stderr.read()[-3000:]}")
            ready = json.loads(line)
            yield SimHandle(
                ws_url=ready["ws_url"],
                admin_url=ready["admin_url"],
                api_key=str(options.get("api_key", "alphapanda-dev")),
                access_token=str(options.get("access_token", "dev-access-token")),
                api_secret=str(options.get("api_secret", "dev-api-secret")),
            )
        finally:
            proc.terminate()
            try:
                proc.wait(timeout=10)
            except subprocess.TimeoutExpired:
                proc.kill()
                proc.wait(timeout=10)
            if proc.stdout is not None:
                proc.stdout.close()
