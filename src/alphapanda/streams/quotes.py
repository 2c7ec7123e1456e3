"""Latest quote per instrument: conflated in memory, written at most once per interval.

``LatestQuotes.update()`` keeps only the newest ``MarketTick`` of each instrument (a
dict assignment per tick) and marks it dirty; ``take_dirty()`` — called by the shell
every ``ALPHAPANDA_QUOTES__INTERVAL_MS`` — hands over each changed instrument once. So
``market.quotes.latest`` gets at most one record per instrument per interval, however
fast the instrument ticks, and the same state answers ``GET /quotes``. Pure: no I/O.
"""

from __future__ import annotations

from collections.abc import Iterable, Iterator

from alphapanda.metrics.samples import Sample
from alphapanda.pipeline.formatter import MarketTick


class LatestQuotes:
    """The newest tick of every instrument seen, and which changed since the last write."""

    def __init__(self) -> None:
        self._latest: dict[int, MarketTick] = {}
        self._dirty: set[int] = set()
        self.updates = 0
        self.conflated = 0

    def update(self, ticks: Iterable[MarketTick]) -> None:
        latest = self._latest
        dirty = self._dirty
        n = 0
        before = len(dirty)
        for tick in ticks:
            token = tick.instrument_token
            latest[token] = tick
            dirty.add(token)
            n += 1
        self.updates += n
        # Ticks that replaced one not yet written: conflated away (by design).
        self.conflated += n - (len(dirty) - before)

    def take_dirty(self) -> list[MarketTick]:
        """The latest tick of each instrument that changed since the previous call."""
        latest = self._latest
        out = [latest[token] for token in self._dirty if token in latest]
        self._dirty.clear()
        return out

    def get(self, token: int) -> MarketTick | None:
        return self._latest.get(token)

    def many(self, tokens: Iterable[int]) -> dict[int, MarketTick]:
        latest = self._latest
        return {t: latest[t] for t in tokens if t in latest}

    def tokens(self) -> list[int]:
        return sorted(self._latest)

    def forget(self, tokens: Iterable[int]) -> None:
        for token in tokens:
            self._latest.pop(token, None)
            self._dirty.discard(token)

    def __len__(self) -> int:
        return len(self._latest)

    def samples(self) -> Iterator[Sample]:
        yield Sample(
            "quotes_instruments", "gauge", len(self._latest), (), "Instruments with a quote."
        )
        yield Sample(
            "quotes_conflated_total",
            "counter",
            self.conflated,
            (),
            "Ticks replaced by a newer one before the latest-quotes write (by design).",
        )
