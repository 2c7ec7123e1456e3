"""The Kite exchange simulator over real sockets: a ``websockets`` client, real admin HTTP,
the official ``kiteconnect`` login call."""

from __future__ import annotations

import asyncio
import datetime as dt
import hashlib
import itertools
import json
import time
from collections import defaultdict
from collections.abc import Callable
from pathlib import Path

import httpx
import kiteconnect
import pytest
import websockets
from kiteconnect import exceptions as kite_exceptions
from websockets.asyncio.client import ClientConnection
from websockets.exceptions import ConnectionClosed, ConnectionClosedError, InvalidStatus

from alphapanda.instruments import Instrument
from alphapanda.kite.protocol import (
    SKIP_TRUNCATED,
    SKIP_UNKNOWN_LENGTH,
    DecodedMessage,
    Tick,
    client_message,
    decode_message,
    parse_text_message,
)
from tests.support.sim import SimHandle, default_instruments, running_simulator, simulator_process


def _shipped_tokens() -> dict[str, int]:
    """The first instrument of each segment of the shipped universe."""
    by_segment: dict[str, int] = {}
    for inst in default_instruments():
        by_segment.setdefault(inst.segment, inst.instrument_token)
    return by_segment


TOKENS = _shipped_tokens()
EQ, FUT, CDS, IDX = TOKENS["NSE"], TOKENS["NFO-FUT"], TOKENS["CDS-FUT"], TOKENS["INDICES"]


class Client:
    """A test's view of one ticker connection: decoded binary messages and error texts."""

    def __init__(self, ws: ClientConnection) -> None:
        self.ws = ws
        self.ticks: list[Tick] = []
        self.frames: list[DecodedMessage] = []
        self.errors: list[str] = []
        self.heartbeats = 0

    async def send(self, action: str, tokens: list[int], mode: str | None = None) -> None:
        await self.ws.send(client_message(action, tokens, mode))

    async def receive_one(self, within: float = 10.0) -> None:
        message = await asyncio.wait_for(self.ws.recv(), within)
        if isinstance(message, str):
            text = parse_text_message(message)
            assert text.type == "error", message
            self.errors.append(str(text.data))
            return
        decoded = decode_message(message, time.time_ns())
        self.frames.append(decoded)
        self.heartbeats += decoded.heartbeat
        self.ticks.extend(decoded.ticks)

    async def until(self, condition: Callable[[], bool], within: float = 10.0) -> None:
        """Receive until ``condition()`` holds (checked after every message)."""
        deadline = time.monotonic() + within
        while not condition():
            left = deadline - time.monotonic()
            if left <= 0:
                raise AssertionError("condition not met in time")
            await self.receive_one(left)

    async def barrier(self) -> None:
        """Everything the server sent before it handled this point has arrived: the
        server answers an invalid message in order with the messages before it."""
        marker = f"barrier-{time.monotonic_ns()}"
        await self.ws.send(json.dumps({"a": marker, "v": []}))
        await self.until(lambda: any(marker in e for e in self.errors))

    def of(self, token: int) -> list[Tick]:
        return [t for t in self.ticks if t.instrument_token == token]


async def connect(sim: SimHandle, **auth: str) -> Client:
    return Client(await websockets.connect(sim.ws_url_with_auth(**auth), max_size=1 << 22))


def assert_volume_continuous(ticks: list[Tick]) -> None:
    """The sequence ledger: each volume = previous volume + that tick's quantity."""
    assert ticks
    for before, after in itertools.pairwise(ticks):
        assert after.last_traded_quantity is not None and before.volume_traded is not None
        assert after.volume_traded == before.volume_traded + after.last_traded_quantity, (
            before,
            after,
        )


async def test_subscribe_defaults_to_quote_mode_switches_and_unsubscribe() -> None:
    async with running_simulator(ticks_per_second=600) as sim:
        client = await connect(sim)
        await client.send("subscribe", [EQ, CDS, IDX])
        await client.until(lambda: all(len(client.of(t)) >= 3 for t in (EQ, CDS, IDX)))
        assert {t.mode for t in client.ticks} == {"quote"}
        assert not client.of(IDX)[0].tradable

        await client.send("mode", [CDS], "full")
        await client.send("mode", [EQ], "ltp")
        await client.barrier()
        mark = len(client.ticks)
        await client.until(lambda: len(client.of(CDS)) > 20 and len(client.ticks) > mark + 30)
        later = client.ticks[mark:]
        assert {t.mode for t in later if t.instrument_token == CDS} == {"full"}
        assert {t.mode for t in later if t.instrument_token == EQ} == {"ltp"}
        assert all(len(t.depth_buy) == 5 for t in later if t.instrument_token == CDS)
        assert_volume_continuous(client.of(CDS))

        await client.send("unsubscribe", [CDS, EQ])
        await client.barrier()
        mark = len(client.ticks)
        await client.until(lambda: len(client.ticks) > mark + 10)
        assert {t.instrument_token for t in client.ticks[mark:]} == {IDX}
        stats = await sim.stats()
        assert list(stats["subscriptions"].values()) == [{str(IDX): "quote"}]
        await client.ws.close()


async def test_each_connection_gets_every_tick_in_its_own_mode() -> None:
    async with running_simulator(ticks_per_second=400) as sim:
        full, quote = await connect(sim), await connect(sim)
        await full.send("subscribe", [FUT])
        await full.send("mode", [FUT], "full")
        await full.barrier()
        await quote.send("subscribe", [FUT])
        await quote.barrier()
        await quote.until(lambda: len(quote.of(FUT)) >= 50)
        await full.until(lambda: len(full.of(FUT)) >= 80)
        shared = [t.volume_traded for t in quote.of(FUT)]
        in_full = [t.volume_traded for t in full.of(FUT)]
        # The quote client joined later: its ticks are a contiguous run of the full one's.
        start = in_full.index(shared[0])
        assert in_full[start : start + len(shared)] == shared
        assert {t.mode for t in full.of(FUT)} == {"full"}
        assert {t.mode for t in quote.of(FUT)} == {"quote"}
        assert all(t.oi and t.oi > 0 for t in full.of(FUT))
        assert_volume_continuous(full.of(FUT))
        assert_volume_continuous(quote.of(FUT))


@pytest.mark.parametrize(
    "auth",
    [
        {"access_token": "wrong"},
        {"api_key": "someone-else"},
        {"access_token": ""},
        {"api_key": "%E2%82%AC"},
    ],
    ids=["bad-token", "bad-api-key", "no-token", "non-ascii-key"],
)
async def test_bad_credentials_get_403_at_the_handshake(auth: dict[str, str]) -> None:
    async with running_simulator() as sim:
        with pytest.raises(InvalidStatus) as refused:
            await connect(sim, **auth)
        assert refused.value.response.status_code == 403
        stats = await sim.stats()
        assert stats["handshakes"] == {"accepted": 0, "403": 1, "429": 0}


async def test_fourth_connection_gets_429_and_a_freed_slot_is_reusable() -> None:
    async with running_simulator() as sim:
        clients = [await connect(sim) for _ in range(3)]
        with pytest.raises(InvalidStatus) as refused:
            await connect(sim)
        assert refused.value.response.status_code == 429
        await clients[0].ws.close()
        await sim.wait_for(lambda s: s["connections"] == {sim.api_key: 2})
        clients[0] = await connect(sim)
        stats = await sim.stats()
        assert stats["handshakes"] == {"accepted": 4, "403": 0, "429": 1}
        assert stats["connections"] == {sim.api_key: 3}
        assert stats["max_concurrent"] == {sim.api_key: 3}
        for client in clients:
            await client.ws.close()


def _synthetic_universe(n: int) -> list[Instrument]:
    return [
        Instrument((10_000 + i) << 8 | 1, 10_000 + i, f"S{i}", f"S{i}", 100.0, None, 0.0, 0.05, 1, "EQ", "NSE", "NSE")
        for i in range(n)
    ]  # fmt: skip


async def test_more_than_3000_instruments_on_one_connection_is_refused() -> None:
    universe = _synthetic_universe(3100)
    tokens = [i.instrument_token for i in universe]
    async with running_simulator(instruments=universe, ticks_per_second=0) as sim:
        client = await connect(sim)
        await client.send("subscribe", tokens[:3001])
        await client.until(lambda: bool(client.errors))
        assert "3000" in client.errors[0]
        stats = await sim.stats()
        assert list(stats["subscriptions"].values()) == [{}]
        await client.send("subscribe", tokens[:3000])
        await client.barrier()
        assert len(client.errors) == 2  # the refusal and the barrier, nothing for 3000
        stats = await sim.stats()
        assert len(next(iter(stats["subscriptions"].values()))) == 3000
        await client.send("subscribe", tokens[3000:3001])
        await client.until(lambda: len(client.errors) == 3)
        assert "3000" in client.errors[2]


async def test_unknown_tokens_and_malformed_messages_get_error_texts() -> None:
    async with running_simulator(ticks_per_second=100) as sim:
        client = await connect(sim)
        await client.send("subscribe", [EQ, 999_999_999])
        await client.until(lambda: len(client.errors) == 1)
        assert "999999999" in client.errors[0]
        for bad in ("{oops", '{"a": "mode", "v": ["turbo", [1]]}', '{"v": 3}'):
            await client.ws.send(bad)
        await client.ws.send(b"\x01\x02")
        await client.until(lambda: len(client.errors) == 5)
        assert all("invalid message" in e for e in client.errors[1:4])
        assert "binary" in client.errors[4]
        await client.until(lambda: len(client.of(EQ)) >= 3)  # still serving


async def test_heartbeats_when_idle() -> None:
    async with running_simulator(ticks_per_second=1000) as sim:
        client = await connect(sim)  # subscribed to nothing: nothing to send but heartbeats
        await client.until(lambda: client.heartbeats >= 2, within=5)
        assert all(f.heartbeat and not f.ticks for f in client.frames)
        stats = await sim.stats()
        assert stats["heartbeats_sent"] >= 2


async def test_drop_closes_abruptly_and_costs_no_ticks_after_resubscribing() -> None:
    async with running_simulator(ticks_per_second=3000) as sim:
        tokens = [EQ, FUT, CDS]
        last: dict[int, Tick] = {}
        for round_ in range(3):
            client = await connect(sim)
            await client.send("subscribe", tokens)
            await client.until(lambda c=client: all(len(c.of(t)) >= 20 for t in tokens))
            assert await sim.fault_drop() == 1
            with pytest.raises(ConnectionClosedError) as closed:
                await client.until(lambda: False, within=10)
            assert closed.value.rcvd is None  # no close frame: an abrupt TCP close
            for token in tokens:
                ticks = client.of(token)
                if round_:
                    ticks = [last[token], *ticks]
                assert_volume_continuous(ticks)
                last[token] = ticks[-1]
        stats = await sim.stats()
        assert stats["connections_dropped"] == 3
        assert stats["connections"] == {}


async def test_stall_sends_nothing_then_resumes_without_losing_ticks() -> None:
    async with running_simulator(ticks_per_second=500) as sim:
        client = await connect(sim)
        await client.send("subscribe", [EQ])
        await client.until(lambda: len(client.of(EQ)) >= 10)
        arrivals = [time.monotonic()]
        await sim.fault_stall(2.0)
        stats = await sim.stats()
        assert stats["stalled"] is True
        # Nothing is generated during a stall, so this is every tick sent before it.
        before_stall = stats["ticks_sent"][str(EQ)]
        while len(client.of(EQ)) < before_stall + 10:
            await client.receive_one(within=10)
            arrivals.append(time.monotonic())
        gaps = [b - a for a, b in itertools.pairwise(arrivals)]
        # Nothing at all (not even a heartbeat) during the stall, then ticks again.
        assert max(gaps) >= 1.5
        assert_volume_continuous(client.of(EQ))
        assert (await sim.stats())["stalled"] is False


async def test_malformed_frame_arrives_and_the_connection_keeps_working() -> None:
    async with running_simulator(ticks_per_second=200) as sim:
        client = await connect(sim)
        await client.send("subscribe", [EQ])
        await client.until(lambda: len(client.of(EQ)) >= 2)
        assert await sim.fault_malformed() == 1
        await client.until(lambda: any(f.skipped for f in client.frames))
        bad = next(f for f in client.frames if f.skipped)
        assert bad.ticks == []
        assert [s.reason for s in bad.skipped] == [SKIP_UNKNOWN_LENGTH, SKIP_TRUNCATED]
        seen = len(client.of(EQ))
        await client.until(lambda: len(client.of(EQ)) >= seen + 5)
        assert_volume_continuous(client.of(EQ))
        assert (await sim.stats())["malformed_sent"] == 1


async def test_expired_token_closes_sockets_and_403s_until_a_new_token() -> None:
    async with running_simulator(ticks_per_second=100) as sim:
        client = await connect(sim)
        await client.send("subscribe", [EQ])
        await client.until(lambda: bool(client.of(EQ)))
        assert await sim.expire_token() == 1
        with pytest.raises(ConnectionClosed) as closed:
            await client.until(lambda: False)
        assert closed.value.rcvd is not None and closed.value.rcvd.code == 1008
        for _ in range(2):
            with pytest.raises(InvalidStatus) as refused:
                await connect(sim)
            assert refused.value.response.status_code == 403
        await sim.set_token("fresh-token")
        renewed = await connect(sim, access_token="fresh-token")
        await renewed.send("subscribe", [EQ])
        await renewed.until(lambda: bool(renewed.of(EQ)))
        with pytest.raises(InvalidStatus):
            await connect(sim)  # the expired one stays expired
        stats = await sim.stats()
        assert stats["tokens_expired"] == 1
        assert stats["handshakes"] == {"accepted": 2, "403": 3, "429": 0}


async def test_stats_count_what_each_client_received() -> None:
    async with running_simulator(ticks_per_second=1500) as sim:
        client = await connect(sim)
        await client.send("subscribe", [EQ, FUT, IDX])
        await client.send("mode", [FUT], "full")
        await client.until(lambda: len(client.ticks) >= 200)
        await sim.set_rate(0)
        # A heartbeat is only sent after a second without ticks: everything before it
        # has been received.
        await client.until(lambda: client.frames[-1].heartbeat, within=5)
        stats = await sim.stats()
        per_token: dict[str, int] = defaultdict(int)
        for tick in client.ticks:
            per_token[str(tick.instrument_token)] += 1
        assert stats["ticks_sent"] == dict(per_token)
        assert stats["total_ticks_sent"] == len(client.ticks)
        assert stats["packets_sent"] == len(client.ticks)
        assert stats["ticks_per_second"] == 0
        assert stats["connections"] == {sim.api_key: 1}
        assert list(stats["subscriptions"].values()) == [
            {str(EQ): "quote", str(FUT): "full", str(IDX): "quote"}
        ]
        assert stats["handshakes"]["accepted"] == 1


async def test_admin_rejects_bad_input() -> None:
    async with running_simulator() as sim, httpx.AsyncClient(base_url=sim.admin_url) as http:
        assert (await http.post("/faults/stall", params={"seconds": -1})).status_code == 422
        assert (await http.post("/rate", params={"ticks_per_second": "fast"})).status_code == 422
        assert (await http.post("/token", json={})).status_code == 422


async def test_login_with_the_official_kiteconnect_client() -> None:
    async with running_simulator(api_secret="s3cret") as sim:

        def login(request_token: str, secret: str) -> dict[str, object]:
            kite = kiteconnect.KiteConnect(api_key=sim.api_key, root=sim.admin_url)
            session: dict[str, object] = kite.generate_session(request_token, api_secret=secret)
            return session

        # The official client is synchronous (requests); the simulator shares our loop.
        session = await asyncio.to_thread(login, "req-1", "s3cret")
        token = session["access_token"]
        assert isinstance(token, str) and token
        assert session["user_id"] and session["api_key"] == sim.api_key
        assert isinstance(session["login_time"], dt.datetime)
        with pytest.raises(kite_exceptions.TokenException):
            await asyncio.to_thread(login, "req-2", "wrong-secret")
        with pytest.raises(kite_exceptions.TokenException):
            await asyncio.to_thread(login, "req-1", "s3cret")  # a request token is single-use
        client = await connect(sim, access_token=token)
        await client.send("subscribe", [EQ])
        await client.until(lambda: bool(client.of(EQ)))
        # The checksum is Kite's: sha256(api_key + request_token + api_secret).
        checksum = hashlib.sha256(f"{sim.api_key}req-3s3cret".encode()).hexdigest()
        async with httpx.AsyncClient(base_url=sim.admin_url) as http:
            reply = await http.post(
                "/session/token",
                data={"api_key": sim.api_key, "request_token": "req-3", "checksum": checksum[::-1]},
            )
        assert reply.status_code == 403
        assert reply.json()["error_type"] == "TokenException"
        assert (await sim.stats())["logins"] == 1


def test_cli_simulator_in_a_subprocess() -> None:
    async def exercise(sim: SimHandle) -> None:
        client = await connect(sim, access_token="cli-token")
        try:
            await client.send("subscribe", [EQ, CDS])
            await client.send("mode", [CDS], "full")
            await client.until(lambda: len(client.of(CDS)) >= 20)
            assert_volume_continuous(client.of(CDS))
            with pytest.raises(InvalidStatus) as refused:
                await connect(sim, access_token="cli-token")  # --max-connections 1
            assert refused.value.response.status_code == 429
            stats = await sim.stats()
            assert stats["handshakes"] == {"accepted": 1, "403": 0, "429": 1}
        finally:
            await client.ws.close()

    with simulator_process(
        ticks_per_second=2000, access_token="cli-token", max_connections=1, seed=5
    ) as sim:
        asyncio.run(exercise(sim))


def test_cli_refuses_an_unreadable_or_empty_universe(tmp_path: Path) -> None:
    with (
        pytest.raises(RuntimeError, match="cannot read"),
        simulator_process(instruments=tmp_path / "missing.csv"),
    ):
        pass
    empty = tmp_path / "empty.csv"
    empty.write_text("instrument_token,tradingsymbol\n1,X\n")
    with (
        pytest.raises(RuntimeError, match="no usable instruments"),
        simulator_process(instruments=empty),
    ):
        pass
