"""``alphapanda auth login|set-token|status``: the Kite access token.

A running feed picks a newly stored token up at its next handshake (within about a
second while it waits in ``auth_required``). Tokens are never echoed.
"""

from __future__ import annotations

import asyncio
from collections.abc import Awaitable, Callable
from typing import Annotated, TypeVar
from urllib.parse import urlsplit

import typer
from sqlalchemy.exc import DBAPIError

from alphapanda.auth import AuthService, AuthStatus, LoginFailed
from alphapanda.auth.expiry import IST
from alphapanda.cli.app import app, settings_from
from alphapanda.ops.preflight import StartupError
from alphapanda.settings import Settings

auth_app = typer.Typer(help="Kite login and access tokens.", no_args_is_help=True)
app.add_typer(auth_app, name="auth")

T = TypeVar("T")


def _run(settings: Settings, action: Callable[[AuthService], Awaitable[T]]) -> T:
    async def main() -> T:
        async with AuthService(settings) as auth:
            return await action(auth)

    try:
        return asyncio.run(main())
    except LoginFailed as exc:
        typer.secho(str(exc), fg=typer.colors.RED, err=True)
        raise typer.Exit(1) from None
    except ValueError as exc:
        typer.secho(str(exc), fg=typer.colors.RED, err=True)
        raise typer.Exit(2) from None
    except (OSError, TimeoutError, DBAPIError) as exc:
        where = urlsplit(settings.database.url.get_secret_value())
        raise StartupError(
            f"ALPHAPANDA_DATABASE__URL: cannot reach PostgreSQL at {where.hostname}:"
            f"{where.port or 5432} ({type(exc).__name__}); start it or fix the URL"
        ) from None


def _describe(status: AuthStatus) -> str:
    lines = [f"api key:    {status.api_key}", f"source:     {status.source}"]
    if status.user_id:
        lines.append(f"user id:    {status.user_id}")
    if status.issued_at is not None:
        lines.append(f"issued at:  {status.issued_at.isoformat()}")
    if status.expires_at is not None:
        local = status.expires_at.astimezone(IST).strftime("%Y-%m-%d %H:%M IST")
        lines.append(f"expires at: {status.expires_at.isoformat()} ({local})")
    if status.seconds_left is not None:
        hours, rest = divmod(int(status.seconds_left), 3600)
        lines.append(f"time left:  {hours}h {rest // 60:02d}m ({int(status.seconds_left)} s)")
    state = "valid" if status.has_token else ("EXPIRED" if status.expired else "MISSING")
    lines.append(f"token:      {state}")
    if status.detail and not status.has_token:
        lines.append(status.detail)
    return "\n".join(lines)


@auth_app.command("login")
def login(
    ctx: typer.Context,
    request_token: Annotated[
        str, typer.Option("--request-token", help="From the Kite login redirect URL.")
    ],
) -> None:
    """Exchange a login request_token for an access token (official kiteconnect client)."""
    status = _run(settings_from(ctx), lambda auth: auth.login(request_token))
    typer.echo("logged in; access token stored")
    typer.echo(_describe(status))


@auth_app.command("set-token")
def set_token(
    ctx: typer.Context,
    access_token: Annotated[
        str | None,
        typer.Argument(help="The access token; prompted for (hidden) when omitted."),
    ] = None,
    user_id: Annotated[str | None, typer.Option("--user-id", help="Kite user id.")] = None,
) -> None:
    """Store an access token obtained elsewhere (expires at the next 06:00 IST)."""
    token = access_token or typer.prompt("access token", hide_input=True)
    status = _run(settings_from(ctx), lambda auth: auth.set_token(token, user_id))
    typer.echo("access token stored")
    typer.echo(_describe(status))


@auth_app.command("status")
def status(ctx: typer.Context) -> None:
    """Show where the token comes from and when it expires; exit 1 without a usable one."""
    current = _run(settings_from(ctx), lambda auth: auth.status())
    typer.echo(_describe(current))
    if not current.has_token:
        raise typer.Exit(1)
