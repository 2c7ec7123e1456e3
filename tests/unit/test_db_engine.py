"""``Database``: schema names safe to splice into DDL, the masked URL, and the options
every engine and raw connection is made with (no connection is opened here)."""

from __future__ import annotations

from typing import Any

import asyncpg
import pytest
from pydantic import SecretStr
from sqlalchemy.pool import NullPool

from alphapanda.db import engine as engine_module
from alphapanda.db.engine import (
    COMMAND_TIMEOUT,
    CONNECT_TIMEOUT,
    DEFAULT_SCHEMA,
    Database,
    validate_schema,
)
from alphapanda.settings import DatabaseSettings

pytestmark = pytest.mark.unit

URL = "postgresql+asyncpg://feed:s3cret@db.example:6543/alphapanda"


@pytest.mark.parametrize("name", ["public", "test_0a1b2c", "_private", "a" * 63, "x"])
def test_lower_case_identifiers_are_valid_schema_names(name: str) -> None:
    assert validate_schema(name) == name


@pytest.mark.parametrize(
    "name",
    ["", "Public", "1st", "a" * 64, 'x"; DROP SCHEMA public; --', "with-dash", "dot.ted", "sp ace"],
)
def test_anything_else_is_refused_as_a_schema_name(name: str) -> None:
    with pytest.raises(ValueError, match="invalid PostgreSQL schema name"):
        validate_schema(name)


def test_a_database_with_a_bad_schema_cannot_be_made() -> None:
    with pytest.raises(ValueError, match="invalid PostgreSQL schema name 'Bad'"):
        Database(SecretStr(URL), schema="Bad")


def test_the_settings_schema_is_used_unless_another_is_given() -> None:
    settings = DatabaseSettings(url=SecretStr(URL), schema_name="feed_prod")
    assert Database.from_settings(settings).schema == "feed_prod"
    assert Database.from_settings(settings, schema="test_x").schema == "test_x"
    assert Database.from_settings(settings).url.get_secret_value() == URL
    assert Database(SecretStr(URL)).schema == DEFAULT_SCHEMA == "public"


def test_the_display_url_masks_the_password() -> None:
    database = Database(SecretStr(URL))
    assert "s3cret" not in database.display_url
    assert "db.example:6543/alphapanda" in database.display_url
    assert "s3cret" not in repr(database)


def test_every_connection_searches_the_schema() -> None:
    assert Database(SecretStr(URL), schema="test_s").server_settings() == {
        "search_path": "test_s",
        "application_name": "alphapanda",
    }


@pytest.fixture
def engine_options(monkeypatch: pytest.MonkeyPatch) -> list[tuple[str, dict[str, Any]]]:
    made: list[tuple[str, dict[str, Any]]] = []

    def create_async_engine(url: str, **options: Any) -> str:
        made.append((url, options))
        return "engine"

    monkeypatch.setattr(engine_module, "create_async_engine", create_async_engine)
    return made


def test_an_engine_hides_parameters_pings_and_fails_fast(
    engine_options: list[tuple[str, dict[str, Any]]],
) -> None:
    Database(SecretStr(URL), schema="test_s", connect_timeout=2.5).create_engine()
    ((url, options),) = engine_options
    assert url == URL
    assert options["hide_parameters"] is True  # parameters may carry access tokens
    assert options["pool_pre_ping"] is True
    assert (options["pool_size"], options["max_overflow"]) == (5, 5)
    assert options["connect_args"] == {
        "server_settings": {"search_path": "test_s", "application_name": "alphapanda"},
        "timeout": 2.5,
        "command_timeout": COMMAND_TIMEOUT,
    }


def test_the_default_connect_timeout_is_short() -> None:
    assert Database(SecretStr(URL)).connect_timeout == CONNECT_TIMEOUT <= 10


def test_a_pool_class_given_replaces_the_pool_sizes(
    engine_options: list[tuple[str, dict[str, Any]]],
) -> None:
    Database(SecretStr(URL)).create_engine(poolclass=NullPool, echo=True)
    ((_, options),) = engine_options
    assert options["poolclass"] is NullPool and options["echo"] is True
    assert "pool_size" not in options and "max_overflow" not in options
    assert options["hide_parameters"] is True


def test_caller_options_win_over_the_defaults(
    engine_options: list[tuple[str, dict[str, Any]]],
) -> None:
    Database(SecretStr(URL)).create_engine(pool_size=1)
    assert engine_options[0][1]["pool_size"] == 1


async def test_a_raw_connection_uses_the_plain_driver_url_with_its_password(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    calls: list[tuple[str, dict[str, Any]]] = []

    async def connect(dsn: str, **options: Any) -> str:
        calls.append((dsn, options))
        return "connection"

    monkeypatch.setattr(asyncpg, "connect", connect)
    database = Database(SecretStr(URL), schema="test_s", connect_timeout=1.5)
    assert await database.connect_raw() == "connection"
    ((dsn, options),) = calls
    assert dsn == "postgresql://feed:s3cret@db.example:6543/alphapanda"
    assert options == {
        "timeout": 1.5,
        "server_settings": {"search_path": "test_s", "application_name": "alphapanda"},
    }
