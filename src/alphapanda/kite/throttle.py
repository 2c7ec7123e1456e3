"""Rate-limited repeats for log lines that a flapping feed would otherwise spam."""

from __future__ import annotations


class LogThrottle:
    """Allows one log line per key per ``interval`` seconds and counts the rest.

    Pure: the caller passes the (monotonic) time. ``allow`` returns how many lines of
    that key were suppressed since the last one allowed, so the next line can say
    "(and 41 more like it)" instead of silently losing them.
    """

    def __init__(self, interval: float = 10.0, max_keys: int = 256) -> None:
        self.interval = interval
        self.max_keys = max_keys
        self._last: dict[str, float] = {}
        self._suppressed: dict[str, int] = {}

    def allow(self, key: str, now: float) -> tuple[bool, int]:
        """``(True, suppressed_before)`` if a line for ``key`` may be logged now."""
        last = self._last.get(key)
        if last is not None and now - last < self.interval:
            self._suppressed[key] = self._suppressed.get(key, 0) + 1
            return False, 0
        if last is None and len(self._last) >= self.max_keys:
            # Bounded: forget the oldest key rather than grow with hostile input.
            oldest = min(self._last, key=self._last.__getitem__)
            del self._last[oldest]
            self._suppressed.pop(oldest, None)
        self._last[key] = now
        return True, self._suppressed.pop(key, 0)
