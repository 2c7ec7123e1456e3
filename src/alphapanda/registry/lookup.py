"""Finding instruments in the registry: by ``EXCHANGE:TRADINGSYMBOL``, by search, by expiry.

Traders name instruments as Kite does (``NSE:INFY``, ``NFO:NIFTY24DECFUT``); the feed
needs tokens. These queries translate, and find the contracts whose expiry has passed.
"""

from __future__ import annotations

import datetime as dt
from collections.abc import Iterable, Sequence
from dataclasses import dataclass

from sqlalchemy import and_, func, or_, select, tuple_, update
from sqlalchemy.ext.asyncio import AsyncConnection

from alphapanda.registry.models import INSTRUMENTS, STREAM_SUBSCRIPTIONS

_BATCH = 2000


@dataclass(frozen=True, slots=True)
class FoundInstrument:
    """A row of ``instruments find``."""

    instrument_token: int
    exchange: str
    tradingsymbol: str
    name: str
    instrument_type: str
    expiry: dt.date | None
    lot_size: int
    streaming_mode: str | None

    @property
    def symbol(self) -> str:
        """``EXCHANGE:TRADINGSYMBOL``, as Kite and ``instruments stream`` write it."""
        return f"{self.exchange}:{self.tradingsymbol}"


@dataclass(frozen=True, slots=True)
class RetiredInstrument:
    """An expired contract taken out of the streaming set."""

    instrument_token: int
    symbol: str
    expiry: dt.date


def parse_instrument_ref(ref: str) -> int | tuple[str, str]:
    """``"408065"`` → a token; ``"NSE:INFY"`` → ``("NSE", "INFY")``. ValueError otherwise."""
    text = ref.strip()
    if text.isdigit():
        return int(text)
    exchange, sep, symbol = text.partition(":")
    if not sep or not exchange.strip() or not symbol.strip():
        raise ValueError(
            f"{ref!r}: expected an instrument token or EXCHANGE:TRADINGSYMBOL (e.g. NSE:INFY)"
        )
    return exchange.strip().upper(), symbol.strip().upper()


async def tokens_for_symbols(
    conn: AsyncConnection, symbols: Sequence[tuple[str, str]]
) -> dict[tuple[str, str], int]:
    """Token of each ``(exchange, tradingsymbol)`` the registry knows (others are absent)."""
    table = INSTRUMENTS
    found: dict[tuple[str, str], int] = {}
    wanted = list(dict.fromkeys(symbols))
    for start in range(0, len(wanted), _BATCH):
        batch = wanted[start : start + _BATCH]
        rows = await conn.execute(
            select(table.c.exchange, table.c.tradingsymbol, table.c.instrument_token).where(
                tuple_(func.upper(table.c.exchange), func.upper(table.c.tradingsymbol)).in_(batch)
            )
        )
        for exchange, symbol, token in rows:
            found[(str(exchange).upper(), str(symbol).upper())] = int(token)
    return found


async def find(
    conn: AsyncConnection, text: str, *, exchange: str | None = None, limit: int = 50
) -> list[FoundInstrument]:
    """Instruments whose trading symbol or name contains ``text`` (case-insensitive);
    exact symbol matches first, then by exchange, expiry and symbol."""
    inst, sub = INSTRUMENTS, STREAM_SUBSCRIPTIONS
    pattern = "%" + text.strip().replace("%", r"\%").replace("_", r"\_") + "%"
    exact = func.upper(inst.c.tradingsymbol) == text.strip().upper()
    query = (
        select(
            inst.c.instrument_token,
            inst.c.exchange,
            inst.c.tradingsymbol,
            inst.c.name,
            inst.c.instrument_type,
            inst.c.expiry,
            inst.c.lot_size,
            sub.c.mode,
            sub.c.enabled,
        )
        .outerjoin(sub, sub.c.instrument_token == inst.c.instrument_token)
        .where(or_(inst.c.tradingsymbol.ilike(pattern), inst.c.name.ilike(pattern)))
        .order_by(
            exact.desc(), inst.c.exchange, inst.c.expiry.asc().nulls_first(), inst.c.tradingsymbol
        )
        .limit(limit)
    )
    if exchange:
        query = query.where(func.upper(inst.c.exchange) == exchange.upper())
    rows = await conn.execute(query)
    return [
        FoundInstrument(int(r[0]), r[1], r[2], r[3], r[4], r[5], int(r[6]), r[7] if r[8] else None)
        for r in rows
    ]


async def retire_expired(conn: AsyncConnection, today: dt.date) -> list[RetiredInstrument]:
    """Stop streaming every contract whose expiry is before ``today``; returns them."""
    inst, sub = INSTRUMENTS, STREAM_SUBSCRIPTIONS
    expired = (
        await conn.execute(
            select(inst.c.instrument_token, inst.c.exchange, inst.c.tradingsymbol, inst.c.expiry)
            .join(sub, sub.c.instrument_token == inst.c.instrument_token)
            .where(and_(sub.c.enabled, inst.c.expiry.is_not(None), inst.c.expiry < today))
            .order_by(inst.c.expiry, inst.c.exchange, inst.c.tradingsymbol)
        )
    ).all()
    tokens = [int(r[0]) for r in expired]
    for start in range(0, len(tokens), _BATCH):
        await conn.execute(
            update(sub)
            .where(sub.c.instrument_token.in_(tokens[start : start + _BATCH]))
            .values(enabled=False, updated_at=func.now())
        )
    return [RetiredInstrument(int(r[0]), f"{r[1]}:{r[2]}", r[3]) for r in expired]


@dataclass(frozen=True, slots=True)
class RegistrySummary:
    """What ``doctor`` reports about the registry."""

    known: int
    streaming: int
    capacity: int
    expired_streaming: int
    updated_at: dt.datetime | None


async def summarize(conn: AsyncConnection, capacity: int, today: dt.date) -> RegistrySummary:
    inst, sub = INSTRUMENTS, STREAM_SUBSCRIPTIONS
    known, updated_at = (
        await conn.execute(select(func.count(), func.max(inst.c.updated_at)).select_from(inst))
    ).one()
    streaming = (
        await conn.execute(select(func.count()).select_from(sub).where(sub.c.enabled))
    ).scalar_one()
    expired = (
        await conn.execute(
            select(func.count())
            .select_from(sub.join(inst, sub.c.instrument_token == inst.c.instrument_token))
            .where(sub.c.enabled, inst.c.expiry.is_not(None), inst.c.expiry < today)
        )
    ).scalar_one()
    return RegistrySummary(int(known), int(streaming), capacity, int(expired), updated_at)


def missing_symbols(
    wanted: Iterable[tuple[str, str]], found: dict[tuple[str, str], int]
) -> list[str]:
    return [f"{e}:{s}" for e, s in wanted if (e, s) not in found]
