"""The WAL's writer thread: every disk write and fsync of the WAL happens here.

The event loop only hands it operations (``Append``, ``Rotate``, ``Delete``) through a
short critical section; the thread encodes the records (the CRC runs here, not on the
loop), writes them, and commits with group commit: one ``fsync`` covers every record
written since the previous one, and fsyncs are at most ``fsync_ms`` apart (0: after
every write). A power cut therefore loses at most the last ``fsync_ms`` of frames; a
process crash (SIGKILL, OOM) loses nothing that reached ``write()``.

Errors never reach the socket readers: the thread records the first one in ``error``
and discards appends until a ``Rotate`` opens a fresh segment (the owner pauses the WAL
meanwhile). The damaged segment keeps whatever it holds; a torn last record is what a
reader expects at a segment's end.

``NativeWalWriter`` is the same thread in the Rust extension (used when the feed runs
the native hot path): same operations, bytes and counters, but it never takes the
interpreter lock. A Python thread needs the lock back after every system call (the
CRC, the write, the fsync, waking up), and each hand-over makes the event loop stop and
wait until the thread is scheduled; on a loaded machine that delayed the loop's
delivery reports by a millisecond or more per large frame. This class stays as the
reference and the fallback.
"""

from __future__ import annotations

import logging
import os
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from types import ModuleType
from typing import Protocol

from alphapanda.wal.segments import (
    RECORD_OVERHEAD,
    WATERMARK,
    frame_buffers,
    fsync_dir,
    segment_name,
    write_watermark,
)

log = logging.getLogger(__name__)

# Buffers per writev() call (Linux's IOV_MAX is 1024).
WRITEV_MAX = 1024


@dataclass(frozen=True, slots=True)
class Append:
    received_at_ns: int
    shard: int
    frame: bytes


@dataclass(frozen=True, slots=True)
class Rotate:
    """Commit and close the current segment; open ``segment_name(first_ns)``."""

    first_ns: int


@dataclass(frozen=True, slots=True)
class Delete:
    """Persist ``watermark_ns`` first, then delete ``paths`` (fully resolved segments)."""

    paths: tuple[Path, ...]
    watermark_ns: int


Op = Append | Rotate | Delete


class WalWriter(Protocol):
    """What ``WriteAheadLog`` needs of its writer thread."""

    @property
    def error(self) -> str | None: ...

    @property
    def written_frames(self) -> int: ...

    @property
    def written_bytes(self) -> int: ...

    @property
    def discarded_frames(self) -> int: ...

    @property
    def fsyncs(self) -> int: ...

    @property
    def durable_ns(self) -> int: ...

    @property
    def deleted_segments(self) -> int: ...

    @property
    def taken_bytes(self) -> int: ...

    def start(self) -> None: ...

    def submit(self, op: Op) -> None: ...

    def close(self) -> None: ...


def make_writer(
    directory: Path,
    fsync_ms: int,
    *,
    native: ModuleType | None = None,
    monotonic: Callable[[], float] = time.monotonic,
) -> WalWriter:
    """The native writer thread when the extension is given, else the Python one."""
    if native is not None:
        return NativeWalWriter(directory, fsync_ms, native)
    return WalWriterThread(directory, fsync_ms, monotonic=monotonic)


class WalWriterThread:
    """Executes WAL operations in order on one daemon-less thread."""

    def __init__(
        self,
        directory: Path,
        fsync_ms: int,
        *,
        monotonic: Callable[[], float] = time.monotonic,
    ) -> None:
        self.directory = directory
        self._fsync_s = fsync_ms / 1000
        self._monotonic = monotonic
        self._ops: list[Op] = []
        self._cond = threading.Condition()
        self._closing = False
        self._thread = threading.Thread(target=self._run, name="wal-writer")
        self._fd: int | None = None
        self._dirty = False
        self._last_sync = 0.0
        # Read by the owner (plain attributes: single writer, GIL-atomic reads).
        self.error: str | None = None
        self.written_frames = 0
        self.written_bytes = 0
        self.discarded_frames = 0
        self.fsyncs = 0
        self.durable_ns = 0  # receive time of the newest frame known to be fsynced
        self.deleted_segments = 0
        self.taken_bytes = 0  # of Append ops taken off the queue (frame + record overhead)

    def start(self) -> None:
        self._thread.start()

    def submit(self, op: Op) -> None:
        with self._cond:
            self._ops.append(op)
            self._cond.notify()

    def close(self) -> None:
        """Write and fsync what is queued, close the segment, end the thread."""
        with self._cond:
            self._closing = True
            self._cond.notify()
        if self._thread.is_alive():
            self._thread.join()

    # -- the thread ---------------------------------------------------------------------

    def _run(self) -> None:
        try:
            while True:
                with self._cond:
                    while not self._ops and not self._closing:
                        timeout = self._sync_due_in()
                        if timeout is not None and timeout <= 0:
                            break
                        self._cond.wait(timeout)
                    ops, self._ops = self._ops, []
                    closing = self._closing
                self.taken_bytes += sum(
                    len(op.frame) + RECORD_OVERHEAD for op in ops if isinstance(op, Append)
                )
                self._execute(ops)
                if self._dirty and (closing or self._sync_due_in() == 0):
                    self._sync()
                if closing and not self._ops:
                    break
        finally:
            self._close_segment()

    def _sync_due_in(self) -> float | None:
        if not self._dirty:
            return None
        return max(0.0, self._last_sync + self._fsync_s - self._monotonic())

    def _execute(self, ops: list[Op]) -> None:
        buffers: list[bytes] = []
        frames = 0
        newest = 0
        for op in ops:
            if isinstance(op, Append):
                if self._fd is None or self.error is not None:
                    self.discarded_frames += 1
                    continue
                buffers.extend(frame_buffers(op.received_at_ns, op.shard, op.frame))
                frames += 1
                newest = op.received_at_ns
                continue
            self._write(buffers, frames, newest)
            buffers, frames, newest = [], 0, 0
            if isinstance(op, Rotate):
                self._rotate(op.first_ns)
            else:
                self._delete(op)
        self._write(buffers, frames, newest)

    def _write(self, buffers: list[bytes], frames: int, newest_ns: int) -> None:
        if not frames or self._fd is None or self.error is not None:
            return
        try:
            size = write_all(self._fd, buffers)
        except OSError as exc:
            self._fail("write", exc)
            self.discarded_frames += frames
            return
        self.written_frames += frames
        self.written_bytes += size
        self._dirty = True
        self._pending_ns = newest_ns

    def _sync(self) -> None:
        self._last_sync = self._monotonic()
        if self._fd is None or self.error is not None:
            self._dirty = False
            return
        try:
            os.fsync(self._fd)
        except OSError as exc:
            self._fail("fsync", exc)
            return
        self._dirty = False
        self.fsyncs += 1
        self.durable_ns = self._pending_ns

    def _rotate(self, first_ns: int) -> None:
        if self._dirty:
            self._sync()
        self._close_segment()
        path = self.directory / segment_name(first_ns)
        try:
            self.directory.mkdir(parents=True, exist_ok=True)
            self._fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_APPEND, 0o644)
            fsync_dir(self.directory)
        except OSError as exc:
            self._fail("open segment", exc)
            return
        self.error = None

    def _delete(self, op: Delete) -> None:
        try:
            write_watermark(self.directory, op.watermark_ns)
            for path in op.paths:
                path.unlink(missing_ok=True)
            fsync_dir(self.directory)
        except OSError as exc:
            # Not fatal: the segments stay and are deleted with the next batch.
            log.warning("WAL: cannot delete resolved segments (%s)", exc)
            return
        self.deleted_segments += len(op.paths)

    def _close_segment(self) -> None:
        if self._fd is None:
            return
        fd, self._fd = self._fd, None
        try:
            if self._dirty and self.error is None:
                os.fsync(fd)
                self.fsyncs += 1
                self.durable_ns = self._pending_ns
            self._dirty = False
        except OSError as exc:
            self._fail("fsync", exc)
        finally:
            os.close(fd)

    def _fail(self, what: str, exc: OSError) -> None:
        self._dirty = False
        if self.error is None:
            self.error = f"{what} failed: {exc.strerror or exc}"

    _pending_ns = 0


def _native_counter(name: str) -> property:
    """A read-only ``int`` property passing the native writer's counter ``name`` on."""
    return property(lambda self: int(getattr(self._writer, name)))


class NativeWalWriter:
    """``WalWriterThread``'s operations on the extension's native thread (module doc)."""

    def __init__(self, directory: Path, fsync_ms: int, native: ModuleType) -> None:
        self.directory = directory
        self._writer = native.WalWriter(fsync_ms)
        self._delete_failures = 0

    def start(self) -> None:
        self._writer.start()

    def submit(self, op: Op) -> None:
        writer = self._writer
        if isinstance(op, Append):
            writer.append(op.received_at_ns, op.shard, op.frame)
        elif isinstance(op, Rotate):
            writer.rotate(self.directory / segment_name(op.first_ns))
        else:
            self._report_delete_failures()
            writer.delete(list(op.paths), self.directory / WATERMARK, op.watermark_ns)

    def close(self) -> None:
        self._writer.close()
        self._report_delete_failures()

    def _report_delete_failures(self) -> None:
        failures = self._writer.delete_failures
        if failures > self._delete_failures:
            self._delete_failures = failures
            # Not fatal: the segments stay and are deleted with the next batch.
            log.warning("WAL: cannot delete resolved segments (%d failed so far)", failures)

    @property
    def error(self) -> str | None:
        error: str | None = self._writer.error
        return error

    # The counters, read from the native writer as they are.
    written_frames = _native_counter("written_frames")
    written_bytes = _native_counter("written_bytes")
    discarded_frames = _native_counter("discarded_frames")
    fsyncs = _native_counter("fsyncs")
    durable_ns = _native_counter("durable_ns")
    deleted_segments = _native_counter("deleted_segments")
    taken_bytes = _native_counter("taken_bytes")


def write_all(fd: int, buffers: list[bytes]) -> int:
    """Write ``buffers`` in order with ``writev`` (no joined copy; the system call runs
    without the interpreter lock), resuming after short writes; returns the bytes written."""
    views = [memoryview(b) for b in buffers]
    total = sum(len(v) for v in views)
    first = 0
    while first < len(views):
        written = os.writev(fd, views[first : first + WRITEV_MAX])
        while first < len(views) and written >= len(views[first]):
            written -= len(views[first])
            first += 1
        if written:
            views[first] = views[first][written:]
    return total
