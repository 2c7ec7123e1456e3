"""The one clock convention: monotonic seconds for intervals, wall nanoseconds for stamps.

Components that measure time take a ``Clock`` instead of calling ``time`` themselves, so
a test can hand them :class:`alphapanda.testing.VirtualClock` and move time by hand
(or let it jump) instead of sleeping. Monotonic time never goes backwards and is only
meaningful as a difference; wall time is what gets written into ticks and metrics.
"""

from __future__ import annotations

import time
from typing import Protocol


class Clock(Protocol):
    """Monotonic seconds (intervals, deadlines) and wall-clock nanoseconds (stamps)."""

    def monotonic(self) -> float:
        """Seconds on a clock that never goes backwards; compare, never display."""
        ...

    def wall_ns(self) -> int:
        """Nanoseconds since the Unix epoch (UTC), as ``time.time_ns()``."""
        ...


class SystemClock:
    """The real clock."""

    def monotonic(self) -> float:
        return time.monotonic()

    def wall_ns(self) -> int:
        return time.time_ns()


SYSTEM_CLOCK: Clock = SystemClock()
