"""The instrument universe: Kite's instrument dump, parsed."""

from alphapanda.instruments.dump import (
    COLUMNS,
    Instrument,
    RowError,
    load_instrument_dump,
    parse_instrument_dump,
)

__all__ = ["COLUMNS", "Instrument", "RowError", "load_instrument_dump", "parse_instrument_dump"]
