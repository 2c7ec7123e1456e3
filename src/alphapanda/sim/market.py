"""The simulated market: a seeded random walk per instrument, pure and clock-free.

Every call to :meth:`Market.advance` is one trade of one instrument. The invariant the
whole project leans on (the sequence ledger): ``volume_traded`` grows by
exactly ``last_traded_quantity`` with each tick, so a consumer that sees two ticks of an
instrument can tell whether it missed any in between.

Each instrument has its own ``random.Random`` seeded from (seed, token), so an
instrument's price path depends only on how many ticks it has produced, not on which
other instruments were subscribed or in what order they were served.
"""

from __future__ import annotations

import random
from collections.abc import Iterable

import msgspec

from alphapanda.instruments import Instrument
from alphapanda.kite.protocol import (
    MODE_FULL,
    MODE_LTP,
    MODE_QUOTE,
    SEGMENT_BCD,
    SEGMENT_CDS,
    SEGMENT_INDICES,
    DepthEntry,
    Tick,
    compute_change,
)

DEPTH_LEVELS = 5

# Tick sizes when the dump has none (indices carry tick_size 0 in Kite's dump).
_DEFAULT_TICK = 0.05
_CURRENCY_SEGMENTS = frozenset({SEGMENT_CDS, SEGMENT_BCD})
_DERIVATIVE_TYPES = frozenset({"FUT", "CE", "PE"})

# Random-walk step in ticks, by cumulative probability: mostly small moves, as in a
# liquid book. Precomputed so a step costs one random() and a short scan.
_STEPS: tuple[tuple[float, int], ...] = (
    (0.05, -2),
    (0.30, -1),
    (0.70, 0),
    (0.95, 1),
    (1.00, 2),
)


def _default_price(instrument: Instrument, rng: random.Random) -> float:
    """A sensible price scale per segment for dumps that carry ``last_price`` 0."""
    segment = instrument.segment_code
    if segment in _CURRENCY_SEGMENTS:
        return rng.uniform(70.0, 90.0)
    if segment == SEGMENT_INDICES:
        return rng.uniform(10_000.0, 25_000.0)
    if instrument.instrument_type in ("CE", "PE"):
        return rng.uniform(20.0, 400.0)
    return rng.uniform(100.0, 3_000.0)


class _Book:
    """The mutable state of one instrument. Prices are kept as integer tick counts so
    every price the simulator emits lies exactly on the instrument's tick grid."""

    __slots__ = (
        "buy_quantity",
        "close",
        "count",
        "depth_rng",
        "derivative",
        "high",
        "index",
        "lot",
        "low",
        "oi",
        "oi_high",
        "oi_low",
        "open",
        "price",
        "rng",
        "sell_quantity",
        "tick_size",
        "token",
        "turnover",
        "volume",
    )

    def __init__(self, instrument: Instrument, seed: int) -> None:
        token = instrument.instrument_token
        # An int seed is hashed deterministically (unlike str/bytes with PYTHONHASHSEED).
        self.rng = rng = random.Random(seed * 1_000_003 + token)
        # Depth draws come from their own stream so that building depth (or not, when
        # nobody is in full mode) never shifts the price/volume path.
        self.depth_rng = random.Random(seed * 1_000_003 + token + 0x5EED_0000_0000)
        self.token = token
        self.index = instrument.segment_code == SEGMENT_INDICES
        self.derivative = instrument.instrument_type in _DERIVATIVE_TYPES
        self.tick_size = instrument.tick_size if instrument.tick_size > 0 else _DEFAULT_TICK
        self.lot = max(1, instrument.lot_size)
        base = (
            instrument.last_price if instrument.last_price > 0 else _default_price(instrument, rng)
        )
        self.close = max(1, round(base / self.tick_size))
        self.open = max(1, self.close + rng.randint(-3, 3))
        self.price = self.open
        self.high = self.low = self.open
        self.volume = 0
        self.turnover = 0.0
        self.count = 0
        self.buy_quantity = self.lot * rng.randint(500, 5_000)
        self.sell_quantity = self.lot * rng.randint(500, 5_000)
        self.oi = self.oi_high = self.oi_low = (
            self.lot * rng.randint(1_000, 50_000) if self.derivative else 0
        )

    def step_price(self) -> None:
        draw = self.rng.random()
        step = 0
        for threshold, ticks in _STEPS:
            if draw < threshold:
                step = ticks
                break
        price = self.price + step
        # Reflect at ±50% of the previous close so a long run never walks to zero.
        if price < self.close // 2 or price < 1:
            price = self.price + abs(step)
        elif price > self.close * 3 // 2:
            price = self.price - abs(step)
        self.price = price
        if price > self.high:
            self.high = price
        if price < self.low:
            self.low = price


class Market:
    """Price, volume, depth and OI for a universe of instruments.

    ``advance(token, now_s)`` produces that instrument's next trade as a ``Tick`` in its
    richest mode (full, or index-full for indices); callers narrow it to the mode a
    subscriber asked for with :func:`in_mode`. ``now_s`` (epoch seconds) is passed in:
    the model never reads a clock.
    """

    def __init__(self, instruments: Iterable[Instrument], seed: int = 0) -> None:
        self._instruments = {i.instrument_token: i for i in instruments}
        self._seed = seed
        self._books: dict[int, _Book] = {}

    def __contains__(self, token: object) -> bool:
        return token in self._instruments

    def __len__(self) -> int:
        return len(self._instruments)

    @property
    def tokens(self) -> list[int]:
        """Every instrument token of the universe, in dump order."""
        return list(self._instruments)

    def instrument(self, token: int) -> Instrument:
        return self._instruments[token]

    def ticks_generated(self, token: int) -> int:
        """How many ticks this instrument has produced so far."""
        book = self._books.get(token)
        return 0 if book is None else book.count

    def _book(self, token: int) -> _Book:
        book = self._books.get(token)
        if book is None:
            # Lazily: a real dump has ~100k rows and most are never subscribed.
            book = self._books[token] = _Book(self._instruments[token], self._seed)
        return book

    def advance(self, token: int, now_s: int, mode: str = MODE_FULL) -> Tick:
        """The instrument's next trade, as a tick of ``mode`` (the richest mode any
        subscriber asked for; narrow it for the others with :func:`in_mode`). The mode
        only decides what is built, never the price/volume path: skipping depth when
        nobody is in full mode is free."""
        book = self._book(token)
        book.count += 1
        book.step_price()
        tick_size = book.tick_size
        price = book.price * tick_size
        if book.index:
            return _index_tick(book, price, now_s, mode)
        rng = book.rng
        # Skewed towards small trades, in whole lots, like a real tape.
        quantity = book.lot * (1 + int(rng.random() ** 3 * 40))
        book.volume += quantity
        book.turnover += price * quantity
        book.buy_quantity = max(book.lot, book.buy_quantity + book.lot * rng.randint(-20, 20))
        book.sell_quantity = max(book.lot, book.sell_quantity + book.lot * rng.randint(-20, 20))
        if book.derivative:
            book.oi = max(book.lot, book.oi + book.lot * rng.randint(-5, 5))
            if book.oi > book.oi_high:
                book.oi_high = book.oi
            if book.oi < book.oi_low:
                book.oi_low = book.oi
        if mode == MODE_LTP:
            return Tick(token, MODE_LTP, True, price)
        close = book.close * tick_size
        if mode == MODE_QUOTE:
            return Tick(
                instrument_token=token,
                mode=MODE_QUOTE,
                tradable=True,
                last_price=price,
                last_traded_quantity=quantity,
                average_traded_price=book.turnover / book.volume,
                volume_traded=book.volume,
                total_buy_quantity=book.buy_quantity,
                total_sell_quantity=book.sell_quantity,
                open=book.open * tick_size,
                high=book.high * tick_size,
                low=book.low * tick_size,
                close=close,
                change=compute_change(price, close),
            )
        depth_buy, depth_sell = _depth(book, book.depth_rng)
        return Tick(
            instrument_token=token,
            mode=MODE_FULL,
            tradable=True,
            last_price=price,
            last_traded_quantity=quantity,
            average_traded_price=book.turnover / book.volume,
            volume_traded=book.volume,
            total_buy_quantity=book.buy_quantity,
            total_sell_quantity=book.sell_quantity,
            open=book.open * tick_size,
            high=book.high * tick_size,
            low=book.low * tick_size,
            close=close,
            change=compute_change(price, close),
            last_trade_time=now_s,
            oi=book.oi,
            oi_day_high=book.oi_high,
            oi_day_low=book.oi_low,
            exchange_timestamp=now_s,
            depth_buy=depth_buy,
            depth_sell=depth_sell,
        )


def _index_tick(book: _Book, price: float, now_s: int, mode: str) -> Tick:
    token = book.token
    if mode == MODE_LTP:
        return Tick(token, MODE_LTP, False, price)
    tick_size = book.tick_size
    close = book.close * tick_size
    return Tick(
        instrument_token=token,
        mode=mode,
        tradable=False,
        last_price=price,
        open=book.open * tick_size,
        high=book.high * tick_size,
        low=book.low * tick_size,
        close=close,
        change=compute_change(price, close),
        exchange_timestamp=now_s if mode == MODE_FULL else None,
    )


def in_mode(tick: Tick, mode: str) -> Tick:
    """``tick`` (as produced by :meth:`Market.advance`) with only what ``mode`` carries,
    i.e. what a client subscribed in that mode receives."""
    if mode == MODE_FULL:
        return tick
    if mode == MODE_LTP:
        return Tick(tick.instrument_token, MODE_LTP, tick.tradable, tick.last_price)
    return msgspec.structs.replace(
        tick,
        mode=MODE_QUOTE,
        last_trade_time=None,
        oi=None,
        oi_day_high=None,
        oi_day_low=None,
        exchange_timestamp=None,
        depth_buy=(),
        depth_sell=(),
    )


def _depth(
    book: _Book, rng: random.Random
) -> tuple[tuple[DepthEntry, ...], tuple[DepthEntry, ...]]:
    """Five bids below and five asks above the last price, one tick apart."""
    lot, price, tick_size = book.lot, book.price, book.tick_size
    random_ = rng.random
    bids = tuple(
        DepthEntry(
            lot * (1 + int(random_() * 60)), (price - level) * tick_size, 1 + int(random_() * 25)
        )
        for level in range(1, DEPTH_LEVELS + 1)
        if price - level > 0
    )
    asks = tuple(
        DepthEntry(
            lot * (1 + int(random_() * 60)), (price + level) * tick_size, 1 + int(random_() * 25)
        )
        for level in range(1, DEPTH_LEVELS + 1)
    )
    return bids, asks
