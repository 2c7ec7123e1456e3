"""A clock that moves only when told, and an event loop that runs on it.

Modelled on trio's ``MockClock``: time stands still until :meth:`VirtualClock.advance`
(``jump``) moves it, or — with ``autojump_threshold`` set — until the event loop has
had nothing to do for that many *real* seconds, at which point the clock jumps straight
to the next timer. A test of a 30-second liveness timeout then takes milliseconds and
cannot flake on a loaded machine, because nothing depends on how fast the machine is.

Two ways to use it:

* as a plain :class:`alphapanda.clock.Clock` (plus the other spellings components
  take: ``time()``, ``now()``, ``monotonic_ns()``) handed to a component and moved by
  hand with ``advance()``;
* as the time of an asyncio event loop (``clock.run(main())`` or
  ``asyncio.Runner(loop_factory=clock.new_event_loop)``): ``asyncio.sleep``,
  ``asyncio.timeout``, ``call_later`` and :func:`alphapanda.testing.eventually` all
  follow the virtual time.
"""

from __future__ import annotations

import asyncio
import math
import selectors
from collections.abc import Coroutine, Mapping
from datetime import UTC, datetime, timedelta
from typing import TYPE_CHECKING, Any, TypeVar

if TYPE_CHECKING:
    from _typeshed import FileDescriptorLike

T = TypeVar("T")

# 2026-01-01T00:00:00Z: an arbitrary, recognisable start for wall time.
DEFAULT_WALL_NS = 1_767_225_600_000_000_000
_EPOCH = datetime(1970, 1, 1, tzinfo=UTC)


class VirtualClock:
    """Monotonic seconds and wall nanoseconds that only move when told to."""

    def __init__(
        self,
        *,
        wall_ns: int = DEFAULT_WALL_NS,
        monotonic: float = 1_000.0,
        autojump_threshold: float = math.inf,
    ) -> None:
        self._wall_start_ns = wall_ns
        self._monotonic_start = monotonic
        self._elapsed_ns = 0
        self.autojump_threshold = autojump_threshold

    @property
    def autojump_threshold(self) -> float:
        """Real seconds the loop must sit idle before the clock jumps to the next timer
        (``math.inf``: never, time moves only by ``advance``; ``0``: at once)."""
        return self._autojump_threshold

    @autojump_threshold.setter
    def autojump_threshold(self, seconds: float) -> None:
        if seconds < 0 or math.isnan(seconds):
            raise ValueError(f"autojump_threshold must be >= 0, not {seconds!r}")
        self._autojump_threshold = seconds

    # -- reading ------------------------------------------------------------------

    def monotonic(self) -> float:
        return self._monotonic_start + self._elapsed_ns / 1e9

    def monotonic_ns(self) -> int:
        return round(self._monotonic_start * 1e9) + self._elapsed_ns

    def wall_ns(self) -> int:
        return self._wall_start_ns + self._elapsed_ns

    def time(self) -> float:
        """Wall time in epoch seconds, as ``time.time()``."""
        return self.wall_ns() / 1e9

    def now(self) -> datetime:
        """Wall time as an aware UTC datetime, as ``datetime.now(UTC)``."""
        return _EPOCH + timedelta(microseconds=self.wall_ns() // 1000)  # exact, no float

    # -- moving -------------------------------------------------------------------

    def advance(self, seconds: float) -> None:
        """Move both clocks forward by ``seconds`` (never backwards)."""
        if seconds < 0 or math.isnan(seconds):
            raise ValueError(f"time only moves forward, not by {seconds!r} s")
        self._elapsed_ns += round(seconds * 1e9)

    jump = advance  # trio's name

    # -- an event loop on this clock ----------------------------------------------

    def new_event_loop(self) -> asyncio.AbstractEventLoop:
        """An asyncio loop whose ``time()`` is this clock's monotonic time."""
        return _VirtualTimeLoop(self)

    def run(self, main: Coroutine[Any, Any, T]) -> T:
        """``asyncio.run(main)`` on a loop driven by this clock."""
        with asyncio.Runner(loop_factory=self.new_event_loop) as runner:
            return runner.run(main)

    def __repr__(self) -> str:
        return (
            f"VirtualClock(monotonic={self.monotonic():.6f}, wall={self.now().isoformat()}, "
            f"autojump_threshold={self.autojump_threshold})"
        )


class _AutojumpSelector(selectors.BaseSelector):
    """The loop's selector, made to jump the clock instead of sleeping when idle.

    asyncio's loop asks its selector to wait ``timeout`` seconds: the time until its
    next timer, or ``None`` if it has none. Here the wait is real only for up to the
    autojump threshold; if nothing happened by then, the virtual clock jumps by the
    whole ``timeout`` so the next timer is due. I/O and wake-ups from other threads
    (asyncio's self-pipe) still end the wait as usual.
    """

    def __init__(self, clock: VirtualClock) -> None:
        self._clock = clock
        self._inner = selectors.DefaultSelector()

    def register(
        self, fileobj: FileDescriptorLike, events: int, data: Any = None
    ) -> selectors.SelectorKey:
        return self._inner.register(fileobj, events, data)

    def unregister(self, fileobj: FileDescriptorLike) -> selectors.SelectorKey:
        return self._inner.unregister(fileobj)

    def modify(
        self, fileobj: FileDescriptorLike, events: int, data: Any = None
    ) -> selectors.SelectorKey:
        return self._inner.modify(fileobj, events, data)

    def select(self, timeout: float | None = None) -> list[tuple[selectors.SelectorKey, int]]:
        threshold = self._clock.autojump_threshold
        if timeout is None or timeout <= 0 or threshold == math.inf:
            # No timer to jump to, callbacks already due, or no autojump: a plain wait.
            # (Without autojump a timer becomes due only when a task advances the clock.)
            return self._inner.select(timeout)
        ready = self._inner.select(min(timeout, threshold))
        if not ready:
            self._clock.advance(timeout)
        return ready

    def close(self) -> None:
        self._inner.close()

    def get_key(self, fileobj: FileDescriptorLike) -> selectors.SelectorKey:
        return self._inner.get_key(fileobj)

    def get_map(self) -> Mapping[FileDescriptorLike, selectors.SelectorKey]:
        return self._inner.get_map()


class _VirtualTimeLoop(asyncio.SelectorEventLoop):
    def __init__(self, clock: VirtualClock) -> None:
        super().__init__(_AutojumpSelector(clock))
        self._virtual_clock = clock

    def time(self) -> float:
        return self._virtual_clock.monotonic()
