"""``ServiceControl``: the feed's parts as the control API sees them — subscription changes
checked against the instrument catalog and the pool's capacity before anything is sent,
and the per-connection figures added to the feed's metric sources."""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, field
from datetime import UTC, datetime
from types import SimpleNamespace
from typing import Any, cast

import pytest

from alphapanda.api.control import OverCapacity, ServiceControl, UnknownInstruments
from alphapanda.api.status import ConnectionFigures
from alphapanda.kite.sharding import CapacityError
from alphapanda.kite.state import ConnectionStatus
from alphapanda.metrics import catalog
from tests.support.api import StaticSource

pytestmark = pytest.mark.unit

SINCE = datetime(2025, 11, 24, 15, 59, tzinfo=UTC)


@dataclass
class FakeClient:
    """The ticker client's subscription surface; ``refuse`` makes it raise its own
    (per-shard) capacity error."""

    current: dict[int, str] = field(default_factory=dict)
    refuse: bool = False
    sent: list[tuple[str, list[int], str | None]] = field(default_factory=list)

    def statuses(self) -> list[ConnectionStatus]:
        return [ConnectionStatus(0, "connected", SINCE, 1, None, len(self.current), 5, 9, 0.1)]

    def subscriptions(self) -> dict[int, str]:
        return dict(self.current)

    async def subscribe(self, tokens: Sequence[int], mode: str) -> None:
        if self.refuse:
            raise CapacityError("shard 0 is full")
        self.sent.append(("subscribe", list(tokens), mode))
        self.current.update(dict.fromkeys(tokens, mode))

    async def unsubscribe(self, tokens: Sequence[int]) -> None:
        self.sent.append(("unsubscribe", list(tokens), None))
        for token in tokens:
            self.current.pop(token, None)


@dataclass
class FakeCatalog:
    known: set[int]
    asked: list[list[int]] = field(default_factory=list)

    async def unknown_tokens(self, tokens: Sequence[int]) -> list[int]:
        self.asked.append(list(tokens))
        return sorted(set(tokens) - self.known)


def _control(
    client: FakeClient,
    known: set[int] | None = None,
    *,
    capacity: int = 3,
    derived: Any = None,
    unhealthy: str | None = None,
) -> ServiceControl:
    parts = SimpleNamespace(
        client=client,
        settings=SimpleNamespace(kite=SimpleNamespace(capacity=capacity)),
        readiness=lambda: (False, ["broker not reachable"]),
        lifecycle=SimpleNamespace(unhealthy=unhealthy),
        derived=derived,
        sources=[StaticSource([catalog.TICKS_RECEIVED.sample(3)])],
    )
    known = set(range(1, 11)) if known is None else known
    return ServiceControl(cast(Any, parts), FakeCatalog(known))


async def test_known_tokens_within_capacity_are_sent_to_the_client() -> None:
    client = FakeClient({1: "quote"})
    control = _control(client, capacity=3)
    await control.add_subscriptions([2, 3], "full")
    assert client.sent == [("subscribe", [2, 3], "full")]
    assert control.subscriptions() == {1: "quote", 2: "full", 3: "full"}


async def test_unknown_tokens_are_refused_before_anything_is_sent() -> None:
    client = FakeClient()
    control = _control(client, known={1, 2})
    with pytest.raises(UnknownInstruments) as refused:
        await control.add_subscriptions([1, 77, 55], "quote")
    assert refused.value.tokens == [55, 77]
    assert client.sent == []


async def test_a_request_over_the_pools_capacity_is_refused_before_anything_is_sent() -> None:
    client = FakeClient({1: "quote", 2: "quote"})
    control = _control(client, capacity=3)
    with pytest.raises(OverCapacity) as refused:
        await control.add_subscriptions([3, 4], "quote")
    assert (refused.value.requested_total, refused.value.capacity) == (4, 3)
    assert client.sent == []


async def test_changing_the_mode_of_subscribed_tokens_fits_a_full_pool() -> None:
    client = FakeClient({1: "quote", 2: "quote", 3: "quote"})
    await _control(client, capacity=3).add_subscriptions([1, 2], "ltp")
    assert client.current == {1: "ltp", 2: "ltp", 3: "quote"}


async def test_the_clients_own_capacity_refusal_is_reported_with_the_pools_numbers() -> None:
    client = FakeClient({1: "quote"}, refuse=True)
    with pytest.raises(OverCapacity) as refused:
        await _control(client, capacity=3).add_subscriptions([2], "quote")
    assert (refused.value.requested_total, refused.value.capacity) == (2, 3)
    assert isinstance(refused.value.__cause__, CapacityError)


async def test_removal_goes_to_the_client_as_asked() -> None:
    client = FakeClient({1: "quote", 2: "full"})
    await _control(client).remove_subscriptions([2, 99])
    assert client.sent == [("unsubscribe", [2, 99], None)]
    assert client.current == {1: "quote"}


def test_connections_are_plain_data_with_iso_timestamps() -> None:
    (row,) = _control(FakeClient({1: "full"})).connections()
    assert row["shard"] == 0 and row["state"] == "connected"
    assert row["since"] == "2025-11-24T15:59:00Z"
    assert row["instruments"] == 1 and row["last_frame_age"] == 0.1


def test_readiness_and_health_come_from_the_feeds_parts() -> None:
    control = _control(FakeClient(), unhealthy="producer fatal error")
    assert control.readiness() == (False, ["broker not reachable"])
    assert control.unhealthy() == "producer fatal error"
    assert _control(FakeClient()).unhealthy() is None


def test_metric_sources_are_the_feeds_plus_one_row_per_connection() -> None:
    sources = _control(FakeClient({1: "full"})).metrics_sources()
    assert isinstance(sources[-1], ConnectionFigures)
    names = {s.name for source in sources for s in source.samples()}
    assert catalog.TICKS_RECEIVED.name in names
    assert catalog.CONNECTION_STATE.name in names


def test_without_derived_streams_there_are_no_quotes_or_candles() -> None:
    control = _control(FakeClient())
    assert control.latest_quotes() is None
    assert control.recent_candles(7, 10) is None


def test_recent_candles_combine_the_quote_the_closed_bars_and_the_open_bar() -> None:
    bars = [{"close": 1.0}, {"close": 2.0}, {"close": 3.0}]
    derived = SimpleNamespace(
        quotes=SimpleNamespace(get=lambda token: None),
        charted=SimpleNamespace(open_bar=lambda token: None),
        history=SimpleNamespace(interval="1m", recent=lambda token, limit: bars[-limit:]),
    )
    control = _control(FakeClient(), derived=derived)
    assert control.latest_quotes() is derived.quotes
    assert control.recent_candles(7, 2) == {
        "quote": None,
        "interval": "1m",
        "bars": [{"close": 2.0}, {"close": 3.0}],
        "open": None,
    }
