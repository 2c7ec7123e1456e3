"""The instrument-dump parser: good rows kept, bad rows reported with their line numbers."""

from __future__ import annotations

import datetime as dt
from pathlib import Path

from alphapanda.instruments import COLUMNS, Instrument, RowError, load_instrument_dump

ROOT = Path(__file__).resolve().parents[2]
HEADER = ",".join(COLUMNS)

# Kite's segment codes (kiteconnect.KiteTicker.EXCHANGE_MAP) by dump segment.
SEGMENT_CODES = {
    "NSE": 1,
    "NFO-FUT": 2,
    "NFO-OPT": 2,
    "CDS-FUT": 3,
    "CDS-OPT": 3,
    "BSE": 4,
    "BCD-FUT": 6,
    "BCD-OPT": 6,
    "MCX-FUT": 7,
    "MCX-OPT": 7,
    "INDICES": 9,
}


def test_real_shaped_rows_are_typed() -> None:
    text = "\n".join(
        [
            HEADER,
            "256265,1001,NIFTY 50,NIFTY 50,0,,0,0,0,EQ,INDICES,NSE",
            "408065,1594,INFY,INFOSYS,1520.5,,0,0.05,1,EQ,NSE,NSE",
            "1024003,4000,USDINR26DECFUT,USDINR,84.2725,2026-12-31,0,0.0025,1,FUT,CDS-FUT,CDS",
            "",
        ]
    )
    instruments, errors = load_instrument_dump(text)
    assert errors == []
    assert instruments[0] == Instrument(
        instrument_token=256265,
        exchange_token=1001,
        tradingsymbol="NIFTY 50",
        name="NIFTY 50",
        last_price=0.0,
        expiry=None,
        strike=0.0,
        tick_size=0.0,
        lot_size=0,
        instrument_type="EQ",
        segment="INDICES",
        exchange="NSE",
    )
    assert instruments[0].segment_code == 9
    assert instruments[2].expiry == dt.date(2026, 12, 31)
    assert instruments[2].tick_size == 0.0025
    assert instruments[2].segment_code == 3


def test_bad_rows_are_reported_by_line_and_good_rows_kept() -> None:
    text = "\n".join(
        [
            HEADER,  # line 1
            "408065,1594,INFY,INFOSYS,1520.5,,0,0.05,1,EQ,NSE,NSE",  # 2 good
            "abc,1594,X,X,1,,0,0.05,1,EQ,NSE,NSE",  # 3 token not an int
            "408321,1595,TCS,TCS,3900,,0,0.05,1,EQ,NSE",  # 4 missing a field
            "408577,1596,WIPRO,WIPRO,480,31-12-2026,0,0.05,1,EQ,NSE,NSE",  # 5 bad date
            "408833,1597,HDFC,HDFC,1600,,0,-0.05,1,EQ,NSE,NSE",  # 6 negative tick
            "408065,1594,INFY,INFOSYS,1520.5,,0,0.05,1,EQ,NSE,NSE",  # 7 duplicate of 2
            "409089,1598,ITC,ITC,410.2,,0,0.05,1,EQ,NSE,NSE,extra",  # 8 too many fields
            "409345,1599,,X,1,,0,0.05,1,EQ,NSE,NSE",  # 9 empty symbol
            "409601,1600,SBIN,SBI,800.1,,0,0.05,1,EQ,NSE,NSE",  # 10 good
        ]
    )
    instruments, errors = load_instrument_dump(text + "\n")
    assert [i.tradingsymbol for i in instruments] == ["INFY", "SBIN"]
    assert [e.line for e in errors] == [3, 4, 5, 6, 7, 8, 9]
    by_line = {e.line: e.message for e in errors}
    assert "instrument_token" in by_line[3]
    assert "expiry" in by_line[5]
    assert "tick_size" in by_line[6]
    assert "duplicate of line 2" in by_line[7]
    assert "tradingsymbol" in by_line[9]


def test_missing_header_column_is_one_error() -> None:
    text = "instrument_token,tradingsymbol\n1,X\n"
    instruments, errors = load_instrument_dump(text)
    assert instruments == []
    assert len(errors) == 1
    assert errors[0].line == 1
    assert "exchange_token" in errors[0].message


def test_columns_found_by_name_in_any_order(tmp_path: Path) -> None:
    reordered = list(reversed(COLUMNS))
    row = "408065,1594,INFY,INFOSYS,1520.5,,0,0.05,1,EQ,NSE,NSE"
    values = dict(zip(COLUMNS, row.split(","), strict=True))
    path = tmp_path / "dump.csv"
    path.write_text(",".join(reordered) + "\n" + ",".join(values[c] for c in reordered) + "\n")
    instruments, errors = load_instrument_dump(path)
    assert errors == []
    assert instruments[0].instrument_token == 408065
    assert instruments[0].tradingsymbol == "INFY"
    # A str without a newline is a path too.
    assert load_instrument_dump(str(path)) == (instruments, [])


def test_shipped_universe_is_clean_and_tokens_carry_their_segment() -> None:
    instruments, errors = load_instrument_dump(ROOT / "data" / "instruments.csv")
    assert errors == []
    assert len(instruments) >= 500
    assert {i.segment for i in instruments} == set(SEGMENT_CODES)
    for instrument in instruments:
        assert instrument.segment_code == SEGMENT_CODES[instrument.segment], instrument
        assert instrument.instrument_token >> 8 == instrument.exchange_token, instrument
        if instrument.segment != "INDICES":
            assert instrument.tick_size > 0
            assert instrument.lot_size >= 1
            ticks = instrument.last_price / instrument.tick_size
            assert abs(ticks - round(ticks)) < 1e-6, instrument
        if instrument.instrument_type in ("FUT", "CE", "PE"):
            assert instrument.expiry is not None


def test_row_error_is_plain_data() -> None:
    assert RowError(3, "x") == RowError(line=3, message="x")
