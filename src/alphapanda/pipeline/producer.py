"""``MessageProducer``: confluent-kafka's ``Producer`` driven from the event loop.

librdkafka does the batching (``linger.ms``), compression, retries and idempotence on
its own threads; this adapter only calls ``produce()`` and ``poll(0)`` from the event
loop, never a blocking call. Every message carries its own delivery handler, so every
send is observed: success (with latency from frame receipt to broker ack), or failure
with the error, handed back to the caller (the publisher spools retriable failures).

``pending`` counts messages produced whose delivery report has not been served yet;
it is what the publisher waits on before replaying the spool, and at shutdown.
"""

from __future__ import annotations

import asyncio
import logging
from array import array
from collections.abc import Callable, Iterator
from functools import partial
from typing import Any, Final, NamedTuple

import msgspec
from confluent_kafka import KafkaError, KafkaException, Message, Producer

from alphapanda.clock import SYSTEM_CLOCK, Clock
from alphapanda.kafka_security import security_config
from alphapanda.logs import LogThrottle
from alphapanda.metrics import catalog
from alphapanda.metrics.samples import Sample
from alphapanda.settings import KafkaSettings

log = logging.getLogger(__name__)

# How long the poll loop sleeps between ``poll(0)`` calls while messages await their
# reports (bounds the latency added to an ack) and while idle.
POLL_INTERVAL_BUSY: Final = 0.001
POLL_INTERVAL_IDLE: Final = 0.02
# Latency reservoir: the most recent acks, enough for a stable p99.
_RESERVOIR: Final = 8192
# Repeated client errors (broker down, ...) are logged at most this often per code.
_ERROR_LOG_INTERVAL: Final = 10.0


class EncodedMessage(NamedTuple):
    """One Kafka record ready to send, with the receive time of the tick it carries."""

    key: bytes
    value: bytes
    headers: list[tuple[str, bytes]]
    received_at_ns: int


# Called once per message with its delivery outcome (``None`` = acked).
DeliveryHandler = Callable[[EncodedMessage, object, "KafkaError | None"], None]


def producer_config(settings: KafkaSettings, client_id: str) -> dict[str, Any]:
    """The librdkafka configuration of the feed's producer."""
    return {
        "bootstrap.servers": settings.bootstrap_servers,
        "client.id": client_id,
        "enable.idempotence": True,
        "acks": "all",
        "compression.type": settings.compression,
        "linger.ms": settings.linger_ms,
        "batch.size": settings.batch_size_bytes,
        "queue.buffering.max.messages": settings.queue_max_messages,
        "message.timeout.ms": settings.message_timeout_ms,
        "request.timeout.ms": settings.request_timeout_ms,
        # Come back quickly after a broker restart instead of backing off for 10 s.
        "reconnect.backoff.max.ms": 1000,
        "socket.keepalive.enable": True,
        # linger.ms already batches; Nagle on top only delays the last segment of a
        # request (up to the peer's delayed-ACK timer), which shows up in the p99.
        "socket.nagle.disable": True,
        # Connection failures are already reported (rate-limited) through error_cb;
        # librdkafka's own log lines would repeat each one every reconnect attempt.
        "log.connection.close": False,
        "log_level": 2,
        **security_config(settings),
    }


def backstop_timeout_ms(stall_ms: int) -> int:
    """librdkafka's message timeout for a producer whose caller notices a silent broker
    itself after ``stall_ms`` and then withdraws everything still queued.

    librdkafka's own timeout can fail an older message on the wire while a newer one of
    its partition, still queued, is delivered: no re-send can put those back in order.
    Set well after ``stall_ms``, it only ever fires when the queue behind the messages
    on the wire was withdrawn already, so nothing newer can overtake them."""
    return max(4 * stall_ms, stall_ms + 5000)


class LatencyReservoir:
    """The most recent latencies in a fixed ring; percentiles computed when asked."""

    def __init__(self, size: int = _RESERVOIR) -> None:
        # An array, not a list: the cyclic GC never traverses it (a list of 2M ints
        # made every full collection ~15 ms longer in the e2e benchmark).
        self._ring = array("q", bytes(8 * size))
        self._size = size
        self._next = 0
        self.count = 0
        self.total_ns = 0

    def add(self, latency_ns: int) -> None:
        self._ring[self._next] = latency_ns
        self._next = (self._next + 1) % self._size
        self.count += 1
        self.total_ns += latency_ns

    def add_acks(self, now_ns: int, received_at_ns: list[int]) -> None:
        """``add(now_ns - r)`` for every non-zero receive time ``r`` (one loop, no calls)."""
        ring = self._ring
        size = self._size
        i = self._next
        count = 0
        total = 0
        for received in received_at_ns:
            if received:
                latency = now_ns - received
                ring[i] = latency
                i += 1
                if i == size:
                    i = 0
                count += 1
                total += latency
        self._next = i
        self.count += count
        self.total_ns += total

    def percentiles(self, *quantiles: float) -> list[float]:
        """Seconds at each quantile (0..1) of the retained window; 0.0 if empty."""
        filled = sorted(self._ring[: min(self.count, self._size)])
        if not filled:
            return [0.0 for _ in quantiles]
        last = len(filled) - 1
        return [filled[min(last, int(q * len(filled)))] / 1e9 for q in quantiles]

    def reset(self) -> None:
        self._next = 0
        self.count = 0
        self.total_ns = 0


# librdkafka reports as delivered, with no offset, messages it never saw the broker
# confirm: a retry the broker says it already holds, or the messages of a refused request
# that it infers were written because a later request for the same partition was
# accepted. That inference is wrong when the broker had no state yet for this producer
# (a new topic whose leader refused writes for a moment, then took them): those messages
# are not in the topic. So an ack without an offset is reported as a failure whose
# outcome is unknown; the publisher then asks the topic (by exact position) and sends
# again only what it lacks.
UNCONFIRMED: Final = KafkaError(
    KafkaError._INCONSISTENT, "reported delivered without an offset (not confirmed by the broker)"
)
UNCONFIRMED_REASON: Final = "unconfirmed_ack"


def failure_reason(error: KafkaError) -> str:
    """How a failed delivery is named in logs and metrics."""
    return UNCONFIRMED_REASON if error is UNCONFIRMED else error.name()


class _Delivery(msgspec.Struct, frozen=True, gc=False):
    """The delivery handler of one ``produce_many`` message: only its receive time.

    A gc=False struct rather than a ``functools.partial``: thousands are alive at any
    moment (one per message awaiting its ack), and tracked objects living that long are
    promoted into the old GC generation and trigger full collections (measured: ~50 full
    collections of up to 60-100 ms in a 40 s run). Holds no cycle (librdkafka owns it).
    """

    producer: MessageProducer
    received_at_ns: int
    # librdkafka's delivery reports do not carry the headers back, so a failed message
    # needs them from here to be spooled whole (the publisher shares one list).
    headers: list[tuple[str, bytes]]

    def __call__(self, error: KafkaError | None, msg: Message) -> None:
        # Runs inside poll(), once per message: an ack is only noted here, and settled
        # in bulk right after poll() returns (MessageProducer._settle_acks).
        if error is None and msg.offset() is not None:
            self.producer._acked.append(self.received_at_ns)
        else:
            self.producer._report_direct(
                self.received_at_ns, self.headers, error or UNCONFIRMED, msg
            )


class MessageProducer:
    """Idempotent, compressed, bounded Kafka producer with every delivery observed."""

    def __init__(
        self,
        settings: KafkaSettings,
        topic: str,
        on_delivery: DeliveryHandler,
        *,
        on_ack: Callable[..., None] | None = None,
        client_id: str = "alphapanda-feed",
        message_timeout_ms: int | None = None,
        clock: Clock = SYSTEM_CLOCK,
        transactional_id: str | None = None,
        commit_interval: float = 0.1,
        commit_timeout: float = 10.0,
    ) -> None:
        """``message_timeout_ms`` replaces the settings' librdkafka message timeout
        (see ``backstop_timeout_ms``)."""
        self.topic = topic
        self._on_delivery = on_delivery
        # Wall ns stamps the acks (latency = ack - receive stamp); monotonic paces logs.
        self._wall_ns = clock.wall_ns
        self._monotonic = clock.monotonic
        # Fast path for the common report (a ``produce_many`` message acked): called as
        # ``on_ack(n)`` once per poll for the ``n`` such acks it served (e.g.
        # ``Accounting.ack``), instead of rebuilding each message for ``on_delivery``.
        self._on_ack = on_ack
        # Receive times of produce_many messages acked during the current poll().
        self._acked: list[int] = []
        # Told the receive times of every batch of acks (the WAL's retention uses them).
        self.ack_listener: Callable[[list[int]], None] | None = None
        config = producer_config(settings, client_id)
        if message_timeout_ms is not None:
            config["message.timeout.ms"] = message_timeout_ms
        if transactional_id is not None:
            # Hot standby: every tick is written inside a transaction; a new owner of
            # the same id fences this producer (see ``start_transactions``).
            config["transactional.id"] = transactional_id
            # librdkafka requires message.timeout.ms <= transaction.timeout.ms. A longer
            # transaction timeout costs nothing at a takeover: the new owner's
            # ``init_transactions`` aborts the dead owner's open transaction at once.
            config["transaction.timeout.ms"] = max(
                int(commit_timeout * 1000) * 2, 60_000, int(config["message.timeout.ms"])
            )
        self._producer = Producer(
            config
            # librdkafka's own log lines go through logging (served by poll()), not stderr.
            | {"error_cb": self._error, "logger": logging.getLogger("alphapanda.kafka")}
        )
        self.transactional = transactional_id is not None
        self.commit_interval = commit_interval
        self._commit_timeout = commit_timeout
        self._in_transaction = False
        self._committing = False
        self._uncommitted = 0
        self._last_commit = self._monotonic()
        self.commits = 0
        self.commit_latency = LatencyReservoir(1024)
        # Set when a transaction could not be committed (fenced by a newer owner of the
        # transactional id, or aborted): nothing of it is visible to read_committed
        # consumers, and this producer must not be used for ticks again.
        self.transaction_error: str | None = None
        self._stopping = asyncio.Event()
        self.pending = 0
        self.sent = 0
        self.delivered = 0
        self.failed: dict[str, int] = {}
        self.buffer_full_waits = 0
        self.client_errors: dict[str, int] = {}
        self.latency = LatencyReservoir()
        self.last_ack_ns = 0
        self.fatal_error: str | None = None
        self._throttle = LogThrottle(_ERROR_LOG_INTERVAL)

    # -- sending ------------------------------------------------------------------------

    def try_produce(self, message: EncodedMessage, context: object = None) -> bool:
        """Hand one message to librdkafka; ``False`` if its queue is full (nothing sent).

        ``context`` comes back to the delivery handler with the outcome.
        """
        if self._committing:
            return False
        try:
            self._producer.produce(
                self.topic,
                message.value,
                message.key,
                # librdkafka copies the headers; the stub's list is needlessly invariant.
                headers=message.headers,  # type: ignore[arg-type]
                on_delivery=partial(self._report, message, context),
            )
        except BufferError:
            return False
        except KafkaException as exc:
            self._fatal(exc)
            return False
        self.pending += 1
        self.sent += 1
        self._uncommitted += 1
        return True

    def produce_many(self, messages: list[EncodedMessage], start: int = 0) -> int:
        """``try_produce`` for ``messages[start:]`` in one tight loop (the hot path);
        returns how many were accepted before librdkafka's queue filled up."""
        if self._committing:
            return 0
        produce = self._producer.produce
        topic = self.topic
        index = start
        # One handler per message, holding its receive time and headers: a gc=False
        # _Delivery on the fast path, or partial(_report_direct, ...) without on_ack.
        make: Callable[
            [Any, int, list[tuple[str, bytes]]], Callable[[KafkaError | None, Message], None]
        ]
        owner: Any
        if self._on_ack is not None:
            make, owner = _Delivery, self
        else:
            make, owner = partial, self._report_direct
        try:
            for message in messages[start:] if start else messages:
                produce(
                    topic,
                    message.value,
                    message.key,
                    headers=message.headers,  # type: ignore[arg-type]
                    # Only the receive time is kept on our side: librdkafka holds its
                    # own copy of key/value/headers, and hands them back on failure.
                    on_delivery=make(owner, message.received_at_ns, message.headers),
                )
                index += 1
        except BufferError:
            pass
        except KafkaException as exc:
            self._fatal(exc)
        accepted = index - start
        self.pending += accepted
        self.sent += accepted
        self._uncommitted += accepted
        return accepted

    async def produce(self, message: EncodedMessage, context: object = None) -> None:
        """Like ``try_produce`` but waits (serving delivery reports) while the queue is full."""
        while not self.try_produce(message, context):
            self.buffer_full_waits += 1
            self._poll()
            await asyncio.sleep(POLL_INTERVAL_BUSY)

    def _settle_acks(self) -> None:
        # Right after librdkafka's poll(), in the same synchronous step: the acks noted
        # by _Delivery are counted, timed (the poll's clock read: the reports were all
        # served just now) and passed on in one go.
        acked = self._acked
        n = len(acked)
        if not n:
            return
        now = self._wall_ns()
        self.pending -= n
        self.delivered += n
        self.last_ack_ns = now
        self.latency.add_acks(now, acked)
        if self.ack_listener is not None:
            self.ack_listener(acked)
        acked.clear()
        if self._on_ack is not None:
            try:
                self._on_ack(n)
            except Exception:
                self._log_once("delivery_handler", "ack handler raised", exc_info=True)

    def _poll(self, timeout: float = 0) -> int:
        served = int(self._producer.poll(timeout))
        if self._acked:
            self._settle_acks()
        return served

    def _report_direct(
        self,
        received_at_ns: int,
        headers: list[tuple[str, bytes]],
        error: KafkaError | None,
        msg: Message,
    ) -> None:
        # A produce_many message whose report is a failure (or, without on_ack, any
        # report): rebuild it from what librdkafka hands back, for on_delivery.
        message = EncodedMessage(
            msg.key() or b"",
            msg.value() or b"",
            headers,
            received_at_ns,
        )
        self._report(message, None, error, msg)

    def _report(
        self, message: EncodedMessage, context: object, error: KafkaError | None, msg: Any
    ) -> None:
        # Runs inside poll(), on the event loop thread.
        self.pending -= 1
        if error is None and msg is not None and msg.offset() is None:
            error = UNCONFIRMED
        if error is UNCONFIRMED:
            self._log_once(
                UNCONFIRMED_REASON,
                "librdkafka reported a message delivered that the broker never confirmed "
                "(no offset): the topic is checked and what it lacks is sent again",
                level=logging.WARNING,
            )
        if error is None:
            self.delivered += 1
            now = self._wall_ns()
            self.last_ack_ns = now
            if message.received_at_ns:
                self.latency.add(now - message.received_at_ns)
        else:
            name = failure_reason(error)
            self.failed[name] = self.failed.get(name, 0) + 1
        try:
            self._on_delivery(message, context, error)
        except Exception:
            # A handler bug must not kill librdkafka's callback dispatch (later reports
            # would never be served); log it once per kind and keep going.
            self._log_once("delivery_handler", "delivery handler raised", exc_info=True)

    def _error(self, error: KafkaError) -> None:
        name = error.name()
        self.client_errors[name] = self.client_errors.get(name, 0) + 1
        if error.fatal():
            self.fatal_error = error.str()
        level = logging.CRITICAL if error.fatal() else logging.WARNING
        self._log_once(name, "kafka client error: %s", error.str(), level=level)

    def _fatal(self, exc: KafkaException) -> None:
        # produce() refuses everything once the idempotent producer hit a fatal error
        # (e.g. the broker fenced it); the publisher spools from then on, and only a
        # restart of the feed (a new producer) sends again.
        self.fatal_error = str(exc)
        self._log_once("fatal", "producer unusable: %s", exc, level=logging.CRITICAL)

    def _log_once(
        self, key: str, msg: str, *args: object, level: int = logging.ERROR, **kw: Any
    ) -> None:
        allowed, suppressed = self._throttle.allow(key, self._monotonic())
        if allowed:
            more = f" (and {suppressed} more like it)" if suppressed else ""
            log.log(level, msg + "%s", *args, more, **kw)

    # -- driving librdkafka -------------------------------------------------------------

    def poll(self) -> int:
        """Serve ready delivery reports now; returns how many events were served."""
        return self._poll()

    async def run(self) -> None:
        """Serve delivery reports until ``stop()``; one supervised task."""
        while not self._stopping.is_set():
            self._poll()
            if (
                self._in_transaction
                and self._uncommitted
                and self._monotonic() - self._last_commit >= self.commit_interval
            ):
                await self.commit()
            await asyncio.sleep(POLL_INTERVAL_BUSY if self.pending else POLL_INTERVAL_IDLE)
        self._poll()
        if self._in_transaction:
            await self.commit()

    # -- transactions (hot standby) -----------------------------------------------------

    async def start_transactions(self, wait_seconds: float) -> None:
        """Take ownership of the transactional id and open the first transaction.

        ``init_transactions`` bumps the id's epoch at the transaction coordinator: a
        previous owner (a deposed active, even one that is merely paused) is fenced —
        its open transaction is aborted and every later write or commit of it fails.
        """
        if not self.transactional:
            raise RuntimeError("not a transactional producer")
        await asyncio.to_thread(self._producer.init_transactions, wait_seconds)
        self._producer.begin_transaction()
        self._in_transaction = True
        self._last_commit = self._monotonic()

    @property
    def committing(self) -> bool:
        """True while a transaction commit pauses producing."""
        return self._committing

    async def commit(self) -> bool:
        """Commit the open transaction and open the next; ``False`` once transactions
        failed (fenced by a newer owner of the id, or the broker did not ack in time).

        The event loop never blocks on it: producing pauses (the publisher sees a full
        queue and waits; ticks wait in the TickBuffer), every delivery report is served
        here, and only then the commit itself (one round trip to the transaction
        coordinator, nothing left to flush) runs in a worker thread.
        """
        if not self._in_transaction:
            return self.transaction_error is None
        self._committing = True
        started = self._monotonic()
        try:
            deadline = self._monotonic() + self._commit_timeout
            while self.pending:
                if self._monotonic() > deadline:
                    raise KafkaException(
                        KafkaError(KafkaError._TIMED_OUT, "acks not received in time")
                    )
                self._poll()
                await asyncio.sleep(POLL_INTERVAL_BUSY)
            await asyncio.to_thread(self._producer.commit_transaction, self._commit_timeout)
            self._producer.begin_transaction()
        except KafkaException as exc:
            self._in_transaction = False
            error = exc.args[0] if exc.args else None
            self.transaction_error = error.str() if isinstance(error, KafkaError) else str(exc)
            self.fatal_error = self.fatal_error or self.transaction_error
            log.critical("transaction commit failed: %s", self.transaction_error)
            return False
        finally:
            self._committing = False
        self.commit_latency.add(int((self._monotonic() - started) * 1e9))
        self.commits += 1
        self._uncommitted = 0
        self._last_commit = self._monotonic()
        return True

    def stop(self) -> None:
        self._stopping.set()

    async def flush(self, wait_seconds: float) -> int:
        """Wait up to ``wait_seconds`` for every pending report; return how many are still pending."""
        deadline = self._monotonic() + wait_seconds
        self._poll()
        while self.pending and self._monotonic() < deadline:
            await asyncio.sleep(POLL_INTERVAL_BUSY)
            self._poll()
        if self._in_transaction and self._uncommitted and not self.pending:
            await self.commit()
        return self.pending

    def purge_queued(self) -> None:
        """Withdraw messages librdkafka has not sent yet; their reports (``_PURGE_QUEUE``)
        arrive at the next poll. Messages already on the wire are left alone: purging them
        would make their fate unknowable (possible duplicates on replay)."""
        try:
            self._producer.purge(in_queue=True, in_flight=False, blocking=False)
        except KafkaException:
            log.exception("producer purge failed")
        self._poll()

    def queue_length(self) -> int:
        """librdkafka's own count (queued + in flight + reports not served)."""
        return len(self._producer)

    # -- metrics ------------------------------------------------------------------------

    def samples(self) -> Iterator[Sample]:
        yield catalog.KAFKA_SENT.sample(self.sent)
        yield catalog.SENDS_OK.sample(self.delivered)
        for name, count in sorted(self.failed.items()):
            yield catalog.SENDS_FAILED.sample(count, (("error", name),))
        for name, count in sorted(self.client_errors.items()):
            yield catalog.KAFKA_CLIENT_ERRORS.sample(count, (("error", name),))
        yield catalog.KAFKA_PENDING.sample(self.pending)
        yield catalog.KAFKA_QUEUE_FULL_WAITS.sample(self.buffer_full_waits)
        quantiles = ("0.5", "0.9", "0.99", "1")
        values = self.latency.percentiles(*(float(q) for q in quantiles))
        for quantile, value in zip(quantiles, values, strict=True):
            yield catalog.SEND_LATENCY_SECONDS.sample(value, (("quantile", quantile),))
