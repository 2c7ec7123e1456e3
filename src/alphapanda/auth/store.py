"""Access tokens in PostgreSQL (table ``access_tokens``).

Trade-off, stated: the token is stored as plain text. It is a bearer credential, but a
short-lived one (dead at the next 06:00 IST flush), and encrypting it at rest would need
a key that sits next to the database credentials anyway, so it would only move the
secret. Protect it the way the database is protected (network, role, backups); the
code keeps it out of logs, reprs and errors by holding it as ``SecretStr`` and by
creating engines with ``hide_parameters`` so a failing statement never echoes it.

Every token ever stored is kept (one row per login / set-token) so that "who set which
token when" can be answered; the newest row for an API key is the current one.
"""

from __future__ import annotations

import datetime as dt
from dataclasses import dataclass, field
from typing import Literal

from pydantic import SecretStr
from sqlalchemy import BigInteger, DateTime, Identity, Index, Text, insert, select
from sqlalchemy.ext.asyncio import AsyncEngine
from sqlalchemy.orm import Mapped, mapped_column

from alphapanda.db.base import Base

TokenSource = Literal["login", "manual"]


class AccessTokenRow(Base):
    """One access token as issued (login) or set by an operator (manual)."""

    __tablename__ = "access_tokens"
    __table_args__ = (Index("ix_access_tokens_key_created", "api_key", "created_at"),)

    id: Mapped[int] = mapped_column(BigInteger, Identity(), primary_key=True)
    api_key: Mapped[str] = mapped_column(Text)
    access_token: Mapped[str] = mapped_column(Text)
    user_id: Mapped[str | None] = mapped_column(Text, nullable=True)
    source: Mapped[str] = mapped_column(Text)
    created_at: Mapped[dt.datetime] = mapped_column(DateTime(timezone=True))
    expires_at: Mapped[dt.datetime] = mapped_column(DateTime(timezone=True))


ACCESS_TOKENS = Base.metadata.tables["access_tokens"]


@dataclass(frozen=True, slots=True)
class StoredToken:
    """A token read from or written to the store. Its repr never shows the token."""

    api_key: str
    access_token: SecretStr = field(repr=False)
    user_id: str | None
    source: str
    created_at: dt.datetime
    expires_at: dt.datetime


class TokenStore:
    """Reads and writes ``access_tokens`` through an engine it does not own."""

    def __init__(self, engine: AsyncEngine) -> None:
        self._engine = engine

    def __repr__(self) -> str:
        return "TokenStore()"

    async def save(
        self,
        api_key: str,
        access_token: SecretStr,
        *,
        user_id: str | None,
        source: TokenSource,
        created_at: dt.datetime,
        expires_at: dt.datetime,
    ) -> StoredToken:
        """Store a new current token for ``api_key``."""
        token = StoredToken(api_key, access_token, user_id, source, created_at, expires_at)
        async with self._engine.begin() as conn:
            await conn.execute(
                insert(ACCESS_TOKENS).values(
                    api_key=api_key,
                    access_token=access_token.get_secret_value(),
                    user_id=user_id,
                    source=source,
                    created_at=created_at,
                    expires_at=expires_at,
                )
            )
        return token

    async def latest(self, api_key: str) -> StoredToken | None:
        """The newest token stored for ``api_key`` (expired or not), or None."""
        t = ACCESS_TOKENS
        query = (
            select(t.c.access_token, t.c.user_id, t.c.source, t.c.created_at, t.c.expires_at)
            .where(t.c.api_key == api_key)
            .order_by(t.c.created_at.desc(), t.c.id.desc())
            .limit(1)
        )
        async with self._engine.connect() as conn:
            row = (await conn.execute(query)).first()
        if row is None:
            return None
        return StoredToken(api_key, SecretStr(row[0]), row[1], row[2], row[3], row[4])
