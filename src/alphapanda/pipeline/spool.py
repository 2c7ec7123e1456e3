"""The local disk spool: where encoded messages wait while the broker cannot take them.

Layout under ``settings.feed.spool_dir``::

    lock                       flock()ed for the life of the owning process; holds its pid
    segment-000001000000.log   append-only framed-log records, oldest segment first
    segment-000001000001.log
    cursor                     "<segment number> <byte offset>" of the first record
                               not yet replayed-and-acked (absent = start of the
                               oldest segment), optionally followed by more
                               "<segment number> <byte offset>" pairs: where reading
                               starts in a later segment (after a prepend, below)

Each record is one ``alphapanda.framedlog`` record whose payload is msgpack of
``[key, value, [[header, value], ...], received_at_ns]``.

Every method does blocking file I/O and is meant to run in a worker thread, one call
at a time (the publisher's shell guarantees both); none raises on a full or failing
disk: ``append_many`` reports how many records reached the file and why it stopped,
``read_window`` reports records it had to give up on. A record counts as spooled only
once ``write()`` returned for all of its bytes; a batch cut short by an error is
truncated back to its last whole record, so a half-written record never stays behind.
Each append is fsynced before it returns, a segment is fsynced before the next one is
started, and the cursor is replaced atomically (temp file, fsync, rename, directory
fsync).

Damage (a flipped bit, a torn write after a power loss) costs only the damaged
records: the reader resyncs at the next record that checks out, and what it skipped
is logged with segment and offset and reported (``lost`` records), never truncated.

Replay is strictly in write order: ``read_window()`` returns the next records without
consuming them; ``commit_window()`` moves the cursor past them once every one of them
was acked by the broker and deletes fully replayed segments. A window that is not
committed (crash, failure) is read again, so across a crash at most one window is
replayed twice.

Prepend: ``prepend_many`` writes messages *ahead* of everything not yet replayed, in a
new segment numbered just below the cursor's. It is for messages older than the whole
spool: deliveries that failed while newer ticks were already being spooled, which must
still be replayed first. The cursor file is replaced before the segment is renamed into
place, so a crash in between loses only the new segment, never replays old records.

Size policy: ``max_bytes`` bounds what ``append_many`` accepts, and so does
``min_free_bytes`` (free space left on the filesystem); ``force=True`` (messages whose
delivery already failed, bounded by the producer's queue) bypasses both, not real
errors.
"""

from __future__ import annotations

import contextlib
import errno
import fcntl
import logging
import os
import re
from collections.abc import Iterable, Iterator
from pathlib import Path
from typing import Final, NamedTuple

import msgspec

from alphapanda import framedlog
from alphapanda.metrics import catalog
from alphapanda.metrics.samples import Sample
from alphapanda.pipeline.producer import EncodedMessage

log = logging.getLogger(__name__)

_SEGMENT_RE: Final = re.compile(r"^segment-(\d{12})\.log$")
# Cap on one segment so that replayed data is deleted in reasonably small steps.
SEGMENT_MAX_BYTES: Final = 64 << 20
# Bytes read per file access while replaying (a window of 5,000 ticks is ~2 MB).
_READ_CHUNK: Final = 8 << 20
LOCK_NAME: Final = "lock"
_PREPEND_TMP: Final = "prepend.tmp"
# The first segment of a new spool: numbers below it are left for prepends.
FIRST_SEGMENT: Final = 1_000_000

# Why ``append_many`` stopped short of the whole batch.
FULL: Final = "spool_max_bytes reached"
LOW_DISK: Final = "not enough free disk space (spool_min_free_bytes must stay free)"

_Payload = tuple[bytes, bytes, list[tuple[str, bytes]], int]


class SpoolError(Exception):
    """The spool directory cannot be used."""


class SpoolLocked(SpoolError):
    """Another live process owns the spool directory."""


class AppendResult(NamedTuple):
    """``written`` records of the batch are in the file; ``error`` says why not all."""

    written: int
    error: str | None = None


class Window(NamedTuple):
    """Records read for replay, and how many damaged/missing ones were given up on."""

    messages: list[EncodedMessage]
    lost: int = 0


def _segment_name(number: int) -> str:
    return f"segment-{number:012d}.log"


def _fsync_dir(directory: Path) -> None:
    fd = os.open(directory, os.O_RDONLY)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)


class Spool:
    """Append-only, CRC-checked, size-bounded message log with an in-order replay cursor."""

    def __init__(self, directory: Path, max_bytes: int, min_free_bytes: int = 0) -> None:
        self.directory = directory
        self.max_bytes = max_bytes
        self.min_free_bytes = min_free_bytes
        self._segments: list[int] = []  # existing segment numbers, ascending
        self._sizes: dict[int, int] = {}
        self._counts: dict[int, int] = {}  # records past the cursor, per segment
        self._fd: int | None = None  # the last segment, open for appending
        self._lock_fd: int | None = None
        self._cursor: tuple[int, int] = (FIRST_SEGMENT, 0)
        # Where reading starts in segments after the cursor's (only after a prepend).
        self._starts: dict[int, int] = {}
        self._window_ends: list[tuple[int, int]] = []
        self._window_stop: tuple[int, int] | None = None
        self._window_counts: list[int] = []  # records of the window per segment order
        self._known_damage: set[tuple[int, int]] = set()
        self._cursor_dirty = False
        self._encoder = msgspec.msgpack.Encoder()
        self._decoder = msgspec.msgpack.Decoder(_Payload)
        self.pending = 0  # records not yet committed (including an open window)
        self.refused = 0
        self.write_errors = 0
        self.damaged_regions = 0
        self.corrupt_records = 0
        self.corrupt_bytes = 0
        self.lost_at_open = 0
        self.fsyncs = 0
        self.last_error: str | None = None

    # -- start-up -----------------------------------------------------------------------

    def open(self) -> int:
        """Lock the directory and scan it; return how many valid records a previous run
        left to replay (``lost_at_open`` says how many it had to give up on)."""
        try:
            self.directory.mkdir(parents=True, exist_ok=True)
        except OSError as exc:
            raise SpoolError(f"cannot create spool directory {self.directory}: {exc}") from exc
        self._lock()
        numbers = sorted(
            int(m.group(1)) for p in self.directory.iterdir() if (m := _SEGMENT_RE.match(p.name))
        )
        (self.directory / _PREPEND_TMP).unlink(missing_ok=True)  # a prepend cut short
        positions = self._read_cursor()
        if not positions:
            positions = [(numbers[0] if numbers else FIRST_SEGMENT, 0)]
        cursor = positions[0]
        for number in numbers:
            if number < cursor[0]:
                (self.directory / _segment_name(number)).unlink()
        self._segments = [n for n in numbers if n >= cursor[0]]
        starts = {segment: offset for segment, offset in positions[1:] if segment > cursor[0]}
        if cursor[0] not in self._segments:
            # Its segment is gone (fully replayed, or a prepend the crash cut short).
            first = self._segments[0] if self._segments else cursor[0]
            cursor = (first, starts.get(first, 0))
        self._starts = {s: o for s, o in starts.items() if s > cursor[0] and s in self._segments}
        self._cursor = cursor
        self.pending = 0
        for number in self._segments:
            start = cursor[1] if number == cursor[0] else self._starts.get(number, 0)
            path = self.directory / _segment_name(number)
            data = path.read_bytes()
            count = 0
            for item in framedlog.parse(data, start):
                if isinstance(item, framedlog.Record):
                    count += 1
                else:
                    self._note_damage(number, item)
                    self.lost_at_open += item.records
            self._counts[number] = count
            self._sizes[number] = len(data)
            self.pending += count
        return self.pending

    def _lock(self) -> None:
        path = self.directory / LOCK_NAME
        fd = os.open(path, os.O_RDWR | os.O_CREAT, 0o644)
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except OSError as exc:
            holder = os.pread(fd, 64, 0).decode(errors="replace").strip() or "unknown"
            os.close(fd)
            if exc.errno in (errno.EWOULDBLOCK, errno.EAGAIN):
                raise SpoolLocked(
                    f"spool directory {self.directory} is in use by another process "
                    f"(pid {holder}); stop it or give this one its own "
                    "ALPHAPANDA_FEED__SPOOL_DIR"
                ) from None
            raise SpoolError(f"cannot lock spool directory {self.directory}: {exc}") from exc
        # The kernel drops a flock with its process, so holding it means any previous
        # owner is gone: its pid in the file is stale and is replaced.
        previous = os.pread(fd, 64, 0).decode(errors="replace").strip()
        if previous and previous != str(os.getpid()):
            log.warning("spool %s: taking over the lock of pid %s (gone)", self.directory, previous)
        os.ftruncate(fd, 0)
        os.pwrite(fd, f"{os.getpid()}\n".encode(), 0)
        self._lock_fd = fd

    def _read_cursor(self) -> list[tuple[int, int]]:
        try:
            fields = [int(f) for f in (self.directory / "cursor").read_text().split()]
        except (OSError, ValueError):
            return []
        if len(fields) < 2 or len(fields) % 2:
            return []
        return list(zip(fields[::2], fields[1::2], strict=True))

    def _note_damage(self, number: int, damage: framedlog.Damage) -> None:
        key = (number, damage.offset)
        if key in self._known_damage:
            return
        self._known_damage.add(key)
        self.damaged_regions += 1
        self.corrupt_records += damage.records
        self.corrupt_bytes += damage.length
        log.error(
            "spool %s offset %d: %d bytes do not check out (about %d records lost); "
            "skipped to the next valid record",
            _segment_name(number),
            damage.offset,
            damage.length,
            damage.records,
        )

    # -- writing ------------------------------------------------------------------------

    @property
    def size_bytes(self) -> int:
        """Bytes on disk not yet replayed (whole segments past the cursor)."""
        # list() copies atomically: the worker thread may be changing the dict.
        skipped = self._cursor[1] + sum(list(self._starts.values()))
        return max(0, sum(list(self._sizes.values())) - skipped)

    @property
    def full(self) -> bool:
        return self.size_bytes >= self.max_bytes

    def free_bytes(self) -> int:
        """Free space on the spool's filesystem, for unprivileged writers."""
        stat = os.statvfs(self.directory)
        return stat.f_bavail * stat.f_frsize

    def append_many(
        self, messages: Iterable[EncodedMessage], *, force: bool = False
    ) -> AppendResult:
        """Write ``messages`` in order, fsync, and say how many reached the file."""
        records = self._records(messages)
        if not records:
            return AppendResult(0)
        error: str | None = None
        if not force:
            room = self.max_bytes - self.size_bytes
            try:
                room = min(room, self.free_bytes() - self.min_free_bytes)
                if room < sum(len(r) for r in records):
                    error = FULL if room == self.max_bytes - self.size_bytes else LOW_DISK
            except OSError as exc:
                room, error = 0, f"cannot check free space: {exc}"
            if error is not None:
                self.refused += 1
                fitting = 0
                total = 0
                for record in records:
                    total += len(record)
                    if total > room:
                        break
                    fitting += 1
                records = records[:fitting]
        written, write_error = self._write(records)
        if write_error is not None:
            self.write_errors += 1
            error = write_error
        if written and write_error is None:
            try:
                assert self._fd is not None
                os.fsync(self._fd)
                self.fsyncs += 1
            except OSError as exc:
                # The bytes were written (the page cache has them): a crash of this
                # process loses nothing; a power loss might. Counted and reported.
                self.write_errors += 1
                error = f"fsync failed: {exc}"
        self.pending += written
        if written:
            self._counts[self._segments[-1]] += written
        self.last_error = error
        return AppendResult(written, error)

    def _write(self, records: list[bytes]) -> tuple[int, str | None]:
        # Segment by segment: a batch never makes a segment outgrow SEGMENT_MAX_BYTES
        # (unless one record alone is bigger).
        written = 0
        while written < len(records):
            try:
                fd = self._active_fd(len(records[written]))
            except OSError as exc:
                return written, f"cannot open a spool segment: {exc}"
            room = SEGMENT_MAX_BYTES - self._sizes[self._segments[-1]]
            group_end = written + 1
            used = len(records[written])
            while group_end < len(records) and used + len(records[group_end]) <= room:
                used += len(records[group_end])
                group_end += 1
            done, error = self._write_group(fd, records[written:group_end])
            written += done
            if error is not None:
                return written, error
        return written, None

    def _write_group(self, fd: int, records: list[bytes]) -> tuple[int, str | None]:
        number = self._segments[-1]
        start = self._sizes[number]
        data = b"".join(records)
        done = 0
        try:
            while done < len(data):
                done += os.write(fd, data[done:])
        except OSError as exc:
            # Keep whole records only: cut a half-written one off again.
            whole = 0
            boundary = 0
            for record in records:
                if boundary + len(record) > done:
                    break
                boundary += len(record)
                whole += 1
            try:
                os.ftruncate(fd, start + boundary)
            except OSError:
                # Cannot cut it: the torn bytes stay and the reader skips them; they
                # were never counted as spooled, so they are not counted as lost.
                self._known_damage.add((number, start + boundary))
                boundary = done
            self._sizes[number] = start + boundary
            if exc.errno == errno.EBADF:
                self._fd = None
            return whole, f"spool write failed: {exc}"
        self._sizes[number] = start + len(data)
        return len(records), None

    def _active_fd(self, upcoming: int) -> int:
        if (
            self._fd is not None
            and self._sizes[self._segments[-1]]
            and self._sizes[self._segments[-1]] + upcoming > SEGMENT_MAX_BYTES
        ):
            # Rotation: the finished segment is made durable before the next starts.
            fd, self._fd = self._fd, None
            try:
                os.fsync(fd)
            finally:
                os.close(fd)
            self._segments.append(self._segments[-1] + 1)
            self._sizes[self._segments[-1]] = 0
            self._counts[self._segments[-1]] = 0
        if self._fd is None:
            if not self._segments:
                self._segments.append(self._cursor[0])
                self._sizes[self._cursor[0]] = 0
                self._counts[self._cursor[0]] = 0
            number = self._segments[-1]
            path = self.directory / _segment_name(number)
            self._fd = os.open(path, os.O_WRONLY | os.O_APPEND | os.O_CREAT, 0o644)
            _fsync_dir(self.directory)
        return self._fd

    def _records(self, messages: Iterable[EncodedMessage]) -> list[bytes]:
        """Each message as one framed record of the file."""
        encode = self._encoder.encode
        return [
            framedlog.encode(encode((m.key, m.value, m.headers, m.received_at_ns)))
            for m in messages
        ]

    def prepend_many(self, messages: Iterable[EncodedMessage]) -> AppendResult:
        """Write ``messages`` ahead of every record not yet replayed, so they are
        replayed first (they are older than the spool). Not bounded by the size limits
        (like ``force``). An open replay window is dropped: it is read again later."""
        if self.pending == 0:
            return self.append_many(messages, force=True)
        number = self._cursor[0] - 1
        if number < 1:
            # A spool from before prepends existed, numbered from 1: no room below.
            log.warning("spool: no segment number below the cursor; appending instead")
            return self.append_many(messages, force=True)
        records = self._records(messages)
        if not records:
            return AppendResult(0)
        data = b"".join(records)
        tmp = self.directory / _PREPEND_TMP
        try:
            fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o644)
            try:
                done = 0
                while done < len(data):
                    done += os.write(fd, data[done:])
                os.fsync(fd)
                self.fsyncs += 1
            finally:
                os.close(fd)
        except OSError as exc:
            self.write_errors += 1
            tmp.unlink(missing_ok=True)
            self.last_error = f"spool write failed: {exc}"
            return AppendResult(0, self.last_error)
        # The cursor first: a crash before the rename then costs the new segment only.
        previous_cursor, previous_starts = self._cursor, dict(self._starts)
        if self._cursor[1]:
            self._starts[self._cursor[0]] = self._cursor[1]
        self._cursor = (number, 0)
        error = self._persist_cursor()
        if error is None:
            try:
                os.replace(tmp, self.directory / _segment_name(number))
                _fsync_dir(self.directory)
            except OSError as exc:
                self.write_errors += 1
                error = f"spool write failed: {exc}"
                # Back to where it was (on disk too, as far as the disk lets us).
                self._cursor, self._starts = previous_cursor, previous_starts
                self._persist_cursor()
        if error is not None:
            self._cursor, self._starts = previous_cursor, previous_starts
            tmp.unlink(missing_ok=True)
            self.last_error = error
            return AppendResult(0, error)
        self._window_ends, self._window_stop = [], None
        self._segments.insert(0, number)
        self._sizes[number] = len(data)
        self._counts[number] = len(records)
        self.pending += len(records)
        self.last_error = None
        return AppendResult(len(records))

    def append(self, message: EncodedMessage, *, force: bool = False) -> bool:
        """Append one message; ``False`` if it did not reach the file."""
        return self.append_many([message], force=force).written == 1

    def extend(self, messages: Iterable[EncodedMessage]) -> int:
        """Append in order until the spool refuses; return how many were written."""
        return self.append_many(messages).written

    # -- replay -------------------------------------------------------------------------

    def read_window(self, max_records: int) -> Window:
        """The next (up to) ``max_records`` records in write order, not yet consumed.

        Calling it again before ``commit_window()`` returns the same records. Records
        that cannot be read (damaged since start-up, or their segment is gone) are given
        up on, logged and reported in ``Window.lost`` once.
        """
        segment, offset = self._cursor
        messages: list[EncodedMessage] = []
        ends: list[tuple[int, int]] = []
        lost = 0
        stop = self._cursor
        while len(messages) < max_records and segment in self._sizes:
            size = self._sizes[segment]
            try:
                with open(self.directory / _segment_name(segment), "rb") as f:
                    while len(messages) < max_records and offset < size:
                        f.seek(offset)
                        chunk = f.read(min(_READ_CHUNK, size - offset))
                        final = offset + len(chunk) >= size
                        progressed = False
                        for item in framedlog.parse(chunk, 0, final=final):
                            if isinstance(item, framedlog.Damage):
                                damage = item._replace(offset=offset + item.offset)
                                if (segment, damage.offset) not in self._known_damage:
                                    self._note_damage(segment, damage)
                                    lost += self._forget(segment, damage.records)
                                end = offset + item.offset + item.length
                            else:
                                message = self._decode(item.payload)
                                end = offset + item.end
                                if message is None:
                                    if (segment, offset + item.offset) not in self._known_damage:
                                        self._note_damage(
                                            segment,
                                            framedlog.Damage(
                                                offset + item.offset, item.end - item.offset, 1
                                            ),
                                        )
                                        lost += self._forget(segment, 1)
                                else:
                                    messages.append(message)
                                    ends.append((segment, end))
                            stop = (segment, end)
                            progressed = True
                            if len(messages) >= max_records:
                                break
                        if not progressed:
                            break
                        offset = stop[1]
            except FileNotFoundError:
                # The segment vanished under us (deleted by hand): its records are gone.
                log.error("spool %s is missing: its records are lost", _segment_name(segment))
                lost += self._forget(segment, self._counts.get(segment, 0))
                self._sizes[segment] = 0
                offset = 0
                stop = (segment, 0)
            if offset >= self._sizes[segment] and segment != self._segments[-1]:
                segment += 1
                offset = self._starts.get(segment, 0)
                stop = (segment, offset)
            else:
                break
        last = self._segments[-1] if self._segments else stop[0]
        if not messages and stop[0] == last and stop[1] >= self._sizes.get(stop[0], 0):
            # Nothing readable is left: whatever the books still say is pending was
            # estimated wrong around damage and is gone.
            lost += self._forget(stop[0], self.pending)
        self._window_ends = ends
        self._window_stop = stop
        return Window(messages, lost)

    def _decode(self, payload: bytes) -> EncodedMessage | None:
        try:
            key, value, headers, received_at_ns = self._decoder.decode(payload)
        except (msgspec.DecodeError, msgspec.ValidationError):
            return None
        return EncodedMessage(key, value, headers, received_at_ns)

    def _forget(self, segment: int, records: int) -> int:
        """Take ``records`` lost records of ``segment`` off the books; how many were."""
        records = min(records, self.pending)
        self.pending -= records
        in_segment = min(records, self._counts.get(segment, 0))
        self._counts[segment] = self._counts.get(segment, 0) - in_segment
        rest = records - in_segment
        for number in self._segments:
            if rest <= 0:
                break
            take = min(rest, self._counts.get(number, 0))
            self._counts[number] -= take
            rest -= take
        return records

    def discard_pending(self) -> None:
        """Move the cursor past everything the spool holds: none of it is replayed (a
        hot-standby member whose group's active published what followed). Blocking."""
        while self.pending:
            window = self.read_window(10_000)
            if not window.messages and not window.lost:
                break
            self.commit_window()

    def commit_window(self, count: int | None = None) -> str | None:
        """The first ``count`` records of the last window (all by default) were acked:
        move past them for good. A partial commit is for shutdown, where the rest of
        the window could not be delivered and must be replayed by the next run.

        Returns an error message if the cursor could not be persisted (it is retried
        with the next commit; until then a crash would replay the window twice).
        """
        ends = self._window_ends
        count = len(ends) if count is None else min(count, len(ends))
        stop = self._window_stop
        self._window_ends = []
        self._window_stop = None
        if count == len(ends) and stop is not None:
            target = stop
        elif count:
            target = ends[count - 1]
        else:
            return self._persist_cursor() if self._cursor_dirty else None
        segment, offset = target
        if (
            segment in self._sizes
            and offset >= self._sizes[segment]
            and segment != self._segments[-1]
        ):
            segment += 1
            offset = self._starts.get(segment, 0)
        previous = self._cursor
        self._cursor = (segment, offset)
        self._starts = {s: o for s, o in self._starts.items() if s > segment}
        self._cursor_dirty = self._cursor != previous or self._cursor_dirty
        self.pending -= count
        done: dict[int, int] = {}
        for seg, _ in ends[:count]:
            done[seg] = done.get(seg, 0) + 1
        for seg, n in done.items():
            self._counts[seg] = max(0, self._counts.get(seg, 0) - n)
        for number in list(self._segments):
            if number < self._cursor[0]:
                self._delete(number)
        if self.pending <= 0 and self._segments:
            # Everything replayed: start afresh so the directory does not keep old data.
            self.pending = 0
            next_number = max(self._segments[-1] + 1, FIRST_SEGMENT)
            if self._fd is not None:
                with contextlib.suppress(OSError):
                    os.close(self._fd)
                self._fd = None
            for number in list(self._segments):
                self._delete(number)
            self._cursor = (next_number, 0)
            self._starts.clear()
            self._cursor_dirty = True
        return self._persist_cursor()

    def _delete(self, number: int) -> None:
        try:
            (self.directory / _segment_name(number)).unlink(missing_ok=True)
        except OSError as exc:
            log.error("cannot delete replayed spool segment %s: %s", _segment_name(number), exc)
        self._segments.remove(number)
        self._sizes.pop(number, None)
        self._counts.pop(number, None)

    def _persist_cursor(self) -> str | None:
        tmp = self.directory / "cursor.tmp"
        try:
            fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o644)
            try:
                positions = [self._cursor, *sorted(self._starts.items())]
                line = " ".join(f"{segment} {offset}" for segment, offset in positions)
                os.write(fd, f"{line}\n".encode())
                os.fsync(fd)
            finally:
                os.close(fd)
            os.replace(tmp, self.directory / "cursor")
            _fsync_dir(self.directory)
        except OSError as exc:
            self._cursor_dirty = True
            self.write_errors += 1
            log.error("cannot persist the spool cursor: %s", exc)
            return f"cannot persist the spool cursor: {exc}"
        self._cursor_dirty = False
        return None

    def close(self) -> None:
        """Fsync and close the segment, persist the cursor, release the lock."""
        if self._fd is not None:
            try:
                os.fsync(self._fd)
            except OSError as exc:
                log.error("spool fsync at close failed: %s", exc)
            os.close(self._fd)
            self._fd = None
        if self._cursor_dirty:
            self._persist_cursor()
        if self._lock_fd is not None:
            os.close(self._lock_fd)  # releases the flock
            self._lock_fd = None

    def samples(self) -> Iterator[Sample]:
        yield catalog.SPOOL_MESSAGES.sample(self.pending)
        yield catalog.SPOOL_BYTES.sample(self.size_bytes)
        yield catalog.SPOOL_REFUSED.sample(self.refused)
        yield catalog.SPOOL_WRITE_ERRORS.sample(self.write_errors)
        yield catalog.SPOOL_CORRUPT_TAILS.sample(self.damaged_regions)
        yield catalog.SPOOL_CORRUPT_BYTES.sample(self.corrupt_bytes)
