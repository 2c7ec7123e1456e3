"""The framed log: self-delimiting, checksummed records that survive damage.

One format for every append-only file the feed writes (the disk spool, recordings)::

    record  4 B   magic b"\\xa7APL"
            u32   payload length
            u32   CRC-32 over the 8 bytes above AND the payload
            ...   payload

All integers big-endian. The magic makes a record findable after damage: a reader
that meets bytes that do not check out (a flipped bit, a torn write, garbage) does not
give up on the rest of the file; it looks for the next position where a whole record
checks out, carries on from there, and reports exactly what it skipped (offset and
length), so the caller can count what was lost instead of losing it silently. The CRC
covers the length too, so a corrupt length is caught before it is trusted.

The functions here are pure (bytes in, records and damage reports out); the callers
own the files.
"""

from __future__ import annotations

import struct
import zlib
from collections.abc import Iterator
from typing import Final, NamedTuple

MAGIC: Final = b"\xa7APL"
HEADER: Final = struct.Struct(">4sII")  # magic, payload length, crc32
# Far above any record the feed writes (a recording frame of 3000 full packets is
# ~558 kB); a larger length is corruption, not data.
MAX_PAYLOAD: Final = 64 << 20


class Record(NamedTuple):
    """A record that checked out: its payload, where it starts and where it ends."""

    offset: int
    end: int
    payload: bytes


class Damage(NamedTuple):
    """Bytes that are not a valid record: ``length`` bytes from ``offset`` were skipped.

    ``records`` is how many record starts (the magic) lie in those bytes: a best
    estimate of the records lost (at least one).
    """

    offset: int
    length: int
    records: int


def encode(payload: bytes) -> bytes:
    """One framed record carrying ``payload``."""
    return b"".join(encode_parts(payload))


def encode_parts(*parts: bytes) -> list[bytes]:
    """The record whose payload is ``parts`` joined, as the buffers to write in order
    (its header, then the parts themselves): a large payload is never copied, and its
    CRC runs without holding the interpreter lock."""
    length = sum(map(len, parts))
    if length > MAX_PAYLOAD:
        raise ValueError(f"record of {length} bytes exceeds the maximum of {MAX_PAYLOAD}")
    head = MAGIC + length.to_bytes(4, "big")
    crc = zlib.crc32(head)
    for part in parts:
        crc = zlib.crc32(part, crc)
    return [head + crc.to_bytes(4, "big"), *parts]


def _check(view: memoryview, offset: int) -> int | None:
    """The end of a valid record at ``offset``; ``None`` if it is invalid; ``-1`` if the
    bytes there look like a record's start but are not all present yet."""
    if len(view) - offset < HEADER.size:
        return -1 if MAGIC.startswith(bytes(view[offset : offset + 4])) else None
    magic, length, crc = HEADER.unpack_from(view, offset)
    if magic != MAGIC or length > MAX_PAYLOAD:
        return None
    end: int = offset + HEADER.size + length
    if len(view) < end:
        return -1
    if zlib.crc32(view[offset + HEADER.size : end], zlib.crc32(view[offset : offset + 8])) != crc:
        return None
    return end


def parse(
    data: bytes | memoryview, offset: int = 0, *, final: bool = True
) -> Iterator[Record | Damage]:
    """Records and damage reports in ``data`` from ``offset``, in file order.

    With ``final`` (the whole file is in ``data``), bytes at the end that do not form a
    whole record are reported as ``Damage``. Without it (more may follow, e.g. a file
    still being written), parsing stops before an incomplete tail so the caller can
    retry from the last ``Record.end`` once more bytes arrived.
    """
    view = memoryview(data)
    size = len(view)
    position = offset
    while position < size:
        end = _check(view, position)
        if end is not None and end >= 0:
            yield Record(position, end, bytes(view[position + HEADER.size : end]))
            position = end
            continue
        if end == -1 and not final:
            return
        # Damaged (or a torn tail): find the next position where a whole record checks out.
        resume = _resync(view, position + 1, final=final)
        stop = size if resume is None else resume
        if resume is None and not final:
            # Nothing valid after the damage yet: it may be a tail still being written.
            return
        skipped = view[position:stop]
        yield Damage(position, stop - position, max(1, _count_magic(skipped)))
        position = stop


def _resync(view: memoryview, start: int, *, final: bool) -> int | None:
    data = view.obj if isinstance(view.obj, bytes) and len(view.obj) == len(view) else bytes(view)
    assert isinstance(data, bytes)
    position = start
    while True:
        found = data.find(MAGIC, position)
        if found < 0:
            return None
        end = _check(view, found)
        if end is not None and end >= 0:
            return found
        if end == -1 and not final:
            return None
        position = found + 1


def _count_magic(view: memoryview) -> int:
    return bytes(view).count(MAGIC)
