"""The feed's wiring logic without I/O: which set is streamed, changes, the key mapping."""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from pathlib import Path

import pytest

from alphapanda.instruments.sources import (
    CsvInstrumentSource,
    RegistryFollower,
    RegistryInstruments,
)
from alphapanda.kite.sharding import CapacityError
from alphapanda.metrics import redis_layout
from alphapanda.metrics.samples import Sample
from alphapanda.registry.watch import OnChange

CSV = Path(__file__).resolve().parents[2] / "data" / "instruments.csv"


class FakeRegistry:
    """A registry whose database holds ``streaming`` (enabled) and ``rows`` (any)."""

    def __init__(self, streaming: dict[int, str], rows: int, source: str = "database") -> None:
        self.streaming = streaming
        self.rows = rows
        self.source = source

    async def load(self) -> dict[int, str]:
        return dict(self.streaming)

    async def list_streaming(self, include_disabled: bool = False) -> Sequence[object]:
        assert include_disabled
        return [object()] * self.rows

    async def watch(self, on_change: OnChange) -> None:
        raise AssertionError("not used here")


class FakeClient:
    def __init__(self, refuse: bool = False) -> None:
        self.applied: list[dict[int, str]] = []
        self.refuse = refuse

    async def set_subscriptions(self, desired: Mapping[int, str]) -> None:
        if self.refuse:
            raise CapacityError("too many")
        self.applied.append(dict(desired))


def csv_source() -> CsvInstrumentSource:
    return CsvInstrumentSource(CSV, "quote", 9000)


async def test_a_configured_registry_is_streamed() -> None:
    source = RegistryInstruments(FakeRegistry({1: "ltp"}, rows=1), csv_source())
    assert await source.load() == {1: "ltp"}
    assert source.source == "database"


async def test_a_fresh_install_streams_the_csv_until_configured() -> None:
    registry = FakeRegistry({}, rows=0)
    source = RegistryInstruments(registry, csv_source())
    loaded = await source.load()
    assert len(loaded) == 724 and set(loaded.values()) == {"quote"}
    assert source.source == "csv-unconfigured"
    # Still nothing configured: keep the CSV (no change to apply).
    assert await source.resolve_change({}) is None
    # The first instrument marked for streaming switches to the registry's set.
    registry.streaming, registry.rows = {5: "full"}, 1
    assert await source.resolve_change({5: "full"}) == {5: "full"}
    assert source.source == "database"


async def test_everything_unstreamed_streams_nothing_not_the_csv() -> None:
    registry = FakeRegistry({}, rows=3)  # rows exist, all disabled: a decision
    source = RegistryInstruments(registry, csv_source())
    assert await source.load() == {}
    assert source.source == "database"
    assert await source.resolve_change({}) == {}


async def test_an_unreachable_database_is_the_registry_own_fallback() -> None:
    # The registry already fell back to the CSV; nothing is added on top.
    source = RegistryInstruments(FakeRegistry({7: "quote"}, rows=0, source="csv"), csv_source())
    assert await source.load() == {7: "quote"}
    assert source.source == "csv"


async def test_follower_applies_changes_but_not_during_shutdown() -> None:
    stopping = False
    client = FakeClient()
    source = RegistryInstruments(FakeRegistry({1: "ltp"}, rows=1), csv_source())
    follower = RegistryFollower(source, client, lambda: stopping)
    await follower._apply({1: "ltp", 2: "full"})
    assert client.applied == [{1: "ltp", 2: "full"}]
    stopping = True
    await follower._apply({3: "ltp"})
    assert client.applied == [{1: "ltp", 2: "full"}]
    assert follower.changes_applied == 1


async def test_follower_keeps_the_current_set_when_the_client_refuses() -> None:
    client = FakeClient(refuse=True)
    source = RegistryInstruments(FakeRegistry({1: "ltp"}, rows=1), csv_source())
    follower = RegistryFollower(source, client, lambda: False)
    await follower._apply({1: "ltp"})
    assert (follower.changes_applied, follower.changes_refused) == (0, 1)


def sample(name: str, value: float, **labels: str) -> Sample:
    return Sample(name, "counter", value, tuple(labels.items()))


def test_default_rules_map_the_names_the_components_emit() -> None:
    scalars, hashes = redis_layout.apply_rules(
        [
            sample("kite_reconnect_attempts_total", 2, reason="connect_ok"),
            sample("kite_reconnect_attempts_total", 1, reason="closed_by_server"),
            sample("kite_skipped_packets_total", 3, reason="truncated"),
            sample("ticks_malformed_total", 4, reason="bad_price"),
            sample("sends_ok_total", 10),
        ]
    )
    assert hashes[redis_layout.RECONNECTS] == {"connect_ok": 2, "closed_by_server": 1}
    assert hashes[redis_layout.MALFORMED] == {"truncated": 3, "bad_price": 4}
    # No failure was ever counted, but the producer reports: 0, not missing.
    assert scalars[redis_layout.SENDS_OK] == 10 and scalars[redis_layout.SENDS_FAILED] == 0


@pytest.mark.parametrize("present", [[], [sample("ticks_received_total", 1)]])
def test_sends_failed_is_missing_without_the_producer(present: list[Sample]) -> None:
    scalars, _ = redis_layout.apply_rules(present)
    assert redis_layout.SENDS_FAILED not in scalars


def test_sends_failed_sums_its_error_kinds() -> None:
    scalars, _ = redis_layout.apply_rules(
        [
            sample("sends_ok_total", 10),
            sample("sends_failed_total", 2, error="timeout"),
            sample("sends_failed_total", 1, error="other"),
        ]
    )
    assert scalars[redis_layout.SENDS_FAILED] == 3
