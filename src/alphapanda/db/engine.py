"""One way to reach PostgreSQL: an async SQLAlchemy engine, plus raw asyncpg for LISTEN.

Every table lives in one PostgreSQL schema (``public`` unless told otherwise). The
schema is applied through the connection's ``search_path``, so SQL and migrations stay
schema-agnostic; tests give every run its own schema and never clash on the shared
database.
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from typing import Any

import asyncpg
from pydantic import SecretStr
from sqlalchemy.engine import make_url
from sqlalchemy.ext.asyncio import AsyncEngine, create_async_engine

from alphapanda.settings import DatabaseSettings, redact_url

DEFAULT_SCHEMA = "public"
# asyncpg's own default connect timeout is 60 s; a down database must fail fast so the
# caller can fall back (CSV instruments, cached token) and retry in the background.
CONNECT_TIMEOUT = 5.0
COMMAND_TIMEOUT = 30.0

_SCHEMA_NAME = re.compile(r"^[a-z_][a-z0-9_]{0,62}$")


def validate_schema(schema: str) -> str:
    """A schema name we may splice into DDL: lower-case identifier, at most 63 chars."""
    if not _SCHEMA_NAME.fullmatch(schema):
        raise ValueError(f"invalid PostgreSQL schema name {schema!r}")
    return schema


@dataclass(frozen=True)
class Database:
    """Where the tables are: the (secret) URL and the schema. Cheap to copy; no I/O."""

    url: SecretStr
    schema: str = DEFAULT_SCHEMA
    connect_timeout: float = CONNECT_TIMEOUT

    def __post_init__(self) -> None:
        validate_schema(self.schema)

    @classmethod
    def from_settings(cls, settings: DatabaseSettings, schema: str | None = None) -> Database:
        """The database of the settings, in ``schema`` or the configured ``schema_name``."""
        return cls(url=settings.url, schema=schema or settings.schema_name)

    @property
    def display_url(self) -> str:
        """The URL with its password masked, safe for logs and CLI output."""
        return redact_url(self.url.get_secret_value())

    def server_settings(self) -> dict[str, str]:
        return {"search_path": self.schema, "application_name": "alphapanda"}

    def create_engine(self, **kwargs: Any) -> AsyncEngine:
        """An async engine whose every connection uses this schema.

        ``pool_pre_ping`` lets a pooled connection that died with a database restart be
        replaced transparently instead of failing the next query.
        """
        connect_args = {
            "server_settings": self.server_settings(),
            "timeout": self.connect_timeout,
            "command_timeout": COMMAND_TIMEOUT,
        }
        options: dict[str, Any] = {
            "pool_pre_ping": True,
            "hide_parameters": True,  # statement parameters may carry access tokens
        }
        if "poolclass" not in kwargs:
            options.update(pool_size=5, max_overflow=5)
        options.update(kwargs)
        return create_async_engine(
            self.url.get_secret_value(), connect_args=connect_args, **options
        )

    async def connect_raw(self) -> asyncpg.Connection:
        """A plain asyncpg connection (for LISTEN/NOTIFY, which needs a dedicated one)."""
        url = make_url(self.url.get_secret_value()).set(drivername="postgresql")
        dsn = url.render_as_string(hide_password=False)
        return await asyncpg.connect(
            dsn, timeout=self.connect_timeout, server_settings=self.server_settings()
        )
