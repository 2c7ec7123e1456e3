"""``alphapanda record`` and ``alphapanda replay``: capture raw Kite frames, feed them back."""

from __future__ import annotations

import asyncio
import contextlib
import signal
import sys
from pathlib import Path
from typing import Annotated, Any
from urllib.parse import urlsplit

import typer
from rich.console import Console
from rich.progress import BarColumn, DownloadColumn, Progress, TextColumn, TimeRemainingColumn

from alphapanda.cli.app import app, settings_from
from alphapanda.kite.client import TickerClient
from alphapanda.kite.protocol import Tick
from alphapanda.kite.tokens import StaticTokenProvider
from alphapanda.logs import configure_logging, flush_suppressed, secrets_of
from alphapanda.modes import MODES
from alphapanda.recording import RecordingError, RecordingReader, RecordingWriter
from alphapanda.replay import ReplaySource, replay_to_kafka, replay_to_stdout
from alphapanda.service import CsvInstrumentSource, MarketFeedService
from alphapanda.settings import Settings

_stderr = Console(stderr=True)


class _CountingSink:
    """The recorder keeps frames, not ticks: ticks are only counted."""

    def __init__(self) -> None:
        self.ticks = 0

    async def put_many(self, ticks: list[Tick]) -> None:
        self.ticks += len(ticks)


@app.command()
def record(
    ctx: typer.Context,
    out: Annotated[Path, typer.Option("--out", help="Recording file to create.")],
    seconds: Annotated[
        float | None, typer.Option(help="Stop after this many seconds (default: SIGINT).")
    ] = None,
    mode: Annotated[str, typer.Option(help="Subscription mode: ltp, quote or full.")] = "full",
    instruments: Annotated[
        Path | None,
        typer.Option(help="Instrument-dump CSV [default: ALPHAPANDA_FEED__INSTRUMENTS_CSV]."),
    ] = None,
) -> None:
    """Record the raw binary frames of the configured Kite ticker into OUT.

    Every WebSocket message is kept byte for byte with its receive time (ns) in an
    append-only, CRC-checked file that can be read while it is written. Replay it
    with ``alphapanda replay OUT``.
    """
    if mode not in MODES:
        typer.secho(f"--mode must be ltp, quote or full, not {mode!r}", fg="red", err=True)
        raise typer.Exit(2)
    if out.exists():
        typer.secho(f"{out} exists; refusing to overwrite it", fg="red", err=True)
        raise typer.Exit(2)
    settings = settings_from(ctx)
    handler = configure_logging(settings.log, secrets=secrets_of(settings))
    try:
        figures = asyncio.run(
            record_frames(
                settings,
                out,
                seconds=seconds,
                mode=mode,
                instruments=instruments or settings.feed.instruments_csv,
            )
        )
    finally:
        flush_suppressed(handler)
    _stderr.print(
        f"recorded {figures['frames']} frames ({figures['ticks']} ticks, "
        f"{figures['bytes']} bytes) to {out}"
        + (f"; {figures['dropped_frames']} frames left out" if figures["dropped_frames"] else "")
    )
    if figures["dropped_frames"]:
        raise typer.Exit(1)


async def record_frames(
    settings: Settings,
    out: Path,
    *,
    seconds: float | None,
    mode: str,
    instruments: Path,
) -> dict[str, int]:
    """Connect with the ``TickerClient`` and record every binary frame until ``seconds``
    have passed or SIGINT/SIGTERM; returns frames, ticks, bytes and dropped frames."""
    kite = settings.kite
    limit = kite.max_connections * kite.max_instruments_per_connection
    wanted = await CsvInstrumentSource(instruments, mode, limit).load()
    ws = urlsplit(kite.ws_url)
    # Metadata only: never the access token (which rides in the WebSocket URL).
    meta: dict[str, Any] = {
        "source": f"{ws.scheme}://{ws.hostname}:{ws.port}" if ws.port else ws.netloc,
        "mode": mode,
        "instruments": len(wanted),
    }
    writer = RecordingWriter(out, meta)
    writer.open()
    sink = _CountingSink()
    client = TickerClient(kite, StaticTokenProvider(kite), sink, frame_listener=writer.on_frame)
    await client.set_subscriptions(wanted)
    done = asyncio.Event()
    loop = asyncio.get_running_loop()
    for signum in (signal.SIGTERM, signal.SIGINT):
        loop.add_signal_handler(signum, done.set)
    try:
        async with asyncio.TaskGroup() as tg:
            tg.create_task(client.run(), name="kite-client")
            tg.create_task(writer.run(), name="recorder")
            with contextlib.suppress(TimeoutError):
                async with asyncio.timeout(seconds):
                    await done.wait()
            await client.stop()
            writer.stop()
    finally:
        for signum in (signal.SIGTERM, signal.SIGINT):
            loop.remove_signal_handler(signum)
    return {
        "frames": writer.frames,
        "ticks": sink.ticks,
        "bytes": writer.bytes_written,
        "dropped_frames": writer.dropped_frames,
    }


@app.command()
def replay(
    ctx: typer.Context,
    file: Annotated[Path, typer.Argument(help="A recording made by `alphapanda record`.")],
    speed: Annotated[
        float, typer.Option(help="Replay at this multiple of the recorded pace.")
    ] = 1.0,
    fast: Annotated[bool, typer.Option("--fast", help="As fast as possible.")] = False,
    to: Annotated[str, typer.Option("--to", help="kafka (the feed's topic) or stdout.")] = "kafka",
    progress: Annotated[bool, typer.Option(help="Progress bar on stderr.")] = True,
) -> None:
    """Feed a recording through the live decoder and pipeline.

    --to kafka runs the feed's own formatter, wire encoder and MessageProducer into
    the configured topic (spool and accounting included); --to stdout prints each
    tick as its market.ticks event, one JSON object per line.
    """
    if to not in ("kafka", "stdout"):
        typer.secho(f"--to must be kafka or stdout, not {to!r}", fg="red", err=True)
        raise typer.Exit(2)
    if speed <= 0:
        typer.secho("--speed must be > 0", fg="red", err=True)
        raise typer.Exit(2)
    try:
        RecordingReader(file)
    except (OSError, RecordingError) as exc:
        typer.secho(f"{file}: {exc}", fg="red", err=True)
        raise typer.Exit(2) from None
    settings = settings_from(ctx)
    handler = configure_logging(settings.log, secrets=secrets_of(settings))
    pace = None if fast else speed
    try:
        code = asyncio.run(_replay(settings, file, pace, to, progress))
    except RecordingError as exc:
        typer.secho(str(exc), fg="red", err=True)
        code = 1
    finally:
        flush_suppressed(handler)
    raise typer.Exit(code)


async def _replay(
    settings: Settings, file: Path, speed: float | None, to: str, show_progress: bool
) -> int:
    bar = Progress(
        TextColumn("replay"),
        BarColumn(),
        DownloadColumn(),
        TextColumn("{task.fields[ticks]} ticks"),
        TimeRemainingColumn(),
        console=_stderr,
        disable=not show_progress,
        transient=False,
    )
    sources: list[ReplaySource] = []
    stop_bar = asyncio.Event()

    async def refresh() -> None:
        task = bar.add_task("replay", total=None, ticks=0)
        while True:
            if sources:
                source = sources[0]
                bar.update(
                    task,
                    total=source.total_bytes,
                    completed=source.position_bytes,
                    ticks=source.stats.ticks,
                )
            if stop_bar.is_set():
                return
            with contextlib.suppress(TimeoutError):
                async with asyncio.timeout(0.2):
                    await stop_bar.wait()

    with bar:
        async with asyncio.TaskGroup() as tg:
            tg.create_task(refresh())
            try:
                if to == "stdout":
                    source, sink = await replay_to_stdout(
                        file, settings, sys.stdout.buffer, speed=speed, started=sources.append
                    )
                    summary = f"{sink.lines} lines printed, {sink.malformed} ticks malformed"
                    code = 0
                else:
                    source, service = await _replay_kafka(settings, file, speed, sources)
                    figures = service.accounting.snapshot()
                    imbalance = service.accounting.imbalance()
                    summary = (
                        f"topic {service.topic}: received={figures['received']} "
                        f"published={figures['published']} dropped={figures['dropped']} "
                        f"spooled={figures['spooled']} in_flight={figures['in_flight']}"
                    )
                    if figures["spooled"]:
                        # Not lost: the next feed run with this spool folder sends them.
                        summary += f"; {figures['spooled']} ticks wait in {settings.feed.spool_dir}"
                    code = 1 if imbalance or figures["in_flight"] or figures["spooled"] else 0
            finally:
                stop_bar.set()
    stats = source.stats.as_dict()
    _stderr.print(
        f"replayed {stats['frames']} frames, {stats['ticks']} ticks "
        f"(skipped packets: {stats['skipped'] or 0}); {summary}"
        + ("; the file ends in a partial record" if source.reader.tail == "partial" else "")
    )
    return code


async def _replay_kafka(
    settings: Settings, file: Path, speed: float | None, sources: list[ReplaySource]
) -> tuple[ReplaySource, MarketFeedService]:
    loop = asyncio.get_running_loop()

    def started(source: ReplaySource, service: MarketFeedService) -> None:
        sources.append(source)
        for signum in (signal.SIGTERM, signal.SIGINT):
            loop.add_signal_handler(signum, service.request_stop)

    try:
        return await replay_to_kafka(file, settings, speed=speed, started=started)
    finally:
        for signum in (signal.SIGTERM, signal.SIGINT):
            loop.remove_signal_handler(signum)
