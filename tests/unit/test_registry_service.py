"""``InstrumentRegistryService``'s decisions, without PostgreSQL: the database first,
the CSV when it is unreachable, the API key's capacity, references resolved, and the
metrics. The engine life cycle is a scripted fake; the same paths against a real (and a
stopped) PostgreSQL are in ``tests/integration/test_registry.py``."""

from __future__ import annotations

import logging
from collections.abc import Awaitable, Callable
from pathlib import Path
from typing import Any

import pytest

from alphapanda.db.lifecycle import DatabaseNotStarted
from alphapanda.instruments.dump import Instrument, RowError
from alphapanda.metrics import catalog
from alphapanda.registry import service as registry_service
from alphapanda.registry.service import InstrumentRegistryService, LoadReport
from alphapanda.settings import Settings
from tests.support.scripted_db import Answer, ScriptedLifecycle

pytestmark = pytest.mark.unit

HEADER = (
    "instrument_token,exchange_token,tradingsymbol,name,last_price,expiry,strike,"
    "tick_size,lot_size,instrument_type,segment,exchange"
)
ROWS = [
    "738561,2885,RELIANCE,RELIANCE INDUSTRIES,0,,0,0.05,1,EQ,NSE,NSE",
    "408065,1594,INFY,INFOSYS,0,,0,0.05,1,EQ,NSE,NSE",
    "notanumber,1,BAD,BAD,0,,0,0.05,1,EQ,NSE,NSE",
    "256265,1001,NIFTY 50,NIFTY 50,0,,0,0,0,EQ,INDICES,NSE",
]
OUTAGE = ConnectionRefusedError(111, "Connection refused")


@pytest.fixture
def lifecycles(monkeypatch: pytest.MonkeyPatch) -> list[ScriptedLifecycle]:
    made: list[ScriptedLifecycle] = []

    def lifecycle(database: object, owner: str) -> ScriptedLifecycle:
        made.append(ScriptedLifecycle(database, owner))
        return made[-1]

    monkeypatch.setattr(registry_service, "DatabaseLifecycle", lifecycle)
    return made


@pytest.fixture
def csv(tmp_path: Path) -> Path:
    path = tmp_path / "instruments.csv"
    path.write_text("\n".join([HEADER, *ROWS]) + "\n", encoding="utf-8")
    return path


def settings(csv: Path | None = None, *, capacity: int = 9000, mode: str = "quote") -> Settings:
    per_connection = min(capacity, 3000)
    return Settings(
        _env_file=None,
        feed={"instruments_csv": csv, "mode": mode},
        kite={
            "max_connections": capacity // per_connection,
            "max_instruments_per_connection": per_connection,
        },
    )


def registry(
    lifecycles: list[ScriptedLifecycle], csv: Path | None = None, **options: Any
) -> tuple[InstrumentRegistryService, ScriptedLifecycle]:
    service = InstrumentRegistryService(settings(csv, **options))
    return service, lifecycles[-1]


def streaming_set(*pairs: tuple[int, str]) -> Answer:
    return Answer(list(pairs))


# -- load: database first, then the CSV --------------------------------------------------


async def test_the_database_set_is_loaded_when_the_database_answers(
    lifecycles: list[ScriptedLifecycle], csv: Path
) -> None:
    service, db = registry(lifecycles, csv)
    db.scripted.connection.answers = [streaming_set((738561, "full"), (408065, "ltp"))]
    async with service:
        assert await service.load() == {738561: "full", 408065: "ltp"}
    assert (service.source, service.db_errors) == ("database", 0)


async def test_an_empty_database_set_is_loaded_as_empty_with_a_warning(
    lifecycles: list[ScriptedLifecycle], csv: Path, caplog: pytest.LogCaptureFixture
) -> None:
    service, db = registry(lifecycles, csv)
    db.scripted.connection.answers = [streaming_set()]
    async with service:
        with caplog.at_level(logging.WARNING):
            assert await service.load() == {}
    assert service.source == "database"  # the CSV is for outages, not for an empty set
    assert any("alphapanda instruments stream" in r.getMessage() for r in caplog.records)


async def test_an_unreachable_database_falls_back_to_the_csv_in_the_configured_mode(
    lifecycles: list[ScriptedLifecycle], csv: Path, caplog: pytest.LogCaptureFixture
) -> None:
    service, db = registry(lifecycles, csv, mode="ltp")
    db.down = OUTAGE
    async with service:
        with caplog.at_level(logging.ERROR):
            desired = await service.load()
    assert desired == {738561: "ltp", 408065: "ltp", 256265: "ltp"}  # the bad row skipped
    assert service.source == "csv"
    assert service.db_errors == 2  # at start, and at the load
    (fallback,) = [r for r in caplog.records if "fallback CSV" in r.getMessage()]
    assert fallback.levelno == logging.ERROR and "(1 bad row(s))" in fallback.getMessage()


async def test_an_unreachable_database_without_a_csv_streams_nothing(
    lifecycles: list[ScriptedLifecycle],
) -> None:
    service, db = registry(lifecycles, None)
    db.down = OUTAGE
    async with service:
        assert await service.load() == {}
    assert service.source == "none"


async def test_an_unreadable_csv_streams_nothing(
    lifecycles: list[ScriptedLifecycle], tmp_path: Path
) -> None:
    service, db = registry(lifecycles, tmp_path / "missing.csv")
    db.down = OUTAGE
    async with service:
        assert await service.load() == {}
    assert service.source == "none"


async def test_an_error_that_is_not_an_outage_is_raised_not_replaced_by_the_csv(
    lifecycles: list[ScriptedLifecycle], csv: Path
) -> None:
    service, db = registry(lifecycles, csv)
    async with service:
        db.down = KeyError("mode")
        with pytest.raises(KeyError):
            await service.load()
    assert service.db_errors == 0


async def test_a_registry_never_started_is_a_bug_not_an_outage(
    lifecycles: list[ScriptedLifecycle], csv: Path
) -> None:
    service, _ = registry(lifecycles, csv)
    with pytest.raises(DatabaseNotStarted, match="InstrumentRegistryService not started"):
        await service.load()
    assert service.source == "none"


# -- capacity ----------------------------------------------------------------------------


async def test_a_set_over_the_capacity_streams_the_lowest_tokens_and_says_so(
    lifecycles: list[ScriptedLifecycle], caplog: pytest.LogCaptureFixture
) -> None:
    service, db = registry(lifecycles, capacity=2)
    db.scripted.connection.answers = [streaming_set((30, "full"), (10, "ltp"), (20, "quote"))]
    async with service:
        with caplog.at_level(logging.ERROR):
            assert await service.load() == {10: "ltp", 20: "quote"}
    assert service.over_capacity == 1
    assert any("allows 2" in r.getMessage() for r in caplog.records)


async def test_a_set_at_the_capacity_is_streamed_whole(
    lifecycles: list[ScriptedLifecycle],
) -> None:
    service, db = registry(lifecycles, capacity=2)
    db.scripted.connection.answers = [streaming_set((30, "full"), (10, "ltp"))]
    async with service:
        assert await service.load() == {30: "full", 10: "ltp"}
    assert service.over_capacity == 0


async def test_the_csv_fallback_is_capped_too(
    lifecycles: list[ScriptedLifecycle], csv: Path
) -> None:
    service, db = registry(lifecycles, csv, capacity=1)
    db.down = OUTAGE
    async with service:
        assert await service.load() == {256265: "quote"}
    assert service.over_capacity == 1


# -- watch -------------------------------------------------------------------------------


class FakeWatcher:
    """Stands in for ``StreamingSetWatcher``: delivers the scripted reads, then returns."""

    reads: list[dict[int, str]] = []
    made: list[FakeWatcher] = []

    def __init__(self, database: object, **options: Any) -> None:
        self.options = options
        self.changes = len(self.reads)
        self.reconnects = 2
        self.connected = True
        FakeWatcher.made.append(self)

    async def run(self, on_change: Callable[[dict[int, str]], Awaitable[None]]) -> None:
        for desired in self.reads:
            self.options["on_read"](desired)
            await on_change(desired)


@pytest.fixture
def watcher(monkeypatch: pytest.MonkeyPatch) -> type[FakeWatcher]:
    monkeypatch.setattr(FakeWatcher, "reads", [])
    monkeypatch.setattr(FakeWatcher, "made", [])
    monkeypatch.setattr(registry_service, "StreamingSetWatcher", FakeWatcher)
    return FakeWatcher


async def test_the_watcher_starts_from_the_loaded_set_and_migrates_on_connect(
    lifecycles: list[ScriptedLifecycle], csv: Path, watcher: type[FakeWatcher]
) -> None:
    service, db = registry(lifecycles, csv)
    db.down = OUTAGE
    async with service:
        loaded = await service.load()
        await service.watch(_ignore)
        (made,) = watcher.made
        assert made.options["last"] == loaded
        db.down = None
        await made.options["on_connected"]()
    assert db.schema_checks == 1


async def test_a_read_from_the_database_ends_the_csv_fallback(
    lifecycles: list[ScriptedLifecycle], csv: Path, watcher: type[FakeWatcher]
) -> None:
    service, db = registry(lifecycles, csv)
    db.down = OUTAGE
    watcher.reads = [{408065: "full"}]
    delivered: list[dict[int, str]] = []

    async def on_change(desired: dict[int, str]) -> None:
        delivered.append(desired)
        assert service.source == "database"  # already switched when the feed hears of it

    async with service:
        await service.load()
        assert service.source == "csv"
        await service.watch(on_change)
    assert delivered == [{408065: "full"}]


async def test_changes_from_the_watcher_are_capped(
    lifecycles: list[ScriptedLifecycle], watcher: type[FakeWatcher]
) -> None:
    service, _ = registry(lifecycles, capacity=1)
    watcher.reads = [{30: "full", 10: "ltp"}]
    delivered: list[dict[int, str]] = []

    async def on_change(desired: dict[int, str]) -> None:
        delivered.append(desired)

    async with service:
        await service.watch(on_change)
    assert delivered == [{10: "ltp"}] and service.over_capacity == 1


async def _ignore(_: dict[int, str]) -> None:
    return None


# -- management --------------------------------------------------------------------------


async def test_a_load_reports_counts_and_bad_rows_and_can_mark_rows_for_streaming(
    lifecycles: list[ScriptedLifecycle], csv: Path
) -> None:
    service, db = registry(lifecycles, csv)
    db.scripted.connection.answers = [
        Answer([(True,), (True,), (False,)]),  # upsert: 2 new, 1 changed
        Answer([(738561,), (408065,), (256265,)]),  # all three known
        Answer(rowcount=3),  # marked for streaming
        Answer([(3,)]),  # now streaming, within the capacity
    ]
    async with service:
        report = await service.load_dump(csv, stream_mode="full")
    assert report == LoadReport(2, 1, 0, (RowError(4, report.bad_rows[0].message),), 3)
    assert "instrument_token" in report.bad_rows[0].message
    assert report.good == 3
    assert db.scripted.opened == ["begin"]  # one transaction: all or nothing


async def test_a_load_without_a_stream_mode_streams_nothing(
    lifecycles: list[ScriptedLifecycle],
) -> None:
    service, db = registry(lifecycles)
    db.scripted.connection.answers = [Answer([(True,)])]
    instrument = Instrument(1, 1, "X", "X", 0.0, None, 0.0, 0.05, 1, "EQ", "NSE", "NSE")
    async with service:
        report = await service.upsert([instrument])
    assert (report.inserted, report.streaming_changed, report.bad_rows) == (1, 0, ())
    assert len(db.scripted.connection.statements) == 1


async def test_references_that_are_tokens_need_no_query(
    lifecycles: list[ScriptedLifecycle],
) -> None:
    service, db = registry(lifecycles)
    async with service:
        assert await service.resolve(["408065", " 738561 "]) == [408065, 738561]
    assert db.scripted.opened == [] and db.schema_checks == 1  # the start's only


async def test_references_resolve_in_the_order_given(
    lifecycles: list[ScriptedLifecycle],
) -> None:
    service, db = registry(lifecycles)
    db.scripted.connection.answers = [Answer([("NSE", "INFY", 408065)])]
    async with service:
        assert await service.resolve(["256265", "nse:infy", "256265"]) == [
            256265,
            408065,
            256265,
        ]


async def test_unknown_symbols_are_all_named_up_to_ten(
    lifecycles: list[ScriptedLifecycle],
) -> None:
    service, db = registry(lifecycles)
    db.scripted.connection.answers = [Answer()]
    refs = [f"NSE:NOPE{i}" for i in range(11)]
    async with service:
        with pytest.raises(ValueError, match="unknown instrument") as refused:
            await service.resolve(refs)
    message = str(refused.value)
    assert "NSE:NOPE0, NSE:NOPE1" in message and "NSE:NOPE9 (+1 more)" in message
    assert "NOPE10" not in message and "instruments fetch" in message


async def test_a_malformed_reference_is_refused_before_any_query(
    lifecycles: list[ScriptedLifecycle],
) -> None:
    service, db = registry(lifecycles)
    async with service:
        with pytest.raises(ValueError, match="EXCHANGE:TRADINGSYMBOL"):
            await service.resolve(["NSE:INFY", "INFY"])
    assert db.scripted.connection.statements == []


# -- metrics -----------------------------------------------------------------------------


def by_name(service: InstrumentRegistryService) -> dict[str, tuple[float, Any]]:
    return {s.name: (s.value, s.labels) for s in service.samples()}


async def test_samples_name_the_source_and_count_errors(
    lifecycles: list[ScriptedLifecycle], csv: Path
) -> None:
    service, db = registry(lifecycles, csv, capacity=1)
    db.down = OUTAGE
    async with service:
        assert by_name(service)[catalog.REGISTRY_SOURCE.name] == (1.0, (("source", "none"),))
        await service.load()
        samples = by_name(service)
    assert samples[catalog.REGISTRY_SOURCE.name] == (1.0, (("source", "csv"),))
    assert samples[catalog.REGISTRY_DB_ERRORS.name] == (2.0, ())
    assert samples[catalog.REGISTRY_OVER_CAPACITY.name] == (1.0, ())
    assert catalog.REGISTRY_CHANGES.name not in samples  # not watching


async def test_samples_report_the_watcher_once_watching(
    lifecycles: list[ScriptedLifecycle], watcher: type[FakeWatcher]
) -> None:
    service, _ = registry(lifecycles)
    watcher.reads = [{1: "full"}]
    async with service:
        await service.watch(_ignore)
        samples = by_name(service)
    assert samples[catalog.REGISTRY_CHANGES.name] == (1.0, ())
    assert samples[catalog.REGISTRY_WATCH_RECONNECTS.name] == (2.0, ())
    assert samples[catalog.REGISTRY_WATCH_CONNECTED.name] == (1.0, ())
