"""``WalIngest``: the WAL as the feed uses it — log, recover, retain.

Start-up, before any tick of this run is decoded:

1. ``open()`` takes stock of the segments a previous run left (the crash case);
2. ``run()`` reads the newest position per instrument from the tails of
   ``market.ticks`` (and from the spool, whose records are published by its own
   replay), decodes the old segments past the watermark, and hands the buffer only the
   ticks later than those positions (``received`` with source ``wal``);
3. while that runs — which is as long as the broker does not answer — the sockets are
   read and every frame is logged as usual but *held* (bounded) rather than decoded;
   once the recovered ticks are in the buffer the held frames follow, in order, and
   only then are frames decoded as they arrive. So per instrument the recovered ticks
   always go out before any tick of this run.

When recovery read anything past the watermark, or when it is abandoned because the
feed stops before the broker answered, a ``crash_recovery`` feed event says so through
``emit`` (the derived streams' ``emit``; none when they are off). A log left by an
earlier run (a clean stop leaves it empty) also dates that run's last frame, so once this
run's first frame is logged a ``gap`` event names the interval in between, in which no
subscribed instrument could have been received.

Then, until the feed stops: retention. Acks reach ``resolved()`` through the
producer's ack listener; a moment when the tick path holds nothing (``in_flight == 0``)
resolves everything decoded so far (ticks that left by a drop or into the spool); every
``RETENTION_INTERVAL`` the oldest fully resolved segments are deleted.
"""

from __future__ import annotations

import asyncio
import logging
from collections import deque
from collections.abc import Awaitable, Callable, Iterable, Iterator
from datetime import datetime
from pathlib import Path
from types import ModuleType
from typing import Final

from alphapanda.clock import SYSTEM_CLOCK, Clock
from alphapanda.kite.connection import FrameDecoder
from alphapanda.kite.protocol import Tick, decode_message
from alphapanda.metrics import catalog
from alphapanda.metrics.samples import Sample
from alphapanda.pipeline.accounting import SOURCE_WAL, Accounting
from alphapanda.pipeline.buffer import TickBuffer
from alphapanda.pipeline.wire import WireEncoder
from alphapanda.settings import Settings
from alphapanda.streams.records import GAP, FeedEvent, ns_to_datetime
from alphapanda.wal.log import WriteAheadLog
from alphapanda.wal.recovery import (
    RecoveryCounts,
    RecoveryFilter,
    abandoned_recovery_event,
    crash_recovery_event,
)
from alphapanda.wal.segments import ReadReport, parse_segment
from alphapanda.wal.spooled import spooled_positions
from alphapanda.wal.tails import (
    Position,
    TailReport,
    consumer_config,
    read_tail_positions,
)

log = logging.getLogger(__name__)

RETENTION_INTERVAL: Final = 0.2
# Deferred recovered ticks are put into the buffer in chunks of this many.
DEFERRED_CHUNK: Final = 1000
# Between attempts to read the topic's tails while the broker does not answer.
TAILS_RETRY_DELAY: Final = 2.0
TAILS_TIMEOUT: Final = 5.0
# Frames held in memory while recovery waits for the broker; beyond this the socket
# readers wait (the frames are safe in the WAL, but memory must stay bounded).
HOLD_MAX_BYTES: Final = 256 << 20

TailReader = Callable[..., TailReport]


class WalIngest:
    """The ``FrameLog`` of the socket readers, and the WAL's recovery and retention."""

    def __init__(
        self,
        settings: Settings,
        topic: str,
        buffer: TickBuffer,
        accounting: Accounting,
        wire: WireEncoder,
        *,
        spool_dir: Path | None = None,
        tail_reader: TailReader = read_tail_positions,
        decode: FrameDecoder = decode_message,
        emit: Callable[[FeedEvent], None] | None = None,
        clock: Clock = SYSTEM_CLOCK,
        native: ModuleType | None = None,
    ) -> None:
        feed = settings.feed
        self.wal = WriteAheadLog(
            feed.wal_dir,
            fsync_ms=feed.wal_fsync_ms,
            max_bytes=feed.wal_max_bytes,
            clock=clock,
            native=native,
        )
        self._monotonic = clock.monotonic
        self._wall_ns = clock.wall_ns
        # Publishes a feed event (the ``crash_recovery`` one); None: not published.
        self._emit = emit
        self._kafka_config = consumer_config(settings.kafka)
        self._topic = topic
        self._buffer = buffer
        self._accounting = accounting
        self._wire = wire
        self._spool_dir = spool_dir
        # The feed's own decoder (native or Python), so recovered and held frames become
        # the same kind of ticks as live ones.
        self._decode = decode
        self._tail_reader = tail_reader
        self._old_segments: list[tuple[int, Path]] = []
        self._in_spool: set[tuple[int, int, int]] = set()
        self._held: deque[tuple[int, bytes]] = deque()
        self._held_bytes = 0
        self._room = asyncio.Event()
        self._room.set()
        self._holding = True
        self.recovered = asyncio.Event()
        self.counts = RecoveryCounts()
        self.read_report = ReadReport()
        self.recovery_state = "pending"
        self.held_frames_total = 0
        # Awaited once the recovered ticks are in the buffer, before held frames go in
        # (the publisher replays an earlier run's spool only after those ticks).
        self.on_recovered: Callable[[], Awaitable[None]] | None = None
        self._deferred: list[Tick] = []
        # The instruments this run streams (set by ``build``): the restart gap's.
        self.instruments: Callable[[], Iterable[int]] = tuple
        # Receive times of the earlier run's last frame (set by recovery) and of this
        # run's first frame: the restart gap, announced once both are known.
        self._restart_gap_start_ns = 0
        self._first_frame_ns = 0

    # -- FrameLog (the socket readers' side) ----------------------------------------------

    @property
    def holding(self) -> bool:
        return self._holding

    def append(self, shard: int, frame: bytes) -> int:
        received_at_ns = self.wal.append(shard, frame)
        if not self._first_frame_ns:
            self._first_frame_ns = received_at_ns
            self._announce_restart_gap()
        return received_at_ns

    async def hold(self, received_at_ns: int, frame: bytes) -> None:
        self._held.append((received_at_ns, frame))
        self._held_bytes += len(frame)
        self.held_frames_total += 1
        if self._held_bytes > HOLD_MAX_BYTES:
            self._room.clear()
            await self._room.wait()

    def decoded(self, received_at_ns: int, ticks: int) -> None:
        self.wal.decoded(received_at_ns, ticks)

    def resolved(self, received_at_ns: list[int]) -> None:
        """The producer's ack listener."""
        self.wal.resolved(received_at_ns)

    # -- life cycle -------------------------------------------------------------------------

    def open(self) -> None:
        self.wal.open()
        self._old_segments = self.wal.segment_starts()

    @property
    def has_backlog(self) -> bool:
        """The WAL holds frames of an earlier run: recovery will look at them."""
        return bool(self._old_segments)

    async def prepare(self) -> None:
        """Before the spool starts replaying: note which messages it holds (only needed
        when there is something to recover)."""
        if self._old_segments and self._spool_dir is not None:
            self._in_spool = await asyncio.to_thread(spooled_positions, self._spool_dir)

    def close(self) -> None:
        """At shutdown, after the publisher drained: free what is resolved, then flush."""
        if self.recovered.is_set():
            if self._accounting.in_flight == 0:
                self.wal.resolve_all()
            # A clean stop with everything resolved leaves an empty WAL.
            self.wal.collect(final=True)
        self.wal.close()

    async def run(self, stopping: asyncio.Event) -> None:
        """Recover, release the held frames, then keep the WAL's retention going."""
        if not await self._recover(stopping):
            return
        if self.on_recovered is not None:
            await self.on_recovered()
        # Recovered ticks newer than what the spool holds of their instrument: behind it.
        deferred, self._deferred = self._deferred, []
        for start in range(0, len(deferred), DEFERRED_CHUNK):
            await self._buffer.put_many(deferred[start : start + DEFERRED_CHUNK], SOURCE_WAL)
        await self._release_held()
        self.recovered.set()
        while True:
            await asyncio.sleep(RETENTION_INTERVAL)
            if self._accounting.in_flight == 0:
                self.wal.resolve_all()
            deleted = self.wal.collect()
            if deleted:
                log.debug("WAL: deleted %d resolved segments", deleted)

    # -- recovery ---------------------------------------------------------------------------

    async def _recover(self, stopping: asyncio.Event) -> bool:
        if not self._old_segments:
            self.recovery_state = "nothing to recover"
            return True
        watermark = self.wal.watermark_ns
        oldest_ns = max(watermark + 1, self._old_segments[0][0])
        self.recovery_state = "reading the topic's tails"
        started = self._monotonic()
        while True:
            try:
                tails = await asyncio.to_thread(
                    self._tail_reader,
                    self._kafka_config,
                    self._topic,
                    oldest_ns=oldest_ns,
                    timeout=TAILS_TIMEOUT,
                    # The spool's replay may already be publishing: its messages are
                    # judged by the spool set, not by the topic's newest position.
                    exclude=self._in_spool,
                )
                break
            except Exception as exc:  # broker unreachable, topic missing, timeout
                self.recovery_state = "waiting for the broker"
                log.warning(
                    "WAL recovery: cannot read the tails of %s yet (%s); frames from Kite "
                    "are logged and held until it answers (%.0f s so far)",
                    self._topic,
                    exc,
                    self._monotonic() - started,
                )
            try:
                async with asyncio.timeout(TAILS_RETRY_DELAY):
                    await stopping.wait()
            except TimeoutError:
                continue
            # Stopping before the broker ever answered: the WAL keeps everything (the
            # old segments and this run's frames); the next start recovers it all.
            self.recovery_state = "abandoned (stopped before the broker answered)"
            self._announce(abandoned_recovery_event(self._now()))
            return False
        newest = dict(tails.positions)
        # Spooled messages are published by the spool's own replay, before the buffer:
        # the WAL must not publish them a second time.
        in_spool = self._in_spool
        spooled = len(in_spool)
        self.recovery_state = "publishing recovered ticks"
        spool_first: dict[int, Position] = {}
        if self.on_recovered is not None:
            for token, received_at_ns, index in in_spool:
                first = spool_first.get(token)
                if first is None or (received_at_ns, index) < first:
                    spool_first[token] = (received_at_ns, index)
        selector = RecoveryFilter(
            newest,
            self.counts,
            spooled=in_spool,
            spool_first=spool_first,
            on_first_index=self._wire.seed_position,
            decode=self._decode,
        )
        report = self.read_report
        last_frame_ns = 0
        for first_ns, path in self._old_segments:
            try:
                data = await asyncio.to_thread(path.read_bytes)
            except OSError as exc:
                log.error("WAL recovery: cannot read segment %s (%s)", path.name, exc)
                continue
            corrupt_before = len(report.corrupt)
            for frame in parse_segment(data, path.name, report, watermark):
                last_frame_ns = frame.received_at_ns
                deferred_before = len(selector.deferred)
                ticks = selector.select(frame.received_at_ns, frame.frame)
                kept = len(ticks) + len(selector.deferred) - deferred_before
                if kept:
                    self.wal.decoded(frame.received_at_ns, kept)
                if ticks:
                    await self._buffer.put_many(ticks, SOURCE_WAL)
            for damage in report.corrupt[corrupt_before:]:
                log.error(
                    "WAL recovery: corrupt data in segment %s at offset %d (%d bytes, "
                    "~%d frames) skipped",
                    damage.segment,
                    damage.offset,
                    damage.length,
                    damage.records,
                )
            del data, first_ns
        self._deferred = selector.deferred
        self.counts.wal_corrupt = report.corrupt_records
        self.counts.wal_torn = report.torn
        self.recovery_state = "done"
        log.warning(
            "WAL recovery: %d frames read, wal_recovered=%d wal_already_published=%d "
            "wal_corrupt=%d (torn tails %d; %d topic records and %d spooled messages "
            "compared, %d instruments)",
            self.counts.frames,
            self.counts.wal_recovered,
            self.counts.wal_already_published,
            self.counts.wal_corrupt,
            self.counts.wal_torn,
            tails.records,
            spooled,
            len(newest),
        )
        if self.counts.found_anything:
            self._announce(crash_recovery_event(self.counts, self._now()))
        # Frames are logged in receive order: the last one read, or (all resolved) the
        # watermark, is when the earlier run last received anything.
        self._restart_gap_start_ns = max(last_frame_ns, watermark)
        self._announce_restart_gap()
        return True

    def _announce_restart_gap(self) -> None:
        start, end = self._restart_gap_start_ns, self._first_frame_ns
        if not (start and end):
            return
        self._restart_gap_start_ns = 0
        self._announce(
            FeedEvent(
                GAP,
                ns_to_datetime(end),
                reason="feed restarted after a crash",
                instruments=sorted(self.instruments()),
                start=ns_to_datetime(start),
                end=ns_to_datetime(max(start, end)),
            )
        )

    def _now(self) -> datetime:
        return ns_to_datetime(self._wall_ns())

    def _announce(self, event: FeedEvent) -> None:
        if self._emit is not None:
            self._emit(event)

    async def _release_held(self) -> None:
        # Frames read while recovery ran, in order; new ones keep arriving meanwhile and
        # are held too until the queue is empty, so decoding order is arrival order.
        while self._held:
            received_at_ns, frame = self._held.popleft()
            self._held_bytes -= len(frame)
            if self._held_bytes <= HOLD_MAX_BYTES:
                self._room.set()
            ticks = self._decode(frame, received_at_ns).ticks
            if ticks:
                self.wal.decoded(received_at_ns, len(ticks))
                await self._buffer.put_many(ticks)
        self._holding = False
        self._room.set()

    # -- reporting ----------------------------------------------------------------------------

    def status(self) -> dict[str, object]:
        return {
            **self.wal.status(),
            "recovery": self.recovery_state,
            "held_frames": len(self._held),
            "wal_recovered": self.counts.wal_recovered,
            "wal_already_published": self.counts.wal_already_published,
            "wal_corrupt": self.counts.wal_corrupt,
        }

    def samples(self) -> Iterator[Sample]:
        yield from self.wal.samples()
        yield catalog.WAL_RECOVERY_DONE.sample(int(self.recovered.is_set()))
        yield catalog.WAL_RECOVERED.sample(self.counts.wal_recovered)
        yield catalog.WAL_ALREADY_PUBLISHED.sample(self.counts.wal_already_published)
        yield catalog.WAL_CORRUPT.sample(self.counts.wal_corrupt)
        yield catalog.WAL_HELD_FRAMES.sample(len(self._held))
