"""The daily refresh's choices, with the download, the registry and the token faked:
what is fetched (every exchange, or each asked for), with which credentials, how an
empty answer is reported, and when expired contracts are retired. The same against the
simulator and PostgreSQL is in ``tests/integration/test_instruments_fetch.py``."""

from __future__ import annotations

import datetime as dt
from collections.abc import Iterable, Sequence
from dataclasses import dataclass, field
from typing import Any, cast

import pytest

from alphapanda.auth import AuthRequired, AuthService
from alphapanda.instruments.dump import Instrument, RowError
from alphapanda.registry import refresh as refresh_module
from alphapanda.registry.lookup import RetiredInstrument
from alphapanda.registry.refresh import RefreshReport, refresh
from alphapanda.registry.service import InstrumentRegistryService, LoadReport
from alphapanda.settings import Settings

pytestmark = pytest.mark.unit

HEADER = (
    "instrument_token,exchange_token,tradingsymbol,name,last_price,expiry,strike,"
    "tick_size,lot_size,instrument_type,segment,exchange"
)
DUMPS = {
    None: "\n".join(
        [
            HEADER,
            "408065,1594,INFY,INFOSYS,0,,0,0.05,1,EQ,NSE,NSE",
            "53490439,208947,GOLD26DECFUT,GOLD,0,2026-12-04,0,1,1,FUT,MCX-FUT,MCX",
        ]
    ),
    "NSE": HEADER + "\n408065,1594,INFY,INFOSYS,0,,0,0.05,1,EQ,NSE,NSE\n",
    "MCX": HEADER + "\nbad,1,X,X,0,,0,1,1,FUT,MCX-FUT,MCX\n",
    "BFO": HEADER + "\n",
}
RETIRED = RetiredInstrument(1, "NFO:NIFTY26NOVFUT", dt.date(2026, 11, 24))


@dataclass
class FakeAuth:
    token: str = "tok-1"
    failure: Exception | None = None

    async def get_access_token(self) -> str:
        if self.failure is not None:
            raise self.failure
        return self.token


@dataclass
class FakeRegistry:
    upserts: list[tuple[list[int], list[RowError]]] = field(default_factory=list)
    retired_before: list[dt.date] = field(default_factory=list)

    async def upsert(
        self, instruments: Sequence[Instrument], errors: Iterable[RowError] = ()
    ) -> LoadReport:
        tokens = [i.instrument_token for i in instruments]
        self.upserts.append((tokens, list(errors)))
        return LoadReport(len(tokens), 0, 0, tuple(self.upserts[-1][1]))

    async def retire_expired(self, today: dt.date) -> list[RetiredInstrument]:
        self.retired_before.append(today)
        return [RETIRED]


@pytest.fixture
def fetched(monkeypatch: pytest.MonkeyPatch) -> list[tuple[Any, ...]]:
    calls: list[tuple[Any, ...]] = []

    def fetch(api_root: str, api_key: str, token: str, exchange: str | None) -> str:
        calls.append((api_root, api_key, token, exchange))
        return DUMPS[exchange]

    monkeypatch.setattr(refresh_module, "fetch_instrument_dump", fetch)
    return calls


SETTINGS = Settings(
    _env_file=None,
    kite={"api_key": "key-r", "api_root": "http://127.0.0.1:18766"},
)


async def run(
    registry: FakeRegistry, auth: FakeAuth, *exchanges: str, retire: dt.date | None = None
) -> RefreshReport:
    return await refresh(
        SETTINGS,
        cast(InstrumentRegistryService, registry),
        cast(AuthService, auth),
        exchanges,
        retire_expired_before=retire,
    )


async def test_without_exchanges_the_whole_dump_is_loaded_as_all(
    fetched: list[tuple[Any, ...]],
) -> None:
    registry = FakeRegistry()
    report = await run(registry, FakeAuth("tok-9"))
    assert fetched == [("http://127.0.0.1:18766", "key-r", "tok-9", None)]
    assert list(report.loaded) == ["ALL"] and report.loaded["ALL"].inserted == 2
    assert registry.upserts == [([408065, 53490439], [])]


async def test_each_exchange_asked_for_is_fetched_and_reported_separately(
    fetched: list[tuple[Any, ...]],
) -> None:
    registry = FakeRegistry()
    report = await run(registry, FakeAuth(), "NSE", "MCX")
    assert [call[3] for call in fetched] == ["NSE", "MCX"]
    assert list(report.loaded) == ["NSE", "MCX"]
    assert report.loaded["NSE"].inserted == 1
    (bad,) = report.loaded["MCX"].bad_rows
    assert bad.line == 2 and "instrument_token" in bad.message


async def test_an_empty_answer_is_reported_as_a_bad_dump(
    fetched: list[tuple[Any, ...]],
) -> None:
    report = await run(FakeRegistry(), FakeAuth(), "BFO")
    assert report.loaded["BFO"].bad_rows == (RowError(1, "Kite returned no instruments for BFO"),)


async def test_no_token_means_no_download(fetched: list[tuple[Any, ...]]) -> None:
    registry = FakeRegistry()
    with pytest.raises(AuthRequired, match="log in"):
        await run(registry, FakeAuth(failure=AuthRequired("log in")), "NSE")
    assert fetched == [] and registry.upserts == []


async def test_expired_contracts_are_retired_only_when_asked(
    fetched: list[tuple[Any, ...]],
) -> None:
    registry = FakeRegistry()
    assert (await run(registry, FakeAuth(), "NSE")).retired == ()
    assert registry.retired_before == []
    today = dt.date(2026, 11, 26)
    assert (await run(registry, FakeAuth(), "NSE", retire=today)).retired == (RETIRED,)
    assert registry.retired_before == [today]
