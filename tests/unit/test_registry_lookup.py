"""Instrument references and lookups: parsing ``EXCHANGE:SYMBOL``, and what the queries
make of their rows (order, case, escaping), with a scripted connection instead of
PostgreSQL. The queries against real data are covered by
``tests/integration/test_instruments_fetch.py``."""

from __future__ import annotations

import datetime as dt

import pytest
from sqlalchemy.sql import Select, Update

from alphapanda.registry import lookup
from alphapanda.registry.lookup import (
    FoundInstrument,
    RegistrySummary,
    RetiredInstrument,
    missing_symbols,
    parse_instrument_ref,
)
from tests.support.scripted_db import Answer, ScriptedConnection, compiled_params

pytestmark = pytest.mark.unit

TODAY = dt.date(2026, 11, 26)


# -- parse_instrument_ref ----------------------------------------------------------------


@pytest.mark.parametrize(
    ("ref", "parsed"),
    [
        ("408065", 408065),
        (" 408065\n", 408065),
        ("NSE:INFY", ("NSE", "INFY")),
        ("nse:infy", ("NSE", "INFY")),
        (" NFO : nifty24decfut ", ("NFO", "NIFTY24DECFUT")),
        ("NSE:NIFTY 50", ("NSE", "NIFTY 50")),
        ("BSE:M&M", ("BSE", "M&M")),
    ],
)
def test_a_reference_is_a_token_or_an_exchange_and_symbol(
    ref: str, parsed: int | tuple[str, str]
) -> None:
    assert parse_instrument_ref(ref) == parsed


@pytest.mark.parametrize("ref", ["", "   ", "INFY", ":INFY", "NSE:", " : ", "-408065", "4080.65"])
def test_anything_else_is_refused_with_an_example(ref: str) -> None:
    with pytest.raises(ValueError, match=r"expected an instrument token or EXCHANGE:TRADINGSYMBOL"):
        parse_instrument_ref(ref)


def test_the_refusal_quotes_the_reference_as_given() -> None:
    with pytest.raises(ValueError, match=r"^' infy ': expected"):
        parse_instrument_ref(" infy ")


def test_missing_symbols_keep_the_order_asked_for() -> None:
    wanted = [("NSE", "INFY"), ("NSE", "TCS"), ("MCX", "GOLD"), ("NSE", "NOPE")]
    found = {("NSE", "TCS"): 2953217}
    assert missing_symbols(wanted, found) == ["NSE:INFY", "MCX:GOLD", "NSE:NOPE"]
    assert missing_symbols(wanted[1:2], found) == []


def test_a_found_instrument_is_written_exchange_colon_symbol() -> None:
    found = FoundInstrument(256265, "NSE", "NIFTY 50", "NIFTY 50", "EQ", None, 1, None)
    assert found.symbol == "NSE:NIFTY 50"


# -- tokens_for_symbols ------------------------------------------------------------------


async def test_symbols_are_looked_up_once_and_keyed_in_upper_case() -> None:
    db = ScriptedConnection([Answer([("nse", "Infy", 408065), ("NSE", "TCS", 2953217)])])
    wanted = [("NSE", "INFY"), ("NSE", "TCS"), ("NSE", "INFY")]
    found = await lookup.tokens_for_symbols(db.conn, wanted)
    assert found == {("NSE", "INFY"): 408065, ("NSE", "TCS"): 2953217}
    (statement,) = db.statements
    assert [v for v in compiled_params(statement).values() if isinstance(v, list)] == [
        [("NSE", "INFY"), ("NSE", "TCS")]
    ]


async def test_no_symbols_send_no_query() -> None:
    db = ScriptedConnection()
    assert await lookup.tokens_for_symbols(db.conn, []) == {}
    assert db.statements == []


# -- find --------------------------------------------------------------------------------


async def test_find_matches_like_wildcards_literally() -> None:
    db = ScriptedConnection([Answer()])
    await lookup.find(db.conn, " NIFTY_50% ")
    params = compiled_params(db.statements[0])
    patterns = {v for v in params.values() if isinstance(v, str) and v.startswith("%")}
    assert patterns == {r"%NIFTY\_50\%%"}


async def test_find_passes_the_exchange_in_upper_case_and_the_limit() -> None:
    db = ScriptedConnection([Answer()])
    await lookup.find(db.conn, "infy", exchange="nse", limit=7)
    values = list(compiled_params(db.statements[0]).values())
    assert "NSE" in values and 7 in values


async def test_find_reports_a_mode_only_for_instruments_streaming_now() -> None:
    rows = [
        (408065, "NSE", "INFY", "INFOSYS", "EQ", None, 1, "full", True),
        (500209, "BSE", "INFY", "INFOSYS", "EQ", None, 1, "ltp", False),
        (1, "NFO", "INFY26DECFUT", "INFY", "FUT", TODAY, 400, None, None),
    ]
    db = ScriptedConnection([Answer(rows)])
    found = await lookup.find(db.conn, "infy")
    assert [(f.symbol, f.streaming_mode) for f in found] == [
        ("NSE:INFY", "full"),
        ("BSE:INFY", None),
        ("NFO:INFY26DECFUT", None),
    ]
    assert found[2] == FoundInstrument(1, "NFO", "INFY26DECFUT", "INFY", "FUT", TODAY, 400, None)


# -- retire_expired ----------------------------------------------------------------------


async def test_nothing_expired_updates_nothing() -> None:
    db = ScriptedConnection([Answer()])
    assert await lookup.retire_expired(db.conn, TODAY) == []
    assert len(db.statements) == 1 and isinstance(db.statements[0], Select)


async def test_expired_contracts_are_unstreamed_and_reported_with_their_symbols() -> None:
    expired = [
        (11, "NFO", "NIFTY26NOVFUT", dt.date(2026, 11, 24)),
        (12, "MCX", "GOLD26NOVFUT", dt.date(2026, 11, 25)),
    ]
    db = ScriptedConnection([Answer(expired), Answer(rowcount=2)])
    retired = await lookup.retire_expired(db.conn, TODAY)
    assert retired == [
        RetiredInstrument(11, "NFO:NIFTY26NOVFUT", dt.date(2026, 11, 24)),
        RetiredInstrument(12, "MCX:GOLD26NOVFUT", dt.date(2026, 11, 25)),
    ]
    update = db.statements[1]
    assert isinstance(update, Update)
    params = compiled_params(update)
    assert params["enabled"] is False
    assert [v for v in params.values() if isinstance(v, list)] == [[11, 12]]


async def test_many_expired_contracts_are_unstreamed_in_batches() -> None:
    count = lookup._BATCH + 1
    expired = [(t, "NFO", f"X{t}", dt.date(2026, 11, 1)) for t in range(count)]
    db = ScriptedConnection([Answer(expired), Answer(), Answer()])
    assert len(await lookup.retire_expired(db.conn, TODAY)) == count
    batches = [
        next(v for v in compiled_params(s).values() if isinstance(v, list))
        for s in db.statements[1:]
    ]
    assert [len(b) for b in batches] == [lookup._BATCH, 1]
    assert batches[0] + batches[1] == list(range(count))


# -- summarize ---------------------------------------------------------------------------


async def test_the_summary_carries_the_counts_and_the_capacity() -> None:
    updated = dt.datetime(2026, 11, 26, 2, 0, tzinfo=dt.UTC)
    db = ScriptedConnection([Answer([(120000, updated)]), Answer([(42,)]), Answer([(3,)])])
    summary = await lookup.summarize(db.conn, 9000, TODAY)
    assert summary == RegistrySummary(
        known=120000, streaming=42, capacity=9000, expired_streaming=3, updated_at=updated
    )


async def test_an_empty_registry_has_no_update_time() -> None:
    db = ScriptedConnection([Answer([(0, None)]), Answer([(0,)]), Answer([(0,)])])
    summary = await lookup.summarize(db.conn, 9000, TODAY)
    assert (summary.known, summary.updated_at) == (0, None)
