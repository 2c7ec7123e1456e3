"""When ticks fall due and for which instruments: a clock-free rate keeper.

The configured rate is a total across all subscribed instruments. Elapsed time is
turned into tick credit; whole credits become ticks, handed out round-robin over the
subscribed instruments so each gets ``rate / n`` ticks per second.
"""

from __future__ import annotations

from collections.abc import Sequence


class TickSchedule:
    """Tick credit from elapsed time, and a round-robin cursor over instruments."""

    def __init__(self, ticks_per_second: float, max_catch_up: float = 0.25) -> None:
        self._rate = ticks_per_second
        # After a pause (stall, GC, a slow client) do not fire a huge burst: at most
        # this many seconds' worth of ticks carry over.
        self._max_catch_up = max_catch_up
        self._credit = 0.0
        self._cursor = 0
        self._shortfall = 0.0

    @property
    def shortfall(self) -> int:
        """Ticks the rate asked for but that were never due because the caller fell more
        than ``max_catch_up`` behind (a saturated simulator). Stalls don't count."""
        return int(self._shortfall)

    @property
    def ticks_per_second(self) -> float:
        return self._rate

    def set_rate(self, ticks_per_second: float) -> None:
        if ticks_per_second < 0:
            raise ValueError("ticks_per_second must be >= 0")
        self._rate = ticks_per_second
        self._credit = min(self._credit, 1.0)

    def reset(self) -> None:
        """Forget accumulated credit (after a stall: resume, don't burst)."""
        self._credit = 0.0

    def due(self, elapsed: float) -> int:
        """How many ticks are due after ``elapsed`` seconds."""
        ceiling = max(1.0, self._rate * self._max_catch_up)
        credit = self._credit + self._rate * max(0.0, elapsed)
        if credit > ceiling:
            self._shortfall += credit - ceiling
            credit = ceiling
        self._credit = credit
        count = int(self._credit)
        self._credit -= count
        return count

    def pick(self, tokens: Sequence[int], count: int) -> list[int]:
        """The next ``count`` instruments in round-robin order (repeats when count > n)."""
        n = len(tokens)
        if n == 0 or count <= 0:
            return []
        start = self._cursor % n
        self._cursor = (start + count) % n
        full, rest = divmod(count, n)
        rotated = list(tokens[start:]) + list(tokens[:start])
        return rotated * full + rotated[:rest]
