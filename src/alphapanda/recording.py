"""Recordings of raw Kite frames: the file format, its writer and its reader.

A recording is what ``alphapanda record`` (or any ``frame_listener`` of the ticker
client) saw on the wire: every binary WebSocket message, byte for byte, with the time
it was received. ``alphapanda replay`` feeds it back through the same decoder and
pipeline, so a market session can be re-run against Kafka or inspected offline.

File layout (all integers big-endian, like the Kite protocol itself)::

    header  b"APREC\\x00\\x02\\n"  8 B   magic + format version 2
            u32 meta_len            JSON object (no secrets: mode, instruments, ws host)
            meta                    meta_len bytes
            u32 crc32(meta)
    record  one framed-log record (``alphapanda.framedlog``: magic, length, CRC over
            header and payload) whose payload is
            u64 received_at_ns      our receive time (time.time_ns())
            frame                   the WebSocket message as received

Append-only, so a file is safe to read while it is being written: a reader that
reaches a record whose bytes are not all there yet stops cleanly and reports a
``partial`` tail (the writer may still be writing it, or crashed mid-record). Bytes in
the middle that do not check out (a flipped bit) are skipped up to the next record that
does, and reported in ``reader.damage`` with their offset and length; the rest of the
file still replays.

Version 1 files (written before the framed log; records ``u64 received_at_ns, u32
length, u32 crc32`` then the frame) stay readable: the reader picks the format from
the header's version byte. There a corrupt record raises ``RecordingError`` naming
the offset, as it always did.

The encode/parse functions are pure; ``RecordingWriter`` keeps the event loop free of
disk I/O (the frame listener only appends to a bounded in-memory batch; a task writes
batches from a worker thread), and ``RecordingReader`` is a plain blocking file reader.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import os
import struct
import zlib
from collections.abc import Iterator
from pathlib import Path
from typing import IO, Any, Final, Literal

import msgspec

from alphapanda import framedlog
from alphapanda.metrics import catalog
from alphapanda.metrics.samples import Sample

MAGIC: Final = b"APREC\x00\x02\n"
MAGIC_V1: Final = b"APREC\x00\x01\n"
# What precedes a frame in a record: the framed-log header, then the receive time.
RECORD_HEADER: Final = struct.Struct(">4sIIQ")  # magic, length, crc32, received_at_ns
RECORD_HEADER_V1: Final = struct.Struct(">QII")  # received_at_ns, length, crc32
_U32: Final = struct.Struct(">I")
_U64: Final = struct.Struct(">Q")
# Far above any Kite frame (3000 full packets ~ 558 kB); a larger length is corruption.
MAX_FRAME_BYTES: Final = framedlog.MAX_PAYLOAD - _U64.size
MAX_META_BYTES: Final = 1024 * 1024

Tail = Literal["clean", "partial"]


class RecordingError(Exception):
    """Not a recording, or a corrupt one (the message names the byte offset)."""


class FrameRecord(msgspec.Struct, frozen=True):
    """One recorded WebSocket message."""

    received_at_ns: int
    frame: bytes


# -- the pure core ----------------------------------------------------------------------


def encode_header(meta: dict[str, Any], *, magic: bytes = MAGIC) -> bytes:
    """The file header carrying ``meta`` (plain JSON data; never put secrets in it)."""
    body = json.dumps(meta, sort_keys=True).encode()
    return magic + _U32.pack(len(body)) + body + _U32.pack(zlib.crc32(body))


def encode_record(received_at_ns: int, frame: bytes) -> bytes:
    """One record of the current format: a framed-log record of time and frame."""
    return framedlog.encode(_U64.pack(received_at_ns) + frame)


def encode_record_v1(received_at_ns: int, frame: bytes) -> bytes:
    """One record of the version 1 format (for tests of the legacy reader)."""
    length = len(frame)
    crc = zlib.crc32(frame, zlib.crc32(struct.pack(">QI", received_at_ns, length)))
    return RECORD_HEADER_V1.pack(received_at_ns, length, crc) + frame


def parse_header(data: bytes) -> tuple[dict[str, Any], int] | None:
    """``(meta, header_size)``, or ``None`` if ``data`` does not hold the whole header yet.

    Raises ``RecordingError`` when ``data`` is not a recording.
    """
    parsed = parse_header_versioned(data)
    return None if parsed is None else (parsed[0], parsed[1])


def parse_header_versioned(data: bytes) -> tuple[dict[str, Any], int, int] | None:
    """Like ``parse_header``, plus the format version (1 or 2)."""
    if len(data) < len(MAGIC):
        if not (MAGIC.startswith(data) or MAGIC_V1.startswith(data)):
            raise RecordingError("not an alphapanda recording (bad magic)")
        return None
    head = data[: len(MAGIC)]
    if head == MAGIC:
        version = 2
    elif head == MAGIC_V1:
        version = 1
    else:
        raise RecordingError("not an alphapanda recording (bad magic or unknown version)")
    start = len(MAGIC)
    if len(data) < start + 4:
        return None
    (meta_len,) = _U32.unpack_from(data, start)
    if meta_len > MAX_META_BYTES:
        raise RecordingError(f"offset {start}: header metadata of {meta_len} bytes is corrupt")
    end = start + 4 + meta_len
    if len(data) < end + 4:
        return None
    body = data[start + 4 : end]
    (crc,) = _U32.unpack_from(data, end)
    if zlib.crc32(body) != crc:
        raise RecordingError(f"offset {start}: header checksum mismatch")
    meta = json.loads(body)
    if not isinstance(meta, dict):
        raise RecordingError(f"offset {start}: header metadata is not an object")
    return meta, end + 4, version


def _frame_record(payload: bytes) -> FrameRecord:
    if len(payload) < _U64.size:
        raise RecordingError("record too short for its receive time")
    (received_at_ns,) = _U64.unpack_from(payload)
    return FrameRecord(received_at_ns, payload[_U64.size :])


def parse_record(data: bytes | memoryview, offset: int) -> tuple[FrameRecord, int] | None:
    """The current-format record at ``offset`` and the offset after it, or ``None`` if
    it is incomplete. Raises ``RecordingError`` if its bytes do not check out (the
    reader itself skips such bytes; this strict form is for tools and tests)."""
    for item in framedlog.parse(data, offset, final=False):
        if isinstance(item, framedlog.Damage) or item.offset != offset:
            raise RecordingError(f"offset {offset}: record checksum mismatch")
        return _frame_record(item.payload), item.end
    view = memoryview(data)
    if len(view) - offset >= framedlog.HEADER.size:
        magic, length, _ = framedlog.HEADER.unpack_from(view, offset)
        if magic != framedlog.MAGIC or length > framedlog.MAX_PAYLOAD:
            raise RecordingError(f"offset {offset}: record header is corrupt")
        if len(view) - offset >= framedlog.HEADER.size + length:
            raise RecordingError(f"offset {offset}: record checksum mismatch")
    return None


def parse_record_v1(data: bytes | memoryview, offset: int) -> tuple[FrameRecord, int] | None:
    """A version 1 record at ``offset`` (see ``parse_record``)."""
    view = memoryview(data)
    if len(view) - offset < RECORD_HEADER_V1.size:
        return None
    received_at_ns, length, crc = RECORD_HEADER_V1.unpack_from(view, offset)
    if length > MAX_FRAME_BYTES:
        # A torn header is only ever the last thing in the file: if more follows, the
        # CRC below would fail anyway; here we cannot even know where the frame ends.
        raise RecordingError(f"offset {offset}: record length {length} is corrupt")
    start = offset + RECORD_HEADER_V1.size
    end = start + length
    if len(view) < end:
        return None
    frame = bytes(view[start:end])
    if zlib.crc32(frame, zlib.crc32(struct.pack(">QI", received_at_ns, length))) != crc:
        raise RecordingError(f"offset {offset}: record checksum mismatch")
    return FrameRecord(received_at_ns, frame), end


# -- reading ----------------------------------------------------------------------------


class RecordingReader:
    """Reads a recording front to back; stops cleanly at a partial tail.

    ``for record in reader: ...``; afterwards ``reader.tail`` is ``"clean"`` (the file
    ended on a record boundary) or ``"partial"`` (the last record is incomplete: still
    being written, or the writer died mid-record), and ``reader.offset`` is where the
    complete records end. Reading again continues from there (to follow a live file).
    ``reader.damage`` lists the byte ranges skipped because they did not check out.
    """

    CHUNK: Final = 1 << 20

    def __init__(self, path: Path) -> None:
        self.path = Path(path)
        self.meta: dict[str, Any] = {}
        self.offset = 0
        self.tail: Tail = "clean"
        self.records = 0
        self.damage: list[framedlog.Damage] = []
        with self.path.open("rb") as f:
            head = f.read(len(MAGIC) + 4 + MAX_META_BYTES + 4)
        parsed = parse_header_versioned(head)
        if parsed is None:
            raise RecordingError(f"{self.path}: incomplete header (empty or still being created)")
        self.meta, self.offset, self.version = parsed

    @property
    def size_bytes(self) -> int:
        """The file's current size (it may grow while being written)."""
        return self.path.stat().st_size

    def __iter__(self) -> Iterator[FrameRecord]:
        if self.version == 1:
            yield from self._iter_v1()
            return
        with self.path.open("rb") as f:
            f.seek(self.offset)
            pending = b""
            while True:
                chunk = f.read(self.CHUNK)
                if chunk:
                    pending += chunk
                position = 0
                for item in framedlog.parse(pending, 0, final=False):
                    if isinstance(item, framedlog.Damage):
                        self.damage.append(item._replace(offset=self.offset))
                        self.offset += item.length
                        position = item.offset + item.length
                        continue
                    try:
                        record = _frame_record(item.payload)
                    except RecordingError:
                        self.damage.append(framedlog.Damage(self.offset, item.end - item.offset, 1))
                    else:
                        self.records += 1
                        yield record
                    self.offset += item.end - item.offset
                    position = item.end
                pending = pending[position:]
                if not chunk:
                    self.tail = "clean" if not pending else "partial"
                    return

    def _iter_v1(self) -> Iterator[FrameRecord]:
        with self.path.open("rb") as f:
            f.seek(self.offset)
            pending = b""
            position = 0
            while True:
                chunk = f.read(self.CHUNK)
                if chunk:
                    pending = pending[position:] + chunk
                    position = 0
                while True:
                    try:
                        parsed = parse_record_v1(pending, position)
                    except RecordingError as exc:
                        raise RecordingError(f"{self.path}: {exc} (+{self.offset})") from None
                    if parsed is None:
                        break
                    record, after = parsed
                    self.offset += after - position
                    position = after
                    self.records += 1
                    yield record
                if not chunk:
                    self.tail = "clean" if position == len(pending) else "partial"
                    return


def read_records(path: Path) -> list[FrameRecord]:
    """Every complete record of ``path`` (a partial tail is left out)."""
    return list(RecordingReader(path))


# -- writing ----------------------------------------------------------------------------


class RecordingWriter:
    """Appends frames to a recording without blocking the event loop.

    Use ``writer.on_frame`` as the ticker client's ``frame_listener`` and run
    ``writer.run()`` in the same ``TaskGroup``; ``writer.stop()`` makes ``run()`` write
    what is pending, fsync and close. The in-memory batch is bounded by
    ``max_pending_bytes``: if the disk falls that far behind, frames are left out of
    the recording and counted in ``dropped_frames`` (the feed itself never waits on it).
    """

    def __init__(
        self,
        path: Path,
        meta: dict[str, Any] | None = None,
        *,
        flush_interval: float = 0.2,
        max_pending_bytes: int = 64 * 1024 * 1024,
    ) -> None:
        self.path = Path(path)
        self._meta = dict(meta or {})
        self._flush_interval = flush_interval
        self._max_pending = max_pending_bytes
        self._pending: list[bytes] = []
        self._pending_bytes = 0
        self._stop = asyncio.Event()
        self._file: IO[bytes] | None = None
        self.frames = 0
        self.bytes_written = 0
        self.dropped_frames = 0

    def open(self) -> None:
        """Create the file (refusing to overwrite one) and write the header."""
        self.path.parent.mkdir(parents=True, exist_ok=True)
        self._file = self.path.open("xb")
        header = encode_header(self._meta)
        self._file.write(header)
        self._file.flush()
        self.bytes_written = len(header)

    def on_frame(self, frame: bytes, received_at_ns: int) -> None:
        """The frame listener: O(frame) memcpy, no I/O."""
        if self._pending_bytes + RECORD_HEADER.size + len(frame) > self._max_pending:
            self.dropped_frames += 1
            return
        record = encode_record(received_at_ns, frame)
        self._pending.append(record)
        self._pending_bytes += len(record)
        self.frames += 1

    async def run(self) -> None:
        """Write pending frames every ``flush_interval`` until ``stop()``; then close."""
        if self._file is None:
            self.open()
        try:
            while not self._stop.is_set():
                with contextlib.suppress(TimeoutError):
                    async with asyncio.timeout(self._flush_interval):
                        await self._stop.wait()
                await self._write_pending()
        finally:
            await self._write_pending()
            await asyncio.to_thread(self._close)

    def stop(self) -> None:
        """Make ``run()`` write what is pending and return."""
        self._stop.set()

    async def _write_pending(self) -> None:
        if not self._pending:
            return
        # Swap the batch on the loop thread; only the worker thread touches the file.
        batch, self._pending, self._pending_bytes = self._pending, [], 0
        self.bytes_written += await asyncio.to_thread(self._write, batch)

    def _write(self, batch: list[bytes]) -> int:
        assert self._file is not None
        data = b"".join(batch)
        self._file.write(data)
        # Flushed every batch so a concurrent reader sees whole records promptly.
        self._file.flush()
        return len(data)

    def _close(self) -> None:
        if self._file is not None:
            self._file.flush()
            os.fsync(self._file.fileno())
            self._file.close()
            self._file = None

    def samples(self) -> Iterator[Sample]:
        """``MetricsSource``: what the recorder wrote and left out."""
        yield catalog.RECORDER_FRAMES.sample(self.frames)
        yield catalog.RECORDER_BYTES.sample(self.bytes_written)
        yield catalog.RECORDER_DROPPED_FRAMES.sample(self.dropped_frames)
