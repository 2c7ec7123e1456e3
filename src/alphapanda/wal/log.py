"""``WriteAheadLog``: the event loop's side of the WAL.

The socket readers call ``append()`` for every binary frame, before decoding it. It
gives the frame its receive time (strictly increasing across every socket of the
process, so a receive time names one frame) and queues it for the writer thread; it
never touches the disk and never waits.

It also keeps the retention books: per segment, how many ticks decoded from its frames
are still unresolved (``decoded()`` adds, ``resolved()`` subtracts as acks arrive, and
a moment when the whole tick path is empty resolves everything decoded so far, which
covers ticks that left by a drop or into the spool). ``collect()`` deletes the oldest
segments once nothing of theirs is unresolved, persisting the watermark first.

When the WAL cannot write (disk full, an I/O error, ``max_bytes`` reached, or the
writer thread falling too far behind) it pauses: frames are still decoded and
published, only not logged, and ``paused`` says crash protection is off. It resumes by
itself once there is room again, in a fresh segment.
"""

from __future__ import annotations

import bisect
import logging
import shutil
from collections.abc import Callable, Iterator, Sequence
from dataclasses import dataclass
from pathlib import Path
from types import ModuleType
from typing import Final

from alphapanda.clock import SYSTEM_CLOCK, Clock
from alphapanda.metrics import catalog
from alphapanda.metrics.samples import Sample
from alphapanda.wal.segments import RECORD_OVERHEAD, list_segments, read_watermark, segment_name
from alphapanda.wal.writer import Append, Delete, Rotate, make_writer

log = logging.getLogger(__name__)

SEGMENT_BYTES: Final = 16 << 20
# Frames queued for the writer thread beyond this are not logged (the disk is too slow
# for the feed): bounded memory, and the pause says so.
QUEUE_MAX_BYTES: Final = 64 << 20
# While paused, how often to look whether there is room again.
RESUME_CHECK_S: Final = 1.0


@dataclass(slots=True)
class _Segment:
    first_ns: int
    path: Path
    size: int
    unresolved: int = 0


class WriteAheadLog:
    """Frames in, segments on disk; retention by acknowledgement."""

    def __init__(
        self,
        directory: Path,
        *,
        fsync_ms: int = 20,
        max_bytes: int = 4 << 30,
        segment_bytes: int = SEGMENT_BYTES,
        min_free_bytes: int = 64 << 20,
        clock: Clock = SYSTEM_CLOCK,
        disk_free: Callable[[Path], int] | None = None,
        native: ModuleType | None = None,
    ) -> None:
        self.directory = directory
        self.max_bytes = max_bytes
        self.segment_bytes = segment_bytes
        self.min_free_bytes = min_free_bytes
        self._clock_ns = clock.wall_ns
        self._monotonic = clock.monotonic
        self._disk_free = disk_free or (lambda path: shutil.disk_usage(path).free)
        # The extension's writer thread when given (it never takes the interpreter
        # lock), else the Python one.
        self._thread = make_writer(directory, fsync_ms, native=native, monotonic=clock.monotonic)
        self._segments: list[_Segment] = []
        self._starts: list[int] = []  # first_ns of each segment, for bisect
        self._current: _Segment | None = None
        self._last_ns = 0
        self._submitted_bytes = 0  # minus the thread's taken_bytes: the queue's size
        self.watermark_ns = 0
        self.paused_reason: str | None = None
        self._next_resume_check = 0.0
        self.appended_frames = 0
        self.unlogged_frames = 0
        self.pauses = 0

    # -- life cycle ------------------------------------------------------------------------

    def open(self) -> None:
        """Take stock of a previous run's segments and start the writer thread.

        Old segments stay as they are (recovery reads them; retention deletes them once
        their ticks are resolved); this run writes into new segments.
        """
        self.directory.mkdir(parents=True, exist_ok=True)
        self.watermark_ns = read_watermark(self.directory)
        for first_ns, path in list_segments(self.directory):
            self._add_segment(_Segment(first_ns, path, path.stat().st_size))
            self._last_ns = max(self._last_ns, first_ns)
        self._thread.start()

    def close(self) -> None:
        """Write and fsync everything queued; end the writer thread."""
        self._thread.close()

    @property
    def paused(self) -> bool:
        return self.paused_reason is not None

    @property
    def size_bytes(self) -> int:
        return sum(s.size for s in self._segments)

    @property
    def durable_ns(self) -> int:
        """Receive time of the newest frame known to be on disk (fsynced)."""
        return self._thread.durable_ns

    def segments(self) -> list[Path]:
        return [s.path for s in self._segments]

    def segment_starts(self) -> list[tuple[int, Path]]:
        """``(first receive time, path)`` of every segment, oldest first."""
        return [(s.first_ns, s.path) for s in self._segments]

    # -- the hot path ------------------------------------------------------------------------

    def next_receive_time(self) -> int:
        """A receive time for a frame just read: now, strictly after the previous one."""
        now = self._clock_ns()
        if now <= self._last_ns:
            now = self._last_ns + 1
        self._last_ns = now
        return now

    def append(self, shard: int, frame: bytes) -> int:
        """Log ``frame`` (read from ``shard``'s socket); returns its receive time (ns)."""
        received_at_ns = self.next_receive_time()
        if self._thread.error is not None and self.paused_reason is None:
            self._pause(f"the disk failed ({self._thread.error})")
        if self.paused_reason is not None and not self._try_resume(received_at_ns):
            self.unlogged_frames += 1
            return received_at_ns
        size = len(frame) + RECORD_OVERHEAD
        if self.size_bytes_estimate + size > self.max_bytes:
            self._pause(f"the WAL reached its size limit ({self.max_bytes} bytes)")
            self.unlogged_frames += 1
            return received_at_ns
        if self._submitted_bytes - self._thread.taken_bytes + size > QUEUE_MAX_BYTES:
            self._pause("the disk is too slow for the feed (writer queue full)")
            self.unlogged_frames += 1
            return received_at_ns
        current = self._current
        if current is None or (current.size > 0 and current.size + size > self.segment_bytes):
            current = self._rotate(received_at_ns)
        current.size += size
        self._submitted_bytes += size
        self._size_estimate += size
        self.appended_frames += 1
        self._thread.submit(Append(received_at_ns, shard, frame))
        return received_at_ns

    # -- retention ---------------------------------------------------------------------------

    def decoded(self, received_at_ns: int, ticks: int) -> None:
        """``ticks`` were decoded from the frame received at ``received_at_ns``."""
        segment = self._segment_of(received_at_ns)
        if segment is not None:
            segment.unresolved += ticks

    def resolved(self, received_at_ns: Sequence[int]) -> None:
        """Ticks decoded from frames with these receive times were acked."""
        current = self._current
        start = current.first_ns if current is not None else None
        if start is not None and received_at_ns and min(received_at_ns) >= start:
            # The common case: all from frames of the segment being written (one C-level
            # pass instead of a Python step per tick).
            assert current is not None
            current.unresolved = max(0, current.unresolved - len(received_at_ns))
            return
        for ns in received_at_ns:
            if start is not None and ns >= start:
                segment: _Segment | None = current
            else:
                segment = self._segment_of(ns)
            if segment is not None and segment.unresolved > 0:
                segment.unresolved -= 1

    def resolve_all(self) -> None:
        """Nothing decoded so far is unresolved (the tick path was seen empty)."""
        for segment in self._segments:
            segment.unresolved = 0

    def collect(self, *, final: bool = False) -> int:
        """Delete the oldest segments with nothing unresolved (the one being written
        only when ``final``: nothing more will be appended); returns how many were handed
        to the writer thread for deletion."""
        done: list[_Segment] = []
        for segment in self._segments:
            if (segment is self._current and not final) or segment.unresolved > 0:
                break
            done.append(segment)
        if not done:
            return 0
        if self._current in done:
            self._current = None
        del self._segments[: len(done)]
        del self._starts[: len(done)]
        self.watermark_ns = (self._segments[0].first_ns - 1) if self._segments else self._last_ns
        freed = sum(s.size for s in done)
        self._size_estimate -= freed
        self._thread.submit(Delete(tuple(s.path for s in done), self.watermark_ns))
        return len(done)

    # -- internals -----------------------------------------------------------------------------

    _size_estimate = 0

    @property
    def size_bytes_estimate(self) -> int:
        return self._size_estimate

    def _add_segment(self, segment: _Segment) -> None:
        self._segments.append(segment)
        self._starts.append(segment.first_ns)
        self._size_estimate += segment.size

    def _segment_of(self, received_at_ns: int) -> _Segment | None:
        index = bisect.bisect_right(self._starts, received_at_ns) - 1
        return self._segments[index] if index >= 0 else None

    def _rotate(self, first_ns: int) -> _Segment:
        segment = _Segment(first_ns, self.directory / segment_name(first_ns), 0)
        self._add_segment(segment)
        self._current = segment
        self._thread.submit(Rotate(first_ns))
        return segment

    def _pause(self, reason: str) -> None:
        self.paused_reason = reason
        self.pauses += 1
        self._current = None
        self._next_resume_check = self._monotonic() + RESUME_CHECK_S
        log.error(
            "WAL paused: %s. Crash protection is OFF until there is room again "
            "(ticks still flow to Kafka; a crash now would lose what is in flight)",
            reason,
        )

    def _try_resume(self, received_at_ns: int) -> bool:
        now = self._monotonic()
        if now < self._next_resume_check:
            return False
        self._next_resume_check = now + RESUME_CHECK_S
        if self._size_estimate + self.segment_bytes > self.max_bytes:
            return False
        try:
            if self._disk_free(self.directory) < self.min_free_bytes:
                return False
        except OSError:
            return False
        log.warning("WAL resumed: crash protection is back on")
        self.paused_reason = None
        self._rotate(received_at_ns)
        return True

    # -- reporting ------------------------------------------------------------------------------

    def status(self) -> dict[str, object]:
        return {
            "enabled": True,
            "paused": self.paused,
            "paused_reason": self.paused_reason,
            "crash_protection": not self.paused,
            "directory": str(self.directory),
            "segments": len(self._segments),
            "bytes": self._size_estimate,
            "max_bytes": self.max_bytes,
            "unresolved_ticks": sum(s.unresolved for s in self._segments),
            "watermark_ns": self.watermark_ns,
            "durable_ns": self.durable_ns,
        }

    def samples(self) -> Iterator[Sample]:
        yield catalog.WAL_PAUSED.sample(int(self.paused))
        yield catalog.WAL_BYTES.sample(self._size_estimate)
        yield catalog.WAL_SEGMENTS.sample(len(self._segments))
        yield catalog.WAL_FRAMES.sample(self.appended_frames)
        yield catalog.WAL_UNLOGGED_FRAMES.sample(
            self.unlogged_frames + self._thread.discarded_frames
        )
        yield catalog.WAL_FSYNCS.sample(self._thread.fsyncs)
        yield catalog.WAL_PAUSES.sample(self.pauses)
        yield catalog.WAL_SEGMENTS_DELETED.sample(self._thread.deleted_segments)
