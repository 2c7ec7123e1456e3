"""``alphapanda feed``: run the market feed (Kite ticker → Kafka) until SIGTERM/SIGINT."""

from __future__ import annotations

import asyncio
import contextlib
import logging
import signal
from pathlib import Path
from typing import Annotated

import typer

from alphapanda.assembly import open_feed
from alphapanda.cli.app import app, settings_from
from alphapanda.logs import configure_logging, flush_suppressed, secrets_of
from alphapanda.modes import MODES
from alphapanda.service import MarketFeedService, ServiceFailed
from alphapanda.settings import Settings

log = logging.getLogger("alphapanda.feed")


@app.command()
def feed(
    ctx: typer.Context,
    instruments: Annotated[
        Path | None,
        typer.Option(
            help="Instrument-dump CSV streamed when the registry is unreachable or not yet "
            "configured, or always with --no-registry [default: ALPHAPANDA_FEED__INSTRUMENTS_CSV]."
        ),
    ] = None,
    mode: Annotated[
        str | None, typer.Option(help="ltp, quote or full [default: ALPHAPANDA_FEED__MODE].")
    ] = None,
    run_for: Annotated[
        float | None, typer.Option(help="Stop by itself after this many seconds.")
    ] = None,
    metrics: Annotated[
        bool, typer.Option(help="Flush metrics to Redis (PipelineMetricsCollector).")
    ] = True,
    api: Annotated[
        bool,
        typer.Option(help="Serve the control API and status page (ALPHAPANDA_API__PORT)."),
    ] = True,
    registry: Annotated[
        bool,
        typer.Option(
            help="Stream the instrument registry's set (PostgreSQL) and follow its changes; "
            "--no-registry streams the CSV only."
        ),
    ] = True,
) -> None:
    """Stream the configured instruments from Kite into the market.ticks topic.

    Access tokens come from AuthService (the token stored by `alphapanda auth login` /
    `set-token`, else ALPHAPANDA_KITE__ACCESS_TOKEN), looked up before every handshake.

    SIGTERM or SIGINT stops it gracefully: sockets closed, buffer drained, producer
    flushed within ALPHAPANDA_FEED__SHUTDOWN_DEADLINE, the rest spooled to disk.
    """
    settings = settings_from(ctx)
    overrides: dict[str, object] = {}
    if instruments is not None:
        overrides["instruments_csv"] = instruments
    if mode is not None:
        if mode not in MODES:
            typer.secho(f"--mode must be ltp, quote or full, not {mode!r}", fg="red", err=True)
            raise typer.Exit(2)
        overrides["mode"] = mode
    if overrides:
        settings = settings.model_copy(update={"feed": settings.feed.model_copy(update=overrides)})
    handler = configure_logging(settings.log, secrets=secrets_of(settings))
    failed = False
    try:
        asyncio.run(
            run_feed(settings, run_for=run_for, metrics=metrics, api=api, registry=registry)
        )
    except* ServiceFailed as group:
        # Already drained and logged with its traceback; say it once and exit non-zero.
        failed = True
        for exc in group.exceptions:
            log.error("%s", exc)
    finally:
        flush_suppressed(handler)
    if failed:
        raise typer.Exit(1)


async def run_feed(
    settings: Settings,
    *,
    run_for: float | None = None,
    metrics: bool = True,
    api: bool = True,
    registry: bool = True,
) -> MarketFeedService:
    """Build the service (``open_feed``), wire signals, run it to completion; returns it
    (for figures)."""
    async with open_feed(settings, metrics=metrics, api=api, registry=registry) as service:
        await _run(service, run_for)
    return service


async def _run(service: MarketFeedService, run_for: float | None) -> None:
    loop = asyncio.get_running_loop()
    for signum in (signal.SIGTERM, signal.SIGINT):
        loop.add_signal_handler(signum, service.request_stop)
    try:
        async with asyncio.TaskGroup() as tg:
            runner = tg.create_task(service.run(), name="market-feed")
            if run_for is not None:
                with contextlib.suppress(TimeoutError):
                    async with asyncio.timeout(run_for):
                        await asyncio.shield(runner)
                service.request_stop()
    finally:
        for signum in (signal.SIGTERM, signal.SIGINT):
            loop.remove_signal_handler(signum)
    log.info("feed stopped: %s", service.accounting.snapshot())
