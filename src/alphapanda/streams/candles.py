"""Candles from Kite's snapshot ticks: a pure aggregator (no I/O, the clock passed in).

Per instrument and interval one bar is open at a time. A tick goes to the bucket of
its time — ``exchange_timestamp`` where the mode carries it, else our receive time
(both counted per source) — aligned to the session open in IST
(``alphapanda.streams.sessions``).

* open/high/low/close come from ``last_price``; ``oi`` is the last tick's (at close).
* ``volume`` is the change of Kite's cumulative day volume (``volume_traded``)
  between the last tick *before* the bucket and the last tick *in* it. Trades between
  two snapshots are thus counted in the bucket of the later snapshot, and a bucket
  without ticks has no bar (its trades show up in the next bar).
* When the volume before the bucket is unknown — the first bar after a start, after a
  reception gap (``mark_gap``), or on a new IST day (the cumulative volume restarts) —
  the bar carries ``complete=False`` and its volume counts from its first tick.
* Indices (and ``ltp`` mode) carry no volume: ``volume`` and ``oi`` are ``None``.
* A bar is closed by ``close_due(now)`` once ``now`` passes bucket end + grace, or
  when a tick of a later bucket arrives. A tick for a bucket already closed (or older
  than the open bar) is counted as late and changes nothing: bars are never re-opened.
"""

from __future__ import annotations

import math
from collections.abc import Iterable, Iterator
from datetime import UTC, datetime, timedelta
from typing import Final

import msgspec

from alphapanda.market_tick import MarketTick
from alphapanda.metrics import catalog
from alphapanda.metrics.samples import Sample
from alphapanda.streams.sessions import INTERVALS, SessionTable, ist_day

_EPOCH: Final = datetime(1970, 1, 1, tzinfo=UTC)
SOURCE_EXCHANGE: Final = "exchange"
SOURCE_RECEIVE: Final = "receive"

#: A tick as candles read it: ``(instrument_token, last_price, volume_traded, oi,
#: exchange time in epoch seconds or None, received_at_ns)``.
CandleRow = tuple[int, float, int | None, int | None, int | None, int]


class Candle(msgspec.Struct, frozen=True):
    """One closed bar (``schemas/candle.v1.schema.json``)."""

    instrument_token: int
    interval: str
    start: datetime
    end: datetime
    open: float
    high: float
    low: float
    close: float
    volume: int | None
    oi: int | None
    ticks: int
    complete: bool


class _Bar:
    __slots__ = (
        "base",
        "close",
        "complete",
        "high",
        "last_volume",
        "low",
        "oi",
        "open",
        "start",
        "ticks",
    )

    def __init__(self, start: int, price: float, base: int | None, complete: bool) -> None:
        self.start = start
        self.open = self.high = self.low = self.close = price
        self.base = base  # cumulative volume before the bucket (or at its first tick)
        self.last_volume: int | None = None
        self.oi: int | None = None
        self.complete = complete
        self.ticks = 0


class _Series:
    """One instrument at one interval."""

    __slots__ = ("bar", "closed_until", "day", "last_volume")

    def __init__(self) -> None:
        self.bar: _Bar | None = None
        self.closed_until = -math.inf  # buckets starting before this are closed
        self.last_volume: int | None = None  # cumulative volume at the last tick taken
        self.day = -1  # IST day of the last tick taken


def to_datetime(second: int) -> datetime:
    return _EPOCH + timedelta(seconds=second)


class CandleAggregator:
    """Builds bars of one interval for every instrument; ``add()`` ticks, ``close_due()``
    on a timer. Not thread-safe."""

    def __init__(
        self, interval: str, *, grace: float = 0.5, sessions: SessionTable | None = None
    ) -> None:
        if interval not in INTERVALS:
            raise ValueError(f"unknown interval {interval!r}; allowed: {', '.join(INTERVALS)}")
        self.interval = interval
        self.seconds = INTERVALS[interval]
        self.grace = grace
        self._sessions = sessions or SessionTable()
        self._series: dict[int, _Series] = {}
        # No open bar starts before this (a lower bound): until the close limit reaches
        # it, ``close_due`` has nothing to scan for (it runs every few ms, on every
        # instrument otherwise).
        self._earliest_start = math.inf
        self.ticks_by_source = {SOURCE_EXCHANGE: 0, SOURCE_RECEIVE: 0}
        self.late = 0
        self.emitted = 0
        self.incomplete = 0

    def add(self, tick: MarketTick) -> list[Candle]:
        """Take one tick; returns bars it closed (a tick of a later bucket closes the open one)."""
        ets = tick.exchange_timestamp
        return self._add(
            tick.instrument_token,
            tick.last_price,
            tick.volume_traded,
            tick.oi,
            None if ets is None else ets.timestamp(),
            tick.received_at_ns,
        )

    def add_rows(self, rows: Iterable[CandleRow]) -> list[Candle]:
        """``add_many`` for ticks given as ``CandleRow``s (what ``NativeTick.candle_fields``
        gives: the values the tick's record carries, exchange time in epoch seconds)."""
        closed: list[Candle] = []
        add = self._add
        for token, price, volume, oi, ets, received_at_ns in rows:
            closed.extend(
                add(token, price, volume, oi, None if ets is None else float(ets), received_at_ns)
            )
        return closed

    def _add(
        self,
        token: int,
        price: float,
        volume: int | None,
        oi: int | None,
        exchange_time: float | None,
        received_at_ns: int,
    ) -> list[Candle]:
        if exchange_time is not None:
            t = exchange_time
            self.ticks_by_source[SOURCE_EXCHANGE] += 1
        else:
            t = received_at_ns / 1e9
            self.ticks_by_source[SOURCE_RECEIVE] += 1
        series = self._series.get(token)
        if series is None:
            series = self._series[token] = _Series()
        start = self._sessions.bucket_start(token, t, self.seconds)
        closed: list[Candle] = []
        bar = series.bar
        if start < series.closed_until or (bar is not None and start < bar.start):
            self.late += 1
            return closed
        if bar is not None and start > bar.start:
            closed.append(self._close(token, series))
            bar = None
        if bar is None:
            day = ist_day(start)
            previous = series.last_volume if day == series.day else None
            if volume is None:
                bar = _Bar(start, price, None, True)
            elif previous is None:
                bar = _Bar(start, price, volume, False)
            else:
                bar = _Bar(start, price, previous, True)
            series.bar = bar
            series.day = day
            if start < self._earliest_start:
                self._earliest_start = start
        if price > bar.high:
            bar.high = price
        if price < bar.low:
            bar.low = price
        bar.close = price
        bar.ticks += 1
        bar.oi = oi
        if volume is not None:
            if bar.base is None:
                # Volume appeared mid-bar (mode change): count it from here, incomplete.
                bar.base = volume
                bar.complete = False
            bar.last_volume = volume
        series.last_volume = volume
        return closed

    def add_many(self, ticks: Iterable[MarketTick]) -> list[Candle]:
        closed: list[Candle] = []
        for tick in ticks:
            closed.extend(self.add(tick))
        return closed

    def close_due(self, now: float) -> list[Candle]:
        """Close every open bar whose bucket ended ``grace`` seconds or more before ``now``."""
        limit = now - self.grace - self.seconds
        closed: list[Candle] = []
        if limit < self._earliest_start:
            return closed
        earliest = math.inf
        for token, series in self._series.items():
            bar = series.bar
            if bar is None:
                continue
            if bar.start <= limit:
                closed.append(self._close(token, series))
            elif bar.start < earliest:
                earliest = bar.start
        self._earliest_start = earliest
        return closed

    def next_due(self) -> float | None:
        """When ``close_due`` will next close something (None: no bar open)."""
        starts = [s.bar.start for s in self._series.values() if s.bar is not None]
        return min(starts) + self.seconds + self.grace if starts else None

    def open_bar(self, token: int) -> Candle | None:
        """The bar being built for ``token`` (not closed yet), as a provisional candle."""
        series = self._series.get(token)
        if series is None or series.bar is None:
            return None
        return self._candle(token, series.bar)

    def mark_gap(self, tokens: Iterable[int]) -> None:
        """These instruments could not be received for a while: the volume before their
        next bar is unknown, and the open bar (if any) misses ticks."""
        for token in tokens:
            series = self._series.get(token)
            if series is None:
                continue
            series.last_volume = None
            if series.bar is not None:
                series.bar.complete = False

    def forget(self, tokens: Iterable[int]) -> None:
        """Drop the state of instruments no longer streamed (their open bar is lost)."""
        for token in tokens:
            self._series.pop(token, None)

    def _close(self, token: int, series: _Series) -> Candle:
        bar = series.bar
        assert bar is not None
        series.bar = None
        series.closed_until = bar.start + self.seconds
        self.emitted += 1
        if not bar.complete:
            self.incomplete += 1
        return self._candle(token, bar)

    def _candle(self, token: int, bar: _Bar) -> Candle:
        volume = None
        if bar.base is not None and bar.last_volume is not None:
            volume = bar.last_volume - bar.base
        return Candle(
            token,
            self.interval,
            to_datetime(bar.start),
            to_datetime(bar.start + self.seconds),
            bar.open,
            bar.high,
            bar.low,
            bar.close,
            volume,
            bar.oi,
            bar.ticks,
            bar.complete,
        )

    def samples(self) -> Iterator[Sample]:
        labels = (("interval", self.interval),)
        for source, count in self.ticks_by_source.items():
            yield catalog.CANDLES_TICKS.sample(count, (*labels, ("time_source", source)))
        yield catalog.CANDLES_LATE_TICKS.sample(self.late, labels)
        yield catalog.CANDLES_CLOSED.sample(self.emitted, labels)
        yield catalog.CANDLES_INCOMPLETE.sample(self.incomplete, labels)
