"""An independent, naive recomputation of candles from a list of ticks (for tests).

Written from the documented rules, not from the aggregator: IST wall-clock arithmetic
through ``zoneinfo`` for the session alignment, and one pass over each instrument's
ticks in arrival order. It assumes no late ticks (each instrument's tick times never
go back into an earlier bucket), which the tests arrange or check.
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from zoneinfo import ZoneInfo

from alphapanda.pipeline.formatter import MarketTick

IST = ZoneInfo("Asia/Kolkata")
OPENS = {
    1: (9, 15),
    2: (9, 15),
    4: (9, 15),
    5: (9, 15),
    9: (9, 15),
    3: (9, 0),
    6: (9, 0),
    7: (9, 0),
}


@dataclass(frozen=True)
class NaiveCandle:
    instrument_token: int
    start: datetime
    open: float
    high: float
    low: float
    close: float
    volume: int | None
    oi: int | None
    ticks: int
    complete: bool


def tick_time(tick: MarketTick) -> datetime:
    if tick.exchange_timestamp is not None:
        return tick.exchange_timestamp
    return datetime.fromtimestamp(tick.received_at_ns / 1e9, UTC)


def bucket_of(token: int, t: datetime, seconds: int) -> datetime:
    local = t.astimezone(IST)
    hour, minute = OPENS.get(token & 0xFF, (9, 15))
    session_open = local.replace(hour=hour, minute=minute, second=0, microsecond=0)
    whole = local.replace(microsecond=0)
    steps = (whole - session_open).total_seconds() // seconds
    return (session_open + timedelta(seconds=steps * seconds)).astimezone(UTC)


def recompute(ticks: list[MarketTick], seconds: int) -> list[NaiveCandle]:
    """Candles of every bucket that had ticks, per instrument, in time order."""
    by_token: dict[int, list[MarketTick]] = {}
    for tick in ticks:
        by_token.setdefault(tick.instrument_token, []).append(tick)
    out: list[NaiveCandle] = []
    for token, series in by_token.items():
        groups: list[tuple[datetime, list[MarketTick], int | None, bool]] = []
        previous: MarketTick | None = None
        previous_day = None
        for tick in series:
            bucket = bucket_of(token, tick_time(tick), seconds)
            if groups and groups[-1][0] == bucket:
                groups[-1][1].append(tick)
            else:
                base: int | None = None
                known = (
                    previous is not None
                    and previous.volume_traded is not None
                    and bucket.astimezone(IST).date() == previous_day
                )
                if known:
                    assert previous is not None
                    base = previous.volume_traded
                groups.append((bucket, [tick], base, known))
                previous_day = bucket.astimezone(IST).date()
            previous = tick
        for bucket, group, base, known in groups:
            prices = [t.last_price for t in group]
            last = group[-1].volume_traded
            first = group[0].volume_traded
            volume = None
            complete = known
            if last is not None:
                volume = last - (base if base is not None else first if first is not None else 0)
            else:
                complete = True
            out.append(
                NaiveCandle(
                    token,
                    bucket,
                    prices[0],
                    max(prices),
                    min(prices),
                    prices[-1],
                    volume,
                    group[-1].oi,
                    len(group),
                    complete,
                )
            )
    return out
