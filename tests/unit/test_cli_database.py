"""``run_with_database``: the one way the database commands open a service and fail."""

from __future__ import annotations

from collections.abc import AsyncIterator
from contextlib import asynccontextmanager

import pytest
import typer

from alphapanda.cli.database import run_with_database
from alphapanda.ops.preflight import StartupError
from alphapanda.settings import Settings

pytestmark = pytest.mark.unit

URL = "postgresql+asyncpg://feed:s3cret@db.example:6543/alphapanda"


def settings() -> Settings:
    return Settings(database={"url": URL})  # type: ignore[arg-type]


def service(fail_with: BaseException | None = None) -> object:
    events: list[str] = []

    @asynccontextmanager
    async def open_service(_: Settings) -> AsyncIterator[list[str]]:
        if fail_with is not None:
            raise fail_with
        events.append("open")
        try:
            yield events
        finally:
            events.append("closed")

    return open_service, events


def test_the_action_runs_on_the_open_service_which_is_closed_after() -> None:
    open_service, events = service()

    async def action(seen: list[str]) -> int:
        seen.append("action")
        return 7

    assert run_with_database(settings(), open_service, action) == 7  # type: ignore[arg-type]
    assert events == ["open", "action", "closed"]


def test_bad_input_exits_2_with_its_message(capsys: pytest.CaptureFixture[str]) -> None:
    open_service, _ = service()

    async def action(_: list[str]) -> None:
        raise ValueError("no such instrument: NSE:NOPE")

    with pytest.raises(typer.Exit) as exit_:
        run_with_database(settings(), open_service, action)  # type: ignore[arg-type]
    assert exit_.value.exit_code == 2
    assert "no such instrument: NSE:NOPE" in capsys.readouterr().err


def test_an_unreachable_server_names_the_setting_and_masks_the_password() -> None:
    open_service, _ = service(ConnectionRefusedError(111, "refused"))

    async def action(_: list[str]) -> None:
        raise AssertionError("not reached")

    with pytest.raises(StartupError) as error:
        run_with_database(settings(), open_service, action)  # type: ignore[arg-type]
    message = str(error.value)
    assert message.startswith("ALPHAPANDA_DATABASE__URL: cannot reach PostgreSQL at ")
    assert "db.example:6543" in message and "ConnectionRefusedError" in message
    assert "s3cret" not in message
