"""Feeding ``LatestQuotes`` in unit tests as the tick path does: ticks with their records."""

from __future__ import annotations

from collections.abc import Iterable

from alphapanda.market_tick import MarketTick
from alphapanda.pipeline.producer import EncodedMessage
from alphapanda.pipeline.wire import WireEncoder
from alphapanda.streams.quotes import LatestQuotes


def records_for(ticks: list[MarketTick], emitted_at_ns: int = 0) -> list[EncodedMessage]:
    """The ``market.ticks`` records of ``ticks`` (JSON), one per tick."""
    wire = WireEncoder("json")
    values = wire.encode_values(ticks, emitted_at_ns)
    return [
        EncodedMessage(wire.key(t.instrument_token), value, wire.shared_headers, t.received_at_ns)
        for t, value in zip(ticks, values, strict=True)
    ]


def update(quotes: LatestQuotes, ticks: Iterable[MarketTick]) -> None:
    quotes.update(records_for(list(ticks)))
