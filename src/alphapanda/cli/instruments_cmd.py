"""``alphapanda instruments fetch|find|load|stream|unstream|list``: the instrument registry."""

from __future__ import annotations

import asyncio
import datetime as dt
from collections.abc import Awaitable, Callable
from pathlib import Path
from typing import Annotated, TypeVar

import typer
from rich.console import Console
from rich.table import Table
from sqlalchemy.exc import DBAPIError

from alphapanda.auth import AuthRequired, AuthService
from alphapanda.auth.expiry import IST
from alphapanda.cli.app import app, settings_from
from alphapanda.instruments.fetch import FetchError
from alphapanda.registry import InstrumentRegistryService, LoadReport, StreamingInstrument
from alphapanda.registry.lookup import FoundInstrument
from alphapanda.registry.refresh import RefreshReport, refresh
from alphapanda.settings import Settings, SubscriptionMode

instruments_app = typer.Typer(
    help="The instrument registry: Kite's instrument list and which instruments stream.",
    no_args_is_help=True,
    epilog="Examples:\n\n"
    "  alphapanda instruments fetch --exchange NSE\n\n"
    "  alphapanda instruments stream NSE:INFY NSE:RELIANCE",
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


def _echo_bad_rows(report: LoadReport) -> None:
    for error in report.bad_rows[:MAX_SHOWN_ERRORS]:
        typer.echo(f"line {error.line}: {error.message}")
    if len(report.bad_rows) > MAX_SHOWN_ERRORS:
        typer.echo(f"... and {len(report.bad_rows) - MAX_SHOWN_ERRORS} more bad rows")


@instruments_app.command(
    "load",
    epilog="Examples:\n\n"
    "  alphapanda instruments load instruments.csv\n\n"
    "  alphapanda instruments load my-watchlist.csv --mode quote",
)
def load(
    ctx: typer.Context,
    path: Annotated[Path, typer.Argument(help="A Kite instrument-dump CSV file.", exists=True)],
    stream_mode: Annotated[
        SubscriptionMode | None,
        typer.Option(
            "--mode",
            help="Also stream every loaded instrument in this mode (ltp, quote or full). "
            "[default: load only]",
            show_default=False,
        ),
    ] = None,
    old_stream_mode: Annotated[
        SubscriptionMode | None, typer.Option("--stream-mode", hidden=True)
    ] = None,
) -> None:
    """Upsert an instrument-dump CSV file into the registry (running it twice is harmless).

    Bad rows are listed by line number and skipped; the good rows are kept. With
    --mode, a file of more instruments than the API key can stream (9,000) is refused
    whole: nothing is loaded.
    """
    stream_mode = stream_mode or old_stream_mode
    report: LoadReport = _run(
        settings_from(ctx), lambda registry: registry.load_dump(path, stream_mode)
    )
    _echo_bad_rows(report)
    summary = (
        f"loaded {report.good} instrument(s): inserted {report.inserted}, "
        f"updated {report.updated}, unchanged {report.unchanged}; bad {len(report.bad_rows)}"
    )
    if stream_mode is not None:
        summary += f"; streaming changed for {report.streaming_changed} in mode {stream_mode}"
    typer.echo(summary)


@instruments_app.command(
    "fetch",
    epilog="Examples:\n\n"
    "  alphapanda instruments fetch\n\n"
    "  alphapanda instruments fetch --exchange NFO,NSE --retire-expired",
)
def fetch(
    ctx: typer.Context,
    exchange: Annotated[
        str | None,
        typer.Option(
            "--exchange",
            help="Comma-separated exchanges (NSE, BSE, NFO, CDS, BCD, MCX, ...). "
            "[default: every exchange]",
            show_default=False,
        ),
    ] = None,
    retire_expired: Annotated[
        bool,
        typer.Option(
            "--retire-expired",
            help="Also stop streaming contracts whose expiry date has passed (IST).",
        ),
    ] = False,
) -> None:
    """Download Kite's instrument dump into the registry, with the stored access token.

    Run it each morning after `alphapanda auth login`: Kite lists new contracts daily.
    Instruments are upserted (nothing streams until you choose with `instruments
    stream`); with --retire-expired every expired contract leaves the streaming set
    and is listed.
    """
    settings = settings_from(ctx)
    exchanges = [e.strip().upper() for e in (exchange or "").split(",") if e.strip()]
    retire_before = dt.datetime.now(IST).date() if retire_expired else None

    async def action(registry: InstrumentRegistryService) -> RefreshReport:
        async with AuthService(settings) as auth:
            return await refresh(
                settings, registry, auth, exchanges, retire_expired_before=retire_before
            )

    try:
        report = _run(settings, action)
    except (FetchError, AuthRequired) as exc:
        typer.secho(str(exc), fg=typer.colors.RED, err=True)
        raise typer.Exit(1) from None
    for name, loaded in report.loaded.items():
        _echo_bad_rows(loaded)
        typer.echo(
            f"{name}: {loaded.good} instrument(s): inserted {loaded.inserted}, "
            f"updated {loaded.updated}, unchanged {loaded.unchanged}; bad {len(loaded.bad_rows)}"
        )
    if retire_expired:
        for gone in report.retired:
            typer.echo(f"retired {gone.symbol} ({gone.instrument_token}), expired {gone.expiry}")
        typer.echo(f"retired {len(report.retired)} expired contract(s) from the streaming set")


@instruments_app.command(
    "find",
    epilog="Examples:\n\n"
    "  alphapanda instruments find INFY\n\n"
    "  alphapanda instruments find NIFTY --exchange NFO --limit 20",
)
def find(
    ctx: typer.Context,
    text: Annotated[str, typer.Argument(help="Part of a trading symbol or name.")],
    exchange: Annotated[
        str | None,
        typer.Option("--exchange", help="Only this exchange. [default: every exchange]"),
    ] = None,
    limit: Annotated[int, typer.Option("--limit", min=1, help="Most rows shown.")] = 50,
) -> None:
    """Search the registry by trading symbol or name (exact symbol matches first)."""
    rows: list[FoundInstrument] = _run(
        settings_from(ctx), lambda registry: registry.find(text, exchange=exchange, limit=limit)
    )
    table = Table(title=f"instruments matching {text!r} ({len(rows)})")
    for column in ("symbol", "token", "name", "type", "expiry", "lot", "streaming"):
        table.add_column(column)
    for row in rows:
        table.add_row(
            row.symbol,
            str(row.instrument_token),
            row.name,
            row.instrument_type,
            row.expiry.isoformat() if row.expiry else "",
            str(row.lot_size),
            row.streaming_mode or "",
        )
    Console(width=160).print(table)
    if not rows:
        typer.echo("nothing found; is the registry filled? (`alphapanda instruments fetch`)")
        raise typer.Exit(1)


_REFS_HELP = "Instruments as EXCHANGE:TRADINGSYMBOL (NSE:INFY) or instrument tokens (408065)."


@instruments_app.command(
    "stream",
    epilog="Examples:\n\n"
    "  alphapanda instruments stream NSE:INFY NSE:RELIANCE NFO:NIFTY24DECFUT\n\n"
    "  alphapanda instruments stream 256265 --mode ltp",
)
def stream(
    ctx: typer.Context,
    refs: Annotated[list[str], typer.Argument(help=_REFS_HELP, metavar="INSTRUMENT...")],
    mode: Annotated[
        SubscriptionMode, typer.Option("--mode", help="Tick mode: ltp, quote or full.")
    ] = "full",
) -> None:
    """Add instruments to the streaming set; a running feed applies it within a second.

    Refused whole (nothing changes) when an instrument is unknown or the set would
    exceed the API key's capacity (3 connections x 3,000 = 9,000 instruments).
    """

    async def action(registry: InstrumentRegistryService) -> tuple[int, int]:
        tokens = await registry.resolve(refs)
        return len(set(tokens)), await registry.stream(tokens, mode)

    count, changed = _run(settings_from(ctx), action)
    typer.echo(f"streaming {count} instrument(s) in {mode} ({changed} changed)")


@instruments_app.command(
    "unstream",
    epilog="Examples:\n\n  alphapanda instruments unstream NSE:INFY 256265",
)
def unstream(
    ctx: typer.Context,
    refs: Annotated[list[str], typer.Argument(help=_REFS_HELP, metavar="INSTRUMENT...")],
) -> None:
    """Remove instruments from the streaming set (their mode is remembered)."""

    async def action(registry: InstrumentRegistryService) -> int:
        return await registry.unstream(await registry.resolve(refs))

    changed = _run(settings_from(ctx), action)
    typer.echo(f"stopped streaming {changed} instrument(s)")


@instruments_app.command(
    "list",
    epilog="Examples:\n\n  alphapanda instruments list\n\n  alphapanda instruments list --all",
)
def list_(
    ctx: typer.Context,
    show_all: Annotated[
        bool, typer.Option("--all", help="Also list instruments taken out of the streaming set.")
    ] = False,
) -> None:
    """Show the streaming set: symbol, token and mode of each instrument."""
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
