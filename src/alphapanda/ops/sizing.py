"""Bytes per tick on the wire and in the spool, measured, for the sizing table of
docs/operations.md: ``python -m alphapanda.ops.sizing``.

It runs the simulator's market model over the shipped universe, formats and encodes the
ticks with the feed's own formatter and wire encoder (every mode, JSON and msgpack),
and appends the encoded records to a real spool in a temporary folder, then prints the
average record size and the spool's bytes on disk per tick. Disk per hour of outage
follows: bytes per tick x ticks per second x 3600.
"""

from __future__ import annotations

import argparse
import tempfile
import time
from pathlib import Path

from alphapanda.instruments import load_instrument_dump
from alphapanda.modes import MODES
from alphapanda.pipeline.formatter import TickFormatter
from alphapanda.pipeline.producer import EncodedMessage
from alphapanda.pipeline.spool import Spool
from alphapanda.pipeline.wire import WireEncoder
from alphapanda.sim.config import SimConfig
from alphapanda.sim.market import Market, in_mode


def measure(ticks_per_instrument: int, csv: Path) -> list[dict[str, object]]:
    """One row per (wire format, mode): bytes per record value, headers and spool."""
    instruments, _errors = load_instrument_dump(csv)
    tradable = [i for i in instruments if i.segment != "INDICES"]
    market = Market(tradable, seed=1)
    now = int(time.time())
    ticks = [
        market.advance(i.instrument_token, now + n)
        for n in range(ticks_per_instrument)
        for i in tradable
    ]
    formatter = TickFormatter()
    rows: list[dict[str, object]] = []
    for fmt in ("json", "msgpack"):
        for mode in MODES:
            wire = WireEncoder(fmt)
            formatted = [m for t in ticks if (m := formatter.format(in_mode(t, mode)))]
            values = wire.encode_values(formatted, time.time_ns())
            headers = wire.headers()
            header_bytes = sum(len(k) + len(v) for k, v in headers)
            with tempfile.TemporaryDirectory() as folder:
                spool = Spool(Path(folder), 1 << 40)
                spool.open()
                for tick, value in zip(formatted, values, strict=True):
                    key = wire.key(tick.instrument_token)
                    spool.append(EncodedMessage(key, value, headers, tick.received_at_ns))
                spool.close()
                on_disk = sum(p.stat().st_size for p in Path(folder).iterdir())
            rows.append(
                {
                    "format": fmt,
                    "mode": mode,
                    "ticks": len(values),
                    "value_bytes": sum(map(len, values)) / len(values),
                    "header_bytes": header_bytes,
                    "spool_bytes": on_disk / len(values),
                }
            )
    return rows


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--ticks-per-instrument", type=int, default=20)
    parser.add_argument("--instruments", type=Path, default=SimConfig().instruments)
    args = parser.parse_args()
    rows = measure(args.ticks_per_instrument, args.instruments)
    print("format   mode   ticks  value B/tick  headers B  spool B/tick  spool GB/h @1k/s")
    for r in rows:
        per_hour = float(r["spool_bytes"]) * 1000 * 3600 / 1e9  # type: ignore[arg-type]
        print(
            f"{r['format']:<8} {r['mode']:<6} {r['ticks']:>6} {r['value_bytes']:>13.0f} "
            f"{r['header_bytes']:>10} {r['spool_bytes']:>13.0f} {per_hour:>17.2f}"
        )


if __name__ == "__main__":
    main()
