"""The WAL on disk: numbered segment files of framed-log records.

Directory layout::

    <wal_dir>/wal-<first receive time ns, 20 digits>.log    segments, oldest first
    <wal_dir>/watermark                                      receive time (ns) up to
                                                             which every frame is resolved

One record per frame, as a framed-log record (magic, length, CRC over header and
payload) whose payload is::

    u64  received_at_ns   our receive time of the frame (strictly increasing in a run)
    u8   shard            the connection that read it
    ...  frame            the WebSocket message exactly as received

A segment's name is the receive time of its first frame, so the segments' names alone
say which segment a tick came from (its frame's receive time falls between the names
of its segment and of the next one).

Reading is pure apart from opening the files: a torn record at the end of a segment (a
crash mid-write, or a pause on a full disk) is normal and only counted as ``torn``; a
bad record with valid records after it is corruption, reported with its segment and
offset and skipped, and the valid records after it are still read.
"""

from __future__ import annotations

import os
import struct
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Final, NamedTuple

from alphapanda import framedlog

PREFIX: Final = "wal-"
SUFFIX: Final = ".log"
WATERMARK: Final = "watermark"
FRAME_HEAD: Final = struct.Struct(">QB")  # received_at_ns, shard
RECORD_OVERHEAD: Final = framedlog.HEADER.size + FRAME_HEAD.size


class WalFrame(NamedTuple):
    """One frame read back from the WAL."""

    received_at_ns: int
    shard: int
    frame: bytes


@dataclass(frozen=True, slots=True)
class Corruption:
    """Bytes of a segment that are not valid records, with valid records after them."""

    segment: str
    offset: int
    length: int
    records: int


@dataclass(slots=True)
class ReadReport:
    """What a read of the WAL found besides frames."""

    frames: int = 0
    torn: int = 0
    corrupt: list[Corruption] = field(default_factory=list)

    @property
    def corrupt_records(self) -> int:
        return sum(c.records for c in self.corrupt)


def encode_frame(received_at_ns: int, shard: int, frame: bytes) -> bytes:
    """One WAL record (framed-log record of receive time, shard and frame)."""
    return b"".join(frame_buffers(received_at_ns, shard, frame))


def frame_buffers(received_at_ns: int, shard: int, frame: bytes) -> list[bytes]:
    """``encode_frame`` as buffers to write in order, the frame itself not copied."""
    return framedlog.encode_parts(FRAME_HEAD.pack(received_at_ns, shard & 0xFF), frame)


def segment_name(first_ns: int) -> str:
    return f"{PREFIX}{first_ns:020d}{SUFFIX}"


def segment_start(name: str) -> int | None:
    """The first receive time encoded in a segment file name (``None``: not a segment)."""
    if not (name.startswith(PREFIX) and name.endswith(SUFFIX)):
        return None
    digits = name[len(PREFIX) : -len(SUFFIX)]
    return int(digits) if digits.isdigit() else None


def list_segments(directory: Path) -> list[tuple[int, Path]]:
    """``(first_ns, path)`` of every segment in ``directory``, oldest first."""
    if not directory.is_dir():
        return []
    found = []
    for entry in os.scandir(directory):
        start = segment_start(entry.name)
        if start is not None and entry.is_file():
            found.append((start, Path(entry.path)))
    found.sort()
    return found


def read_watermark(directory: Path) -> int:
    """Receive time (ns) up to which every frame is resolved (0: none yet)."""
    try:
        text = (directory / WATERMARK).read_text().strip()
    except FileNotFoundError:
        return 0
    try:
        return int(text)
    except ValueError:
        # A damaged watermark only costs a longer recovery (positions in the topic
        # still decide what is published), never a loss.
        return 0


def write_watermark(directory: Path, watermark_ns: int) -> None:
    """Replace the watermark atomically and durably (temp file, fsync, rename, dir fsync)."""
    tmp = directory / (WATERMARK + ".tmp")
    with open(tmp, "w") as f:
        f.write(f"{watermark_ns}\n")
        f.flush()
        os.fsync(f.fileno())
    os.replace(tmp, directory / WATERMARK)
    fsync_dir(directory)


def fsync_dir(directory: Path) -> None:
    fd = os.open(directory, os.O_RDONLY)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)


def parse_segment(
    data: bytes, segment: str, report: ReadReport, after_ns: int = 0
) -> Iterator[WalFrame]:
    """Frames of one segment's bytes with a receive time above ``after_ns``; damage is
    added to ``report`` (tail damage as ``torn``, anything else as corruption)."""
    pending: framedlog.Damage | None = None
    for item in framedlog.parse(data):
        if isinstance(item, framedlog.Damage):
            pending = item
            continue
        if pending is not None:
            # Valid records follow: the damage was in the middle, not a torn tail.
            report.corrupt.append(
                Corruption(segment, pending.offset, pending.length, pending.records)
            )
            pending = None
        payload = item.payload
        if len(payload) < FRAME_HEAD.size:
            report.corrupt.append(Corruption(segment, item.offset, item.end - item.offset, 1))
            continue
        received_at_ns, shard = FRAME_HEAD.unpack_from(payload)
        if received_at_ns <= after_ns:
            continue
        report.frames += 1
        yield WalFrame(received_at_ns, shard, payload[FRAME_HEAD.size :])
    if pending is not None:
        report.torn += 1


def read_wal(directory: Path, report: ReadReport, after_ns: int = 0) -> Iterator[WalFrame]:
    """Every frame of the WAL in ``directory`` after ``after_ns``, oldest first."""
    for _, path in list_segments(directory):
        data = path.read_bytes()
        yield from parse_segment(data, path.name, report, after_ns)
