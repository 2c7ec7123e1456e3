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
from alphapanda.instruments.sources import CsvInstrumentSource
from alphapanda.kite.client import TickerClient
from alphapanda.kite.ports import StaticTokenProvider
from alphapanda.kite.protocol import Tick
from alphapanda.logs import configure_logging, flush_suppressed, secrets_of
from alphapanda.parts import FeedParts
from alphapanda.pipeline.spool import SpoolError
from alphapanda.recording import RecordingError, RecordingReader, RecordingWriter
from alphapanda.replay import ReplaySource, replay_to_kafka, replay_to_stdout
from alphapanda.service import MarketFeedService
from alphapanda.settings import Settings, SubscriptionMode
from alphapanda.topics import TopicNames

_stderr = Console(stderr=True)


class _CountingSink:
    """The recorder keeps frames, not ticks: ticks are only counted."""

    def __init__(self) -> None:
        self.ticks = 0

    async def put_many(self, ticks: list[Tick]) -> None:
        self.ticks += len(ticks)


@app.command(
    epilog="Examples:\n\n"
    "  alphapanda record --out session.aprec --seconds 60 --instruments data/instruments.csv\n\n"
    "  alphapanda record --out open.aprec --mode quote --instruments watchlist.csv",
)
def record(
    ctx: typer.Context,
    out: Annotated[Path, typer.Option("--out", help="The recording file to create.")],
    seconds: Annotated[
        float | None,
        typer.Option(
            "--seconds", help="Stop after this many seconds. [default: until Ctrl-C or SIGTERM]"
        ),
    ] = None,
    mode: Annotated[
        SubscriptionMode, typer.Option("--mode", help="Tick mode: ltp, quote or full.")
    ] = "full",
    instruments: Annotated[
        Path | None,
        typer.Option(
            "--instruments",
            help="Instrument-dump CSV of the instruments to record. "
            "[default: ALPHAPANDA_FEED__INSTRUMENTS_CSV]",
            show_default=False,
        ),
    ] = None,
) -> None:
    """Record the raw binary frames of the configured Kite ticker into OUT.

    Every WebSocket message is kept byte for byte with its receive time (ns) in an
    append-only, CRC-checked file that can be read while it is written. Replay it
    with ``alphapanda replay OUT``.
    """
    if out.exists():
        typer.secho(f"{out} exists; refusing to overwrite it", fg="red", err=True)
        raise typer.Exit(2)
    settings = settings_from(ctx)
    csv = instruments or settings.feed.instruments_csv
    if csv is None:
        typer.secho(
            "no instruments to record: give --instruments CSV "
            "(or set ALPHAPANDA_FEED__INSTRUMENTS_CSV)",
            fg="red",
            err=True,
        )
        raise typer.Exit(2)
    handler = configure_logging(settings.log, secrets=secrets_of(settings))
    try:
        figures = asyncio.run(
            record_frames(
                settings,
                out,
                seconds=seconds,
                mode=mode,
                instruments=csv,
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
    limit = kite.capacity
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


@app.command(
    epilog="Examples:\n\n"
    "  alphapanda replay session.aprec --to stdout --fast | head\n\n"
    "  alphapanda replay session.aprec --to kafka --topic-prefix replay. --speed 10",
)
def replay(
    ctx: typer.Context,
    file: Annotated[Path, typer.Argument(help="A recording made by `alphapanda record`.")],
    to: Annotated[
        str,
        typer.Option(
            "--to",
            help="stdout: one JSON event per line; kafka: the topic market.ticks behind "
            "the topic prefix. Required, so a replay never lands in the live topic by "
            "accident.",
            show_default=False,
        ),
    ],
    topic_prefix: Annotated[
        str | None,
        typer.Option(
            "--topic-prefix",
            help="With --to kafka: write to the topic PREFIX + market.ticks. "
            "[default: ALPHAPANDA_KAFKA__TOPIC_PREFIX, i.e. the live topic]",
            show_default=False,
        ),
    ] = None,
    speed: Annotated[
        float, typer.Option(help="Replay at this multiple of the recorded pace.")
    ] = 1.0,
    fast: Annotated[
        bool, typer.Option("--fast", help="As fast as possible (ignores --speed).")
    ] = False,
    progress: Annotated[bool, typer.Option(help="Show a progress bar on stderr.")] = True,
) -> None:
    """Feed a recording through the live decoder and pipeline.

    --to kafka runs the feed's own formatter, wire encoder and producer into the topic
    (spool and tick accounting included). Every record it writes carries the header
    `replayed` (the original receive time, ns since the epoch); the event's
    data.received_at is the original receive time too, emitted_at the replay's.
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
    if topic_prefix is not None:
        try:
            TopicNames.market_ticks(topic_prefix)
        except ValueError as exc:
            typer.secho(f"--topic-prefix: {exc}", fg="red", err=True)
            raise typer.Exit(2) from None
        kafka = settings.kafka.model_copy(update={"topic_prefix": topic_prefix})
        settings = settings.model_copy(update={"kafka": kafka})
    handler = configure_logging(settings.log, secrets=secrets_of(settings))
    pace = None if fast else speed
    try:
        code = _run_replay(settings, file, pace, to, progress)
    except RecordingError as exc:
        typer.secho(str(exc), fg="red", err=True)
        code = 1
    finally:
        flush_suppressed(handler)
    raise typer.Exit(code)


def _run_replay(
    settings: Settings, file: Path, speed: float | None, to: str, show_progress: bool
) -> int:
    code = 2
    try:
        code = asyncio.run(_replay(settings, file, speed, to, show_progress))
    except* SpoolError as group:
        # E.g. a live feed owns the spool directory: replaying into it would steal it.
        for exc in group.exceptions:
            typer.secho(str(exc), fg="red", err=True)
    return code


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
                    source, parts = await _replay_kafka(settings, file, speed, sources)
                    figures = parts.accounting.snapshot()
                    imbalance = parts.accounting.imbalance()
                    summary = (
                        f"topic {parts.topic}: received={figures['received']} "
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
) -> tuple[ReplaySource, FeedParts]:
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
