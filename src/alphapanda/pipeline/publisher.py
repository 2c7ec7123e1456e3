"""The publisher: TickBuffer → TickFormatter + WireEncoder → Kafka, or the disk spool.

One task takes micro-batches from the buffer, encodes them and feeds them to the
``PublisherCore`` (pipeline/publisher_core.py), which makes every decision: direct
sends, when to spool, replay windows and their order, what to do when the spool
cannot take a tick, a fatal producer error, shutdown. This module is the shell around
it: it executes the core's commands against the ``MessageProducer`` and the ``Spool``
and reports back what happened. Spool file I/O runs in a worker thread, one operation
at a time, so the loop that reads the sockets never waits on the disk.
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Callable, Iterator, Sequence
from typing import TYPE_CHECKING, Final, cast

from confluent_kafka import KafkaError, KafkaException

from alphapanda.clock import SYSTEM_CLOCK, Clock
from alphapanda.kite.protocol import Tick
from alphapanda.market_tick import MarketTick
from alphapanda.metrics import catalog
from alphapanda.metrics.samples import Sample
from alphapanda.pipeline.accounting import (
    DROP_ENCODE_ERROR,
    DROP_MALFORMED,
    DROP_SHUTDOWN,
    Accounting,
)
from alphapanda.pipeline.buffer import TickBuffer
from alphapanda.pipeline.formatter import TickFormatter
from alphapanda.pipeline.hotpath import TickBatch, encode_native_ticks, is_native_batch
from alphapanda.pipeline.producer import DeliveryHandler, EncodedMessage, MessageProducer
from alphapanda.pipeline.publisher_core import (
    REPLAY_RETRY_DELAY,
    REPLAY_WINDOW,
    SPILL_AFTER,
    AppendToSpool,
    CheckPublished,
    Command,
    CommitWindow,
    Fatal,
    Finish,
    Outcome,
    Produce,
    ProduceReplay,
    PublisherCore,
    PurgeQueued,
    ReadWindow,
)
from alphapanda.pipeline.spool import Spool
from alphapanda.pipeline.wire import WireEncoder

if TYPE_CHECKING:
    from alphapanda._native import NativeTick

log = logging.getLogger(__name__)

__all__ = ["REPLAY_RETRY_DELAY", "REPLAY_WINDOW", "SPILL_AFTER", "Publisher", "RecordBuilder"]

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
_IDLE_WAIT: Final = 0.05
# While the core waits on the disk or on librdkafka, how often the shell looks again.
_BUSY_WAIT: Final = 0.002
# Ticks encoded and produced between two yields to the event loop.
CHUNK: Final = 256
# At start, how long nothing is handed to librdkafka while the topic is being created
# and its partitions do not take writes yet (see ``topics_admin``); the TickBuffer holds
# the ticks meanwhile. A broker that cannot be reached is left to the stall detection.
TOPIC_HOLD_S: Final = 5.0
_TOPIC_POLL_S: Final = 0.02

# Which of these messages does the topic already hold (their indices)? Blocking (it
# reads the topic): run in a worker thread. Raises when the broker does not answer.
PublishedCheck = Callable[[list[EncodedMessage]], set[int]]


def outcome_of(error: KafkaError | None) -> Outcome:
    """The core's view of a delivery report."""
    if error is None:
        return Outcome.ACKED
    if error.code() in _PERMANENT_ERRORS:
        return Outcome.PERMANENT
    return Outcome.RETRIABLE


class RecordBuilder:
    """Formats and encodes ticks; what cannot be encoded is dropped and counted."""

    def __init__(
        self,
        formatter: TickFormatter,
        wire: WireEncoder,
        accounting: Accounting,
        clock: Clock = SYSTEM_CLOCK,
    ) -> None:
        self.formatter = formatter
        self.wire = wire
        self._accounting = accounting
        self._clock = clock.wall_ns  # the batch's emitted_at stamp
        # Derived streams (candles, quotes) see each batch and its records: an O(1)
        # hand-over; they work on it only after the publisher has handed the batch to
        # Kafka. The Python path hands over its formatted MarketTicks, the native path
        # its NativeTicks; both with the records built for them, one per tick.
        self.observer: Callable[[TickBatch, list[EncodedMessage]], None] | None = None

    def encode(self, ticks: Sequence[Tick]) -> list[EncodedMessage]:
        """Encoded messages for ``ticks``, in order (ticks in stage ``encoding``)."""
        emitted_at_ns = self._clock()
        if is_native_batch(ticks):
            records = encode_native_ticks(self.formatter, self.wire, ticks, emitted_at_ns)
            if self.observer is not None:
                self.observer(cast("list[NativeTick]", ticks), records)
            return records
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
        encoded: list[EncodedMessage] = [
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
        if self.observer is not None:
            self.observer(formatted, encoded)
        return encoded

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


class Publisher:
    """Drains the TickBuffer into Kafka, through the spool when the broker is away."""

    def __init__(
        self,
        buffer: TickBuffer,
        encoder: RecordBuilder,
        producer_factory: Callable[[DeliveryHandler, Callable[[int], None]], MessageProducer],
        spool: Spool,
        accounting: Accounting,
        *,
        batch_max: int,
        shutdown_deadline: float,
        queue_max_messages: int,
        published_check: PublishedCheck,
        stall_after: float | None = None,
        on_fatal: Callable[[str], None] | None = None,
        clock: Clock = SYSTEM_CLOCK,
        topic_writable: asyncio.Event | None = None,
    ) -> None:
        """``topic_writable``: set once the topic exists and takes writes; nothing is
        produced before that (for up to ``TOPIC_HOLD_S``)."""
        self._buffer = buffer
        self._topic_writable = topic_writable
        self._encoder = encoder
        self._accounting = accounting
        self.core = PublisherCore(
            accounting,
            policy=buffer.policy,
            replay_window=max(1, min(REPLAY_WINDOW, queue_max_messages // 2)),
            stall_after=stall_after,
            upstream=self._upstream,
        )
        self.producer = producer_factory(self._on_delivery, self.core.on_direct_acked)
        self._spool = spool
        self._batch_max = batch_max
        self._shutdown_deadline = shutdown_deadline
        self._on_fatal = on_fatal
        self._clock = clock.monotonic  # deadlines: the spill, the stall, the shutdown
        self._published_check = published_check
        self._spool_op: asyncio.Task[None] | None = None
        self._checks: set[asyncio.Task[None]] = set()
        self._shutdown_started: float | None = None
        # Crash recovery first, then the earlier run's spool (see hold_replay).
        self._hold_replay = False
        self._release_wanted = False
        self._released = asyncio.Event()
        # Ticks of the batch in hand not yet encoded and handed to the producer.
        self._unsent = 0

    # Figures kept under their old names (metrics, status, tests).
    @property
    def spooling(self) -> bool:
        return self.core.spooling

    @property
    def spill_events(self) -> int:
        return self.core.spill_events

    @property
    def spool_full_waits(self) -> int:
        return self.core.spool_full_waits

    @property
    def unresolved_at_shutdown(self) -> int:
        return self.core.unresolved_at_shutdown

    @property
    def busy(self) -> bool:
        """Ticks are waiting to be encoded and produced (in the buffer or in hand)."""
        return self._upstream() > 0

    def hold_replay(self) -> None:
        """Before ``run``: crash recovery will put older ticks than the spool holds into
        the buffer; replay the spool only after them (``release_replay``)."""
        self._hold_replay = True

    async def release_replay(self) -> None:
        """Crash recovery put its last tick in the buffer (and nothing newer is in it):
        returns once they are all handed to the core, which replays the spool next."""
        if not self._hold_replay:
            return
        self._release_wanted = True
        await self._released.wait()

    def begin_shutdown(self) -> None:
        """The shutdown deadline starts now (the buffer is closed right after)."""
        if self._shutdown_started is None:
            self._shutdown_started = self._clock()

    # -- delivery reports (called inside producer.poll(), on the loop thread) -----------

    def _on_delivery(
        self, message: EncodedMessage, context: object, error: KafkaError | None
    ) -> None:
        outcome = outcome_of(error)
        if error is not None and outcome is Outcome.PERMANENT:
            log.error("message dropped, delivery failed permanently: %s", error.name())
        if isinstance(context, tuple):
            window, index = context
            assert isinstance(window, int) and isinstance(index, int)
            self.core.on_replay_report(window, index, outcome)
        elif outcome is Outcome.ACKED:
            self.core.on_direct_acked(1)
        else:
            self.core.on_direct_failed(message, outcome)

    # -- main loop ------------------------------------------------------------------------

    async def run(self) -> None:
        """Publish until the buffer is closed and drained and the core is finished."""
        await self._await_topic()
        core = self.core
        core.recovered(self._spool.pending, hold=self._hold_replay)
        ticks: list[Tick] = []
        position = 0
        async with asyncio.TaskGroup() as tg:
            while not core.finished:
                await self._execute(tg)
                if core.finished:
                    break
                self._check_fatal()
                if (
                    self._release_wanted
                    and not self._released.is_set()
                    and position >= len(ticks)
                    and not len(self._buffer)
                ):
                    core.release_replay()
                    self._released.set()
                if position < len(ticks) and core.wants_input:
                    chunk = ticks[position : position + CHUNK]
                    position += len(chunk)
                    self._unsent = len(ticks) - position
                    core.on_batch(self._encoder.encode(chunk), self._clock())
                    await self._execute(tg)
                    # Serve delivery reports and let the socket readers run between
                    # chunks: one big batch encoded in one go would hold the loop.
                    self.producer.poll()
                    await asyncio.sleep(0)
                    continue
                if self._buffer.closed and self._shutdown_started is not None and not core.closing:
                    # The deadline runs from the shutdown request, even while input is
                    # held (a full spool under block).
                    core.close(self._shutdown_started + self._shutdown_deadline, self._clock())
                if (
                    position >= len(ticks)
                    and core.wants_input
                    and (not core.closing or len(self._buffer))
                ):
                    busy = self._spool_op is not None or core.spooling
                    ticks = await self._buffer.take_batch(
                        self._batch_max, _BUSY_WAIT if busy else _IDLE_WAIT
                    )
                    position = 0
                    self._unsent = len(ticks)
                    if not ticks and self._buffer.closed and not len(self._buffer):
                        self.begin_shutdown()
                        assert self._shutdown_started is not None
                        core.close(self._shutdown_started + self._shutdown_deadline, self._clock())
                else:
                    await asyncio.sleep(_BUSY_WAIT)
                self.producer.poll()
                core.on_timer(self._clock())
            if self._spool_op is not None:
                await self._spool_op
        await self._drop_leftover()
        self.producer.stop()

    def _upstream(self) -> int:
        # Ticks not yet handed to the core: in the buffer, or taken and not encoded.
        return self._unsent + len(self._buffer)

    async def _drop_leftover(self) -> None:
        # The shutdown deadline passed before the core took everything (it waits for
        # the rest otherwise): what is left is counted as dropped, never left unsaid.
        while len(self._buffer):
            self._unsent += len(await self._buffer.take_batch(len(self._buffer), 0))
        if self._unsent:
            log.error(
                "%d ticks were not yet encoded at the shutdown deadline: dropped", self._unsent
            )
            self._accounting.drop("encoding", DROP_SHUTDOWN, self._unsent)
            self._unsent = 0

    def _check_fatal(self) -> None:
        reason = self.producer.fatal_error
        if reason is not None and self.core.fatal_reason is None:
            self.core.on_fatal(reason)

    async def _execute(self, tg: asyncio.TaskGroup) -> None:
        core = self.core
        while (command := core.next_command()) is not None:
            match command:
                case Produce(messages, start):
                    accepted = self.producer.produce_many(messages, start)
                    self._check_fatal()
                    if not accepted and self.producer.committing:
                        # A Kafka transaction is being committed (hot standby): produce
                        # is paused, the queue is not full, so no reason to spool.
                        core.on_produce_paused(self._clock())
                    else:
                        core.on_produced(accepted, self._clock())
                case ProduceReplay(window, items):
                    for index, message in items:
                        if not self.producer.try_produce(message, (window, index)):
                            core.on_replay_refused(window, index)
                case AppendToSpool() | ReadWindow() | CommitWindow():
                    # One spool operation at a time (the core waits for each outcome).
                    if self._spool_op is not None:
                        await self._spool_op
                    self._spool_op = tg.create_task(self._run_spool_op(command))
                case PurgeQueued():
                    self.producer.purge_queued()
                case CheckPublished():
                    check = tg.create_task(self._check_published(command))
                    self._checks.add(check)
                    check.add_done_callback(self._checks.discard)
                case Fatal(reason):
                    if self._on_fatal is not None:
                        self._on_fatal(reason)
                case Finish(prefix):
                    # An answer would be ignored now: do not wait for a broker that is
                    # away (its worker thread ends at its own timeout).
                    for check in list(self._checks):
                        check.cancel()
                    if self._spool_op is not None:
                        await self._spool_op
                    if prefix is not None:
                        spool = self._spool
                        await asyncio.to_thread(spool.commit_window, prefix)
                    if self.core.unresolved_at_shutdown:
                        log.error(
                            "%d messages were on the wire and unresolved at the shutdown "
                            "deadline; their delivery is unknown",
                            self.core.unresolved_at_shutdown,
                        )

    async def _await_topic(self) -> None:
        # Until the topic takes writes, for TOPIC_HOLD_S at most. Not while librdkafka
        # reports trouble reaching the broker (then the usual route, stall detection and
        # spool, takes the ticks), nor once the feed stops (what is held must still be
        # published or spooled).
        gate = self._topic_writable
        if gate is None:
            return
        until = self._clock() + TOPIC_HOLD_S
        while self._holding(gate, until):  # noqa: ASYNC110 (an event and three conditions)
            await asyncio.sleep(_TOPIC_POLL_S)

    def _holding(self, gate: asyncio.Event, until: float) -> bool:
        return not (
            gate.is_set()
            or self.producer.client_errors
            or self._buffer.closed
            or self._clock() >= until
        )

    async def _check_published(self, check: CheckPublished) -> None:
        try:
            found = await asyncio.to_thread(self._published_check, check.messages)
        except (KafkaException, TimeoutError, OSError) as exc:
            self.core.on_published_checked(check.window, None, str(exc), self._clock())
        else:
            present = check.window_indices(found)
            self.core.on_published_checked(check.window, present, None, self._clock())

    async def _run_spool_op(self, command: Command) -> None:
        spool = self._spool
        core = self.core
        try:
            match command:
                case AppendToSpool(messages, _, _, True):
                    result = await asyncio.to_thread(spool.prepend_many, messages)
                    core.on_spool_appended(result.written, result.error, self._clock())
                case AppendToSpool(messages, force, _, _):
                    result = await asyncio.to_thread(spool.append_many, messages, force=force)
                    core.on_spool_appended(result.written, result.error, self._clock())
                case ReadWindow(max_records):
                    try:
                        window = await asyncio.to_thread(spool.read_window, max_records)
                    except OSError as exc:
                        core.on_window_read([], 0, str(exc), self._clock())
                    else:
                        core.on_window_read(window.messages, window.lost, None, self._clock())
                case CommitWindow(count):
                    try:
                        error = await asyncio.to_thread(spool.commit_window, count)
                    except OSError as exc:
                        error = str(exc)
                    core.on_window_committed(error, self._clock())
        finally:
            self._spool_op = None

    def samples(self) -> Iterator[Sample]:
        yield catalog.PUBLISHER_SPOOLING.sample(int(self.spooling))
        yield catalog.PUBLISHER_SPILL_EVENTS.sample(self.spill_events)
        yield catalog.PUBLISHER_SPOOL_FULL_WAITS.sample(self.spool_full_waits)
        yield catalog.PUBLISHER_ALREADY_PUBLISHED.sample(self.core.already_published)
        yield catalog.PUBLISHER_STALLS.sample(self.core.stalls)
        yield catalog.PUBLISHER_SPOOL_UNAVAILABLE.sample(int(self.core.spool_problem is not None))
