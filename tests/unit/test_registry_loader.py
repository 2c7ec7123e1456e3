"""The registry loader's own logic, without PostgreSQL.

A scripted connection answers each statement with a prepared result and records what
was sent, so these tests cover what the loader decides in Python: validation before any
write, counting inserted / updated / unchanged rows across batches, the rows it builds,
the messages it refuses with and the capacity check. What the SQL does against a real
database (upsert idempotence, the NOTIFY trigger, all-or-nothing) is covered by
``tests/integration/test_registry.py``.
"""

from __future__ import annotations

import datetime as dt
from typing import Any

import pytest
from sqlalchemy.sql import Insert, Select, Update

from alphapanda.instruments.dump import COLUMNS, Instrument
from alphapanda.registry import loader
from alphapanda.registry.loader import UpsertCounts
from alphapanda.registry.models import STREAM_MODES
from tests.support.scripted_db import Answer, ScriptedConnection, compiled_params

pytestmark = pytest.mark.unit


def flags(inserted: int, updated: int) -> Answer:
    """The RETURNING of an upsert: True per inserted row, False per updated row."""
    return Answer([(True,)] * inserted + [(False,)] * updated)


def known(*tokens: int) -> Answer:
    return Answer([(t,) for t in tokens])


def instrument(token: int, **changes: Any) -> Instrument:
    values: dict[str, Any] = {
        "instrument_token": token,
        "exchange_token": token >> 8,
        "tradingsymbol": f"SYM{token}",
        "name": f"NAME {token}",
        "last_price": 101.5,
        "expiry": dt.date(2026, 12, 31),
        "strike": 22000.0,
        "tick_size": 0.05,
        "lot_size": 75,
        "instrument_type": "CE",
        "segment": "NFO-OPT",
        "exchange": "NFO",
    }
    values.update(changes)
    return Instrument(**values)


# -- UpsertCounts ------------------------------------------------------------------------


def test_upsert_counts_add_field_by_field() -> None:
    total = UpsertCounts(1, 2, 3) + UpsertCounts(10, 20, 30)
    assert total == UpsertCounts(inserted=11, updated=22, unchanged=33)


def test_upsert_counts_start_at_zero() -> None:
    assert UpsertCounts() == UpsertCounts(0, 0, 0)
    assert UpsertCounts() + UpsertCounts(0, 1, 0) == UpsertCounts(updated=1)


# -- upsert_instruments ------------------------------------------------------------------


async def test_an_empty_dump_sends_nothing_and_counts_nothing() -> None:
    db = ScriptedConnection()
    assert await loader.upsert_instruments(db.conn, []) == UpsertCounts()
    assert db.statements == []


async def test_rows_not_returned_by_the_upsert_are_counted_unchanged() -> None:
    db = ScriptedConnection([flags(inserted=2, updated=1)])
    batch = [instrument(t) for t in (256265, 408065, 738561, 884737, 2953217)]
    counts = await loader.upsert_instruments(db.conn, batch)
    assert counts == UpsertCounts(inserted=2, updated=1, unchanged=2)
    assert len(db.statements) == 1 and isinstance(db.statements[0], Insert)


async def test_a_large_dump_is_sent_in_batches_and_their_counts_summed() -> None:
    size = loader._BATCH
    dump = [instrument(t) for t in range(1, 2 * size + 2)]  # two full batches and one row
    db = ScriptedConnection(
        [flags(inserted=size, updated=0), flags(inserted=10, updated=5), flags(0, 0)]
    )
    counts = await loader.upsert_instruments(db.conn, dump)
    assert counts == UpsertCounts(inserted=size + 10, updated=5, unchanged=size - 15 + 1)
    assert len(db.statements) == 3 and not db.answers


async def test_the_upsert_carries_every_dump_column_of_every_row() -> None:
    rows = [instrument(408065), instrument(738561, expiry=None, name="", strike=0.0)]
    db = ScriptedConnection([flags(2, 0)])
    await loader.upsert_instruments(db.conn, rows)
    params = compiled_params(db.statements[0])
    for index, row in enumerate(rows):
        sent = {column: params[f"{column}_m{index}"] for column in COLUMNS}
        assert sent == {column: getattr(row, column) for column in COLUMNS}


def test_the_batch_stays_within_the_drivers_parameter_limit() -> None:
    # asyncpg refuses a statement with more than 32767 bind parameters.
    assert loader._BATCH * len(COLUMNS) <= 32767
    assert loader._BATCH * 4 * 3 <= 32767  # streaming rows: token, mode, enabled


# -- validation before any write ---------------------------------------------------------


@pytest.mark.parametrize("mode", ["depth", "FULL", "", " full"])
async def test_a_bad_mode_is_refused_before_any_statement(mode: str) -> None:
    db = ScriptedConnection()
    with pytest.raises(ValueError, match=r"mode must be one of ltp, quote, full, got"):
        await loader.enable_streaming(db.conn, [408065], mode)
    assert db.statements == []


@pytest.mark.parametrize("mode", STREAM_MODES)
async def test_every_stream_mode_is_accepted(mode: str) -> None:
    db = ScriptedConnection([known(408065), Answer(rowcount=1)])
    assert await loader.enable_streaming(db.conn, [408065], mode) == 1


async def test_streaming_no_tokens_changes_nothing_and_sends_nothing() -> None:
    db = ScriptedConnection()
    assert await loader.enable_streaming(db.conn, [], "full", capacity=0) == 0
    assert await loader.disable_streaming(db.conn, iter(())) == 0
    assert await loader.unknown_tokens(db.conn, []) == []
    assert db.statements == []


async def test_unknown_tokens_are_sorted_and_deduplicated() -> None:
    db = ScriptedConnection([known(300)])
    assert await loader.unknown_tokens(db.conn, [500, 300, 100, 500, 100]) == [100, 500]


async def test_unknown_tokens_refuse_the_whole_request_and_write_nothing() -> None:
    db = ScriptedConnection([known(408065)])
    with pytest.raises(ValueError, match=r"unknown instrument token\(s\): 999; load the dump"):
        await loader.enable_streaming(db.conn, [408065, 999], "full")
    assert len(db.statements) == 1 and isinstance(db.statements[0], Select)


async def test_a_long_list_of_unknown_tokens_shows_ten_and_counts_the_rest() -> None:
    db = ScriptedConnection([known()])
    with pytest.raises(ValueError, match="unknown instrument token") as refused:
        await loader.enable_streaming(db.conn, range(25, 0, -1), "ltp")
    assert str(refused.value).startswith(
        "unknown instrument token(s): 1, 2, 3, 4, 5, 6, 7, 8, 9, 10 (+15 more);"
    )


async def test_exactly_ten_unknown_tokens_are_all_shown_without_a_remainder() -> None:
    db = ScriptedConnection([known()])
    with pytest.raises(ValueError, match="unknown instrument token") as refused:
        await loader.enable_streaming(db.conn, range(1, 11), "ltp")
    assert "1, 2, 3, 4, 5, 6, 7, 8, 9, 10;" in str(refused.value)
    assert "more" not in str(refused.value)


async def test_an_eleventh_unknown_token_is_counted_not_shown() -> None:
    db = ScriptedConnection([known()])
    with pytest.raises(ValueError, match=r"1, 2, 3, 4, 5, 6, 7, 8, 9, 10 \(\+1 more\);"):
        await loader.enable_streaming(db.conn, range(1, 12), "ltp")


# -- enable_streaming: rows and capacity -------------------------------------------------


async def test_streaming_rows_are_one_per_distinct_token_in_the_chosen_mode() -> None:
    db = ScriptedConnection([known(1, 2, 3), Answer(rowcount=3)])
    assert await loader.enable_streaming(db.conn, [3, 1, 2, 3, 1], "quote") == 3
    params = compiled_params(db.statements[1])
    tokens = [params[f"instrument_token_m{i}"] for i in range(3)]
    assert tokens == [1, 2, 3]
    assert {params[f"mode_m{i}"] for i in range(3)} == {"quote"}
    assert {params[f"enabled_m{i}"] for i in range(3)} == {True}
    assert "instrument_token_m3" not in params


async def test_rows_changed_are_summed_over_batches() -> None:
    size = loader._BATCH * 4
    tokens = range(1, size + 3)
    db = ScriptedConnection([known(*tokens), Answer(rowcount=size - 1), Answer(rowcount=2)])
    assert await loader.enable_streaming(db.conn, tokens, "full") == size + 1
    assert len(db.statements) == 3
    assert all(isinstance(s, Insert) for s in db.statements[1:])


async def test_without_a_capacity_nothing_is_counted() -> None:
    db = ScriptedConnection([known(1), Answer(rowcount=1)])
    await loader.enable_streaming(db.conn, [1], "full", capacity=None)
    assert len(db.statements) == 2 and not db.answers


async def test_streaming_up_to_the_capacity_is_allowed() -> None:
    db = ScriptedConnection([known(1, 2), Answer(rowcount=2), Answer([(9000,)])])
    assert await loader.enable_streaming(db.conn, [1, 2], "full", capacity=9000) == 2


async def test_streaming_beyond_the_capacity_is_refused_with_the_numbers() -> None:
    db = ScriptedConnection([known(1, 2), Answer(rowcount=2), Answer([(9001,)])])
    with pytest.raises(ValueError, match=r"would stream 9001 instruments; .* at most 9000"):
        await loader.enable_streaming(db.conn, [1, 2], "full", capacity=9000)


# -- disable and read --------------------------------------------------------------------


async def test_unstreaming_reports_the_rows_the_database_changed() -> None:
    db = ScriptedConnection([Answer(rowcount=1)])
    assert await loader.disable_streaming(db.conn, [408065, 738561, 408065]) == 1
    (statement,) = db.statements
    assert isinstance(statement, Update)
    params = compiled_params(statement)
    assert params["enabled"] is False
    # The tokens are asked for once each, in order.
    assert [v for v in params.values() if isinstance(v, list)] == [[408065, 738561]]


async def test_the_streaming_set_maps_each_token_to_its_mode() -> None:
    db = ScriptedConnection([Answer([(408065, "ltp"), (738561, "full")])])
    assert await loader.read_streaming_set(db.conn) == {408065: "ltp", 738561: "full"}
