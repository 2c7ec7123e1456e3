"""The bounded buffer between the socket readers and the publisher.

Socket readers ``await put_many(ticks)``; the publisher ``await take_batch(...)``s
micro-batches. Memory is bounded by ``capacity`` whatever the broker does; what happens
when it is full is the declared policy:

``block``
    ``put_many`` waits for room. The reader stops reading its socket, so the pressure
    reaches the kernel's TCP window and, eventually, the exchange. Nothing is dropped.
``drop_oldest``
    The oldest buffered ticks make room for the new ones; each is counted as dropped
    with reason ``drop_oldest``.
``conflate``
    At most one tick per instrument is kept: a newer tick replaces the buffered one
    of its instrument in place (the replaced one is dropped with reason
    ``conflated``). If more distinct instruments than ``capacity`` are waiting, the
    oldest is dropped with reason ``conflate_overflow``.

Every tick accepted here is counted as ``received`` in the shared ``Accounting``.
"""

from __future__ import annotations

import asyncio
from collections import OrderedDict, deque
from collections.abc import Iterator, Sequence
from typing import Final

from alphapanda.kite.protocol import Tick
from alphapanda.metrics.samples import Sample
from alphapanda.pipeline.accounting import (
    DROP_CONFLATE_OVERFLOW,
    DROP_CONFLATED,
    DROP_OLDEST,
    DROP_SHUTDOWN,
    SOURCE_SOCKET,
    Accounting,
)
from alphapanda.settings import BufferPolicy

POLICIES: Final = ("block", "drop_oldest", "conflate")


class TickBuffer:
    """Bounded FIFO of ticks with a declared overflow policy. One event loop only."""

    def __init__(self, capacity: int, policy: BufferPolicy, accounting: Accounting) -> None:
        if capacity < 1:
            raise ValueError("capacity must be >= 1")
        if policy not in POLICIES:
            raise ValueError(f"unknown buffer policy {policy!r}")
        self.capacity = capacity
        self.policy: BufferPolicy = policy
        self._accounting = accounting
        self._fifo: deque[Tick] = deque()
        # Conflation keeps insertion order of the *first* pending tick of each
        # instrument, so a busy instrument cannot starve a quiet one.
        self._latest: OrderedDict[int, Tick] = OrderedDict()
        self._not_empty = asyncio.Event()
        self._not_full = asyncio.Event()
        self._not_full.set()
        self._closed = False
        self.high_water = 0
        self.blocked_puts = 0

    def __len__(self) -> int:
        return len(self._latest) if self.policy == "conflate" else len(self._fifo)

    @property
    def closed(self) -> bool:
        return self._closed

    def close(self) -> None:
        """No more ticks are accepted; the publisher drains what is left."""
        self._closed = True
        self._not_empty.set()
        self._not_full.set()

    async def put_many(self, ticks: Sequence[Tick], source: str = SOURCE_SOCKET) -> None:
        """Accept ``ticks`` (the ``TickSink`` of the socket readers).

        Under ``block`` this waits for room. Ticks that arrive after ``close()``, or
        whose wait for room is cancelled, are counted as dropped (reason ``shutdown``),
        never lost silently.
        """
        if not ticks:
            return
        if self._closed:
            self._accounting.drop_unreceived(DROP_SHUTDOWN, len(ticks))
            return
        if self.policy == "block":
            await self._put_blocking(ticks, source)
        elif self.policy == "drop_oldest":
            self._put_drop_oldest(ticks, source)
        else:
            self._put_conflate(ticks, source)
        depth = len(self)
        if depth > self.high_water:
            self.high_water = depth
        self._not_empty.set()

    async def _put_blocking(self, ticks: Sequence[Tick], source: str) -> None:
        done = 0
        total = len(ticks)
        try:
            while done < total:
                if self._closed:
                    self._accounting.drop_unreceived(DROP_SHUTDOWN, total - done)
                    return
                room = self.capacity - len(self._fifo)
                if room <= 0:
                    self.blocked_puts += 1
                    self._not_full.clear()
                    # Let the publisher see what is already here while we wait.
                    self._not_empty.set()
                    await self._not_full.wait()
                    continue
                chunk = ticks[done : done + room]
                self._fifo.extend(chunk)
                self._accounting.accept(len(chunk), source)
                done += len(chunk)
                if len(self._fifo) > self.high_water:
                    self.high_water = len(self._fifo)
        except asyncio.CancelledError:
            self._accounting.drop_unreceived(DROP_SHUTDOWN, total - done)
            raise

    def _put_drop_oldest(self, ticks: Sequence[Tick], source: str) -> None:
        fifo = self._fifo
        fifo.extend(ticks)
        self._accounting.accept(len(ticks), source)
        overflow = len(fifo) - self.capacity
        if overflow > 0:
            for _ in range(overflow):
                fifo.popleft()
            self._accounting.drop("buffered", DROP_OLDEST, overflow)

    def _put_conflate(self, ticks: Sequence[Tick], source: str) -> None:
        latest = self._latest
        conflated = 0
        overflow = 0
        for tick in ticks:
            token = tick.instrument_token
            if token in latest:
                latest[token] = tick  # keeps the instrument's place in the queue
                conflated += 1
                continue
            if len(latest) >= self.capacity:
                latest.popitem(last=False)
                overflow += 1
            latest[token] = tick
        self._accounting.accept(len(ticks), source)
        self._accounting.drop("buffered", DROP_CONFLATED, conflated)
        self._accounting.drop("buffered", DROP_CONFLATE_OVERFLOW, overflow)

    async def take_batch(self, max_items: int, max_wait: float) -> list[Tick]:
        """Up to ``max_items`` ticks, oldest first.

        Waits at most ``max_wait`` seconds for the first tick and then takes whatever is
        there without waiting more: librdkafka's ``linger.ms`` does the batching on the
        wire, so waiting here would only add latency. Returns ``[]`` on timeout or when
        closed and drained.
        """
        if not len(self):
            if self._closed:
                return []
            self._not_empty.clear()
            try:
                async with asyncio.timeout(max_wait):
                    await self._not_empty.wait()
            except TimeoutError:
                return []
        if self.policy == "conflate":
            latest = self._latest
            count = min(max_items, len(latest))
            batch = [latest.popitem(last=False)[1] for _ in range(count)]
        else:
            fifo = self._fifo
            count = min(max_items, len(fifo))
            batch = [fifo.popleft() for _ in range(count)]
        if batch:
            self._accounting.take(len(batch))
            self._not_full.set()
        return batch

    def samples(self) -> Iterator[Sample]:
        policy = (("policy", self.policy),)
        yield Sample("buffer_depth", "gauge", len(self), policy, "Ticks in the TickBuffer.")
        yield Sample("buffer_capacity", "gauge", self.capacity, policy, "TickBuffer capacity.")
        yield Sample(
            "buffer_high_water", "gauge", self.high_water, policy, "Highest TickBuffer depth."
        )
        yield Sample(
            "buffer_blocked_puts_total",
            "counter",
            self.blocked_puts,
            policy,
            "Times a reader waited for room (block policy backpressure).",
        )
