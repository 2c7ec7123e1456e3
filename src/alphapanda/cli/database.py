"""Running a command against PostgreSQL: one way to open the service, one way to fail.

``auth``, ``instruments`` and ``db`` all need the database. Bad input (``ValueError``)
exits 2 with its message; an unreachable server is a set-up mistake (``StartupError``,
exit 2), named by its setting and with the password masked.
"""

from __future__ import annotations

import asyncio
from collections.abc import Awaitable, Callable
from contextlib import AbstractAsyncContextManager
from typing import TypeVar

import typer
from sqlalchemy.exc import DBAPIError

from alphapanda.db.engine import Database
from alphapanda.ops.preflight import StartupError
from alphapanda.settings import Settings

T = TypeVar("T")
S = TypeVar("S")

# What a server that is down, refusing or unresolvable raises through SQLAlchemy.
UNREACHABLE = (OSError, TimeoutError, DBAPIError)


def unreachable(database: Database, exc: BaseException) -> StartupError:
    """The error for a PostgreSQL server the command could not reach."""
    return StartupError(
        f"ALPHAPANDA_DATABASE__URL: cannot reach PostgreSQL at {database.display_url} "
        f"({type(exc).__name__}); start it or fix the URL"
    )


def run_with_database(
    settings: Settings,
    open_service: Callable[[Settings], AbstractAsyncContextManager[S]],
    action: Callable[[S], Awaitable[T]],
) -> T:
    """Open the service, run ``action`` on it, close it; failures as the module says."""

    async def main() -> T:
        async with open_service(settings) as service:
            return await action(service)

    try:
        return asyncio.run(main())
    except ValueError as exc:
        typer.secho(str(exc), fg=typer.colors.RED, err=True)
        raise typer.Exit(2) from None
    except UNREACHABLE as exc:
        raise unreachable(Database.from_settings(settings.database), exc) from None
