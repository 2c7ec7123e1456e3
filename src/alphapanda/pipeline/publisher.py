"""The publisher: TickBuffer → TickFormatter + WireEncoder → Kafka, or the disk spool.

One task takes micro-batches from the buffer, encodes them and hands them to the
``MessageProducer``. Two routes, never both for one message:

*direct*
    The normal route: ``produce()`` into librdkafka, which batches, compresses and
    retries (idempotently) on its own. If librdkafka's bounded queue stays full for
    ``spill_after`` seconds (the broker is gone and the queue took what it could), or
    a delivery fails with a retriable error, the publisher switches to *spooling*.
*spooling*
    Every new message is appended to the spool, behind what is already there, so
    per-instrument order is kept. Replay runs in windows: only once no message of
    the direct route is still awaiting its report (a fence: everything older than the
    spool is settled), the next window is read from the spool and produced; its
    cursor moves only after every message of the window was acked. A failed replay
    message stays at the head (in memory) and is re-sent after a pause. When the
    spool is empty the publisher goes back to the direct route.

Known limits (documented, counted): a message that fails delivery *after* newer ones
were spooled (only when an outage outlasts ``message.timeout.ms``) lands in the spool
behind them; at shutdown during an outage, messages librdkafka already put on the
wire and that neither succeeded nor failed by the deadline cannot be spooled without
risking a duplicate, so they stay counted in ``awaiting_ack`` and are logged.

Accounting: every move is mirrored in ``Accounting`` in the same synchronous step.
"""

from __future__ import annotations

import asyncio
import logging
import time
from collections.abc import Callable, Iterator, Sequence
from typing import Final

from confluent_kafka import KafkaError

from alphapanda.kite.protocol import Tick
from alphapanda.metrics.samples import Sample
from alphapanda.pipeline.accounting import (
    DROP_DELIVERY_FAILED,
    DROP_ENCODE_ERROR,
    DROP_MALFORMED,
    Accounting,
)
from alphapanda.pipeline.buffer import TickBuffer
from alphapanda.pipeline.formatter import MarketTick, TickFormatter
from alphapanda.pipeline.producer import DeliveryHandler, EncodedMessage, MessageProducer
from alphapanda.pipeline.spool import Spool
from alphapanda.pipeline.wire import WireEncoder

log = logging.getLogger(__name__)

# Errors that no retry can fix: spooling them would replay them forever.
_PERMANENT_ERRORS: Final = frozenset(
    {
        KafkaError.MSG_SIZE_TOO_LARGE,
        KafkaError.INVALID_MSG_SIZE,
        KafkaError.INVALID_RECORD,
        KafkaError.TOPIC_AUTHORIZATION_FAILED,
        KafkaError._INVALID_ARG,
    }
)
# How long the publisher waits for room in librdkafka's queue before spooling.
SPILL_AFTER: Final = 0.5
# Records per replay window; also capped at half the producer's queue so a window
# always fits behind the fence.
REPLAY_WINDOW: Final = 5000
# Pause before re-sending replay messages that failed (the broker is still away).
REPLAY_RETRY_DELAY: Final = 1.0
_IDLE_WAIT: Final = 0.05
# Ticks encoded and produced between two yields to the event loop.
CHUNK: Final = 256


class TickEncoder:
    """Formats and encodes ticks; what cannot be encoded is dropped and counted."""

    def __init__(self, formatter: TickFormatter, wire: WireEncoder, accounting: Accounting) -> None:
        self.formatter = formatter
        self.wire = wire
        self._accounting = accounting
        self._clock = time.time_ns
        # Derived streams (candles, quotes) see each formatted batch: an O(1) hand-over;
        # they work on it only after the publisher has handed the batch to Kafka.
        self.observer: Callable[[list[MarketTick]], None] | None = None

    def encode(self, ticks: Sequence[Tick]) -> list[EncodedMessage]:
        """Encoded messages for ``ticks``, in order (ticks in stage ``encoding``)."""
        emitted_at_ns = self._clock()
        fmt = self.formatter.format
        wire = self.wire
        formatted: list[MarketTick] = []
        append = formatted.append
        for tick in ticks:
            market_tick = fmt(tick)
            if market_tick is not None:
                append(market_tick)
        malformed = len(ticks) - len(formatted)
        try:
            # One call for the whole chunk: the per-record work stays inside one loop.
            values = wire.encode_values(formatted, emitted_at_ns)
        except Exception:
            formatted, values = self._encode_one_by_one(formatted, emitted_at_ns)
        key = wire.key
        headers = wire.position_headers
        new = tuple.__new__  # a NamedTuple's own __new__ is a Python-level call
        self._accounting.drop("encoding", DROP_MALFORMED, malformed)
        if self.observer is not None:
            self.observer(formatted)
        return [
            new(
                EncodedMessage,
                (
                    key(mt.instrument_token),
                    value,
                    headers(mt.instrument_token, mt.received_at_ns),
                    mt.received_at_ns,
                ),
            )
            for mt, value in zip(formatted, values, strict=True)
        ]

    def _encode_one_by_one(
        self, formatted: list[MarketTick], emitted_at_ns: int
    ) -> tuple[list[MarketTick], list[bytes]]:
        # Rare: some tick of the chunk cannot be encoded. Find it, drop and count it.
        kept: list[MarketTick] = []
        values: list[bytes] = []
        for market_tick in formatted:
            try:
                (value,) = self.wire.encode_values((market_tick,), emitted_at_ns)
            except Exception:
                self._accounting.drop("encoding", DROP_ENCODE_ERROR)
                log.exception("cannot encode tick of instrument %d", market_tick.instrument_token)
                continue
            kept.append(market_tick)
            values.append(value)
        return kept, values


class _ReplayWindow:
    """Spool records handed to the producer, settled one delivery report at a time."""

    __slots__ = ("acked_prefix", "failed", "outstanding", "retry_at", "size", "states")

    def __init__(self, size: int) -> None:
        self.size = size
        self.outstanding = 0
        self.failed: list[tuple[int, EncodedMessage]] = []
        self.states = [False] * size  # acked?
        self.retry_at = 0.0
        self.acked_prefix = 0

    def prefix_acked(self) -> int:
        while self.acked_prefix < self.size and self.states[self.acked_prefix]:
            self.acked_prefix += 1
        return self.acked_prefix


class Publisher:
    """Drains the TickBuffer into Kafka, through the spool when the broker is away."""

    def __init__(
        self,
        buffer: TickBuffer,
        encoder: TickEncoder,
        producer_factory: Callable[[DeliveryHandler, Callable[[], None]], MessageProducer],
        spool: Spool,
        accounting: Accounting,
        *,
        batch_max: int,
        shutdown_deadline: float,
        queue_max_messages: int,
    ) -> None:
        self._buffer = buffer
        self._encoder = encoder
        self.producer = producer_factory(self._on_delivery, accounting.ack)
        self._spool = spool
        self._accounting = accounting
        self._batch_max = batch_max
        self._shutdown_deadline = shutdown_deadline
        self._replay_window = max(1, min(REPLAY_WINDOW, queue_max_messages // 2))
        self.spooling = False
        self._window: _ReplayWindow | None = None
        self.spill_events = 0
        self.unresolved_at_shutdown = 0
        self.spool_full_waits = 0

    # -- delivery reports (called inside producer.poll(), on the loop thread) -----------

    def _on_delivery(
        self, message: EncodedMessage, context: object, error: KafkaError | None
    ) -> None:
        acct = self._accounting
        if isinstance(context, tuple):
            window, index = context
            assert isinstance(window, _ReplayWindow) and isinstance(index, int)
            window.outstanding -= 1
            if error is None:
                window.states[index] = True
                acct.ack()
            elif error.code() in _PERMANENT_ERRORS:
                window.states[index] = True  # settled: counted as dropped, not replayed
                acct.drop("awaiting_ack", DROP_DELIVERY_FAILED)
                log.error("replayed message dropped: %s", error.name())
            else:
                window.failed.append((index, message))
                acct.replay_failed()
                # New ticks must queue behind the failed one, which is retried later.
                self.spooling = True
            return
        if error is None:
            acct.ack()
        elif error.code() in _PERMANENT_ERRORS:
            acct.drop("awaiting_ack", DROP_DELIVERY_FAILED)
            log.error("message dropped, delivery failed permanently: %s", error.name())
        else:
            self._spool.append(message, force=True)
            acct.spool_failed()
            if not self.spooling:
                self.spooling = True
                self.spill_events += 1
                log.warning("delivery failed (%s): spooling new ticks to disk", error.name())

    # -- main loop ------------------------------------------------------------------------

    async def run(self) -> None:
        """Publish until the buffer is closed and drained, then shut down cleanly."""
        buffer = self._buffer
        # A spool left by a previous run is replayed before anything new goes out.
        self.spooling = self._spool.pending > 0
        while True:
            ticks = await buffer.take_batch(self._batch_max, _IDLE_WAIT)
            for start in range(0, len(ticks), CHUNK):
                await self._dispatch(self._encoder.encode(ticks[start : start + CHUNK]))
                # Serve delivery reports and let the socket readers run between chunks:
                # one big batch encoded in one go would hold the loop for ~100 ms.
                self.producer.poll()
                await asyncio.sleep(0)
            await self._service_spool()
            if not ticks and buffer.closed and not len(buffer):
                break
        await self._shutdown()

    async def _dispatch(self, messages: list[EncodedMessage]) -> None:
        acct = self._accounting
        producer = self.producer
        i = 0
        total = len(messages)
        full_since = 0.0
        while i < total:
            if self.spooling:
                if self._buffer.closed:
                    # Shutting down: nothing is coming after these, and refusing them
                    # would lose them; the excess is bounded by the buffer's capacity.
                    for message in messages[i:]:
                        self._spool.append(message, force=True)
                    acct.spool_from_encoding(total - i)
                    return
                written = self._spool.extend(messages[i:])
                acct.spool_from_encoding(written)
                i += written
                if i < total:
                    # Spool full: stop taking ticks until replay frees room, so the
                    # TickBuffer fills and its declared policy applies.
                    self.spool_full_waits += 1
                    await self._service_spool()
                    await asyncio.sleep(_IDLE_WAIT)
                continue
            accepted = producer.produce_many(messages, i)
            if accepted:
                acct.produce(accepted)
                i += accepted
                full_since = 0.0
                continue
            if producer.fatal_error is not None and not self.spooling:
                self.spooling = True
                self.spill_events += 1
                log.critical("producer failed fatally: spooling every tick until a restart")
                continue
            if producer.committing:
                # A Kafka transaction is being committed (hot standby): not a full
                # queue, so not a reason to spool; ticks wait in the buffer.
                full_since = 0.0
                await asyncio.sleep(0.001)
                continue
            # librdkafka's queue is full: wait for room, serving reports, for a while.
            now = time.monotonic()
            if not full_since:
                full_since = now
            elif now - full_since >= SPILL_AFTER:
                self.spooling = True
                self.spill_events += 1
                log.warning(
                    "producer queue full for %.1f s: spooling new ticks to disk", SPILL_AFTER
                )
                continue
            producer.poll()
            await asyncio.sleep(0.001)

    async def _service_spool(self) -> None:
        await self._spool.sync()
        window = self._window
        if window is not None:
            if window.outstanding:
                return
            if window.failed:
                if not window.retry_at:
                    window.retry_at = time.monotonic() + REPLAY_RETRY_DELAY
                    return
                if time.monotonic() < window.retry_at:
                    return
                retry, window.failed, window.retry_at = window.failed, [], 0.0
                self._send_window(window, retry)
                return
            self._spool.commit_window()
            self._window = None
        if not self.spooling:
            return
        if self.producer.pending or self.producer.fatal_error is not None:
            # The fence: everything older than the spool must be settled first. (A
            # fatally failed producer cannot replay; the next run will.)
            return
        if self._spool.pending == 0:
            self.spooling = False
            log.info("spool drained: publishing directly again")
            return
        messages = self._spool.read_window(self._replay_window)
        self._window = _ReplayWindow(len(messages))
        self._accounting.replay(len(messages))
        self._send_window(self._window, list(enumerate(messages)), counted=True)
        if len(messages) == self._spool.pending and not self._window.failed:
            # This window is the whole spool: new messages may follow it straight into
            # librdkafka's queue, which keeps their order behind it per partition.
            # (Otherwise a steady stream would keep refilling the spool during each
            # window's round trip and replay would never catch up.)
            self.spooling = False
            log.info("spool replayed: publishing directly again")

    def _send_window(
        self,
        window: _ReplayWindow,
        items: list[tuple[int, EncodedMessage]],
        *,
        counted: bool = False,
    ) -> None:
        acct = self._accounting
        for index, message in items:
            if not counted:
                acct.replay(1)
            if self.producer.try_produce(message, (window, index)):
                window.outstanding += 1
            else:  # queue full (cannot happen behind the fence, but never lose it)
                window.failed.append((index, message))
                acct.replay_failed()

    # -- shutdown ---------------------------------------------------------------------

    async def _shutdown(self) -> None:
        """Flush within the deadline; spool what librdkafka has not sent; settle the spool."""
        deadline = time.monotonic() + self._shutdown_deadline
        producer = self.producer
        # Keep most of the deadline for flushing; leave a little to purge and spool.
        reserve = min(1.0, self._shutdown_deadline / 4)
        while time.monotonic() < deadline - reserve:
            await self._service_spool()
            if not producer.pending and (
                not self.spooling or self._spool.pending == 0 or producer.fatal_error
            ):
                break
            await producer.flush(0.05)
            if self._window is None and self.spooling and not producer.pending:
                # Replay made no progress possible (nothing read); avoid a hot loop.
                await asyncio.sleep(0.01)
        if producer.pending:
            # Messages not yet on the wire come back as _PURGE_QUEUE and are spooled.
            producer.purge_queued()
            await producer.flush(max(0.0, deadline - time.monotonic()))
        window = self._window
        if window is not None:
            # Commit what was acked in order; the rest stays in the spool for next time.
            self._spool.commit_window(window.prefix_acked())
            self._window = None
        self.unresolved_at_shutdown = producer.pending
        if producer.pending:
            log.error(
                "%d messages were on the wire and unresolved at the shutdown deadline; "
                "their delivery is unknown",
                producer.pending,
            )
        producer.stop()
        await self._spool.sync()

    def samples(self) -> Iterator[Sample]:
        yield Sample(
            "publisher_spooling", "gauge", int(self.spooling), (), "1 while new ticks go to spool."
        )
        yield Sample(
            "publisher_spill_events_total",
            "counter",
            self.spill_events,
            (),
            "Times the publisher switched to the disk spool.",
        )
        yield Sample(
            "publisher_spool_full_waits_total",
            "counter",
            self.spool_full_waits,
            (),
            "Times the publisher waited because the spool was full.",
        )
