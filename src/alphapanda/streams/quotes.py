"""Latest quote per instrument: conflated in memory, written at most once per interval.

``LatestQuotes.update()`` keeps only the newest tick of each instrument and the record
the tick path built for it (a dict assignment per tick) and marks it dirty;
``take_dirty()`` — called by the shell every ``ALPHAPANDA_QUOTES__INTERVAL_MS`` — hands
over each changed instrument's record once. So ``market.quotes.latest`` gets at most one
record per instrument per interval, however fast the instrument ticks, and that record
is the instrument's latest ``market.ticks`` record itself: nothing is encoded twice. The
same state answers ``GET /quotes``; a tick of the native hot path is formatted only
then, when it is asked for. Pure: no I/O.
"""

from __future__ import annotations

from collections.abc import Iterable, Iterator, Sequence
from typing import TYPE_CHECKING, cast

from alphapanda.market_tick import MarketTick
from alphapanda.metrics import catalog
from alphapanda.metrics.samples import Sample
from alphapanda.pipeline.formatter import TickFormatter
from alphapanda.pipeline.hotpath import market_ticks
from alphapanda.pipeline.producer import EncodedMessage

if TYPE_CHECKING:
    from alphapanda._native import NativeTick


class LatestQuotes:
    """The newest tick of every instrument seen, and which changed since the last write."""

    def __init__(self, *, include_depth: bool = True, include_oi: bool = True) -> None:
        # How native ticks are formatted when asked for (as the feed formats them).
        self._include_depth = include_depth
        self._include_oi = include_oi
        self._latest: dict[int, tuple[MarketTick | NativeTick, EncodedMessage]] = {}
        self._dirty: set[int] = set()
        self.updates = 0
        self.conflated = 0

    def update(
        self,
        ticks: Sequence[MarketTick | NativeTick],
        records: Sequence[EncodedMessage],
    ) -> None:
        """Take a batch of ticks and their records (one record per tick, in order)."""
        latest = self._latest
        dirty = self._dirty
        before = len(dirty)
        for tick, record in zip(ticks, records, strict=True):
            token = tick.instrument_token
            latest[token] = (tick, record)
            dirty.add(token)
        n = len(records)
        self.updates += n
        # Ticks that replaced one not yet written: conflated away (by design).
        self.conflated += n - (len(dirty) - before)

    def take_dirty(self) -> list[EncodedMessage]:
        """The latest record of each instrument that changed since the previous call."""
        latest = self._latest
        out = [latest[token][1] for token in self._dirty if token in latest]
        self._dirty.clear()
        return out

    def get(self, token: int) -> MarketTick | None:
        entry = self._latest.get(token)
        return None if entry is None else self._market_tick(entry[0])

    def many(self, tokens: Iterable[int]) -> dict[int, MarketTick]:
        out: dict[int, MarketTick] = {}
        for token in tokens:
            tick = self.get(token)
            if tick is not None:
                out[token] = tick
        return out

    def tokens(self) -> list[int]:
        return sorted(self._latest)

    def forget(self, tokens: Iterable[int]) -> None:
        for token in tokens:
            self._latest.pop(token, None)
            self._dirty.discard(token)

    def __len__(self) -> int:
        return len(self._latest)

    def samples(self) -> Iterator[Sample]:
        yield catalog.QUOTES_INSTRUMENTS.sample(len(self._latest))
        yield catalog.QUOTES_CONFLATED.sample(self.conflated)

    def _market_tick(self, tick: MarketTick | NativeTick) -> MarketTick | None:
        if type(tick) is MarketTick:
            return tick
        # A formatter of its own per call: this may run on the API's thread.
        formatter = TickFormatter(include_depth=self._include_depth, include_oi=self._include_oi)
        formatted = market_ticks(formatter, [cast("NativeTick", tick)])
        return formatted[0] if formatted else None
