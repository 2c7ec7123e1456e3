"""What to publish again after a crash: the WAL's ticks that the topic does not hold.

Pure: frames and the topic's newest position per instrument in, ticks out. Frames keep
the receive time they got when first read, and decoding is deterministic, so decoding
a frame again gives every tick the position it had the first time: ``(received_at_ns,
packet index)``, where the index is the tick's rank among its instrument's packets in
that frame (the same rule as the ``pkt`` header the publisher writes). A tick is
published again exactly when its position is later than the newest position of its
instrument in the topic. No time window is involved.
"""

from __future__ import annotations

from collections.abc import Callable, Iterable, Iterator
from dataclasses import dataclass, field
from datetime import datetime
from typing import Final

from alphapanda.kite.protocol import DecodedMessage, decode_message
from alphapanda.kite.protocol.ticks import Tick
from alphapanda.streams.records import CRASH_RECOVERY, FeedEvent, ns_to_datetime
from alphapanda.wal.segments import WalFrame
from alphapanda.wal.tails import Position

_BEFORE_ANY: Position = (-1, -1)
_AFTER_ANY: Position = (1 << 63, 1 << 31)

#: ``reason`` of the ``crash_recovery`` feed event.
RECOVERY_COMPLETED: Final = "completed"
RECOVERY_ABANDONED: Final = "abandoned"


@dataclass(slots=True)
class RecoveryCounts:
    """``wal_recovered``: ticks published again; ``wal_already_published``: ticks of the
    WAL the topic already held; ``wal_corrupt``: WAL records lost to corruption.
    ``first_recovered_ns``/``last_recovered_ns``: receive times of the first and last
    frame with a tick published again (0: none)."""

    frames: int = 0
    wal_recovered: int = 0
    wal_already_published: int = 0
    wal_corrupt: int = 0
    wal_torn: int = 0
    skipped_packets: int = 0
    per_instrument: dict[int, int] = field(default_factory=dict)
    first_recovered_ns: int = 0
    last_recovered_ns: int = 0

    @property
    def found_anything(self) -> bool:
        """The log held something past the watermark: frames, or corrupt records (which
        may have been such frames). An empty log, or one whose frames were all resolved
        before the previous run ended, has nothing to report."""
        return self.frames > 0 or self.wal_corrupt > 0


def crash_recovery_event(counts: RecoveryCounts, at: datetime) -> FeedEvent:
    """The ``crash_recovery`` feed event of a recovery that ran to its end."""
    recovered = counts.wal_recovered > 0
    return FeedEvent(
        CRASH_RECOVERY,
        at,
        reason=RECOVERY_COMPLETED,
        start=ns_to_datetime(counts.first_recovered_ns) if recovered else None,
        end=ns_to_datetime(counts.last_recovered_ns) if recovered else None,
        recovery={
            "frames": counts.frames,
            "wal_recovered": counts.wal_recovered,
            "wal_already_published": counts.wal_already_published,
            "wal_corrupt": counts.wal_corrupt,
            "wal_torn": counts.wal_torn,
        },
    )


def abandoned_recovery_event(at: datetime) -> FeedEvent:
    """The ``crash_recovery`` feed event of a recovery given up before it read the log
    (the feed stopped before the broker answered): nothing was published again; the
    log is kept whole and the next start recovers it."""
    return FeedEvent(CRASH_RECOVERY, at, reason=RECOVERY_ABANDONED)


class RecoveryFilter:
    """Keeps the ticks of each frame that come after their instrument's newest position."""

    def __init__(
        self,
        newest: dict[int, Position],
        counts: RecoveryCounts | None = None,
        *,
        spooled: set[tuple[int, int, int]] | None = None,
        spool_first: dict[int, Position] | None = None,
        on_first_index: Callable[[int, int, int], None] | None = None,
        decode: Callable[[bytes, int], DecodedMessage] = decode_message,
    ) -> None:
        self._newest = newest
        # (token, receive time, index) of every message in the spool: its own replay
        # publishes them, so they are "already published" whatever their position.
        self._spooled = spooled or set()
        # The oldest position per instrument in the spool: ticks after it are newer than
        # what the spool holds of their instrument (they were in the buffer at the
        # crash) and must be published after the spool's replay: ``deferred``.
        self._spool_first = spool_first or {}
        self.deferred: list[Tick] = []
        self._on_first_index = on_first_index
        self._decode = decode
        self.counts = counts or RecoveryCounts()

    def select(self, received_at_ns: int, frame: bytes) -> list[Tick]:
        """The ticks of one WAL frame to publish again now, in frame order (those to
        publish after the spool's replay are added to ``deferred``)."""
        decoded = self._decode(frame, received_at_ns)
        counts = self.counts
        counts.frames += 1
        counts.skipped_packets += len(decoded.skipped)
        seen: dict[int, int] = {}
        newest = self._newest
        keep: list[Tick] = []
        kept: set[int] = set()
        spooled = self._spooled
        spool_first = self._spool_first
        for tick in decoded.ticks:
            token = tick.instrument_token
            index = seen.get(token, -1) + 1
            seen[token] = index
            if (received_at_ns, index) > newest.get(token, _BEFORE_ANY) and (
                not spooled or (token, received_at_ns, index) not in spooled
            ):
                if token not in kept:
                    kept.add(token)
                    if index and self._on_first_index is not None:
                        # The encoder must number it as the packet it was, not as 0.
                        self._on_first_index(token, received_at_ns, index)
                if spool_first and (received_at_ns, index) > spool_first.get(token, _AFTER_ANY):
                    self.deferred.append(tick)
                else:
                    keep.append(tick)
                counts.per_instrument[token] = counts.per_instrument.get(token, 0) + 1
                counts.wal_recovered += 1
                if not counts.first_recovered_ns:
                    counts.first_recovered_ns = received_at_ns
                counts.last_recovered_ns = received_at_ns
            else:
                counts.wal_already_published += 1
        return keep


def recover(
    frames: Iterable[WalFrame], newest: dict[int, Position], counts: RecoveryCounts | None = None
) -> Iterator[tuple[int, list[Tick]]]:
    """``(received_at_ns, ticks to publish)`` per WAL frame, oldest first."""
    selector = RecoveryFilter(newest, counts)
    for frame in frames:
        yield frame.received_at_ns, selector.select(frame.received_at_ns, frame.frame)
