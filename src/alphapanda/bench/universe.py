"""The instrument universes of the benchmarks: the simulator's CSV, and a synthetic
universe of any size, for load benchmarks and tests.

The shipped ``data/instruments.csv`` holds ~700 instruments; Kite's limits are 3,000
per connection and 9,000 per API key. ``write_universe`` writes a dump of ``count`` NSE
equities in the Kite layout (``instrument_token = exchange_token << 8 | 1``), which the
simulator and the feed load like the real one.
"""

from __future__ import annotations

import csv
from pathlib import Path
from typing import Final

from alphapanda.instruments.dump import COLUMNS
from alphapanda.settings import Settings
from alphapanda.sim.config import SimConfig

_FIRST_EXCHANGE_TOKEN: Final = 700_000
_NSE: Final = 1


def simulator_csv(settings: Settings) -> Path:
    """The instrument CSV a benchmark streams: the configured one, else the simulator's
    (``data/instruments.csv``), relative paths against the working directory."""
    return (settings.feed.instruments_csv or SimConfig().instruments).resolve()


def universe_tokens(count: int) -> list[int]:
    """The instrument tokens ``write_universe(path, count)`` writes, in order."""
    return [(_FIRST_EXCHANGE_TOKEN + i) << 8 | _NSE for i in range(count)]


def write_universe(path: Path, count: int) -> Path:
    """Write a dump of ``count`` synthetic NSE equities to ``path``; returns ``path``."""
    with path.open("w", newline="") as out:
        writer = csv.DictWriter(out, fieldnames=list(COLUMNS))
        writer.writeheader()
        for i, token in enumerate(universe_tokens(count)):
            row = {
                "instrument_token": token,
                "exchange_token": token >> 8,
                "tradingsymbol": f"BENCH{i:05d}",
                "name": f"BENCH {i:05d}",
                "last_price": 100 + i % 900,
                "expiry": "",
                "strike": 0,
                "tick_size": 0.05,
                "lot_size": 1,
                "instrument_type": "EQ",
                "segment": "NSE",
                "exchange": "NSE",
            }
            writer.writerow({column: row.get(column, "") for column in COLUMNS})
    return path
