"""Latest quote per instrument: conflated in memory, written at most once per interval.

``LatestQuotes.update()`` keeps only the newest record of each instrument (a dict
assignment per tick: the ``market.ticks`` record the tick path built) and marks it
dirty; ``take_dirty()`` — called by the shell every ``ALPHAPANDA_QUOTES__INTERVAL_MS`` —
hands over each changed instrument's record once. So ``market.quotes.latest`` gets at
most one record per instrument per interval, however fast the instrument ticks, and
nothing is encoded twice. The same state answers ``GET /quotes``, decoding a record only
when it is asked for. Pure: no I/O.
"""

from __future__ import annotations

from collections.abc import Iterable, Iterator, Sequence
from typing import TYPE_CHECKING

from alphapanda.market_tick import MarketTick
from alphapanda.metrics import catalog
from alphapanda.metrics.samples import Sample
from alphapanda.pipeline.wire import WireDecoder, content_type_of

if TYPE_CHECKING:
    # Only for annotations: the API process decodes quotes without the Kafka client.
    from alphapanda.pipeline.producer import EncodedMessage

# Decoders hold no state between calls: shared by the API's thread and the feed's.
_decoder = WireDecoder()


def decode_quote(value: bytes, content_type: str) -> MarketTick:
    """The quote a ``market.ticks`` record value carries."""
    return _decoder.decode(value, content_type).data


class LatestQuotes:
    """The newest record of every instrument seen, and which changed since the last write."""

    def __init__(self) -> None:
        self._latest: dict[int, EncodedMessage] = {}
        self._dirty: set[int] = set()
        self.updates = 0
        self.conflated = 0

    def update(self, records: Sequence[EncodedMessage]) -> None:
        """Take a batch of ``market.ticks`` records (key: the instrument token)."""
        latest = self._latest
        dirty = self._dirty
        before = len(dirty)
        for record in records:
            token = int(record.key)
            latest[token] = record
            dirty.add(token)
        n = len(records)
        self.updates += n
        # Ticks that replaced one not yet written: conflated away (by design).
        self.conflated += n - (len(dirty) - before)

    def take_dirty(self) -> list[EncodedMessage]:
        """The latest record of each instrument that changed since the previous call."""
        latest = self._latest
        out = [latest[token] for token in self._dirty if token in latest]
        self._dirty.clear()
        return out

    def get(self, token: int) -> MarketTick | None:
        record = self._latest.get(token)
        if record is None:
            return None
        return decode_quote(record.value, content_type_of(record.headers))

    def many(self, tokens: Iterable[int]) -> dict[int, MarketTick]:
        out: dict[int, MarketTick] = {}
        for token in tokens:
            tick = self.get(token)
            if tick is not None:
                out[token] = tick
        return out

    def tokens(self) -> list[int]:
        return sorted(self._latest)

    def encoded(self, tokens: Iterable[int]) -> list[tuple[int, bytes, str]]:
        """``(token, record value, content type)`` of each of ``tokens`` that has a quote:
        what another process (the API's) decodes with ``decode_quote``."""
        latest = self._latest
        return [
            (token, record.value, content_type_of(record.headers))
            for token in tokens
            if (record := latest.get(token)) is not None
        ]

    def forget(self, tokens: Iterable[int]) -> None:
        for token in tokens:
            self._latest.pop(token, None)
            self._dirty.discard(token)

    def __len__(self) -> int:
        return len(self._latest)

    def samples(self) -> Iterator[Sample]:
        yield catalog.QUOTES_INSTRUMENTS.sample(len(self._latest))
        yield catalog.QUOTES_CONFLATED.sample(self.conflated)
