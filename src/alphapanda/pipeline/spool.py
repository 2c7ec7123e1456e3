"""The local disk spool: where encoded messages wait while the broker cannot take them.

Layout under ``settings.feed.spool_dir``::

    segment-000000000001.log   append-only records, oldest segment first
    segment-000000000002.log
    cursor                     "<segment number> <byte offset>" of the first record
                               not yet replayed-and-acked (absent = start of the
                               oldest segment)

A record is ``>II`` (payload length, CRC-32 of the payload) followed by the payload,
msgpack of ``[key, value, [[header, value], ...], received_at_ns]``. Writes are
buffered and made durable by ``sync()`` (one fsync per publisher batch, off the event
loop), so a crash of the process loses nothing that was written; a torn record at the
tail (power loss mid-write) fails its CRC and is cut off at start-up, counted.

Replay is strictly in write order: ``read_window()`` returns the next records without
consuming them; ``commit_window()`` moves the cursor past them once every one of them
was acked by the broker, persists the cursor and deletes fully replayed segments.
A window that is not committed (crash, failure) is read again, so nothing acked is
replayed twice within a run, and across a crash at most one window is.

Size policy: ``max_bytes`` bounds what ``append()`` accepts. When the spool is full,
``append()`` refuses (returns ``False``) and counts the refusal; the publisher then
stops taking ticks, so the TickBuffer fills and its declared policy applies (``block``
pushes back into the socket reader; ``drop_oldest``/``conflate`` drop and count).
Messages whose delivery already failed are always accepted (``force=True``): they are
bounded by the producer's queue size, and refusing them would lose them.
"""

from __future__ import annotations

import asyncio
import os
import re
import struct
import zlib
from collections.abc import Iterable, Iterator
from pathlib import Path
from typing import IO, Final

import msgspec

from alphapanda.metrics.samples import Sample
from alphapanda.pipeline.producer import EncodedMessage

_HEADER: Final = struct.Struct(">II")
_SEGMENT_RE: Final = re.compile(r"^segment-(\d{12})\.log$")
# Cap on one segment so that replayed data is deleted in reasonably small steps.
SEGMENT_MAX_BYTES: Final = 64 << 20
# A record larger than this is corruption, not data (a tick message is a few KiB).
_RECORD_MAX_BYTES: Final = 16 << 20

_Payload = tuple[bytes, bytes, list[tuple[str, bytes]], int]


class SpoolError(Exception):
    """The spool directory cannot be used."""


def _segment_name(number: int) -> str:
    return f"segment-{number:012d}.log"


class Spool:
    """Append-only, CRC-checked, size-bounded message log with an in-order replay cursor."""

    def __init__(self, directory: Path, max_bytes: int) -> None:
        self.directory = directory
        self.max_bytes = max_bytes
        self._segments: list[int] = []  # existing segment numbers, ascending
        self._sizes: dict[int, int] = {}
        self._writer: IO[bytes] | None = None
        self._cursor: tuple[int, int] = (1, 0)
        self._window_ends: list[tuple[int, int]] = []
        self._encoder = msgspec.msgpack.Encoder()
        self._decoder = msgspec.msgpack.Decoder(_Payload)
        self._dirty = False
        self.pending = 0  # records not yet committed (including an open window)
        self.refused = 0
        self.corrupt_tails = 0
        self.fsyncs = 0

    # -- start-up -----------------------------------------------------------------------

    def open(self) -> int:
        """Scan the directory; return how many records a previous run left to replay."""
        try:
            self.directory.mkdir(parents=True, exist_ok=True)
        except OSError as exc:
            raise SpoolError(f"cannot create spool directory {self.directory}: {exc}") from exc
        numbers = sorted(
            int(m.group(1)) for p in self.directory.iterdir() if (m := _SEGMENT_RE.match(p.name))
        )
        cursor = self._read_cursor()
        if cursor is None:
            cursor = (numbers[0] if numbers else 1, 0)
        for number in numbers:
            if number < cursor[0]:
                (self.directory / _segment_name(number)).unlink()
        self._segments = [n for n in numbers if n >= cursor[0]]
        if cursor[0] not in self._segments:
            cursor = (self._segments[0] if self._segments else cursor[0], 0)
        self._cursor = cursor
        self.pending = 0
        for number in self._segments:
            start = cursor[1] if number == cursor[0] else 0
            count, valid_end = self._scan(number, start)
            self.pending += count
            path = self.directory / _segment_name(number)
            if valid_end < path.stat().st_size:
                # A torn or corrupt tail: keep what verified, cut the rest off.
                self.corrupt_tails += 1
                os.truncate(path, valid_end)
            self._sizes[number] = valid_end
        return self.pending

    def _read_cursor(self) -> tuple[int, int] | None:
        try:
            segment, offset = (self.directory / "cursor").read_text().split()
            return int(segment), int(offset)
        except (OSError, ValueError):
            return None

    def _scan(self, number: int, start: int) -> tuple[int, int]:
        count = 0
        position = start
        with open(self.directory / _segment_name(number), "rb") as f:
            f.seek(start)
            while (record := self._read_record(f)) is not None:
                count += 1
                position += _HEADER.size + len(record)
        return count, position

    @staticmethod
    def _read_record(f: IO[bytes]) -> bytes | None:
        header = f.read(_HEADER.size)
        if len(header) < _HEADER.size:
            return None
        length, crc = _HEADER.unpack(header)
        if length > _RECORD_MAX_BYTES:
            return None
        payload = f.read(length)
        if len(payload) < length or zlib.crc32(payload) != crc:
            return None
        return payload

    # -- writing ------------------------------------------------------------------------

    @property
    def size_bytes(self) -> int:
        """Bytes on disk not yet replayed (approximately: whole segments past the cursor)."""
        return sum(self._sizes.values()) - self._cursor[1]

    @property
    def full(self) -> bool:
        return self.size_bytes >= self.max_bytes

    def append(self, message: EncodedMessage, *, force: bool = False) -> bool:
        """Append one message; ``False`` (nothing written) if the spool is full."""
        if not force and self.size_bytes >= self.max_bytes:
            self.refused += 1
            return False
        payload = self._encoder.encode(
            (message.key, message.value, message.headers, message.received_at_ns)
        )
        writer = self._active_writer(len(payload))
        writer.write(_HEADER.pack(len(payload), zlib.crc32(payload)))
        writer.write(payload)
        last = self._segments[-1]
        self._sizes[last] += _HEADER.size + len(payload)
        self.pending += 1
        self._dirty = True
        return True

    def extend(self, messages: Iterable[EncodedMessage]) -> int:
        """Append in order until the spool is full; return how many were written."""
        written = 0
        for message in messages:
            if not self.append(message):
                break
            written += 1
        return written

    def _active_writer(self, upcoming: int) -> IO[bytes]:
        if self._writer is not None and self._sizes[self._segments[-1]] + upcoming > max(
            SEGMENT_MAX_BYTES, upcoming
        ):
            self._writer.close()
            self._writer = None
            self._segments.append(self._segments[-1] + 1)
            self._sizes[self._segments[-1]] = 0
        if self._writer is None:
            if not self._segments:
                self._segments.append(self._cursor[0])
                self._sizes[self._cursor[0]] = 0
            self._writer = open(self.directory / _segment_name(self._segments[-1]), "ab")  # noqa: SIM115
        return self._writer

    async def sync(self) -> None:
        """Make every appended record durable (fsync off the event loop)."""
        if not self._dirty or self._writer is None:
            return
        self._writer.flush()
        self._dirty = False
        await asyncio.to_thread(os.fsync, self._writer.fileno())
        self.fsyncs += 1

    # -- replay -------------------------------------------------------------------------

    def read_window(self, max_records: int) -> list[EncodedMessage]:
        """The next (up to) ``max_records`` records in write order, not yet consumed.

        Calling it again before ``commit_window()`` returns the same records.
        """
        if self._writer is not None:
            self._writer.flush()
        segment, offset = self._cursor
        messages: list[EncodedMessage] = []
        ends: list[tuple[int, int]] = []
        while len(messages) < max_records and segment in self._sizes:
            with open(self.directory / _segment_name(segment), "rb") as f:
                f.seek(offset)
                while len(messages) < max_records and offset < self._sizes[segment]:
                    record = self._read_record(f)
                    if record is None:  # verified at open or written by us: cannot happen
                        raise SpoolError(f"unreadable record in {_segment_name(segment)}")
                    key, value, headers, received_at_ns = self._decoder.decode(record)
                    messages.append(EncodedMessage(key, value, headers, received_at_ns))
                    offset += _HEADER.size + len(record)
                    ends.append((segment, offset))
            if offset >= self._sizes[segment] and segment != self._segments[-1]:
                segment, offset = segment + 1, 0
            else:
                break
        self._window_ends = ends
        return messages

    def commit_window(self, count: int | None = None) -> None:
        """The first ``count`` records of the last window (all by default) were acked:
        move past them for good. A partial commit is for shutdown, where the rest of
        the window could not be delivered and must be replayed by the next run."""
        ends = self._window_ends
        count = len(ends) if count is None else min(count, len(ends))
        self._window_ends = []
        if count == 0:
            return
        segment, offset = ends[count - 1]
        if (
            segment in self._sizes
            and offset >= self._sizes[segment]
            and segment != self._segments[-1]
        ):
            segment, offset = segment + 1, 0
        self._cursor = (segment, offset)
        self.pending -= count
        for number in list(self._segments):
            if number < self._cursor[0]:
                self._delete(number)
        if self.pending == 0 and self._segments:
            # Everything replayed: start afresh so the directory does not keep old data.
            next_number = self._segments[-1] + 1
            if self._writer is not None:
                self._writer.close()
                self._writer = None
            for number in list(self._segments):
                self._delete(number)
            self._cursor = (next_number, 0)
        self._write_cursor()

    def _delete(self, number: int) -> None:
        (self.directory / _segment_name(number)).unlink(missing_ok=True)
        self._segments.remove(number)
        self._sizes.pop(number, None)

    def _write_cursor(self) -> None:
        tmp = self.directory / "cursor.tmp"
        tmp.write_text(f"{self._cursor[0]} {self._cursor[1]}\n")
        os.replace(tmp, self.directory / "cursor")

    def close(self) -> None:
        """Flush and close (the caller ``await sync()``s first for durability)."""
        if self._writer is not None:
            self._writer.flush()
            os.fsync(self._writer.fileno())
            self._writer.close()
            self._writer = None

    def samples(self) -> Iterator[Sample]:
        yield Sample("spool_messages", "gauge", self.pending, (), "Records in the disk spool.")
        yield Sample("spool_bytes", "gauge", self.size_bytes, (), "Bytes in the disk spool.")
        yield Sample(
            "spool_refused_total", "counter", self.refused, (), "Appends refused: spool full."
        )
        yield Sample(
            "spool_corrupt_tails_total",
            "counter",
            self.corrupt_tails,
            (),
            "Torn or corrupt segment tails cut off at start-up.",
        )
