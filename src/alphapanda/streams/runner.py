"""``DerivedStreams``: the thin shell around the candle, quote, event and order cores.

The publisher hands every encoded batch of ticks and their records to ``offer()`` — a
deque append, nothing more — and only then sends them; this task works on them when the
publisher yields, i.e. after the batch went to the tick producer. On the native hot
path the ticks are ``NativeTick``s: candles read ``candle_fields()`` from the extension,
and latest quotes keep the records as they are. The inbox is bounded by
``ALPHAPANDA_STREAMS__QUEUE_CAPACITY`` ticks: a batch that does not fit is dropped and
counted, and the candles of its instruments are marked incomplete. The tick path never
waits for this task.

The tick path goes first: while the publisher still holds ticks to send (a Kite frame
brings thousands at once) this task waits, for at most ``MAX_DEFER``, so the derived
work on a frame does not delay the frame's own records. Order updates never wait.

Timers (wall clock): candles are closed every ``TIMER_STEP`` once their bucket end +
grace has passed; latest quotes are written every ``ALPHAPANDA_QUOTES__INTERVAL_MS``;
the feed's state is sampled for events every ``EVENT_STEP``. Records go through a
producer of their own (``sink.DerivedProducer``), every one counted.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
from collections import deque
from collections.abc import Callable, Iterator, Mapping, Sequence
from datetime import UTC, datetime
from typing import TYPE_CHECKING, Any, Final, NamedTuple, Protocol, cast

import msgspec

from alphapanda.clock import SYSTEM_CLOCK, Clock
from alphapanda.kite.state import ConnectionStatus
from alphapanda.market_tick import MarketTick
from alphapanda.metrics import catalog
from alphapanda.metrics.samples import Sample
from alphapanda.pipeline.hotpath import TickBatch
from alphapanda.pipeline.producer import EncodedMessage
from alphapanda.pipeline.topics_admin import ensure_topics
from alphapanda.pipeline.wire import WireEncoder
from alphapanda.settings import Settings
from alphapanda.streams.candles import Candle, CandleAggregator
from alphapanda.streams.events import FeedEventTracker, ShardSnapshot
from alphapanda.streams.history import CandleHistory
from alphapanda.streams.quotes import LatestQuotes
from alphapanda.streams.records import (
    CONNECTION_DOWN,
    FEED_STARTED,
    FEED_STOPPED,
    EnvelopeEncoder,
    FeedEvent,
    OrderUpdate,
    ns_to_datetime,
)
from alphapanda.streams.sessions import SessionTable
from alphapanda.streams.sink import DerivedProducer
from alphapanda.topics import TopicNames

if TYPE_CHECKING:
    from alphapanda._native import NativeTick
    from alphapanda.kite.client import TickerClient
    from alphapanda.pipeline.accounting import Accounting
    from alphapanda.pipeline.publisher import Publisher

log = logging.getLogger(__name__)

TIMER_STEP: Final = 0.05
EVENT_STEP: Final = 0.1
# Ticks processed between two yields to the event loop (~15 ms of work at Kite's
# cadence): a frame arriving meanwhile waits at most that, then goes first.
CHUNK: Final = 500
# While the tick path is busy: how often to look again, and the longest wait (under a
# sustained load it is always busy, and the streams must not fall behind for it).
DEFER_STEP: Final = 0.002
MAX_DEFER: Final = 0.25
TOPIC_RETRY_DELAY: Final = 5.0
# Order updates waiting to be produced (they are few; beyond this something is badly
# wrong with the broker, and each one lost is logged at ERROR with its order id).
ORDER_BACKLOG: Final = 10_000
STOP_FLUSH_SECONDS: Final = 0.8
# Order updates remembered to recognise the same postback arriving on another socket.
RECENT_ORDERS: Final = 4096

STREAM_CANDLES: Final = "candles"
STREAM_QUOTES: Final = "quotes"
STREAM_EVENTS: Final = "events"
STREAM_ORDERS: Final = "orders"


class FeedState(Protocol):
    """What the events are sampled from (the running ``MarketFeedService``)."""

    def connection_statuses(self) -> list[ConnectionStatus]: ...

    def shard_instruments(self) -> Mapping[int, Sequence[int]]: ...

    def subscriptions(self) -> Mapping[int, str]: ...

    def spooling(self) -> bool: ...

    def accounting(self) -> dict[str, Any]: ...

    def tick_path_busy(self) -> bool: ...


class _Gap:
    """Inbox marker: ticks of these instruments were dropped here."""

    __slots__ = ("tokens",)

    def __init__(self, tokens: set[int]) -> None:
        self.tokens = tokens


class _Batch(NamedTuple):
    """Inbox entry: ticks just encoded for the tick topic and their records, in order."""

    ticks: TickBatch
    records: list[EncodedMessage]


class DerivedStreams:
    """Candles, latest quotes, feed events and order updates (``BackgroundService``)."""

    def __init__(
        self,
        settings: Settings,
        state: FeedState | None = None,
        *,
        clock: Clock = SYSTEM_CLOCK,
    ) -> None:
        prefix = settings.kafka.topic_prefix
        self._settings = settings
        self._state = state
        self._wall_ns = clock.wall_ns
        sessions = SessionTable(settings.candles.session_opens)
        grace = settings.candles.grace_ms / 1000
        self.aggregators = [
            CandleAggregator(interval, grace=grace, sessions=sessions)
            for interval in settings.candles.interval_list
        ]
        self.candle_topics = {
            agg.interval: TopicNames.market_candles(agg.interval, prefix)
            for agg in self.aggregators
        }
        self.quotes_topic = TopicNames.market_quotes_latest(prefix)
        self.events_topic = TopicNames.market_feed_events(prefix)
        self.orders_topic = TopicNames.zerodha_orders_updates(prefix)
        # The status page charts 1-minute bars (the first interval when 1m is not built).
        charted = "1m" if "1m" in self.candle_topics else self.aggregators[0].interval
        self.history = CandleHistory(charted)
        self.charted = next(a for a in self.aggregators if a.interval == charted)
        self.quotes = LatestQuotes()
        self.tracker = FeedEventTracker()
        # A quote record is the tick's own market.ticks record, sent with the headers
        # every record carries (not the tick topic's per-record position header).
        self._quote_headers = WireEncoder(settings.feed.wire_format).headers()
        self._envelopes = EnvelopeEncoder(clock=clock)
        self._capacity = settings.streams.queue_capacity
        self._inbox: deque[_Batch | _Gap] = deque()
        self._include_oi = settings.feed.include_oi
        self._queued = 0
        self._orders: deque[OrderUpdate] = deque()
        self._wake = asyncio.Event()
        self._stop = asyncio.Event()
        self._producer: DerivedProducer | None = None
        self.topics_ready = False
        self.ticks_offered = 0
        self.ticks_dropped = 0
        self.orders_received = 0
        self.orders_lost = 0
        self.orders_duplicate = 0
        self._recent_orders: set[bytes] = set()
        self._recent_order_list: deque[bytes] = deque()
        self.tracker_counts: dict[str, int] = {}
        # Hot standby: while this returns False (a standby), the feed's own events are
        # not published (the active's are the group's); ``emit()`` ones always are.
        self.publishing: Callable[[], bool] = lambda: True
        self.events_suppressed = 0
        self._emitted: deque[FeedEvent] = deque(maxlen=1000)
        self._deferring_since: float | None = None
        self.deferrals = 0

    # -- called from the tick path (synchronous, O(1)) ---------------------------------

    def offer(self, ticks: TickBatch, records: list[EncodedMessage]) -> None:
        """Take a batch of ticks just encoded for the tick topic (formatted ones, or the
        native path's) with their records, one per tick."""
        n = len(ticks)
        if not n:
            return
        self.ticks_offered += n
        if self._queued + n > self._capacity:
            self.ticks_dropped += n
            tokens = {t.instrument_token for t in ticks}
            last = self._inbox[-1] if self._inbox else None
            if isinstance(last, _Gap):
                last.tokens |= tokens
            else:
                self._inbox.append(_Gap(tokens))
            return
        self._inbox.append(_Batch(ticks, records))
        self._queued += n
        self._wake.set()

    def offer_order(self, data: object, received_at_ns: int) -> None:
        """A Kite ``order`` text message's ``data`` (called from the socket reader)."""
        self.orders_received += 1
        if not isinstance(data, dict):
            self.orders_lost += 1
            log.error("order update without an order object (%s): not published", type(data))
            return
        # Kite sends a postback to every socket of the API key: with several shards the
        # same update arrives once per socket. Identical copies are counted, sent once.
        fingerprint = msgspec.json.encode(data)
        if fingerprint in self._recent_orders:
            self.orders_duplicate += 1
            return
        self._recent_orders.add(fingerprint)
        self._recent_order_list.append(fingerprint)
        if len(self._recent_order_list) > RECENT_ORDERS:
            self._recent_orders.discard(self._recent_order_list.popleft())
        if len(self._orders) >= ORDER_BACKLOG:
            self.orders_lost += 1
            log.error("order backlog full: order update %s lost", data.get("order_id"))
            return
        self._orders.append(OrderUpdate(data, ns_to_datetime(received_at_ns)))
        self._wake.set()

    # -- the task ----------------------------------------------------------------------

    def stop(self) -> None:
        self._stop.set()
        self._wake.set()

    async def run(self) -> None:
        self._producer = producer = DerivedProducer(self._settings.kafka, STREAM_QUOTES)
        producer_stop = asyncio.Event()
        async with asyncio.TaskGroup() as tg:
            setup = tg.create_task(self._ensure_topics(), name="derived-topics")
            tg.create_task(producer.run(producer_stop), name="derived-poll")
            try:
                self._send_event(
                    FeedEvent(FEED_STARTED, self._now(), accounting=self._accounting())
                )
                await self._loop()
                self._drain_inbox()
                # What changed since the last interval's write: a reader of the topic
                # after the stop finds every instrument's last tick.
                self._send_quotes()
                self._send_orders()
                self._send_emitted()
                self._sample_events()  # the sockets closed by the shutdown
                self._send_event(
                    FeedEvent(
                        FEED_STOPPED, self._now(), reason="shutdown", accounting=self._accounting()
                    )
                )
                loop = asyncio.get_running_loop()
                left = await producer.flush(loop.time() + STOP_FLUSH_SECONDS)
                if left:
                    log.warning("derived streams: %d records unconfirmed at stop", left)
            finally:
                setup.cancel()
                producer_stop.set()

    async def _loop(self) -> None:
        wall_ns = self._wall_ns
        quotes_every = self._settings.quotes.interval_ms / 1000
        next_quotes = next_events = next_candles = 0.0
        while not self._stop.is_set():
            self._wake.clear()
            self._send_orders()
            self._send_emitted()
            if self._defer(wall_ns() / 1e9):
                await asyncio.sleep(DEFER_STEP)
                continue
            processed = self._process(CHUNK)
            now = wall_ns() / 1e9
            if now >= next_candles:
                next_candles = now + TIMER_STEP
                # Never close a bar ahead of ticks still waiting in the inbox: the timer
                # runs no later than the receive time of the oldest one, so a backlog
                # here does not turn on-time ticks into late ones.
                horizon = min(now, self._oldest_waiting(now))
                for agg in self.aggregators:
                    self._send_candles(agg.close_due(horizon))
            if now >= next_quotes:
                next_quotes = now + quotes_every
                self._send_quotes()
            if now >= next_events:
                next_events = now + EVENT_STEP
                self._sample_events()
            if processed and self._inbox:
                await asyncio.sleep(0)
                continue
            with contextlib.suppress(TimeoutError):
                async with asyncio.timeout(TIMER_STEP):
                    await self._wake.wait()

    def _defer(self, now: float) -> bool:
        """True while the tick path is busy, for at most ``MAX_DEFER`` in a row."""
        if not self._feed_state().tick_path_busy():
            self._deferring_since = None
            return False
        if self._deferring_since is None:
            self._deferring_since = now
            self.deferrals += 1
        return now - self._deferring_since < MAX_DEFER

    def _oldest_waiting(self, default: float) -> float:
        for item in self._inbox:
            if not isinstance(item, _Gap):
                return item.ticks[0].received_at_ns / 1e9
        return default

    def _process(self, budget: int) -> int:
        done = 0
        inbox = self._inbox
        while inbox and done < budget:
            item = inbox.popleft()
            if isinstance(item, _Gap):
                for agg in self.aggregators:
                    agg.mark_gap(item.tokens)
                continue
            ticks = item.ticks
            self._queued -= len(ticks)
            done += len(ticks)
            self.quotes.update(item.records)
            if type(ticks[0]) is MarketTick:
                for agg in self.aggregators:
                    self._send_candles(agg.add_many(ticks))
                continue
            # Native ticks: the values their records carry, read in the extension.
            include_oi = self._include_oi
            rows = [tick.candle_fields(include_oi) for tick in cast("list[NativeTick]", ticks)]
            for agg in self.aggregators:
                self._send_candles(agg.add_rows(rows))
        return done

    def _drain_inbox(self) -> None:
        while self._process(CHUNK):
            pass

    # -- sending -------------------------------------------------------------------------

    def _send_candles(self, candles: list[Candle]) -> None:
        if not candles:
            return
        producer = self._producer
        assert producer is not None
        history = self.history
        for candle in candles:
            if candle.interval == history.interval:
                history.record(candle)
            key, value, headers = self._envelopes.candle(candle)
            producer.send(STREAM_CANDLES, self.candle_topics[candle.interval], key, value, headers)

    def _send_quotes(self) -> None:
        producer = self._producer
        assert producer is not None
        headers = self._quote_headers
        for record in self.quotes.take_dirty():
            producer.send(STREAM_QUOTES, self.quotes_topic, record.key, record.value, headers)

    def emit(self, event: FeedEvent) -> None:
        """Publish ``event`` on the feed events topic soon (bounded; from the event loop)."""
        self._emitted.append(event)
        self._wake.set()

    def _send_emitted(self) -> None:
        if self._producer is None:
            return
        while self._emitted:
            self._send_event(self._emitted.popleft(), force=True)

    def _send_event(self, event: FeedEvent, *, force: bool = False) -> None:
        if not force and not self.publishing():
            self.events_suppressed += 1
            return
        self.tracker_counts[event.kind] = self.tracker_counts.get(event.kind, 0) + 1
        producer = self._producer
        assert producer is not None
        key, value, headers = self._envelopes.feed_event(event)
        producer.send(STREAM_EVENTS, self.events_topic, key, value, headers)
        log.info(
            "feed event %s%s", event.kind, "" if event.shard is None else f" shard {event.shard}"
        )

    def _send_orders(self) -> None:
        producer = self._producer
        assert producer is not None
        orders = self._orders
        while orders:
            update = orders[0]
            key, value, headers = self._envelopes.order_update(update)
            if not producer.send(STREAM_ORDERS, self.orders_topic, key, value, headers):
                return  # queue full: keep it (bounded backlog) and retry on the next round
            orders.popleft()

    def sample_from(self, state: FeedState) -> None:
        """Where the feed events are sampled from. The feed's parts are built after
        the streams (the ticker client sends its order updates here), so the state is
        handed over once they exist; ``run()`` requires it."""
        self._state = state

    def _feed_state(self) -> FeedState:
        if self._state is None:
            raise RuntimeError("DerivedStreams: sample_from() was not called before run()")
        return self._state

    def _sample_events(self) -> None:
        state = self._feed_state()
        instruments = state.shard_instruments()
        snapshots = [
            ShardSnapshot(
                s.shard,
                s.state,
                s.since,
                s.reconnect_count,
                s.last_disconnect_reason,
                s.last_frame_age,
                tuple(instruments.get(s.shard, ())),
            )
            for s in state.connection_statuses()
        ]
        events = self.tracker.observe(
            self._now(), snapshots, state.subscriptions(), state.spooling()
        )
        for event in events:
            if event.kind == CONNECTION_DOWN and event.instruments:
                for agg in self.aggregators:
                    agg.mark_gap(event.instruments)
            self._send_event(event)

    async def _ensure_topics(self) -> None:
        topics: dict[str, dict[str, str]] = {t: {} for t in self.candle_topics.values()}
        topics[self.quotes_topic] = {"cleanup.policy": "compact"}
        topics[self.events_topic] = {}
        topics[self.orders_topic] = {}
        while True:
            try:
                await ensure_topics(self._settings.kafka, topics)
            except Exception as exc:  # broker away at start: retry, like the tick topic
                log.warning("derived topics not created (%s); retrying", exc)
                await asyncio.sleep(TOPIC_RETRY_DELAY)
                continue
            self.topics_ready = True
            return

    def _now(self) -> datetime:
        return datetime.fromtimestamp(self._wall_ns() / 1e9, UTC)

    def _accounting(self) -> dict[str, Any]:
        return self._feed_state().accounting()

    def samples(self) -> Iterator[Sample]:
        yield catalog.DERIVED_TICKS_OFFERED.sample(self.ticks_offered)
        yield catalog.DERIVED_TICKS_DROPPED.sample(self.ticks_dropped)
        yield catalog.DERIVED_QUEUE_TICKS.sample(self._queued)
        yield catalog.DERIVED_DEFERRALS.sample(self.deferrals)
        yield catalog.ORDERS_RECEIVED.sample(self.orders_received)
        yield catalog.ORDERS_LOST.sample(self.orders_lost)
        yield catalog.ORDERS_DUPLICATE.sample(self.orders_duplicate)
        yield catalog.DERIVED_EVENTS_SUPPRESSED.sample(self.events_suppressed)
        for kind, n in self.tracker_counts.items():
            yield catalog.FEED_EVENTS.sample(n, (("kind", kind),))
        for agg in self.aggregators:
            yield from agg.samples()
        yield from self.quotes.samples()
        if self._producer is not None:
            yield from self._producer.samples()


class ServiceState:
    """``FeedState`` read from the feed's parts."""

    def __init__(self, client: TickerClient, publisher: Publisher, accounting: Accounting) -> None:
        self._client = client
        self._publisher = publisher
        self._accounting = accounting

    def connection_statuses(self) -> list[ConnectionStatus]:
        return self._client.statuses()

    def shard_instruments(self) -> Mapping[int, Sequence[int]]:
        return self._client.shard_instruments()

    def subscriptions(self) -> Mapping[int, str]:
        return self._client.subscriptions()

    def spooling(self) -> bool:
        return self._publisher.spooling

    def accounting(self) -> dict[str, Any]:
        return self._accounting.snapshot()

    def tick_path_busy(self) -> bool:
        return self._publisher.busy
