"""``alphapanda auth login|set-token|status``: the Kite access token.

A running feed picks a newly stored token up at its next handshake (within about a
second while it waits in ``auth_required``). Tokens are never echoed.
"""

from __future__ import annotations

import asyncio
import webbrowser
from collections.abc import Awaitable, Callable
from typing import Annotated, TypeVar
from urllib.parse import urlsplit

import typer
from sqlalchemy.exc import DBAPIError

from alphapanda.auth import AuthService, AuthStatus, LoginFailed
from alphapanda.auth.expiry import IST
from alphapanda.auth.redirect import RedirectError, capture_request_token, listen_address, login_url
from alphapanda.cli.app import app, settings_from
from alphapanda.ops.preflight import StartupError
from alphapanda.settings import Settings

auth_app = typer.Typer(
    help="Kite login and access tokens.",
    no_args_is_help=True,
    epilog="Examples:\n\n  alphapanda auth login\n\n  alphapanda auth status",
)
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


@auth_app.command(
    "login",
    epilog="Examples:\n\n"
    "  alphapanda auth login\n\n"
    "  alphapanda auth login --no-browser --timeout 600\n\n"
    "  alphapanda auth login --request-token REQUEST_TOKEN\n\n"
    "  docker compose run --rm feed auth login",
)
def login(
    ctx: typer.Context,
    request_token: Annotated[
        str | None,
        typer.Option(
            "--request-token",
            help="The request_token parameter of the URL Kite redirected your browser to "
            "after a login done elsewhere; skips the browser step. "
            "[default: none: wait for the browser's redirect]",
            show_default=False,
        ),
    ] = None,
    browser: Annotated[
        bool,
        typer.Option(help="Also open the login URL in a browser, when this machine has one."),
    ] = True,
    timeout: Annotated[
        float, typer.Option(help="Seconds to wait for the browser to come back.")
    ] = 300.0,
) -> None:
    """Log in to Kite and store the day's access token in PostgreSQL.

    The login URL is built from ALPHAPANDA_KITE__API_KEY: Kite's own login page
    (kite.zerodha.com) when ALPHAPANDA_KITE__ENV=live, the simulator's
    (ALPHAPANDA_KITE__API_ROOT/connect/login) otherwise.

    What happens: the URL is printed (and opened in a browser when there is one); you
    log in to Kite there; Kite sends your browser to ALPHAPANDA_KITE__REDIRECT_URL, where
    this command is listening on loopback (register exactly that URL as your Kite app's
    redirect URL); the request token it carries is exchanged for an access token with
    ALPHAPANDA_KITE__API_SECRET, and the token is stored. A running feed picks it up
    within about a second. The token expires at the next 06:00 IST.

    On a server, open the printed URL through an SSH tunnel to the redirect port, or log
    in elsewhere and pass --request-token.
    """
    settings = settings_from(ctx)
    if request_token is None:
        request_token = _browser_login(settings, browser, timeout)
    token = request_token
    status = _run(settings, lambda auth: auth.login(token))
    typer.echo("logged in; access token stored")
    typer.echo(_describe(status))


def _browser_login(settings: Settings, browser: bool, timeout: float) -> str:
    kite = settings.kite
    url = login_url(kite.api_key, kite.api_root)
    try:
        listen_address(kite.redirect_url)
    except RedirectError as exc:
        raise StartupError(str(exc)) from None
    typer.echo(f"Open this URL to log in to Kite:\n  {url}")
    typer.echo(f"waiting up to {timeout:.0f} s for the redirect to {kite.redirect_url} ...")
    if browser:
        _open_browser(url)
    try:
        return asyncio.run(capture_request_token(kite.redirect_url, timeout))
    except RedirectError as exc:
        raise StartupError(str(exc)) from None
    except TimeoutError:
        typer.secho(
            f"no login came back within {timeout:.0f} s; run it again, or pass "
            "--request-token from the redirect URL",
            fg=typer.colors.RED,
            err=True,
        )
        raise typer.Exit(1) from None


def _open_browser(url: str) -> None:
    try:
        webbrowser.get()
    except webbrowser.Error:
        return  # no browser here (a server): the printed URL is the way
    webbrowser.open(url)


@auth_app.command(
    "set-token",
    epilog="Examples:\n\n"
    "  alphapanda auth set-token\n\n"
    "  alphapanda auth set-token --user-id AB1234",
)
def set_token(
    ctx: typer.Context,
    access_token: Annotated[
        str | None,
        typer.Argument(
            help="The access token. [default: prompted for, without echo]", show_default=False
        ),
    ] = None,
    user_id: Annotated[
        str | None,
        typer.Option("--user-id", help="Kite user id, shown by `auth status`. [default: none]"),
    ] = None,
) -> None:
    """Store an access token obtained elsewhere (e.g. from your own Kite login code).

    It counts as valid until the next 06:00 IST, when Kite expires every token. A running
    feed picks it up within about a second.
    """
    token = access_token or typer.prompt("access token", hide_input=True)
    status = _run(settings_from(ctx), lambda auth: auth.set_token(token, user_id))
    typer.echo("access token stored")
    typer.echo(_describe(status))


@auth_app.command(
    "status",
    epilog="Examples:\n\n"
    "  alphapanda auth status\n\n"
    "  alphapanda auth status || alphapanda auth login",
)
def status(ctx: typer.Context) -> None:
    """Show where the access token comes from (stored by a login, or set in
    ALPHAPANDA_KITE__ACCESS_TOKEN) and when it expires. Exit code 1 without a usable
    token."""
    current = _run(settings_from(ctx), lambda auth: auth.status())
    typer.echo(_describe(current))
    if not current.has_token:
        raise typer.Exit(1)
