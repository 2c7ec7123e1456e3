"""Between the Kite connections and the tick buffer: what a standby does with its ticks.

Active: ticks go straight to the buffer (one attribute test per batch). Standby: they
are held per instrument for ``window`` seconds (warm standby), never published. On
takeover ``promote()`` receives the active's last published tick per instrument and,
per instrument, hands the buffer every held tick after it, then lets live ticks
through; batches arriving meanwhile wait, so the order per instrument is kept.

Finding "after it": the exchange sends the same snapshot to every connection subscribed
to an instrument, so the active's last tick is looked up in the held ticks by the fields
that identify a snapshot (exchange timestamp, last trade time, cumulative volume, last
price, open interest). Not found (it is older than the window, or the two connections
saw different snapshots): the held ticks with a newer exchange timestamp are published
and the instrument is reported as ``gap_possible``.
"""

from __future__ import annotations

import asyncio
import itertools
from collections import deque
from collections.abc import Iterator, Mapping, Sequence
from dataclasses import dataclass, field
from datetime import datetime
from typing import Final, Protocol

from alphapanda.kite.protocol import Tick
from alphapanda.market_tick import MarketTick
from alphapanda.metrics import catalog
from alphapanda.metrics.samples import Sample
from alphapanda.pipeline.accounting import SOURCE_SOCKET

# A hard bound per instrument whatever the window (memory stays bounded at any rate).
MAX_HELD_PER_INSTRUMENT: Final = 50_000

Identity = tuple[int | None, int | None, int | None, float, int | None]


class Sink(Protocol):
    async def put_many(self, ticks: Sequence[Tick], source: str = SOURCE_SOCKET) -> None: ...


def _epoch(value: datetime | None) -> int | None:
    return None if value is None else int(value.timestamp())


def tick_identity(tick: Tick, *, with_oi: bool = True) -> Identity:
    return (
        tick.exchange_timestamp,
        tick.last_trade_time,
        tick.volume_traded,
        tick.last_price,
        tick.oi if with_oi else None,
    )


def published_identity(tick: MarketTick) -> Identity:
    return (
        _epoch(tick.exchange_timestamp),
        _epoch(tick.last_trade_time),
        tick.volume_traded,
        tick.last_price,
        tick.oi,
    )


def _newer(tick: Tick, target: Identity) -> bool:
    """``tick`` is later than the snapshot ``target``: a newer exchange timestamp, or the
    same one with more cumulative volume (the day's volume only grows)."""
    exchange, _, volume, _, _ = target
    if exchange is None:
        return True
    tick_exchange = tick.exchange_timestamp or 0
    if tick_exchange != exchange:
        return tick_exchange > exchange
    return volume is not None and (tick.volume_traded or 0) > volume


@dataclass(slots=True)
class Takeover:
    """What ``promote()`` did."""

    replayed: int = 0  # held ticks handed to the buffer (after the active's last one)
    matched: int = 0  # instruments whose last published tick was found
    gap_possible: list[int] = field(default_factory=list)  # not found: newer exchange time
    not_in_topic: int = 0  # instruments with no record in the tail window: all held
    # Matched, but the same snapshot was held more than once (an index whose price did
    # not change within one exchange second): told apart by the ticks before it.
    ambiguous: int = 0


def _agreeing(
    ticks: Sequence[Tick], index: int, recent: Sequence[MarketTick], with_oi: bool
) -> int:
    """How many of the published ticks before the last one the held ticks before
    ``index`` repeat, counting back from it."""
    n = 0
    while (
        n + 1 < len(recent)
        and index - n - 1 >= 0
        and tick_identity(ticks[index - n - 1], with_oi=with_oi)
        == published_identity(recent[-n - 2])
    ):
        n += 1
    return n


def _trailing_repeats(recent: Mapping[int, Sequence[MarketTick]] | None, token: int) -> int:
    """How many of the last published ticks of ``token`` have the content of the last."""
    history = (recent or {}).get(token, ())
    if not history:
        return 1
    last = published_identity(history[-1])
    count = 0
    for tick in reversed(history):
        if published_identity(tick) != last:
            break
        count += 1
    return count


def plan_takeover(
    held: Mapping[int, Sequence[Tick]],
    last: Mapping[int, MarketTick],
    covered_from_ns: int = 0,
    recent: Mapping[int, Sequence[MarketTick]] | None = None,
) -> tuple[list[Tick], Takeover]:
    """Pure: which held ticks to publish, per instrument after the active's last one.

    The active's last tick is found among the held ones by content. A snapshot can repeat
    (an index carries no volume: the same price in the same exchange second is the same
    content), so where several held ticks match, the one whose predecessors repeat the
    most of the ticks published before the last (``recent``: per instrument, the last
    few in the topic, oldest first) is taken; between equals, the one received closest
    to when the active received its tick, the two receive clocks aligned by the offset
    the unambiguous matches show (both connections get each frame at about the same
    time).

    ``covered_from_ns``: the tail was read completely from this receive time on (0: the
    whole topic), so an instrument absent from ``last`` published nothing the active
    received after it; its held ticks received before it are not republished (the two
    hosts' clocks are compared here: keep them in sync).
    """
    out: list[Tick] = []
    report = Takeover()
    candidates: dict[int, list[int]] = {}
    offsets: list[int] = []
    for token, ticks in held.items():
        published = last.get(token)
        if not ticks or published is None:
            continue
        target = published_identity(published)
        with_oi = target[4] is not None
        found = [i for i, t in enumerate(ticks) if tick_identity(t, with_oi=with_oi) == target]
        candidates[token] = found
        if len(found) == 1:
            offsets.append(ticks[found[0]].received_at_ns - published.received_at_ns)
    offset = sorted(offsets)[len(offsets) // 2] if offsets else 0
    for token, ticks in held.items():
        if not ticks:
            continue
        published = last.get(token)
        if published is None:
            report.not_in_topic += 1
            out.extend(t for t in ticks if t.received_at_ns > covered_from_ns)
            continue
        found = candidates[token]
        if found:
            report.matched += 1
            index = found[0]
            if len(found) > 1:
                report.ambiguous += 1
                expected = published.received_at_ns + offset
                history = (recent or {}).get(token, ())
                with_oi = published.oi is not None
                index = max(
                    found,
                    key=lambda i: (
                        _agreeing(ticks, i, history, with_oi),
                        -abs(ticks[i].received_at_ns - expected),
                    ),
                )
            out.extend(itertools.islice(ticks, index + 1, None))
            continue
        report.gap_possible.append(token)
        target = published_identity(published)
        out.extend(t for t in ticks if _newer(t, target))
    report.replayed = len(out)
    return out, report


class StandbyGate:
    """The ``TickSink`` of the Kite connections in a hot-standby group."""

    def __init__(self, sink: Sink, window_seconds: float) -> None:
        self._sink = sink
        self._window_ns = int(window_seconds * 1e9)
        self.active = False
        self._held: dict[int, deque[Tick]] = {}
        self._lock = asyncio.Lock()
        self.held_total = 0  # ticks received while standby
        self.expired = 0  # held ticks that left the window unpublished
        self.last_received_ns = 0
        # Receive time from which on everything received is held (the window's start):
        # 0 while nothing is held.
        self.held_since_ns = 0
        # Instruments whose last published tick was not among the held ones: live ticks
        # up to it (this connection was behind the active's) were published already.
        # With each, how many times its content is still to come (a snapshot repeated at
        # the end of what the active published arrives that many times).
        self._not_before: dict[int, tuple[Identity, int]] = {}
        self.skipped_live = 0

    async def put_many(self, ticks: Sequence[Tick], source: str = SOURCE_SOCKET) -> None:
        if self.active:
            if ticks:
                self.last_received_ns = ticks[-1].received_at_ns
            if self._not_before:
                ticks = self._skip_published(ticks)
            await self._sink.put_many(ticks, source)
            return
        async with self._lock:
            if self.active:
                await self._sink.put_many(ticks, source)
                return
            self._hold(ticks)

    def _hold(self, ticks: Sequence[Tick]) -> None:
        held = self._held
        for tick in ticks:
            queue = held.get(tick.instrument_token)
            if queue is None:
                queue = held[tick.instrument_token] = deque(maxlen=MAX_HELD_PER_INSTRUMENT)
            elif len(queue) == MAX_HELD_PER_INSTRUMENT:
                self.expired += 1
            queue.append(tick)
        self.held_total += len(ticks)
        if ticks:
            if not self.held_since_ns:
                self.held_since_ns = ticks[0].received_at_ns
            self.last_received_ns = ticks[-1].received_at_ns
            cutoff = self.last_received_ns - self._window_ns
            self.held_since_ns = max(self.held_since_ns, cutoff)
            self._expire(cutoff)

    def _expire(self, before_ns: int) -> None:
        for queue in self._held.values():
            while queue and queue[0].received_at_ns < before_ns:
                queue.popleft()
                self.expired += 1

    def _skip_published(self, ticks: Sequence[Tick]) -> list[Tick]:
        waiting = self._not_before
        out: list[Tick] = []
        for tick in ticks:
            token = tick.instrument_token
            entry = waiting.get(token)
            if entry is None:
                out.append(tick)
                continue
            target, repeats = entry
            if tick_identity(tick, with_oi=target[4] is not None) == target:
                self.skipped_live += 1
                if repeats > 1:
                    waiting[token] = (target, repeats - 1)
                else:
                    del waiting[token]  # the active's last tick: after it, all
            elif _newer(tick, target):
                del waiting[tick.instrument_token]
                out.append(tick)
            else:
                self.skipped_live += 1
        return out

    @property
    def holding(self) -> int:
        return sum(len(q) for q in self._held.values())

    def held(self) -> dict[int, list[Tick]]:
        return {token: list(q) for token, q in self._held.items()}

    async def promote(
        self,
        last: Mapping[int, MarketTick],
        covered_from_ns: int = 0,
        recent: Mapping[int, Sequence[MarketTick]] | None = None,
    ) -> Takeover:
        """Publish what follows the active's last tick (``last``: per instrument, read
        from the topic after the old active was fenced; ``recent``: the few before it),
        then let live ticks through."""
        async with self._lock:
            replay, report = plan_takeover(self._held, last, covered_from_ns, recent)
            for token in report.gap_possible:
                newest = self._held[token][-1] if self._held.get(token) else None
                target = published_identity(last[token])
                if newest is None or not _newer(newest, target):
                    # Nothing held is newer: this connection is behind the active's.
                    self._not_before[token] = (target, _trailing_repeats(recent, token))
            self._held.clear()
            if replay:
                await self._sink.put_many(replay, SOURCE_SOCKET)
            self.active = True
            return report

    def samples(self) -> Iterator[Sample]:
        yield catalog.HA_STANDBY_HELD.sample(self.holding)
        yield catalog.HA_STANDBY_RECEIVED.sample(self.held_total)
        yield catalog.HA_TAKEOVER_SKIPPED_LIVE.sample(self.skipped_live)
        yield catalog.HA_STANDBY_EXPIRED.sample(self.expired)
