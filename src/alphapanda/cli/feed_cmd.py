"""``alphapanda feed``: run the market feed (Kite ticker → Kafka) until SIGTERM/SIGINT."""

from __future__ import annotations

import asyncio
import contextlib
import logging
import signal
from pathlib import Path
from typing import Annotated, Final

import typer

from alphapanda.assembly import open_feed
from alphapanda.cli.app import app, settings_from
from alphapanda.heap import freeze_long_lived, keep_freed_memory
from alphapanda.logs import configure_logging, flush_suppressed, secrets_of
from alphapanda.ops.preflight import feed_preflight
from alphapanda.parts import FeedParts
from alphapanda.pipeline.spool import SpoolError
from alphapanda.production import require_secure
from alphapanda.service import MarketFeedService, ServiceFailed
from alphapanda.settings import Settings, SubscriptionMode, resolve_paths

log = logging.getLogger("alphapanda.feed")

# Seconds after readiness at which the objects alive are frozen (alphapanda.heap).
FREEZE_AFTER_READY: Final = 5.0


@app.command(
    epilog="Examples:\n\n"
    "  alphapanda feed\n\n"
    "  alphapanda --env-file /etc/alphapanda/feed.env feed\n\n"
    "  alphapanda feed --instruments data/instruments.csv --mode quote --seconds 60",
)
def feed(
    ctx: typer.Context,
    instruments: Annotated[
        Path | None,
        typer.Option(
            help="Instrument-dump CSV streamed while the registry has no streaming set or "
            "PostgreSQL is down, or always with --no-registry. "
            "[default: ALPHAPANDA_FEED__INSTRUMENTS_CSV; unset: none]",
            show_default=False,
        ),
    ] = None,
    mode: Annotated[
        SubscriptionMode | None,
        typer.Option(
            help="Tick mode of the CSV's instruments (the registry stores a mode per "
            "instrument). [default: ALPHAPANDA_FEED__MODE, i.e. full]",
            show_default=False,
        ),
    ] = None,
    seconds: Annotated[
        float | None,
        typer.Option(
            "--seconds", help="Stop by itself after this many seconds. [default: run until stopped]"
        ),
    ] = None,
    run_for: Annotated[float | None, typer.Option("--run-for", hidden=True)] = None,
    metrics: Annotated[
        bool, typer.Option(help="Flush metrics to Redis for dashboards and `alphapanda api`.")
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
    """Stream the registry's instruments from Kite into the market.ticks topic.

    The access token is looked up before every handshake: the one stored by
    `alphapanda auth login` or `auth set-token`, else ALPHAPANDA_KITE__ACCESS_TOKEN. A
    token or streaming set added while it runs is picked up without a restart.

    SIGTERM or SIGINT stops it gracefully: sockets closed, buffer drained, producer
    flushed within ALPHAPANDA_FEED__SHUTDOWN_DEADLINE, the rest spooled to disk.
    """
    settings = settings_from(ctx)
    overrides: dict[str, object] = {}
    if instruments is not None:
        overrides["instruments_csv"] = instruments
    if mode is not None:
        overrides["mode"] = mode
    run_for = seconds if seconds is not None else run_for
    if overrides:
        settings = settings.model_copy(update={"feed": settings.feed.model_copy(update=overrides)})
        settings = resolve_paths(settings)
    require_secure(settings, "feed", settings.api.host if api else None)
    if not registry and settings.feed.instruments_csv is None:
        typer.secho(
            "--no-registry streams a CSV only: give --instruments CSV "
            "(or set ALPHAPANDA_FEED__INSTRUMENTS_CSV)",
            fg="red",
            err=True,
        )
        raise typer.Exit(2)
    handler = configure_logging(settings.log, secrets=secrets_of(settings))
    failed = False
    unusable: list[str] = []
    try:
        with feed_preflight(settings, api=api):
            asyncio.run(
                run_feed(settings, run_for=run_for, metrics=metrics, api=api, registry=registry)
            )
    except* SpoolError as group:
        # E.g. another feed owns the spool directory: say so and exit 2.
        unusable.extend(str(exc) for exc in group.exceptions)
    except* ServiceFailed as group:
        # Already drained and logged with its traceback; say it once and exit non-zero.
        failed = True
        for exc in group.exceptions:
            log.error("%s", exc)
    finally:
        flush_suppressed(handler)
    for message in unusable:
        typer.secho(message, fg="red", err=True)
    if unusable:
        raise typer.Exit(2)
    if failed:
        raise typer.Exit(1)


async def run_feed(
    settings: Settings,
    *,
    run_for: float | None = None,
    metrics: bool = True,
    api: bool = True,
    registry: bool = True,
) -> FeedParts:
    """Build the parts (``open_feed``), wire signals, run the feed to completion; returns
    the parts (for figures)."""
    keep_freed_memory()
    async with open_feed(settings, metrics=metrics, api=api, registry=registry) as parts:
        await _run(MarketFeedService(parts), run_for)
        log.info("feed stopped: %s", parts.accounting.snapshot())
    return parts


async def _freeze_when_up(service: MarketFeedService) -> None:
    # After the first frames, so that the per-instrument state they create is frozen too.
    await service.ready.wait()
    await asyncio.sleep(FREEZE_AFTER_READY)
    if not service.stopping:
        freeze_long_lived()


async def _run(service: MarketFeedService, run_for: float | None) -> None:
    loop = asyncio.get_running_loop()
    for signum in (signal.SIGTERM, signal.SIGINT):
        loop.add_signal_handler(signum, service.request_stop)
    try:
        async with asyncio.TaskGroup() as tg:
            runner = tg.create_task(service.run(), name="market-feed")
            freezer = tg.create_task(_freeze_when_up(service), name="gc-freeze")
            runner.add_done_callback(lambda _: freezer.cancel())
            if run_for is not None:
                with contextlib.suppress(TimeoutError):
                    async with asyncio.timeout(run_for):
                        await asyncio.shield(runner)
                service.request_stop()
    finally:
        for signum in (signal.SIGTERM, signal.SIGINT):
            loop.remove_signal_handler(signum)
