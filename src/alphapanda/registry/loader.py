"""Writing the instrument dump and the streaming set into PostgreSQL.

Idempotent by construction: instruments are upserted on their token, and a row whose
columns are all unchanged is not rewritten (so a second load of the same dump reports
every row unchanged and does not bump ``updated_at``).
"""

from __future__ import annotations

from collections.abc import Iterable, Sequence
from dataclasses import dataclass

from sqlalchemy import Boolean, func, literal_column, select, tuple_, update
from sqlalchemy.dialects.postgresql import insert
from sqlalchemy.ext.asyncio import AsyncConnection
from sqlalchemy.sql.dml import ReturningInsert

from alphapanda.instruments.dump import COLUMNS, Instrument
from alphapanda.registry.models import INSTRUMENTS, STREAM_MODES, STREAM_SUBSCRIPTIONS

# 12 parameters a row; asyncpg allows 32767 parameters per statement.
_BATCH = 2000


@dataclass(frozen=True, slots=True)
class UpsertCounts:
    """What an upsert did: new rows, changed rows, rows already identical."""

    inserted: int = 0
    updated: int = 0
    unchanged: int = 0

    def __add__(self, other: UpsertCounts) -> UpsertCounts:
        return UpsertCounts(
            self.inserted + other.inserted,
            self.updated + other.updated,
            self.unchanged + other.unchanged,
        )


def _values(instrument: Instrument) -> dict[str, object]:
    return {column: getattr(instrument, column) for column in COLUMNS}


async def upsert_instruments(
    conn: AsyncConnection, instruments: Sequence[Instrument]
) -> UpsertCounts:
    """Insert new instruments, update changed ones, leave identical ones untouched."""
    table = INSTRUMENTS
    data_columns = [c for c in COLUMNS if c != "instrument_token"]
    total = UpsertCounts()
    for start in range(0, len(instruments), _BATCH):
        batch = instruments[start : start + _BATCH]
        base = insert(table).values([_values(i) for i in batch])
        changed = tuple_(*(table.c[c] for c in data_columns)).is_distinct_from(
            tuple_(*(base.excluded[c] for c in data_columns))
        )
        stmt: ReturningInsert[bool] = base.on_conflict_do_update(
            index_elements=[table.c.instrument_token],
            set_={**{c: base.excluded[c] for c in data_columns}, "updated_at": func.now()},
            where=changed,
        ).returning(literal_column("xmax = 0", Boolean).label("inserted"))
        # xmax is 0 for a freshly inserted tuple and non-zero for one updated in place;
        # skipped (unchanged) rows are not returned at all.
        flags = (await conn.execute(stmt)).scalars().all()
        inserted = sum(1 for f in flags if f)
        updated = len(flags) - inserted
        total = total + UpsertCounts(inserted, updated, len(batch) - len(flags))
    return total


def _check_mode(mode: str) -> str:
    if mode not in STREAM_MODES:
        raise ValueError(f"mode must be one of {', '.join(STREAM_MODES)}, got {mode!r}")
    return mode


async def unknown_tokens(conn: AsyncConnection, tokens: Iterable[int]) -> list[int]:
    """Tokens not present in ``instruments`` (they cannot be streamed)."""
    wanted = sorted(set(tokens))
    if not wanted:
        return []
    table = INSTRUMENTS
    known = set(
        (
            await conn.execute(
                select(table.c.instrument_token).where(table.c.instrument_token.in_(wanted))
            )
        ).scalars()
    )
    return [t for t in wanted if t not in known]


async def enable_streaming(
    conn: AsyncConnection, tokens: Iterable[int], mode: str, capacity: int | None = None
) -> int:
    """Mark instruments for streaming in ``mode``; returns how many rows changed.

    Raises ``ValueError`` for a bad mode, for tokens missing from ``instruments``, or
    when more than ``capacity`` instruments would stream; the caller's transaction must
    then be rolled back (nothing is written)."""
    _check_mode(mode)
    wanted = sorted(set(tokens))
    if not wanted:
        return 0
    missing = await unknown_tokens(conn, wanted)
    if missing:
        shown = ", ".join(str(t) for t in missing[:10])
        more = f" (+{len(missing) - 10} more)" if len(missing) > 10 else ""
        raise ValueError(f"unknown instrument token(s): {shown}{more}; load the dump first")
    table = STREAM_SUBSCRIPTIONS
    changed = 0
    for start in range(0, len(wanted), _BATCH * 4):
        rows = [
            {"instrument_token": t, "mode": mode, "enabled": True}
            for t in wanted[start : start + _BATCH * 4]
        ]
        stmt = insert(table).values(rows)
        stmt = stmt.on_conflict_do_update(
            index_elements=[table.c.instrument_token],
            set_={"mode": stmt.excluded.mode, "enabled": True, "updated_at": func.now()},
            # Rewriting an identical row would fire a pointless notification.
            where=(table.c.mode != stmt.excluded.mode) | ~table.c.enabled,
        )
        changed += (await conn.execute(stmt)).rowcount
    if capacity is not None:
        total = (
            await conn.execute(select(func.count()).select_from(table).where(table.c.enabled))
        ).scalar_one()
        if total > capacity:
            raise ValueError(
                f"this would stream {total} instruments; the API key allows at most {capacity} "
                "(kite.max_connections x kite.max_instruments_per_connection)"
            )
    return changed


async def disable_streaming(conn: AsyncConnection, tokens: Iterable[int]) -> int:
    """Stop streaming these instruments (their mode is kept); returns rows changed."""
    wanted = sorted(set(tokens))
    if not wanted:
        return 0
    table = STREAM_SUBSCRIPTIONS
    result = await conn.execute(
        update(table)
        .where(table.c.instrument_token.in_(wanted), table.c.enabled)
        .values(enabled=False, updated_at=func.now())
    )
    return result.rowcount


async def read_streaming_set(conn: AsyncConnection) -> dict[int, str]:
    """The desired subscriptions: token → mode, for every enabled row."""
    table = STREAM_SUBSCRIPTIONS
    rows = await conn.execute(select(table.c.instrument_token, table.c.mode).where(table.c.enabled))
    return {int(token): str(mode) for token, mode in rows}
