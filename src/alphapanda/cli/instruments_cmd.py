"""``alphapanda instruments load|stream|unstream|list``: the instrument registry."""

from __future__ import annotations

import asyncio
from collections.abc import Awaitable, Callable
from pathlib import Path
from typing import Annotated, TypeVar

import typer
from rich.console import Console
from rich.table import Table
from sqlalchemy.exc import DBAPIError

from alphapanda.cli.app import app, settings_from
from alphapanda.registry import InstrumentRegistryService, LoadReport, StreamingInstrument
from alphapanda.settings import Settings, SubscriptionMode

instruments_app = typer.Typer(
    help="Manage instruments and the streaming set.", no_args_is_help=True
)
app.add_typer(instruments_app, name="instruments")

T = TypeVar("T")
MAX_SHOWN_ERRORS = 50


def _run(settings: Settings, action: Callable[[InstrumentRegistryService], Awaitable[T]]) -> T:
    async def main() -> T:
        async with InstrumentRegistryService(settings) as registry:
            return await action(registry)

    try:
        return asyncio.run(main())
    except ValueError as exc:
        typer.secho(str(exc), fg=typer.colors.RED, err=True)
        raise typer.Exit(2) from None
    except (OSError, TimeoutError, DBAPIError) as exc:
        typer.secho(f"cannot reach PostgreSQL: {type(exc).__name__}", fg=typer.colors.RED, err=True)
        raise typer.Exit(1) from None


@instruments_app.command("load")
def load(
    ctx: typer.Context,
    path: Annotated[Path, typer.Argument(help="Kite instrument dump CSV.", exists=True)],
    stream_mode: Annotated[
        SubscriptionMode | None,
        typer.Option("--stream-mode", help="Also stream every loaded instrument in this mode."),
    ] = None,
) -> None:
    """Upsert an instrument dump (idempotent). Bad rows are listed by line; good rows kept."""
    report: LoadReport = _run(
        settings_from(ctx), lambda registry: registry.load_dump(path, stream_mode)
    )
    for error in report.bad_rows[:MAX_SHOWN_ERRORS]:
        typer.echo(f"line {error.line}: {error.message}")
    if len(report.bad_rows) > MAX_SHOWN_ERRORS:
        typer.echo(f"... and {len(report.bad_rows) - MAX_SHOWN_ERRORS} more bad rows")
    summary = (
        f"loaded {report.good} instrument(s): inserted {report.inserted}, "
        f"updated {report.updated}, unchanged {report.unchanged}; bad {len(report.bad_rows)}"
    )
    if stream_mode is not None:
        summary += f"; streaming changed for {report.streaming_changed} in mode {stream_mode}"
    typer.echo(summary)


@instruments_app.command("stream")
def stream(
    ctx: typer.Context,
    tokens: Annotated[list[int], typer.Argument(help="Instrument tokens.")],
    mode: Annotated[SubscriptionMode, typer.Option("--mode", help="Tick mode.")] = "full",
) -> None:
    """Stream instruments in a mode; a running feed applies it within a second."""
    changed = _run(settings_from(ctx), lambda registry: registry.stream(tokens, mode))
    typer.echo(f"streaming {len(set(tokens))} instrument(s) in {mode} ({changed} changed)")


@instruments_app.command("unstream")
def unstream(
    ctx: typer.Context,
    tokens: Annotated[list[int], typer.Argument(help="Instrument tokens.")],
) -> None:
    """Stop streaming instruments."""
    changed = _run(settings_from(ctx), lambda registry: registry.unstream(tokens))
    typer.echo(f"stopped streaming {changed} instrument(s)")


@instruments_app.command("list")
def list_(
    ctx: typer.Context,
    show_all: Annotated[
        bool, typer.Option("--all", help="Include instruments whose streaming is off.")
    ] = False,
) -> None:
    """Show the streaming set."""
    rows: list[StreamingInstrument] = _run(
        settings_from(ctx), lambda registry: registry.list_streaming(include_disabled=show_all)
    )
    table = Table(title=f"streaming instruments ({sum(r.enabled for r in rows)})")
    for column in ("token", "exchange", "tradingsymbol", "mode", "enabled"):
        table.add_column(column)
    for row in rows:
        table.add_row(
            str(row.instrument_token),
            row.exchange,
            row.tradingsymbol,
            row.mode,
            "yes" if row.enabled else "no",
        )
    Console(width=160).print(table)
