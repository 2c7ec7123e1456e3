"""``alphapanda doctor``: is everything the feed needs reachable and configured?"""

from __future__ import annotations

import asyncio

import typer
from rich.console import Console
from rich.table import Table

from alphapanda.cli.app import app, settings_from
from alphapanda.ops.doctor import run_checks

_STYLE = {"OK": "[green]OK[/green]", "WARN": "[yellow]WARN[/yellow]", "FAIL": "[red]FAIL[/red]"}


@app.command(
    epilog="Examples:\n\n"
    "  alphapanda doctor\n\n"
    "  alphapanda --env-file /etc/alphapanda/feed.env doctor"
)
def doctor(ctx: typer.Context) -> None:
    """Check Kafka, Redis, PostgreSQL, the Kite endpoints and token, the streaming set,
    the topic and the Kite WebSocket.

    WARN marks a likely mistake (e.g. a real API key with the simulator's loopback
    URLs, expired contracts still streaming). Exits 1 if any check FAILs.
    """
    results = asyncio.run(run_checks(settings_from(ctx)))
    table = Table(title="alphapanda doctor")
    for column in ("check", "target", "status", "detail"):
        table.add_column(column)
    for result in results:
        table.add_row(result.name, result.target, _STYLE[result.status], result.detail)
    Console(width=160).print(table)
    if not all(r.ok for r in results):
        raise typer.Exit(1)
