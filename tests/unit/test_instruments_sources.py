"""Instrument sources without I/O: which set is streamed, and registry changes applied."""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from pathlib import Path

from alphapanda.instruments.sources import (
    CsvInstrumentSource,
    RegistryFollower,
    RegistryInstruments,
)
from alphapanda.kite.sharding import CapacityError
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
