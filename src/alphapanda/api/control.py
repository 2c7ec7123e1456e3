"""What the control API needs from the running feed: the ``FeedControl`` protocol.

The API never reaches into the feed's internals; it talks to this narrow interface,
which the feed process implements with an adapter over the feed's parts and
tests can implement in a few lines. Everything the API shows that is a *figure*
(ticks, latency, drops, buffer depth, spool) comes from ``metrics_sources()`` — the
same samples the metrics collector ships to Redis — so the API, Prometheus and Redis
can never disagree about a number.
"""

from __future__ import annotations

import logging
from collections.abc import Iterable, Mapping, Sequence
from typing import TYPE_CHECKING, Any, Protocol

import msgspec

from alphapanda.api.status import ConnectionFigures
from alphapanda.kite.sharding import CapacityError
from alphapanda.metrics.samples import MetricsSource
from alphapanda.streams.quotes import LatestQuotes

log = logging.getLogger(__name__)


if TYPE_CHECKING:
    # Only for annotations: the API must not import the whole feed to be built.
    from alphapanda.instruments.catalogs import InstrumentCatalog
    from alphapanda.parts import FeedParts


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

    def standby_ready(self) -> bool | None:
        """In a hot-standby group, while standby: whether it could take over now;
        ``None`` when not in a group or active."""
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


def unhealthy_of(control: object) -> str | None:
    """Why ``control``'s feed must be restarted (None: healthy, or it cannot tell)."""
    check = getattr(control, "unhealthy", None)
    result: str | None = check() if callable(check) else None
    return result


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


class ServiceControl:
    """``FeedControl`` over the parts of a running feed (``FeedParts``).

    Subscription changes go to the ticker client as runtime deltas (no reconnect). They are not
    written to the instrument registry: they last until the feed restarts or the
    registry's streaming set changes.
    """

    def __init__(self, parts: FeedParts, catalog: InstrumentCatalog) -> None:
        self._parts = parts
        self._client = parts.client
        self._catalog = catalog
        self.capacity = parts.settings.kite.capacity

    def connections(self) -> list[dict[str, Any]]:
        # msgspec turns the status structs into plain data, datetimes into ISO-8601.
        return [msgspec.to_builtins(status) for status in self._client.statuses()]

    def readiness(self) -> tuple[bool, list[str]]:
        return self._parts.readiness()

    def unhealthy(self) -> str | None:
        """Why the feed must be restarted (``None``: it is healthy)."""
        return self._parts.lifecycle.unhealthy

    def standby_ready(self) -> bool | None:
        ha = self._parts.ha
        return None if ha is None or ha.active else ha.standby_ready

    def subscriptions(self) -> dict[int, str]:
        return self._client.subscriptions()

    async def add_subscriptions(self, tokens: Sequence[int], mode: str) -> None:
        unknown = await self._catalog.unknown_tokens(tokens)
        if unknown:
            raise UnknownInstruments(unknown)
        current = self._client.subscriptions()
        check_subscription_request(current, tokens, tokens, self.capacity)
        try:
            await self._client.subscribe(tokens, mode)
        except CapacityError as exc:
            # The client's own (per-shard) check: report it with the same numbers.
            raise OverCapacity(len(set(current) | set(tokens)), self.capacity) from exc

    async def remove_subscriptions(self, tokens: Sequence[int]) -> None:
        await self._client.unsubscribe(tokens)

    def latest_quotes(self) -> LatestQuotes | None:
        """The feed's latest-quote state (None: derived streams turned off)."""
        derived = self._parts.derived
        return derived.quotes if derived is not None else None

    def recent_candles(self, token: int, limit: int) -> dict[str, Any] | None:
        """Recent closed bars of the charted interval and the bar being built (None:
        derived streams turned off)."""
        derived = self._parts.derived
        if derived is None:
            return None
        open_bar = derived.charted.open_bar(token)
        quote = derived.quotes.get(token)
        return {
            "quote": msgspec.to_builtins(quote) if quote is not None else None,
            "interval": derived.history.interval,
            "bars": derived.history.recent(token, limit),
            "open": msgspec.to_builtins(open_bar) if open_bar is not None else None,
        }

    def metrics_sources(self) -> list[MetricsSource]:
        """The service's sources plus per-connection figures (``ConnectionFigures``).

        Hand these to the ``PipelineMetricsCollector`` too, so that the Redis snapshot
        carries one entry per connection for ``alphapanda api`` and ``alphapanda status``.
        """
        client = self._client
        return [
            *self._parts.sources,
            ConnectionFigures(client.statuses, client.subscriptions),
        ]
