"""Parsing Kite Connect's instrument dump (the CSV served at ``/instruments``).

Pure: text in, typed rows out. A bad row never spoils the file: it is reported with its
line number and the good rows are kept, because the real dump is tens of thousands of
lines and one odd row must not stop the feed from starting.
"""

from __future__ import annotations

import csv
import datetime as dt
import io
from collections.abc import Iterable
from pathlib import Path
from typing import Final

import msgspec

COLUMNS: Final[tuple[str, ...]] = (
    "instrument_token",
    "exchange_token",
    "tradingsymbol",
    "name",
    "last_price",
    "expiry",
    "strike",
    "tick_size",
    "lot_size",
    "instrument_type",
    "segment",
    "exchange",
)


class Instrument(msgspec.Struct, frozen=True):
    """One row of the instrument dump, typed. ``expiry`` is None for non-derivatives."""

    instrument_token: int
    exchange_token: int
    tradingsymbol: str
    name: str
    last_price: float
    expiry: dt.date | None
    strike: float
    tick_size: float
    lot_size: int
    instrument_type: str
    segment: str
    exchange: str

    @property
    def segment_code(self) -> int:
        """Kite's segment code, carried in the token's low byte (1 NSE, 3 CDS, 9 indices, ...)."""
        return self.instrument_token & 0xFF


class RowError(msgspec.Struct, frozen=True):
    """A row that was skipped: its 1-based line number in the file and why."""

    line: int
    message: str


def _parse_row(row: dict[str, str]) -> Instrument:
    """One CSV row → Instrument; raises ValueError naming the offending column."""

    def text(column: str) -> str:
        return row[column].strip()

    def integer(column: str, minimum: int) -> int:
        raw = text(column)
        try:
            value = int(raw)
        except ValueError:
            raise ValueError(f"{column}: not an integer: {raw!r}") from None
        if value < minimum:
            raise ValueError(f"{column}: must be >= {minimum}, got {value}")
        return value

    def number(column: str) -> float:
        raw = text(column)
        if raw == "":
            return 0.0
        try:
            value = float(raw)
        except ValueError:
            raise ValueError(f"{column}: not a number: {raw!r}") from None
        if not (value >= 0.0 and value != float("inf")):
            raise ValueError(f"{column}: must be a finite number >= 0, got {raw!r}")
        return value

    token = integer("instrument_token", 1)
    if token > 0xFFFFFFFF:
        raise ValueError(f"instrument_token: does not fit in 32 bits: {token}")
    expiry_raw = text("expiry")
    expiry: dt.date | None = None
    if expiry_raw:
        try:
            expiry = dt.date.fromisoformat(expiry_raw)
        except ValueError:
            raise ValueError(f"expiry: not a YYYY-MM-DD date: {expiry_raw!r}") from None
    symbol = text("tradingsymbol")
    if not symbol:
        raise ValueError("tradingsymbol: empty")
    return Instrument(
        instrument_token=token,
        exchange_token=integer("exchange_token", 0),
        tradingsymbol=symbol,
        name=text("name"),
        last_price=number("last_price"),
        expiry=expiry,
        strike=number("strike"),
        # The real dump has tick_size 0 and lot_size 0 for indices, so 0 is legal.
        tick_size=number("tick_size"),
        lot_size=integer("lot_size", 0),
        instrument_type=text("instrument_type"),
        segment=text("segment"),
        exchange=text("exchange"),
    )


def parse_instrument_dump(text: str) -> tuple[list[Instrument], list[RowError]]:
    """Parse dump text. Columns are found by header name (order and extra columns don't
    matter); a missing column is one error on line 1 and no rows. Duplicate tokens keep
    the first row."""
    reader = csv.DictReader(io.StringIO(text, newline=""))
    header = reader.fieldnames or []
    missing = [c for c in COLUMNS if c not in header]
    if missing:
        return [], [RowError(1, f"header: missing column(s) {', '.join(missing)}")]
    instruments: list[Instrument] = []
    errors: list[RowError] = []
    seen: dict[int, int] = {}
    for row in reader:
        # line_num is the reader's physical line after this row, which is the row's own
        # line unless a quoted field spans lines (then it points at the row's last line).
        line = reader.line_num
        if None in row or any(value is None for value in row.values()):
            errors.append(RowError(line, f"expected {len(header)} fields"))
            continue
        try:
            instrument = _parse_row(row)
        except ValueError as exc:
            errors.append(RowError(line, str(exc)))
            continue
        first = seen.get(instrument.instrument_token)
        if first is not None:
            errors.append(
                RowError(
                    line,
                    f"instrument_token {instrument.instrument_token}: duplicate of line {first}",
                )
            )
            continue
        seen[instrument.instrument_token] = line
        instruments.append(instrument)
    return instruments, errors


def load_instrument_dump(path_or_text: Path | str) -> tuple[list[Instrument], list[RowError]]:
    """Load an instrument dump from a file (a ``Path``, or a ``str`` without newlines) or
    from CSV text (a ``str`` containing a newline). Returns the good rows and the errors.
    Raises OSError only if the file cannot be read."""
    if isinstance(path_or_text, str) and "\n" in path_or_text:
        return parse_instrument_dump(path_or_text)
    with Path(path_or_text).open(encoding="utf-8-sig", newline="") as handle:
        return parse_instrument_dump(handle.read())


def format_instrument_dump(instruments: Iterable[Instrument]) -> str:
    """Instruments as Kite's dump CSV (what ``GET /instruments`` serves); parses back
    to the same rows with ``parse_instrument_dump``."""
    out = io.StringIO(newline="")
    writer = csv.writer(out, lineterminator="\n")
    writer.writerow(COLUMNS)
    for i in instruments:
        writer.writerow(
            [
                i.instrument_token,
                i.exchange_token,
                i.tradingsymbol,
                i.name,
                f"{i.last_price:g}",
                i.expiry.isoformat() if i.expiry else "",
                f"{i.strike:g}",
                f"{i.tick_size:g}",
                i.lot_size,
                i.instrument_type,
                i.segment,
                i.exchange,
            ]
        )
    return out.getvalue()
