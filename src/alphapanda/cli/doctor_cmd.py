"""``alphapanda doctor``: is every dependency of the feed reachable?"""

from __future__ import annotations

import asyncio

import typer
from rich.console import Console
from rich.table import Table

from alphapanda.cli.app import app, settings_from
from alphapanda.ops.doctor import run_checks


@app.command()
def doctor(ctx: typer.Context) -> None:
    """Check Kafka, Redis, PostgreSQL and the Kite WebSocket; exit 1 if any fails."""
    results = asyncio.run(run_checks(settings_from(ctx)))
    table = Table(title="alphapanda doctor")
    for column in ("service", "target", "status", "detail"):
        table.add_column(column)
    for result in results:
        status = "[green]OK[/green]" if result.ok else "[red]FAIL[/red]"
        table.add_row(result.name, result.target, status, result.detail)
    Console(width=160).print(table)
    if not all(r.ok for r in results):
        raise typer.Exit(1)
