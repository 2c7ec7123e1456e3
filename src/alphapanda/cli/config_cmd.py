"""``alphapanda config show``: the effective settings, secrets masked."""

from __future__ import annotations

import json
from typing import Annotated

import typer
from rich.console import Console
from rich.table import Table

from alphapanda.cli.app import app, settings_from
from alphapanda.settings import effective_settings, env_name

config_app = typer.Typer(
    help="Inspect the configuration.",
    no_args_is_help=True,
    epilog="Examples:\n\n  alphapanda config show",
)
app.add_typer(config_app, name="config")


@config_app.command(
    "show",
    epilog="Examples:\n\n"
    "  alphapanda config show\n\n"
    "  alphapanda --env-file /etc/alphapanda/feed.env config show --json",
)
def show(
    ctx: typer.Context,
    as_json: Annotated[bool, typer.Option("--json", help="Print JSON instead of a table.")] = False,
) -> None:
    """Print every setting with the environment variable that sets it (secrets masked)."""
    shown = effective_settings(settings_from(ctx))
    if as_json:
        typer.echo(json.dumps(shown, indent=2, default=str))
        return
    table = Table(title="alphapanda settings")
    table.add_column("variable")
    table.add_column("value")
    for group, values in shown.items():
        for name, value in values.items():
            table.add_row(env_name((group, name)), str(value))
    Console().print(table)
