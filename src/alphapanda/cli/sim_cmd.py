"""``alphapanda sim``: run the Kite exchange simulator (WebSocket ticker + admin HTTP)."""

from __future__ import annotations

import asyncio
import json
import signal
from pathlib import Path
from typing import Annotated, Literal

import typer
from pydantic import SecretStr

from alphapanda.cli.app import app, settings_from
from alphapanda.instruments import load_instrument_dump
from alphapanda.logs import configure_logging
from alphapanda.production import (
    DEV_KITE_ACCESS_TOKEN,
    DEV_KITE_API_SECRET,
    is_loopback,
    require_secure_sim,
)
from alphapanda.settings import LogSettings
from alphapanda.sim.config import DEFAULT_ADMIN_PORT, DEFAULT_WS_PORT, SimConfig
from alphapanda.sim.market import Market
from alphapanda.sim.server import Simulator


@app.command(
    epilog="Examples:\n\n"
    "  alphapanda sim\n\n"
    "  alphapanda sim --rate 20000 --seed 7 --instruments data/instruments.csv\n\n"
    "  alphapanda sim --cadence kite --frame-interval 1 --port 0 --admin-port 0",
)
def sim(
    ctx: typer.Context,
    host: Annotated[str, typer.Option(help="Interface to listen on.")] = "127.0.0.1",
    port: Annotated[int, typer.Option(help="WebSocket port (0: any free port).")] = DEFAULT_WS_PORT,
    admin_port: Annotated[
        int, typer.Option(help="Admin HTTP port (0: any free port).")
    ] = DEFAULT_ADMIN_PORT,
    admin_host: Annotated[
        str, typer.Option(help="Interface of the admin HTTP API (loopback unless asked).")
    ] = "127.0.0.1",
    admin_token: Annotated[
        str | None,
        typer.Option(
            envvar="ALPHAPANDA_SIM_ADMIN_TOKEN",
            help="Require `Authorization: Bearer TOKEN` on the admin routes "
            "(Kite's login routes stay open). [default: none: no admin token asked]",
            show_default=False,
        ),
    ] = None,
    redirect_url: Annotated[
        str, typer.Option(help="Where /connect/login redirects with a request token.")
    ] = "http://127.0.0.1:18770/kite/callback",
    instruments: Annotated[
        Path, typer.Option(help="Kite instrument-dump CSV: the tradable universe.")
    ] = Path("data/instruments.csv"),
    rate: Annotated[
        float | None,
        typer.Option(
            "--rate",
            min=0,
            help="Ticks per second across all subscribed instruments (0: paused). [default: 1000]",
            show_default=False,
        ),
    ] = None,
    ticks_per_second: Annotated[
        float | None, typer.Option("--ticks-per-second", min=0, hidden=True)
    ] = None,
    api_key: Annotated[
        str,
        typer.Option(envvar="ALPHAPANDA_SIM_API_KEY", help="The API key clients must present."),
    ] = "alphapanda-dev",
    access_token: Annotated[
        str,
        typer.Option(
            envvar="ALPHAPANDA_SIM_ACCESS_TOKEN", help="The access token accepted at start-up."
        ),
    ] = "dev-access-token",
    api_secret: Annotated[
        str,
        typer.Option(
            envvar="ALPHAPANDA_SIM_API_SECRET", help="API secret for the /session/token checksum."
        ),
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
        typer.Option(
            help="Ticks/s the pre-built window is sized for. [default: same as --rate]",
            show_default=False,
        ),
    ] = None,
    cadence: Annotated[
        str,
        typer.Option(
            help="stream: --rate ticks/s in small frames every 20 ms; kite: the real "
            "exchange's rhythm, one frame per connection every --frame-interval holding a "
            "packet for every subscribed instrument that changed."
        ),
    ] = "stream",
    frame_interval: Annotated[
        float, typer.Option(help="Kite cadence: seconds between a connection's frames.")
    ] = 1.0,
    change_ratio: Annotated[
        float,
        typer.Option(
            help="Kite cadence: share of the subscribed instruments that changed and are "
            "sent in each frame (0..1)."
        ),
    ] = 1.0,
) -> None:
    """Serve a simulated Kite ticker at ws://HOST:PORT/?api_key=…&access_token=…, with
    fault switches and figures on its admin HTTP API at http://ADMIN_HOST:ADMIN_PORT
    (see docs/simulator.md).

    It also serves Kite's login, session and instrument-dump routes, so `auth login` and
    `instruments fetch` work against it. It prints one JSON line with its real URLs once
    it listens.
    """
    require_secure_sim(
        settings_from(ctx),
        exposed=not (is_loopback(host) and is_loopback(admin_host)),
        dev_secrets={
            "--access-token (ALPHAPANDA_SIM_ACCESS_TOKEN)": access_token == DEV_KITE_ACCESS_TOKEN,
            "--api-secret (ALPHAPANDA_SIM_API_SECRET)": api_secret == DEV_KITE_API_SECRET,
            "--admin-token (ALPHAPANDA_SIM_ADMIN_TOKEN)": not admin_token
            and not is_loopback(admin_host),
        },
    )
    configure_logging(LogSettings(), secrets=(access_token, api_secret, admin_token or ""))
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
    if cadence not in ("stream", "kite"):
        typer.secho(
            f"--cadence: use 'stream' or 'kite', not {cadence!r}", fg=typer.colors.RED, err=True
        )
        raise typer.Exit(2)
    chosen: Literal["stream", "kite"] = "kite" if cadence == "kite" else "stream"
    if rate is not None and ticks_per_second is not None:
        typer.secho("give --rate or --ticks-per-second, not both", fg=typer.colors.RED, err=True)
        raise typer.Exit(2)
    if rate is None:
        rate = 1000.0 if ticks_per_second is None else ticks_per_second
    config = SimConfig(
        host=host,
        port=port,
        admin_port=admin_port,
        admin_host=admin_host,
        admin_token=SecretStr(admin_token) if admin_token else None,
        redirect_url=redirect_url,
        instruments=instruments,
        ticks_per_second=rate,
        api_key=api_key,
        access_token=SecretStr(access_token),
        api_secret=SecretStr(api_secret),
        max_connections=max_connections,
        seed=seed,
        pregenerate_seconds=pregenerate,
        pregenerate_rate=pregenerate_rate,
        cadence=chosen,
        frame_interval=frame_interval,
        change_ratio=change_ratio,
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
            "cadence": config.cadence,
        }
        print(json.dumps(ready), flush=True)
