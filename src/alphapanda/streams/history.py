"""Recent closed candles per instrument, for the status page's chart.

Kept in flat ``array('d')`` rings (``HISTORY_BARS`` bars × 7 doubles ≈ 3.4 kB per
instrument, ~30 MB for 9,000 instruments) rather than objects, so the history costs
the garbage collector nothing and memory stays bounded by the number of instruments.
"""

from __future__ import annotations

import math
from array import array
from typing import Any, Final

from alphapanda.streams.candles import Candle, to_datetime

HISTORY_BARS: Final = 60
_FIELDS: Final = 7  # start, open, high, low, close, volume (nan: none), complete


class CandleHistory:
    """The last ``bars`` closed candles of one interval, per instrument."""

    def __init__(self, interval: str, bars: int = HISTORY_BARS) -> None:
        self.interval = interval
        self._bars = bars
        self._rings: dict[
            int, tuple[array[float], list[int]]
        ] = {}  # token -> (ring, [next, count])

    def record(self, candle: Candle) -> None:
        entry = self._rings.get(candle.instrument_token)
        if entry is None:
            entry = self._rings[candle.instrument_token] = (
                array("d", bytes(8 * _FIELDS * self._bars)),
                [0, 0],
            )
        ring, cursor = entry
        base = cursor[0] * _FIELDS
        ring[base : base + _FIELDS] = array(
            "d",
            (
                candle.start.timestamp(),
                candle.open,
                candle.high,
                candle.low,
                candle.close,
                math.nan if candle.volume is None else float(candle.volume),
                1.0 if candle.complete else 0.0,
            ),
        )
        cursor[0] = (cursor[0] + 1) % self._bars
        cursor[1] = min(cursor[1] + 1, self._bars)

    def recent(self, token: int, limit: int | None = None) -> list[dict[str, Any]]:
        """Oldest first, as plain data."""
        entry = self._rings.get(token)
        if entry is None:
            return []
        ring, (nxt, count) = entry
        n = min(count, limit or count)
        out = []
        for i in range(count - n, count):
            slot = (nxt - count + i) % self._bars
            start, o, h, low, c, v, complete = ring[slot * _FIELDS : (slot + 1) * _FIELDS]
            out.append(
                {
                    "start": to_datetime(int(start)).isoformat().replace("+00:00", "Z"),
                    "open": o,
                    "high": h,
                    "low": low,
                    "close": c,
                    "volume": None if math.isnan(v) else int(v),
                    "complete": bool(complete),
                }
            )
        return out
