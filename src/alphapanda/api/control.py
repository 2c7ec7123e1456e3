"""What the control API needs from the running feed: the ``FeedControl`` protocol.

The API never reaches into the feed's internals; it talks to this narrow interface,
which the feed process implements with an adapter around ``MarketFeedService`` and
tests can implement in a few lines. Everything the API shows that is a *figure*
(ticks, latency, drops, buffer depth, spool) comes from ``metrics_sources()`` — the
same samples the metrics collector ships to Redis — so the API, Prometheus and Redis
can never disagree about a number.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping, Sequence
from typing import Any, Protocol

from alphapanda.metrics.samples import MetricsSource

MODES = ("ltp", "quote", "full")


class SubscriptionRejected(Exception):
    """A subscription change the feed refuses; the message is safe to show a caller."""


class UnknownInstruments(SubscriptionRejected):
    """Tokens the instrument registry does not know."""

    def __init__(self, tokens: Sequence[int]) -> None:
        self.tokens = sorted(tokens)
        shown = ", ".join(str(t) for t in self.tokens[:50])
        more = f" (and {len(self.tokens) - 50} more)" if len(self.tokens) > 50 else ""
        super().__init__(f"unknown instrument tokens: {shown}{more}")


class OverCapacity(SubscriptionRejected):
    """More instruments than the connection pool can carry."""

    def __init__(self, requested_total: int, capacity: int) -> None:
        self.requested_total = requested_total
        self.capacity = capacity
        super().__init__(
            f"{requested_total} instruments would be subscribed but the capacity is {capacity}"
            " (max_connections x max_instruments_per_connection)"
        )


class FeedControl(Protocol):
    """The running feed, as the control API sees it."""

    def connections(self) -> list[dict[str, Any]]:
        """One dict per connection (shard): ``shard``, ``state``, ``since`` (ISO-8601),
        ``reconnect_count``, ``last_disconnect_reason``, ``instruments``,
        ``ticks_received``, ``last_frame_age`` (seconds or None)."""
        ...

    def readiness(self) -> tuple[bool, list[str]]:
        """``(ready, reasons)``: ready only when at least one connection is streaming
        AND the broker accepts writes; ``reasons`` say what is missing."""
        ...

    def subscriptions(self) -> dict[int, str]:
        """Every subscribed token and its mode."""
        ...

    async def add_subscriptions(self, tokens: Sequence[int], mode: str) -> None:
        """Subscribe ``tokens`` in ``mode`` (or change their mode if already subscribed).

        Raises ``UnknownInstruments`` or ``OverCapacity``; applies nothing then."""
        ...

    async def remove_subscriptions(self, tokens: Sequence[int]) -> None:
        """Unsubscribe ``tokens`` (tokens not subscribed are ignored)."""
        ...

    def metrics_sources(self) -> Iterable[MetricsSource]:
        """Every component's metrics source."""
        ...


def check_subscription_request(
    current: Mapping[int, str],
    tokens: Sequence[int],
    known: Iterable[int],
    capacity: int,
) -> None:
    """Raise ``UnknownInstruments`` / ``OverCapacity`` for a request to add ``tokens``.

    Pure; feed adapters call it before applying a change so that a refused request
    changes nothing.
    """
    known_set = set(known)
    unknown = [t for t in set(tokens) if t not in known_set]
    if unknown:
        raise UnknownInstruments(unknown)
    total = len(set(current) | set(tokens))
    if total > capacity:
        raise OverCapacity(total, capacity)
