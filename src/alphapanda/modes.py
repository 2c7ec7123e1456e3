"""The three Kite tick modes, defined once for the protocol, settings, registry, API and CLI.

``ltp`` carries the last price only, ``quote`` adds volumes and OHLC, ``full`` adds
depth, open interest and timestamps. ``MODES`` is in that order: each mode carries
everything the one before it does.
"""

from __future__ import annotations

from typing import Final, Literal

Mode = Literal["ltp", "quote", "full"]

MODE_LTP: Final = "ltp"
MODE_QUOTE: Final = "quote"
MODE_FULL: Final = "full"
MODES: Final[tuple[Mode, ...]] = (MODE_LTP, MODE_QUOTE, MODE_FULL)
