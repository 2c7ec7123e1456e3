"""``alphapanda db upgrade|current``: the PostgreSQL schema migrations."""

from __future__ import annotations

import asyncio

import typer
from sqlalchemy.exc import DBAPIError

from alphapanda.cli.app import app, settings_from
from alphapanda.db.engine import Database
from alphapanda.db.migrate import current_revision, head_revision, upgrade

db_app = typer.Typer(
    help="Manage the PostgreSQL schema.",
    no_args_is_help=True,
    epilog="Examples:\n\n  alphapanda db upgrade\n\n  alphapanda db current",
)
app.add_typer(db_app, name="db")


@db_app.command(
    "upgrade",
    epilog="Examples:\n\n  alphapanda db upgrade\n\n  alphapanda db current",
)
def upgrade_cmd(
    ctx: typer.Context,
    revision: str = typer.Argument("head", help="Target revision (head: the newest)."),
) -> None:
    """Apply pending migrations (idempotent; safe while the feed runs)."""
    database = Database.from_settings(settings_from(ctx).database)
    try:
        now = asyncio.run(upgrade(database, revision))
    except (OSError, TimeoutError, DBAPIError) as exc:
        typer.secho(
            f"cannot reach PostgreSQL at {database.display_url}: {type(exc).__name__}",
            fg=typer.colors.RED,
            err=True,
        )
        raise typer.Exit(1) from None
    typer.echo(f"schema {database.schema} at revision {now}")


@db_app.command(
    "current",
    epilog="Examples:\n\n  alphapanda db current\n\n"
    "  ALPHAPANDA_DATABASE__SCHEMA_NAME=feed2 alphapanda db current",
)
def current_cmd(ctx: typer.Context) -> None:
    """Show the schema's revision and the newest one this version ships."""
    database = Database.from_settings(settings_from(ctx).database)
    now = asyncio.run(current_revision(database))
    head = head_revision()
    state = "up to date" if now == head else "upgrade needed"
    typer.echo(f"schema {database.schema}: revision {now or 'none'} (head {head}, {state})")
