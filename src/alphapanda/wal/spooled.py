"""The positions of the messages in the disk spool.

The spool replays its messages itself (before anything of the new run), so crash
recovery must count them as published. Read only, straight from the segment files (a
framed-log record per message, payload msgpack ``[key, value, headers,
received_at_ns]``): every record counts, also those before the replay cursor, which
were replayed and acked and so are in the topic anyway. A set, not a newest position:
the spool can hold newer ticks of an instrument than ones a crash left unpublished
(those were still in librdkafka's queue when newer ones were spooled). Damaged records are skipped
(the spool counts them itself).
"""

from __future__ import annotations

from pathlib import Path

import msgspec

from alphapanda import framedlog
from alphapanda.pipeline.wire import position_of

_Payload = tuple[bytes, bytes, list[tuple[str, bytes]], int]
_DECODER = msgspec.msgpack.Decoder(_Payload)


def spooled_positions(spool_dir: Path) -> set[tuple[int, int, int]]:
    """``(instrument, receive time, packet index)`` of every message in the spool."""
    found: set[tuple[int, int, int]] = set()
    for path in sorted(spool_dir.glob("segment-*.log")):
        try:
            data = path.read_bytes()
        except OSError:
            continue
        for item in framedlog.parse(data):
            if isinstance(item, framedlog.Damage):
                continue
            try:
                key, _, headers, received_at_ns = _DECODER.decode(item.payload)
                token = int(key)
            except (msgspec.DecodeError, msgspec.ValidationError, ValueError):
                continue
            found.add((token, received_at_ns, position_of(headers) or 0))
    return found
