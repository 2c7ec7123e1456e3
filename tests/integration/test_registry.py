"""InstrumentRegistryService against real PostgreSQL: DB first, CSV fallback, live changes.

Each test works in its own PostgreSQL schema on the shared database (dropped afterwards),
or on a private PostgreSQL it may stop.
"""

from __future__ import annotations

import asyncio
import logging
import os
import subprocess
import sys
from collections.abc import Callable
from pathlib import Path

import asyncpg
import pytest

from alphapanda.db.engine import Database
from alphapanda.db.migrate import current_revision, head_revision, upgrade
from alphapanda.registry import InstrumentRegistryService
from alphapanda.settings import Settings
from tests.support.services import SHARED_DATABASE, PrivateService, drop_schema

HEADER = (
    "instrument_token,exchange_token,tradingsymbol,name,last_price,expiry,strike,"
    "tick_size,lot_size,instrument_type,segment,exchange"
)
RELIANCE = "738561,2885,RELIANCE,RELIANCE INDUSTRIES,0,,0,0.05,1,EQ,NSE,NSE"
INFY = "408065,1594,INFY,INFOSYS,0,,0,0.05,1,EQ,NSE,NSE"
NIFTY = "256265,1001,NIFTY 50,NIFTY 50,0,,0,0,0,EQ,INDICES,NSE"
USDINR = "412675,1612,USDINR25DECFUT,USDINR,0,2025-12-29,0,0.0025,1,FUT,CDS-FUT,CDS"
GOOD_DUMP = "\n".join([HEADER, RELIANCE, INFY, NIFTY, USDINR]) + "\n"

ALPHAPANDA = [sys.executable, "-m", "alphapanda"]
DEADLINE = 30.0


def write_dump(path: Path, text: str = GOOD_DUMP) -> Path:
    path.write_text(text, encoding="utf-8")
    return path


@pytest.fixture
def settings(settings_for: Callable[..., Settings], schema: str, tmp_path: Path) -> Settings:
    csv = write_dump(tmp_path / "instruments.csv")
    return settings_for(
        database={"url": SHARED_DATABASE, "schema_name": schema},
        feed={"instruments_csv": csv, "mode": "quote"},
    )


async def next_change(changes: asyncio.Queue[dict[int, str]]) -> dict[int, str]:
    async with asyncio.timeout(DEADLINE):
        return await changes.get()


async def test_migrations_are_idempotent_and_reach_head(settings: Settings) -> None:
    database = Database.from_settings(settings.database)
    assert await current_revision(database) is None
    assert await upgrade(database) == head_revision()
    assert await upgrade(database) == head_revision()  # second run: no-op, no error


async def test_db_first_start(settings: Settings) -> None:
    async with InstrumentRegistryService(settings) as registry:
        await registry.load_dump(settings.feed.instruments_csv)
        await registry.stream([738561, 256265], "full")
        await registry.stream([408065], "ltp")
    async with InstrumentRegistryService(settings) as registry:
        desired = await registry.load()
        assert registry.source == "database"
    # The database wins over the CSV (which would say every instrument in quote mode).
    assert desired == {738561: "full", 256265: "full", 408065: "ltp"}


async def test_stream_rejects_unknown_tokens_and_bad_modes(settings: Settings) -> None:
    async with InstrumentRegistryService(settings) as registry:
        await registry.load_dump(settings.feed.instruments_csv)
        with pytest.raises(ValueError, match="unknown instrument token"):
            await registry.stream([738561, 999999], "full")
        with pytest.raises(ValueError, match="mode must be one of"):
            await registry.stream([738561], "depth")
        assert await registry.streaming() == {}  # all or nothing


async def test_watcher_fires_on_stream_changes(settings: Settings) -> None:
    changes: asyncio.Queue[dict[int, str]] = asyncio.Queue(maxsize=16)
    async with InstrumentRegistryService(settings, resync_interval=600) as registry:
        await registry.load_dump(settings.feed.instruments_csv)
        assert await registry.load() == {}
        async with asyncio.TaskGroup() as tg:
            watching = tg.create_task(registry.watch(changes.put))
            # The resync interval is 10 minutes: only the NOTIFY can wake the watcher.
            await registry.stream([738561, 408065], "full")
            assert await next_change(changes) == {738561: "full", 408065: "full"}
            await registry.stream([408065], "ltp")
            assert await next_change(changes) == {738561: "full", 408065: "ltp"}
            await registry.unstream([738561])
            assert await next_change(changes) == {408065: "ltp"}
            # Re-streaming an unchanged set writes no row, so nothing fires; a real change does.
            await registry.stream([408065], "ltp")
            await registry.stream([256265], "quote")
            assert await next_change(changes) == {408065: "ltp", 256265: "quote"}
            assert changes.empty()
            watching.cancel()


async def test_watcher_ignores_other_schemas(
    settings: Settings, settings_for: Callable[..., Settings], unique: str
) -> None:
    other = settings_for(database={"url": SHARED_DATABASE, "schema_name": f"test_r1_o{unique}"})
    changes: asyncio.Queue[dict[int, str]] = asyncio.Queue(maxsize=16)
    try:
        async with (
            InstrumentRegistryService(settings, resync_interval=600) as mine,
            InstrumentRegistryService(other) as theirs,
        ):
            await mine.load_dump(settings.feed.instruments_csv)
            await theirs.load_dump(settings.feed.instruments_csv)
            await mine.load()
            async with asyncio.TaskGroup() as tg:
                watching = tg.create_task(mine.watch(changes.put))
                await theirs.stream([738561], "full")
                await mine.stream([408065], "quote")
                # Only our own change arrives, never the other schema's.
                assert await next_change(changes) == {408065: "quote"}
                watching.cancel()
            assert mine.samples()
    finally:
        await drop_schema(f"test_r1_o{unique}")


def run_cli(schema: str, *args: str) -> subprocess.CompletedProcess[str]:
    env = {k: v for k, v in os.environ.items() if not k.startswith("ALPHAPANDA_")}
    env.update(
        ALPHAPANDA_DATABASE__URL=SHARED_DATABASE,
        ALPHAPANDA_DATABASE__SCHEMA_NAME=schema,
        COLUMNS="200",
    )
    return subprocess.run(
        [*ALPHAPANDA, "--env-file", "/nonexistent", *args],
        env=env,
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
    )


def test_instruments_load_cli_reports_bad_rows_and_is_idempotent(
    schema: str, tmp_path: Path
) -> None:
    lines = [
        HEADER,
        RELIANCE,
        "notanumber,2885,BAD,BAD,0,,0,0.05,1,EQ,NSE,NSE",  # line 3
        INFY,
        "412676,1612,USDINR,USDINR,0,2025-13-45,0,0.0025,1,FUT,CDS-FUT,CDS",  # line 5
        NIFTY,
    ]
    dump = write_dump(tmp_path / "dump.csv", "\n".join(lines) + "\n")

    first = run_cli(schema, "instruments", "load", str(dump), "--stream-mode", "full")
    assert first.returncode == 0, first.stderr
    assert "inserted 3" in first.stdout and "bad 2" in first.stdout, first.stdout
    assert "line 3: instrument_token" in first.stdout, first.stdout
    assert "line 5: expiry" in first.stdout, first.stdout

    second = run_cli(schema, "instruments", "load", str(dump))
    assert second.returncode == 0, second.stderr
    assert "inserted 0" in second.stdout and "updated 0" in second.stdout, second.stdout
    assert "unchanged 3" in second.stdout, second.stdout

    # A changed row is an update, not a new instrument.
    changed = write_dump(
        tmp_path / "changed.csv", "\n".join([HEADER, RELIANCE.replace(",1,EQ", ",5,EQ")]) + "\n"
    )
    third = run_cli(schema, "instruments", "load", str(changed))
    assert "inserted 0" in third.stdout and "updated 1" in third.stdout, third.stdout

    listing = run_cli(schema, "instruments", "list")
    assert listing.returncode == 0, listing.stderr
    for symbol in ("RELIANCE", "INFY", "NIFTY 50"):
        assert symbol in listing.stdout, listing.stdout
    assert "USDINR" not in listing.stdout

    assert run_cli(schema, "instruments", "unstream", "738561").returncode == 0
    assert run_cli(schema, "instruments", "stream", "408065", "--mode", "ltp").returncode == 0
    listing = run_cli(schema, "instruments", "list")
    assert "RELIANCE" not in listing.stdout and "ltp" in listing.stdout, listing.stdout

    unknown = run_cli(schema, "instruments", "stream", "123", "--mode", "full")
    assert unknown.returncode != 0 and "unknown instrument token" in unknown.stderr


async def test_csv_fallback_then_database_recovery(
    private_postgres: PrivateService,
    settings_for: Callable[..., Settings],
    tmp_path: Path,
    caplog: pytest.LogCaptureFixture,
) -> None:
    csv = write_dump(tmp_path / "instruments.csv")
    settings = settings_for(
        database={"url": private_postgres.database_url},
        feed={"instruments_csv": csv, "mode": "quote"},
    )
    async with InstrumentRegistryService(settings) as registry:
        await registry.load_dump(csv)
        await registry.stream([738561], "full")
        await registry.stream([408065], "ltp")
    in_db = {738561: "full", 408065: "ltp"}

    await asyncio.to_thread(private_postgres.stop)
    changes: asyncio.Queue[dict[int, str]] = asyncio.Queue(maxsize=16)
    with caplog.at_level(logging.WARNING):
        async with InstrumentRegistryService(settings, retry_delay=0.2) as registry:
            desired = await registry.load()
            assert registry.source == "csv"
            assert desired == {738561: "quote", 408065: "quote", 256265: "quote", 412675: "quote"}
            assert any(
                r.levelno == logging.ERROR and "fallback CSV" in r.getMessage()
                for r in caplog.records
            )
            async with asyncio.TaskGroup() as tg:
                watching = tg.create_task(registry.watch(changes.put))
                await asyncio.to_thread(private_postgres.start)
                # The database is back: the feed is told its set, replacing the CSV's.
                assert await next_change(changes) == in_db
                assert registry.source == "database"

                # A restart of a live listener's database: it reconnects and catches up.
                await asyncio.to_thread(private_postgres.stop)
                await asyncio.to_thread(private_postgres.start)
                async with InstrumentRegistryService(settings) as writer:
                    await writer.stream([256265], "full")
                assert await next_change(changes) == {**in_db, 256265: "full"}
                watching.cancel()


async def test_asyncpg_listener_connection_uses_the_schema(settings: Settings) -> None:
    database = Database.from_settings(settings.database)
    await upgrade(database)
    conn: asyncpg.Connection = await database.connect_raw()
    try:
        assert await conn.fetchval("SELECT current_schema()") == settings.database.schema_name
    finally:
        await conn.close()


async def test_streaming_is_capped_at_the_api_keys_capacity(
    settings_for: Callable[..., Settings], schema: str, tmp_path: Path
) -> None:
    csv = write_dump(tmp_path / "instruments.csv")
    small = settings_for(
        database={"url": SHARED_DATABASE, "schema_name": schema},
        kite={"max_connections": 1, "max_instruments_per_connection": 2},
        feed={"instruments_csv": csv},
    )
    async with InstrumentRegistryService(small) as registry:
        await registry.load_dump(csv)
        await registry.stream([738561, 408065], "full")
        with pytest.raises(ValueError, match="at most 2"):
            await registry.stream([256265], "full")
        with pytest.raises(ValueError, match="at most 2"):
            await registry.load_dump(csv, stream_mode="quote")
        # Refused as a whole: the set is what it was.
        assert await registry.streaming() == {738561: "full", 408065: "full"}

    roomy = settings_for(database={"url": SHARED_DATABASE, "schema_name": schema})
    async with InstrumentRegistryService(roomy) as registry:
        await registry.stream([256265, 412675], "ltp")
    # Streaming four instruments was allowed by a larger deployment; the small one
    # streams what it can and says so.
    async with InstrumentRegistryService(small) as registry:
        assert await registry.load() == {256265: "ltp", 408065: "full"}
        assert registry.over_capacity == 1


def test_db_upgrade_and_current_cli(schema: str) -> None:
    before = run_cli(schema, "db", "current")
    assert before.returncode == 0, before.stderr
    assert "revision none" in before.stdout and "upgrade needed" in before.stdout
    upgraded = run_cli(schema, "db", "upgrade")
    assert upgraded.returncode == 0, upgraded.stderr
    assert f"schema {schema} at revision {head_revision()}" in upgraded.stdout
    assert run_cli(schema, "db", "upgrade").returncode == 0  # idempotent
    assert "up to date" in run_cli(schema, "db", "current").stdout
