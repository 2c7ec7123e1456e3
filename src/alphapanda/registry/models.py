"""The registry's tables, mapped with SQLAlchemy 2 (the migrations create them).

``stream_subscriptions`` holds the streaming set: one row per instrument the operator
wants, with its mode and an ``enabled`` flag. Unstreaming clears ``enabled`` rather than
deleting the row, so the chosen mode survives a pause and the history stays readable.
A statement-level trigger on the table NOTIFYs channel ``alphapanda_registry`` with the
schema name as payload; the watcher (``watch.py``) listens to it.
"""

from __future__ import annotations

import datetime as dt

from sqlalchemy import (
    BigInteger,
    Boolean,
    CheckConstraint,
    Date,
    DateTime,
    Float,
    ForeignKey,
    Integer,
    Text,
    func,
)
from sqlalchemy.orm import Mapped, mapped_column

from alphapanda.db.base import Base
from alphapanda.modes import MODES

NOTIFY_CHANNEL = "alphapanda_registry"
STREAM_MODES = MODES


class InstrumentRow(Base):
    """One instrument of the Kite dump, columns as Kite names them."""

    __tablename__ = "instruments"

    instrument_token: Mapped[int] = mapped_column(BigInteger, primary_key=True, autoincrement=False)
    exchange_token: Mapped[int] = mapped_column(BigInteger)
    tradingsymbol: Mapped[str] = mapped_column(Text)
    name: Mapped[str] = mapped_column(Text, server_default="")
    last_price: Mapped[float] = mapped_column(Float, server_default="0")
    expiry: Mapped[dt.date | None] = mapped_column(Date, nullable=True)
    strike: Mapped[float] = mapped_column(Float, server_default="0")
    tick_size: Mapped[float] = mapped_column(Float)
    lot_size: Mapped[int] = mapped_column(Integer)
    instrument_type: Mapped[str] = mapped_column(Text)
    segment: Mapped[str] = mapped_column(Text)
    exchange: Mapped[str] = mapped_column(Text)
    updated_at: Mapped[dt.datetime] = mapped_column(
        DateTime(timezone=True), server_default=func.now()
    )


class StreamSubscriptionRow(Base):
    """An instrument the feed should stream, and in which mode."""

    __tablename__ = "stream_subscriptions"
    __table_args__ = (
        CheckConstraint(f"mode IN ({', '.join(map(repr, MODES))})", name="ck_stream_mode"),
    )

    instrument_token: Mapped[int] = mapped_column(
        BigInteger,
        ForeignKey("instruments.instrument_token", ondelete="CASCADE"),
        primary_key=True,
        autoincrement=False,
    )
    mode: Mapped[str] = mapped_column(Text)
    enabled: Mapped[bool] = mapped_column(Boolean, server_default="true")
    updated_at: Mapped[dt.datetime] = mapped_column(
        DateTime(timezone=True), server_default=func.now()
    )


# Core tables, typed as ``Table`` for insert/update statements.
INSTRUMENTS = Base.metadata.tables["instruments"]
STREAM_SUBSCRIPTIONS = Base.metadata.tables["stream_subscriptions"]
