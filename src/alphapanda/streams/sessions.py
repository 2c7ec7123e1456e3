"""Exchange sessions: when each exchange opens (IST), and bucket alignment to that open.

Candles are aligned to the session open, not to the clock hour: a 15-minute bar of an
NSE stock starts at 09:15, 09:30, ... IST, as charting platforms and Kite's own
historical candles do. Times are kept as Unix seconds (UTC); IST is UTC+05:30 all
year (no daylight saving), so the alignment is plain arithmetic.

The exchange of an instrument is read from its token: Kite puts the segment in the
token's lowest byte. Indices (segment 9) are aligned like NSE.
"""

from __future__ import annotations

import math
from collections.abc import Mapping
from typing import Final

IST_OFFSET_SECONDS: Final = 5 * 3600 + 30 * 60
DAY_SECONDS: Final = 86_400

#: Kite segment id (token & 0xFF) -> exchange.
SEGMENT_EXCHANGE: Final[Mapping[int, str]] = {
    1: "NSE",
    2: "NFO",
    3: "CDS",
    4: "BSE",
    5: "BFO",
    6: "BCD",
    7: "MCX",
    8: "MCX",  # MCX-SX
    9: "NSE",  # indices
    12: "NCO",
}

#: Session open per exchange, as "HH:MM" IST. Overridable (``ALPHAPANDA_CANDLES__SESSION_OPENS``).
SESSION_OPENS: Final[Mapping[str, str]] = {
    "NSE": "09:15",
    "BSE": "09:15",
    "NFO": "09:15",
    "BFO": "09:15",
    "MCX": "09:00",
    "CDS": "09:00",
    "BCD": "09:00",
    "NCO": "09:00",
}

#: Candle intervals a feed may be asked for, in seconds.
INTERVALS: Final[Mapping[str, int]] = {
    "1s": 1,
    "5s": 5,
    "15s": 15,
    "1m": 60,
    "3m": 180,
    "5m": 300,
    "15m": 900,
    "30m": 1800,
    "1h": 3600,
}


def parse_hhmm(text: str) -> int:
    """Seconds after midnight of ``"HH:MM"``; ValueError if it is not a time of day."""
    hours, sep, minutes = text.partition(":")
    if not sep or not hours.isdigit() or not minutes.isdigit():
        raise ValueError(f"expected HH:MM, got {text!r}")
    h, m = int(hours), int(minutes)
    if not (0 <= h < 24 and 0 <= m < 60):
        raise ValueError(f"expected HH:MM, got {text!r}")
    return h * 3600 + m * 60


class SessionTable:
    """Session-open offsets per segment, and the bucket of a timestamp."""

    def __init__(self, opens: Mapping[str, str] | None = None) -> None:
        table = dict(SESSION_OPENS)
        table.update(opens or {})
        by_exchange = {exchange: parse_hhmm(value) for exchange, value in table.items()}
        default = by_exchange["NSE"]
        self._by_segment = [default] * 256
        for segment, exchange in SEGMENT_EXCHANGE.items():
            self._by_segment[segment] = by_exchange.get(exchange, default)

    def open_offset(self, instrument_token: int) -> int:
        """Seconds after IST midnight at which the instrument's session opens."""
        return self._by_segment[instrument_token & 0xFF]

    def bucket_start(self, instrument_token: int, t: float, interval: int) -> int:
        """Unix second at which the bucket of ``interval`` seconds holding ``t`` starts."""
        return align(math.floor(t), self.open_offset(instrument_token), interval)


def align(t: int, open_offset: int, interval: int) -> int:
    """The start (Unix seconds) of the ``interval``-second bucket holding second ``t``,
    with buckets counted from the session open of ``t``'s IST day. Ticks before the
    open (pre-open session) fall in buckets counted backwards from it."""
    ist = t + IST_OFFSET_SECONDS
    session_open = ist - ist % DAY_SECONDS + open_offset
    return session_open + ((ist - session_open) // interval) * interval - IST_OFFSET_SECONDS


def ist_day(t: int) -> int:
    """The IST calendar day of Unix second ``t`` (days since the epoch)."""
    return (t + IST_OFFSET_SECONDS) // DAY_SECONDS
