#!/usr/bin/env python3
"""Generate ``data/instruments.csv``: a made-up but realistically shaped Kite instrument dump.

Deterministic (fixed seed, fixed dates), so the file only changes when this script does.
Tokens follow Kite's rule ``instrument_token = exchange_token << 8 | segment_code`` with the
segment codes of ``kiteconnect.KiteTicker.EXCHANGE_MAP`` (NSE 1, NFO 2, CDS 3, BSE 4,
BCD 6, MCX 7, indices 9), so the low byte picks the price divisor exactly as on the wire.

Usage: ``python scripts/make_instruments.py [OUTPUT]`` (default ``data/instruments.csv``).
"""

from __future__ import annotations

import csv
import random
import sys
from pathlib import Path

from alphapanda.instruments.dump import COLUMNS as HEADER

SEGMENT_CODE = {"NSE": 1, "NFO": 2, "CDS": 3, "BSE": 4, "BCD": 6, "MCX": 7, "INDICES": 9}

# Three monthly expiries (last Thursdays), fixed so the file is reproducible.
EXPIRIES = [("2026-12-31", "26DEC"), ("2027-01-28", "27JAN"), ("2027-02-25", "27FEB")]

# Real tokens of well-known indices (low byte 9), as in the real dump.
INDICES = [
    (256265, 1001, "NIFTY 50", 24150.0, "NSE"),
    (260105, 1016, "NIFTY BANK", 51800.0, "NSE"),
    (257801, 1017, "NIFTY FIN SERVICE", 23900.0, "NSE"),
    (259849, 1015, "NIFTY IT", 41200.0, "NSE"),
    (264969, 1035, "INDIA VIX", 14.5, "NSE"),
    (256777, 1003, "NIFTY MIDCAP 100", 56300.0, "NSE"),
    (261641, 1022, "NIFTY PHARMA", 22100.0, "NSE"),
    (261897, 1023, "NIFTY AUTO", 23800.0, "NSE"),
    (265, 1, "SENSEX", 79500.0, "BSE"),
    (274441, 1072, "BANKEX", 58900.0, "BSE"),
]

SYLLABLES = [
    "AR",
    "BA",
    "CO",
    "DE",
    "EL",
    "FI",
    "GA",
    "HI",
    "IN",
    "JA",
    "KO",
    "LU",
    "MA",
    "NI",
    "OR",
    "PA",
    "RA",
    "SU",
    "TA",
    "VE",
    "WI",
    "ZE",
]
SUFFIXES = ["TECH", "FIN", "POWER", "PHARMA", "STEEL", "AUTO", "INFRA", "CHEM", "BANK", "FOODS"]


class Builder:
    """Accumulates rows and hands out exchange tokens per segment."""

    def __init__(self) -> None:
        self.rows: list[list[str]] = []
        self.next_exchange_token = {
            "NSE": 2000,
            "BSE": 500000,
            "NFO": 35000,
            "CDS": 4000,
            "BCD": 3000,
            "MCX": 220000,
        }

    def add(
        self,
        *,
        exchange: str,
        segment: str,
        symbol: str,
        name: str,
        last_price: float,
        expiry: str = "",
        strike: float = 0.0,
        tick: float,
        lot: int,
        itype: str,
        code_key: str | None = None,
        tokens: tuple[int, int] | None = None,
    ) -> None:
        if tokens is None:
            exchange_token = self.next_exchange_token[exchange]
            self.next_exchange_token[exchange] += 1
            token = exchange_token << 8 | SEGMENT_CODE[code_key or exchange]
        else:
            token, exchange_token = tokens
        self.rows.append(
            [
                str(token),
                str(exchange_token),
                symbol,
                name,
                decimal(last_price),
                expiry,
                decimal(strike),
                decimal(tick),
                str(lot),
                itype,
                segment,
                exchange,
            ]
        )


def decimal(value: float) -> str:
    """Plain decimal text with every digit a 0.0025 tick needs (``%g`` would round it)."""
    return f"{value:.6f}".rstrip("0").rstrip(".")


def on_grid(value: float, tick: float) -> float:
    return round(round(value / tick) * tick, 6)


def company_names(rng: random.Random, count: int) -> list[str]:
    names: set[str] = set()
    while len(names) < count:
        stem = "".join(rng.choice(SYLLABLES) for _ in range(rng.randint(2, 3)))
        names.add(stem + rng.choice(SUFFIXES))
    return sorted(names)


def build() -> list[list[str]]:
    rng = random.Random(20261125)
    b = Builder()
    for token, _exchange_token, name, price, exchange in INDICES:
        # The real dump has tick_size 0 and lot_size 0 for indices.
        b.add(
            exchange=exchange,
            segment="INDICES",
            symbol=name,
            name=name,
            last_price=price,
            tick=0,
            lot=0,
            itype="EQ",
            tokens=(token, token >> 8),
        )

    companies = company_names(rng, 190)
    prices = {c: round(rng.lognormvariate(6.3, 1.0), 2) for c in companies}
    nse, bse = companies[:150], companies[150:] + companies[:20]
    for company in nse:
        tick = 0.01 if prices[company] < 250 else 0.05
        b.add(
            exchange="NSE",
            segment="NSE",
            symbol=company,
            name=company + " LTD",
            last_price=on_grid(prices[company], tick),
            tick=tick,
            lot=1,
            itype="EQ",
        )
    for company in bse:
        b.add(
            exchange="BSE",
            segment="BSE",
            symbol=company,
            name=company + " LTD",
            last_price=on_grid(prices[company] * 1.001, 0.05),
            tick=0.05,
            lot=1,
            itype="EQ",
        )

    # NFO: futures on 30 stocks and two indices, options on two indices and 8 stocks.
    fno_stocks = nse[:30]
    lots = {c: rng.choice([125, 250, 300, 500, 700, 1000, 1500]) for c in fno_stocks}
    underlyings = [("NIFTY", 24150.0, 25, 50.0), ("BANKNIFTY", 51800.0, 15, 100.0)] + [
        (c, prices[c], lots[c], max(5.0, round(prices[c] * 0.02 / 5) * 5)) for c in fno_stocks
    ]
    for name, spot, lot, _step in underlyings:
        for i, (expiry, code) in enumerate(EXPIRIES):
            b.add(
                exchange="NFO",
                segment="NFO-FUT",
                symbol=f"{name}{code}FUT",
                name=name,
                last_price=on_grid(spot * (1.004 + 0.004 * i), 0.05),
                expiry=expiry,
                tick=0.05,
                lot=lot,
                itype="FUT",
            )
    for name, spot, lot, step in underlyings[:10]:
        expiry, code = EXPIRIES[0]
        atm = round(spot / step) * step
        for k in range(-4, 5):
            strike = atm + k * step
            for itype in ("CE", "PE"):
                intrinsic = max(0.0, spot - strike) if itype == "CE" else max(0.0, strike - spot)
                premium = on_grid(intrinsic + spot * 0.012 + rng.uniform(0, spot * 0.004), 0.05)
                b.add(
                    exchange="NFO",
                    segment="NFO-OPT",
                    symbol=f"{name}{code}{strike:g}{itype}",
                    name=name,
                    last_price=premium,
                    expiry=expiry,
                    strike=strike,
                    tick=0.05,
                    lot=lot,
                    itype=itype,
                )

    # Currency derivatives on NSE (CDS) and BSE (BCD): tick 0.0025, prices ~ 55-105.
    pairs = [("USDINR", 84.1525), ("EURINR", 89.4400), ("GBPINR", 104.8125), ("JPYINR", 55.6150)]
    for exchange in ("CDS", "BCD"):
        for pair, spot in pairs:
            for i, (expiry, code) in enumerate(EXPIRIES):
                b.add(
                    exchange=exchange,
                    segment=f"{exchange}-FUT",
                    symbol=f"{pair}{code}FUT",
                    name=pair,
                    last_price=on_grid(spot + 0.12 * (i + 1), 0.0025),
                    expiry=expiry,
                    tick=0.0025,
                    lot=1,
                    itype="FUT",
                )
            expiry, code = EXPIRIES[0]
            atm = round(spot * 4) / 4
            for k in range(-3, 4):
                strike = atm + k * 0.25
                for itype in ("CE", "PE"):
                    premium = on_grid(0.05 + rng.uniform(0.02, 0.6), 0.0025)
                    b.add(
                        exchange=exchange,
                        segment=f"{exchange}-OPT",
                        symbol=f"{pair}{code}{strike:g}{itype}",
                        name=pair,
                        last_price=premium,
                        expiry=expiry,
                        strike=strike,
                        tick=0.0025,
                        lot=1,
                        itype=itype,
                    )

    # Commodities (MCX): futures with their own tick sizes, a few options.
    commodities = [
        ("GOLD", 76250.0, 1.0, 1),
        ("GOLDM", 76180.0, 1.0, 1),
        ("SILVER", 91500.0, 1.0, 1),
        ("SILVERM", 91420.0, 1.0, 1),
        ("CRUDEOIL", 5980.0, 1.0, 100),
        ("CRUDEOILM", 5978.0, 1.0, 10),
        ("NATURALGAS", 265.4, 0.1, 1250),
        ("COPPER", 812.35, 0.05, 2500),
        ("ZINC", 278.6, 0.05, 5000),
        ("ALUMINIUM", 241.15, 0.05, 5000),
        ("LEAD", 182.4, 0.05, 5000),
        ("NICKEL", 1380.2, 0.1, 1500),
    ]
    for name, spot, tick, lot in commodities:
        for i, (expiry, code) in enumerate(EXPIRIES):
            b.add(
                exchange="MCX",
                segment="MCX-FUT",
                symbol=f"{name}{code}FUT",
                name=name,
                last_price=on_grid(spot * (1.002 + 0.003 * i), tick),
                expiry=expiry,
                tick=tick,
                lot=lot,
                itype="FUT",
            )
    for name, spot, _tick, lot in commodities[:4]:
        expiry, code = EXPIRIES[0]
        step = 100.0 if spot < 80000 else 250.0
        atm = round(spot / step) * step
        for k in range(-3, 4):
            strike = atm + k * step
            for itype in ("CE", "PE"):
                premium = on_grid(spot * 0.01 + rng.uniform(0, spot * 0.01), 0.5)
                b.add(
                    exchange="MCX",
                    segment="MCX-OPT",
                    symbol=f"{name}{code}{strike:g}{itype}",
                    name=name,
                    last_price=premium,
                    expiry=expiry,
                    strike=strike,
                    tick=0.5,
                    lot=lot,
                    itype=itype,
                )
    return b.rows


def main() -> None:
    out = (
        Path(sys.argv[1])
        if len(sys.argv) > 1
        else Path(__file__).resolve().parents[1] / "data" / "instruments.csv"
    )
    out.parent.mkdir(parents=True, exist_ok=True)
    rows = build()
    with out.open("w", newline="", encoding="utf-8") as handle:
        writer = csv.writer(handle, lineterminator="\n")
        writer.writerow(HEADER)
        writer.writerows(rows)
    print(f"wrote {len(rows)} instruments to {out}")


if __name__ == "__main__":
    main()
