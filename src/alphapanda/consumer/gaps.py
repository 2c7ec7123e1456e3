"""Gap awareness from ``market.feed.events``: which instruments could have missed data.

Feed ``GapTracker.observe()`` every ``FeedEvent``; ``is_paused(token)`` is true while a
connection carrying the instrument is down (or the feed is stopped), and
``gaps(token)`` lists the closed intervals in which its data could not be received.
"""

from __future__ import annotations

from collections import deque
from datetime import datetime
from typing import Final

from alphapanda.streams.records import (
    CONNECTION_DOWN,
    CONNECTION_UP,
    FEED_STARTED,
    FEED_STOPPED,
    GAP,
    GAP_POSSIBLE,
    HA_ACTIVE,
    FeedEvent,
)

# Closed gaps remembered per instrument.
MAX_GAPS: Final = 64


class GapTracker:
    """What the feed's events say about holes in each instrument's data."""

    def __init__(self) -> None:
        self._down: dict[int, set[int]] = {}  # shard -> instruments while down
        self._feed_stopped = False
        self._gaps: dict[int, deque[tuple[datetime, datetime]]] = {}

    def observe(self, event: FeedEvent) -> None:
        kind = event.kind
        if kind == CONNECTION_DOWN and event.shard is not None:
            self._down[event.shard] = set(event.instruments or ())
        elif kind == CONNECTION_UP and event.shard is not None:
            self._down.pop(event.shard, None)
        elif kind in (GAP, GAP_POSSIBLE) and event.start is not None and event.end is not None:
            for token in event.instruments or ():
                gaps = self._gaps.setdefault(token, deque(maxlen=MAX_GAPS))
                gaps.append((event.start, event.end))
        elif kind == FEED_STOPPED:
            self._feed_stopped = True
        elif kind in (FEED_STARTED, HA_ACTIVE):
            # HA_ACTIVE: another instance of a hot-standby group now publishes; what the
            # old one reported about its connections no longer applies.
            self._feed_stopped = False
            self._down.clear()

    @property
    def paused(self) -> bool:
        """Some connection is down, or the feed is stopped."""
        return self._feed_stopped or bool(self._down)

    def is_paused(self, token: int) -> bool:
        return self._feed_stopped or any(token in tokens for tokens in self._down.values())

    def gaps(self, token: int) -> list[tuple[datetime, datetime]]:
        return list(self._gaps.get(token, ()))

    def overlaps(self, token: int, start: datetime, end: datetime) -> bool:
        """Did a gap of ``token`` overlap ``[start, end)`` (e.g. a candle's bucket)?"""
        return any(g_start < end and start < g_end for g_start, g_end in self._gaps.get(token, ()))
