"""Where every tick is, at every moment: the zero-silent-loss ledger of the tick path.

A tick is in exactly one *stage* at any time, and every component that moves ticks
moves them here too, in the same synchronous step (the tick path runs on one event
loop, so no other code runs between the two). Definitions:

``received``
    Ticks that entered the pipeline: accepted by ``TickBuffer.put_many`` (source
    ``socket``) plus spool records found at start-up from a previous run (source
    ``spool_recovery``). Cumulative.
``published``
    Ticks whose Kafka delivery report said success (acked by the broker with
    ``acks=all``), whether sent directly or replayed from the spool. Cumulative.
``dropped[reason]``
    Ticks deliberately thrown away, by reason (``drop_oldest``, ``conflated``,
    ``malformed``, ``delivery_failed``, ``shutdown``, ...). Cumulative.
``spooled``
    Ticks currently waiting in the disk spool for replay (a gauge: written minus
    taken out for replay, plus replays that failed and went back). A replayed record
    stays in the file until its whole replay window is acked, but it is counted in
    ``in_flight`` (awaiting ack) meanwhile, never twice.
``in_flight``
    ``buffered`` (in the TickBuffer) + ``encoding`` (taken by the publisher, not yet
    handed to the producer or the spool) + ``awaiting_ack`` (handed to librdkafka,
    delivery report not yet seen). Gauges.

Identity, exact at every await point::

    received == published + sum(dropped.values()) + spooled + in_flight

Moving more ticks out of a stage than it holds is a bug in the caller and raises
``AccountingError`` rather than letting the books drift.
"""

from __future__ import annotations

from collections.abc import Iterator
from typing import Final

from alphapanda.metrics.samples import Sample

SOURCE_SOCKET: Final = "socket"
SOURCE_SPOOL_RECOVERY: Final = "spool_recovery"
SOURCE_WAL: Final = "wal"

DROP_OLDEST: Final = "drop_oldest"
DROP_CONFLATED: Final = "conflated"
DROP_CONFLATE_OVERFLOW: Final = "conflate_overflow"
DROP_MALFORMED: Final = "malformed"
DROP_ENCODE_ERROR: Final = "encode_error"
DROP_DELIVERY_FAILED: Final = "delivery_failed"
DROP_SHUTDOWN: Final = "shutdown"
DROP_SPOOL_CORRUPT: Final = "spool_corrupt"

STAGES: Final = ("buffered", "encoding", "awaiting_ack", "spooled")


class AccountingError(RuntimeError):
    """A component tried to move ticks that the ledger says are not there."""


class Accounting:
    """The ledger. Plain ints; every method is O(1) and does no I/O."""

    __slots__ = (
        "awaiting_ack",
        "buffered",
        "dropped",
        "encoding",
        "published",
        "received_socket",
        "received_wal",
        "recovered",
        "replayed",
        "spool_written",
        "spooled",
    )

    def __init__(self) -> None:
        self.received_socket = 0
        # Ticks decoded again from the write-ahead log after a crash (source ``wal``).
        self.received_wal = 0
        self.recovered = 0
        self.published = 0
        self.dropped: dict[str, int] = {}
        self.buffered = 0
        self.encoding = 0
        self.awaiting_ack = 0
        self.spooled = 0
        # Cumulative traffic through the spool, for operators; not part of the identity.
        self.spool_written = 0
        self.replayed = 0

    # -- derived figures --------------------------------------------------------------

    @property
    def received(self) -> int:
        return self.received_socket + self.recovered + self.received_wal

    @property
    def in_flight(self) -> int:
        return self.buffered + self.encoding + self.awaiting_ack

    @property
    def dropped_total(self) -> int:
        return sum(self.dropped.values())

    def imbalance(self) -> int:
        """``received - (published + dropped + spooled + in_flight)``; always 0 unless a bug."""
        return self.received - (self.published + self.dropped_total + self.spooled + self.in_flight)

    def snapshot(self) -> dict[str, int]:
        """All figures as a plain dict (for the status API, logs and tests)."""
        figures = {
            "received": self.received,
            "received_socket": self.received_socket,
            "received_wal": self.received_wal,
            "recovered": self.recovered,
            "published": self.published,
            "dropped": self.dropped_total,
            "spooled": self.spooled,
            "in_flight": self.in_flight,
            "buffered": self.buffered,
            "encoding": self.encoding,
            "awaiting_ack": self.awaiting_ack,
            "spool_written": self.spool_written,
            "replayed": self.replayed,
        }
        for reason, count in self.dropped.items():
            figures[f"dropped.{reason}"] = count
        return figures

    # -- transitions --------------------------------------------------------------------

    def accept(self, n: int, source: str = SOURCE_SOCKET) -> None:
        """``n`` ticks from the socket (or, after a crash, the WAL) entered the buffer."""
        if source == SOURCE_WAL:
            self.received_wal += n
        else:
            self.received_socket += n
        self.buffered += n

    def recover(self, n: int) -> None:
        """``n`` records of a previous run's spool were found at start-up."""
        self.recovered += n
        self.spooled += n

    def take(self, n: int) -> None:
        """The publisher took ``n`` ticks out of the buffer to encode them."""
        self._check("buffered", self.buffered, n)
        self.buffered -= n
        self.encoding += n

    def produce(self, n: int) -> None:
        """``n`` encoded messages were handed to the producer."""
        self._check("encoding", self.encoding, n)
        self.encoding -= n
        self.awaiting_ack += n

    def ack(self, n: int = 1) -> None:
        """Delivery reports said success for ``n`` messages."""
        self._check("awaiting_ack", self.awaiting_ack, n)
        self.awaiting_ack -= n
        self.published += n

    def spool_from_encoding(self, n: int) -> None:
        """``n`` encoded messages went to the spool instead of the producer."""
        self._check("encoding", self.encoding, n)
        self.encoding -= n
        self.spooled += n
        self.spool_written += n

    def spool_failed(self, n: int = 1) -> None:
        """``n`` sent messages failed delivery and were written to the spool."""
        self._check("awaiting_ack", self.awaiting_ack, n)
        self.awaiting_ack -= n
        self.spooled += n
        self.spool_written += n

    def replay(self, n: int) -> None:
        """``n`` spooled records were handed to the producer for replay."""
        self._check("spooled", self.spooled, n)
        self.spooled -= n
        self.awaiting_ack += n
        self.replayed += n

    def replay_failed(self, n: int = 1) -> None:
        """A replayed record failed delivery; it is still in the spool, at the head."""
        self._check("awaiting_ack", self.awaiting_ack, n)
        self.awaiting_ack -= n
        self.spooled += n

    def drop(self, stage: str, reason: str, n: int = 1) -> None:
        """``n`` ticks in ``stage`` were thrown away for ``reason`` (counted, never silent)."""
        if n <= 0:
            return
        current = getattr(self, stage) if stage in STAGES else None
        if current is None:
            raise AccountingError(f"unknown stage {stage!r}")
        self._check(stage, current, n)
        setattr(self, stage, current - n)
        self.dropped[reason] = self.dropped.get(reason, 0) + n

    def drop_unreceived(self, reason: str, n: int) -> None:
        """``n`` ticks reached the buffer but were never accepted (e.g. cancelled at
        shutdown while waiting for room): counted as received and dropped at once."""
        if n <= 0:
            return
        self.received_socket += n
        self.dropped[reason] = self.dropped.get(reason, 0) + n

    @staticmethod
    def _check(stage: str, current: int, n: int) -> None:
        if n < 0 or n > current:
            raise AccountingError(f"cannot move {n} ticks out of {stage!r}, which holds {current}")

    # -- metrics --------------------------------------------------------------------------

    def samples(self) -> Iterator[Sample]:
        # The identity's "received" is ticks_received_total + ticks_recovered_total; they are
        # separate names so the tick count (a Redis key summing every
        # ticks_received_total sample) counts only ticks from Kite.
        yield Sample(
            "ticks_received_total",
            "counter",
            self.received_socket,
            (),
            "Ticks from Kite accepted by the TickBuffer.",
        )
        yield Sample(
            "ticks_recovered_total",
            "counter",
            self.recovered,
            (),
            "Spool records of a previous run found at start-up (replayed first).",
        )
        yield Sample(
            "ticks_wal_recovered_total",
            "counter",
            self.received_wal,
            (),
            "Ticks decoded again from the write-ahead log after a crash (published first).",
        )
        yield Sample(
            "ticks_published_total", "counter", self.published, (), "Ticks acked by the broker."
        )
        for reason, count in sorted(self.dropped.items()):
            yield Sample(
                "ticks_dropped_total",
                "counter",
                count,
                (("reason", reason),),
                "Ticks deliberately dropped, by reason.",
            )
        yield Sample("ticks_spooled", "gauge", self.spooled, (), "Ticks waiting in the disk spool.")
        for stage in ("buffered", "encoding", "awaiting_ack"):
            yield Sample(
                "ticks_in_flight",
                "gauge",
                getattr(self, stage),
                (("stage", stage),),
                "Ticks between the buffer and the broker's ack.",
            )
        yield Sample(
            "spool_written_total", "counter", self.spool_written, (), "Records written to spool."
        )
        yield Sample(
            "spool_replayed_total", "counter", self.replayed, (), "Spool records sent for replay."
        )
        yield Sample(
            "ticks_unaccounted",
            "gauge",
            self.imbalance(),
            (),
            "received - (published + dropped + spooled + in_flight); nonzero means a bug.",
        )
