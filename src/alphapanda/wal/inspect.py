"""Look inside a WAL directory: ``python -m alphapanda.wal.inspect [WAL_DIR]``.

Prints the watermark, then per segment: its size, frames past the watermark, ticks they
decode to, the receive-time range, torn tails and corrupt spans (with offsets). Read
only: safe while the feed runs (the segment being written may end in a torn record).
"""

from __future__ import annotations

import sys
from datetime import UTC, datetime
from pathlib import Path

from alphapanda.kite.protocol import decode_message
from alphapanda.wal.segments import ReadReport, list_segments, parse_segment, read_watermark


def _when(ns: int) -> str:
    return datetime.fromtimestamp(ns / 1e9, UTC).isoformat(timespec="milliseconds")


def describe(directory: Path) -> list[str]:
    watermark = read_watermark(directory)
    lines = [f"{directory}: watermark {watermark} ({_when(watermark) if watermark else 'none'})"]
    segments = list_segments(directory)
    if not segments:
        lines.append("  no segments (nothing unresolved)")
    for _, path in segments:
        report = ReadReport()
        frames = ticks = 0
        first = last = 0
        for frame in parse_segment(path.read_bytes(), path.name, report, watermark):
            frames += 1
            ticks += len(decode_message(frame.frame, frame.received_at_ns).ticks)
            first = first or frame.received_at_ns
            last = frame.received_at_ns
        span = f"{_when(first)} .. {_when(last)}" if frames else "-"
        lines.append(
            f"  {path.name}: {path.stat().st_size:,} B, {frames:,} frames, {ticks:,} ticks, "
            f"{span}, torn tail: {'yes' if report.torn else 'no'}"
        )
        for damage in report.corrupt:
            lines.append(
                f"    corrupt at offset {damage.offset}: {damage.length} B (~{damage.records} records)"
            )
    return lines


def main(argv: list[str]) -> int:
    directory = Path(argv[0]) if argv else Path(".alphapanda/wal")
    if not directory.is_dir():
        print(f"{directory}: no such directory", file=sys.stderr)
        return 2
    print("\n".join(describe(directory)))
    return 0


if __name__ == "__main__":
    raise SystemExit(main(sys.argv[1:]))
