"""``alphapanda sim``: run the Kite exchange simulator (WebSocket ticker + admin HTTP)."""

from __future__ import annotations

import asyncio
import json
import signal
from pathlib import Path
from typing import Annotated

import typer
from pydantic import SecretStr

from alphapanda.cli.app import app
from alphapanda.instruments import load_instrument_dump
from alphapanda.logs import configure_logging
from alphapanda.settings import LogSettings
from alphapanda.sim.config import DEFAULT_ADMIN_PORT, DEFAULT_WS_PORT, SimConfig
from alphapanda.sim.market import Market
from alphapanda.sim.server import Simulator


@app.command()
def sim(
    host: Annotated[str, typer.Option(help="Interface to listen on.")] = "127.0.0.1",
    port: Annotated[int, typer.Option(help="WebSocket port (0: any free port).")] = DEFAULT_WS_PORT,
    admin_port: Annotated[
        int, typer.Option(help="Admin HTTP port (0: any free port).")
    ] = DEFAULT_ADMIN_PORT,
    instruments: Annotated[
        Path, typer.Option(help="Kite instrument-dump CSV: the tradable universe.")
    ] = Path("data/instruments.csv"),
    ticks_per_second: Annotated[
        float, typer.Option(help="Total ticks per second across all subscribed instruments.")
    ] = 1000.0,
    api_key: Annotated[
        str, typer.Option(help="The API key clients must present.")
    ] = "alphapanda-dev",
    access_token: Annotated[
        str, typer.Option(help="The access token accepted at start-up.")
    ] = "dev-access-token",
    api_secret: Annotated[
        str, typer.Option(help="API secret for the /session/token checksum.")
    ] = "dev-api-secret",
    max_connections: Annotated[int, typer.Option(help="Concurrent sockets per API key.")] = 3,
    seed: Annotated[int, typer.Option(help="Seed of the market's random walks.")] = 0,
    pregenerate: Annotated[
        float,
        typer.Option(
            help="Benchmarks: once subscriptions settle, pre-build this many seconds of "
            "ticks (0: off) so sending costs the simulator almost no CPU."
        ),
    ] = 0.0,
    pregenerate_rate: Annotated[
        float | None,
        typer.Option(help="Rate the pre-built window is sized for (default: --ticks-per-second)."),
    ] = None,
) -> None:
    """Serve a simulated Kite ticker at ws://HOST:PORT/?api_key=…&access_token=… with
    fault switches and figures at http://HOST:ADMIN_PORT (see docs/simulator.md)."""
    configure_logging(LogSettings(), secrets=(access_token, api_secret))
    try:
        loaded, errors = load_instrument_dump(instruments)
    except OSError as exc:
        typer.secho(f"{instruments}: cannot read: {exc.strerror}", fg=typer.colors.RED, err=True)
        raise typer.Exit(2) from None
    for error in errors[:20]:
        typer.secho(
            f"{instruments}:{error.line}: {error.message}", fg=typer.colors.YELLOW, err=True
        )
    if not loaded:
        typer.secho(f"{instruments}: no usable instruments", fg=typer.colors.RED, err=True)
        raise typer.Exit(2)
    config = SimConfig(
        host=host,
        port=port,
        admin_port=admin_port,
        instruments=instruments,
        ticks_per_second=ticks_per_second,
        api_key=api_key,
        access_token=SecretStr(access_token),
        api_secret=SecretStr(api_secret),
        max_connections=max_connections,
        seed=seed,
        pregenerate_seconds=pregenerate,
        pregenerate_rate=pregenerate_rate,
    )
    asyncio.run(_serve(config, Market(loaded, seed=seed)))


async def _serve(config: SimConfig, market: Market) -> None:
    simulator = Simulator(config, market)
    loop = asyncio.get_running_loop()
    for signum in (signal.SIGTERM, signal.SIGINT):
        loop.add_signal_handler(signum, simulator.stop)
    async with asyncio.TaskGroup() as tasks:
        tasks.create_task(simulator.run())
        await simulator.ready.wait()
        # One machine-readable line: scripts and tests started with port 0 read the
        # real ports from it. No secrets in it.
        ready = {
            "event": "sim_ready",
            "ws_url": simulator.ws_url,
            "admin_url": simulator.admin_url,
            "instruments": len(market),
            "ticks_per_second": config.ticks_per_second,
        }
        print(json.dumps(ready), flush=True)
