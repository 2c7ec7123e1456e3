"""From an empty registry to a chosen streaming set, as a user types it: ``doctor``,
``instruments fetch`` (Kite's dump, served by the simulator), ``find``, ``stream
NSE:SYMBOL``, capacity refusal, expired contracts retired. Real PostgreSQL (a private
schema), the real simulator in a subprocess, the real CLI in a subprocess."""

from __future__ import annotations

import datetime as dt
import os
import subprocess
import sys
from collections.abc import Callable, Iterator
from pathlib import Path

import pytest

from alphapanda.instruments import load_instrument_dump
from alphapanda.registry import InstrumentRegistryService
from alphapanda.settings import Settings
from tests.support.services import SHARED_DATABASE, SHARED_KAFKA, SHARED_REDIS
from tests.support.sim import INSTRUMENTS_CSV, SimHandle, simulator_process

ALPHAPANDA = [sys.executable, "-m", "alphapanda"]
UNIVERSE, _ = load_instrument_dump(INSTRUMENTS_CSV)
NSE_EQ = [i for i in UNIVERSE if i.exchange == "NSE" and i.segment == "NSE"]
NFO_FUT = [i for i in UNIVERSE if i.exchange == "NFO" and i.instrument_type == "FUT"]


@pytest.fixture(scope="module")
def sim() -> Iterator[SimHandle]:
    with simulator_process(ticks_per_second=0) as handle:
        yield handle


@pytest.fixture
def cli(
    sim: SimHandle, schema: str, unique: str
) -> Callable[..., subprocess.CompletedProcess[str]]:
    def run(*args: str, **env: str) -> subprocess.CompletedProcess[str]:
        full = {k: v for k, v in os.environ.items() if not k.startswith("ALPHAPANDA_")}
        full.update(
            COLUMNS="200",
            ALPHAPANDA_KAFKA__BOOTSTRAP_SERVERS=SHARED_KAFKA,
            ALPHAPANDA_KAFKA__TOPIC_PREFIX=f"test.{unique}.",
            ALPHAPANDA_REDIS__URL=SHARED_REDIS,
            ALPHAPANDA_DATABASE__URL=SHARED_DATABASE,
            ALPHAPANDA_DATABASE__SCHEMA_NAME=schema,
            ALPHAPANDA_KITE__WS_URL=sim.ws_url,
            ALPHAPANDA_KITE__API_ROOT=sim.admin_url,
            **env,
        )
        return subprocess.run(
            [*ALPHAPANDA, "--env-file", "/nonexistent", *args],
            env=full,
            capture_output=True,
            text=True,
            timeout=90,
            check=False,
        )

    return run


def _row(output: str, name: str) -> str:
    for line in output.splitlines():
        cells = line.split("│")
        if len(cells) > 2 and cells[1].strip() == name:
            return line
    raise AssertionError(f"no row {name!r} in:\n{output}")


def test_fetch_find_stream_and_doctor(cli: Callable[..., subprocess.CompletedProcess[str]]) -> None:
    # A fresh registry: nothing to find, nothing to stream; doctor says what to do.
    empty = cli("instruments", "find", NSE_EQ[0].tradingsymbol)
    assert empty.returncode == 1 and "instruments fetch" in empty.stdout
    doctor = cli("doctor")
    assert doctor.returncode == 1
    row = _row(doctor.stdout, "instruments")
    assert "FAIL" in row and "nothing to stream" in row, doctor.stdout
    assert "OK" in _row(doctor.stdout, "endpoints")
    assert "OK" in _row(doctor.stdout, "token")

    # One exchange at a time, then all: every row of the simulator's universe arrives.
    fetched = cli("instruments", "fetch", "--exchange", "NSE,NFO")
    assert fetched.returncode == 0, fetched.stderr
    nse = sum(1 for i in UNIVERSE if i.exchange == "NSE")
    nfo = sum(1 for i in UNIVERSE if i.exchange == "NFO")
    assert f"NSE: {nse} instrument(s): inserted {nse}" in fetched.stdout
    assert f"NFO: {nfo} instrument(s): inserted {nfo}" in fetched.stdout
    again = cli("instruments", "fetch")
    assert again.returncode == 0, again.stderr
    rest = len(UNIVERSE) - nse - nfo
    assert f"ALL: {len(UNIVERSE)} instrument(s): inserted {rest}" in again.stdout
    assert f"unchanged {nse + nfo}" in again.stdout

    equity, future = NSE_EQ[0], NFO_FUT[0]
    found = cli("instruments", "find", equity.tradingsymbol.lower())
    assert found.returncode == 0, found.stderr
    assert (
        f"NSE:{equity.tradingsymbol}" in found.stdout
        and str(equity.instrument_token) in found.stdout
    )

    # By exchange:tradingsymbol (any case) and by token, in one call.
    index = next(i for i in UNIVERSE if i.segment == "INDICES")
    streamed = cli(
        "instruments",
        "stream",
        f"NSE:{equity.tradingsymbol}",
        f"nfo:{future.tradingsymbol.lower()}",
        str(index.instrument_token),
        "--mode",
        "quote",
    )
    assert streamed.returncode == 0, streamed.stderr
    assert "streaming 3 instrument(s) in quote" in streamed.stdout
    listed = cli("instruments", "list")
    for instrument in (equity, future, index):
        assert instrument.tradingsymbol in listed.stdout

    unknown = cli("instruments", "stream", "NSE:NO-SUCH-THING", f"NSE:{NSE_EQ[1].tradingsymbol}")
    assert unknown.returncode == 2
    assert "unknown instrument(s): NSE:NO-SUCH-THING" in unknown.stderr
    assert "instruments fetch" in unknown.stderr
    malformed = cli("instruments", "stream", "INFY")
    assert malformed.returncode == 2 and "EXCHANGE:TRADINGSYMBOL" in malformed.stderr

    # Beyond the key's capacity: refused whole, the set unchanged.
    small = {
        "ALPHAPANDA_KITE__MAX_CONNECTIONS": "1",
        "ALPHAPANDA_KITE__MAX_INSTRUMENTS_PER_CONNECTION": "3",
    }
    over = cli("instruments", "stream", f"NSE:{NSE_EQ[1].tradingsymbol}", **small)
    assert over.returncode == 2 and "allows at most 3" in over.stderr
    assert NSE_EQ[1].tradingsymbol not in cli("instruments", "list").stdout

    unstreamed = cli("instruments", "unstream", f"NSE:{equity.tradingsymbol}")
    assert unstreamed.returncode == 0 and "stopped streaming 1" in unstreamed.stdout

    doctor = cli("doctor")
    assert "FAIL" not in _row(doctor.stdout, "instruments"), doctor.stdout
    assert "2 streaming of 9000" in _row(doctor.stdout, "instruments")
    assert "OK" in _row(doctor.stdout, "kite"), doctor.stdout


def test_fetch_with_a_rejected_token_says_why(
    cli: Callable[..., subprocess.CompletedProcess[str]],
) -> None:
    refused = cli("instruments", "fetch", ALPHAPANDA_KITE__ACCESS_TOKEN="not-the-token")
    assert refused.returncode == 1
    assert "HTTP 403" in refused.stderr and "not-the-token" not in refused.stderr


def test_doctor_warns_about_a_real_key_against_the_simulator(
    cli: Callable[..., subprocess.CompletedProcess[str]],
) -> None:
    doctor = cli("doctor", ALPHAPANDA_KITE__API_KEY="abcd1234efgh5678")
    row = _row(doctor.stdout, "endpoints")
    assert "WARN" in row and "ALPHAPANDA_KITE__ENV=live" in doctor.stdout, doctor.stdout


async def test_retire_expired_takes_only_past_contracts_out(
    settings_for: Callable[..., Settings], schema: str, tmp_path: Path
) -> None:
    settings = settings_for(database={"url": SHARED_DATABASE, "schema_name": schema})
    near = min(NFO_FUT, key=lambda i: i.expiry or dt.date.max)
    far = next(i for i in NFO_FUT if i.expiry and near.expiry and i.expiry > near.expiry)
    assert near.expiry is not None and far.expiry is not None and near.expiry < far.expiry
    equity = NSE_EQ[0]
    async with InstrumentRegistryService(settings) as registry:
        await registry.load_dump(INSTRUMENTS_CSV)
        tokens = [near.instrument_token, far.instrument_token, equity.instrument_token]
        await registry.stream(tokens, "full")
        # The day after the near contract's expiry: it goes, the rest stay.
        retired = await registry.retire_expired(near.expiry + dt.timedelta(days=1))
        assert [(r.instrument_token, r.symbol) for r in retired] == [
            (near.instrument_token, f"NFO:{near.tradingsymbol}")
        ]
        assert set(await registry.streaming()) == {far.instrument_token, equity.instrument_token}
        summary = await registry.summary(today=far.expiry + dt.timedelta(days=1))
        assert summary.expired_streaming == 1 and summary.streaming == 2
        assert await registry.retire_expired(near.expiry + dt.timedelta(days=1)) == []
