"""``alphapanda api``: the read-only monitoring API as a process of its own.

It serves ``/health``, ``/status`` and ``/metrics`` as of the collector's last flush to
Redis, the ``/monitoring/*`` routes and the status page; subscription routes exist only
in the feed process. It shares the Redis rate limit with every other API process.
"""

from __future__ import annotations

import asyncio
import signal
from typing import Annotated

import typer

from alphapanda.api.server import ApiStartupError, serve_api
from alphapanda.cli.app import app, settings_from
from alphapanda.logs import configure_logging, secrets_of
from alphapanda.ops.preflight import check_port_free
from alphapanda.production import require_secure
from alphapanda.settings import Settings


@app.command(
    "api",
    epilog="Examples:\n\n  alphapanda api\n\n  alphapanda api --host 0.0.0.0 --port 18081",
)
def api(
    ctx: typer.Context,
    host: Annotated[
        str | None,
        typer.Option(
            help="Interface to listen on. [default: ALPHAPANDA_API__HOST, i.e. 127.0.0.1]",
            show_default=False,
        ),
    ] = None,
    port: Annotated[
        int | None,
        typer.Option(
            help="TCP port to listen on; use another one than the feed's own API when both "
            "run on one machine. [default: ALPHAPANDA_API__PORT, i.e. 18080]",
            show_default=False,
        ),
    ] = None,
) -> None:
    """Run the read-only monitoring API as a process of its own: /health, /status,
    /metrics and the status page at http://HOST:PORT/, from the figures the feed flushes
    to Redis. Changing subscriptions needs the feed's own API."""
    settings = settings_from(ctx)
    require_secure(settings, "api", host or settings.api.host)
    api_port = settings.api.port if port is None else port
    check_port_free(host or settings.api.host, api_port, "ALPHAPANDA_API__PORT (--port)")
    configure_logging(settings.log, secrets=secrets_of(settings))
    try:
        asyncio.run(_serve(settings, host, port))
    except ApiStartupError as exc:
        typer.secho(str(exc), fg=typer.colors.RED, err=True)
        raise typer.Exit(1) from None


async def _serve(settings: Settings, host: str | None, port: int | None) -> None:
    stop = asyncio.Event()
    loop = asyncio.get_running_loop()
    for signum in (signal.SIGTERM, signal.SIGINT):
        loop.add_signal_handler(signum, stop.set)
    await serve_api(settings, None, stop=stop, host=host, port=port)
