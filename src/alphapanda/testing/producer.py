"""A fake of confluent-kafka's ``Producer`` for pure unit tests of code that drives one.

It keeps librdkafka's contract where code depends on it: ``produce()`` only queues
(raising ``BufferError`` when the queue is full, ``KafkaException`` once fatal);
delivery reports are served only inside ``poll()``/``flush()``, on the caller's
thread, one callback per message; ``len()`` counts messages not yet reported. What
happens to queued messages is the test's decision: ``ack()`` or ``fail()`` the oldest
ones, or ``auto_ack=True`` to ack everything at the next ``poll()``.
"""

from __future__ import annotations

from collections import deque
from collections.abc import Callable

from confluent_kafka import KafkaError, KafkaException

Headers = list[tuple[str, bytes]]
DeliveryCallback = Callable[[KafkaError | None, "FakeMessage"], None]


class FakeMessage:
    """The parts of ``confluent_kafka.Message`` a delivery callback reads."""

    def __init__(
        self, topic: str, key: bytes | None, value: bytes | None, headers: Headers | None
    ) -> None:
        self._topic = topic
        self._key = key
        self._value = value
        self._headers = headers
        self._offset = -1
        self._error: KafkaError | None = None

    def topic(self) -> str:
        return self._topic

    def key(self) -> bytes | None:
        return self._key

    def value(self) -> bytes | None:
        return self._value

    def headers(self) -> Headers | None:
        return self._headers

    def partition(self) -> int:
        return 0

    def offset(self) -> int:
        return self._offset

    def error(self) -> KafkaError | None:
        return self._error

    def __repr__(self) -> str:
        return f"FakeMessage({self._topic!r}, key={self._key!r}, offset={self._offset})"


class FakeProducer:
    """``produce`` / ``poll`` / ``flush`` / ``purge`` / ``len`` of a Kafka producer, in memory."""

    def __init__(self, *, capacity: int = 100_000, auto_ack: bool = False) -> None:
        self.capacity = capacity
        self.auto_ack = auto_ack
        self.fatal: KafkaError | None = None
        # Produced, not yet settled (in librdkafka's queue or in flight).
        self._queued: deque[tuple[FakeMessage, DeliveryCallback | None]] = deque()
        # Settled, report not yet served by poll().
        self._reports: deque[tuple[FakeMessage, DeliveryCallback | None]] = deque()
        self.acked: list[FakeMessage] = []
        self.failed: list[FakeMessage] = []
        self._next_offset = 0

    # -- the Producer surface -----------------------------------------------------

    def produce(
        self,
        topic: str,
        value: bytes | None = None,
        key: bytes | None = None,
        *,
        headers: Headers | None = None,
        on_delivery: DeliveryCallback | None = None,
        partition: int = -1,
    ) -> None:
        if self.fatal is not None:
            raise KafkaException(self.fatal)
        if len(self._queued) >= self.capacity:
            raise BufferError("Local: Queue full")
        self._queued.append((FakeMessage(topic, key, value, headers), on_delivery))

    def poll(self, timeout: float = 0) -> int:
        """Serve the delivery reports of settled messages; return how many were served."""
        if self.auto_ack:
            self.ack()
        served = 0
        while self._reports:
            message, callback = self._reports.popleft()
            served += 1
            if callback is not None:
                callback(message.error(), message)
        return served

    def flush(self, timeout: float | None = None) -> int:
        """Serve every report; return how many messages are still unsettled."""
        self.poll()
        return len(self._queued)

    def purge(self, in_queue: bool = True, in_flight: bool = True, blocking: bool = True) -> None:
        """Fail every unsettled message with ``_PURGE_QUEUE``, reported at the next poll."""
        if in_queue or in_flight:
            self.fail(KafkaError(KafkaError._PURGE_QUEUE))

    def __len__(self) -> int:
        return len(self._queued) + len(self._reports)

    # -- the test's controls ------------------------------------------------------

    @property
    def queued(self) -> list[FakeMessage]:
        """Messages produced and not yet acked or failed, oldest first."""
        return [message for message, _ in self._queued]

    def ack(self, count: int | None = None) -> int:
        """Ack the ``count`` oldest unsettled messages (all by default); reported at the
        next ``poll()``. Returns how many were acked."""
        settled = 0
        while self._queued and (count is None or settled < count):
            message, callback = self._queued.popleft()
            message._offset = self._next_offset
            self._next_offset += 1
            self.acked.append(message)
            self._reports.append((message, callback))
            settled += 1
        return settled

    def fail(self, error: KafkaError, count: int | None = None) -> int:
        """Fail the ``count`` oldest unsettled messages (all by default) with ``error``."""
        settled = 0
        while self._queued and (count is None or settled < count):
            message, callback = self._queued.popleft()
            message._error = error
            self.failed.append(message)
            self._reports.append((message, callback))
            settled += 1
        return settled

    def make_fatal(self, code: int = KafkaError._FENCED) -> None:
        """From now on ``produce()`` raises, as after an idempotence fatal error."""
        self.fatal = KafkaError(code, fatal=True)
