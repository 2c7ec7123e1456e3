"""The connection life cycle: the pure state machine, and ShardConnection's single-flight
loop driven through an in-memory socket (no network; the real socket is covered by the
integration tests against the simulator)."""

from __future__ import annotations

import asyncio
import json
import random
from datetime import UTC, datetime, timedelta

import pytest

from alphapanda.kite.connection import ShardConnection
from alphapanda.kite.protocol import Tick
from alphapanda.kite.state import ConnectionStateMachine, IllegalTransition
from alphapanda.kite.transport import ConnectFailed
from alphapanda.settings import KiteSettings
from alphapanda.testing import MemoryConnector, VirtualClock, always, eventually

T0 = datetime(2026, 1, 1, tzinfo=UTC)


def test_happy_path_and_reconnect_count() -> None:
    machine = ConnectionStateMachine(T0)
    assert machine.state == "stopped"
    machine.connecting(T0)
    machine.connected(T0 + timedelta(seconds=1))
    assert (machine.state, machine.since, machine.reconnect_count) == (
        "connected",
        T0 + timedelta(seconds=1),
        0,
    )
    machine.failed("closed_by_server", T0 + timedelta(seconds=2))
    assert machine.state == "backoff"
    assert machine.last_disconnect_reason == "closed_by_server"
    machine.connecting(T0 + timedelta(seconds=3))
    assert machine.reconnect_count == 1


def test_auth_failure_enters_auth_required() -> None:
    machine = ConnectionStateMachine(T0)
    machine.connecting(T0)
    machine.failed("auth_403", T0, auth=True)
    assert machine.state == "auth_required"
    machine.connecting(T0)
    assert machine.state == "connecting"


@pytest.mark.parametrize(
    ("setup", "illegal"),
    [
        ([], "connected"),
        (["connecting"], "connecting"),  # a second attempt while one is in flight
        (["connecting", "connected"], "connecting"),  # an attempt while a socket is live
        (["connecting", "connected"], "connected"),
    ],
)
def test_no_second_attempt_while_one_is_in_flight_or_live(setup: list[str], illegal: str) -> None:
    machine = ConnectionStateMachine(T0)
    for step in setup:
        getattr(machine, step)(T0)
    with pytest.raises(IllegalTransition):
        getattr(machine, illegal)(T0)


def test_stop_is_allowed_from_anywhere() -> None:
    for steps in ([], ["connecting"], ["connecting", "connected"]):
        machine = ConnectionStateMachine(T0)
        for step in steps:
            getattr(machine, step)(T0)
        machine.stopped(T0, reason="idle")
        assert machine.state == "stopped"


# -- ShardConnection against an in-memory socket ----------------------------------------


class Tokens:
    def __init__(self, token: str = "tok-1") -> None:
        self.token = token

    async def get_access_token(self) -> str:
        return self.token


class Sink:
    def __init__(self) -> None:
        self.ticks: list[Tick] = []

    async def put_many(self, ticks: list[Tick]) -> None:
        self.ticks.extend(ticks)


def _settings(**overrides: object) -> KiteSettings:
    values: dict[str, object] = {
        "reconnect_base_delay": 0.001,
        "reconnect_max_delay": 0.005,
        "liveness_timeout": 5.0,
        "auth_retry_delay": 0.2,
        "subscribe_chunk_size": 2,
    }
    values.update(overrides)
    return KiteSettings(**values)  # type: ignore[arg-type]


async def test_close_and_error_together_never_give_two_sockets() -> None:
    connector = MemoryConnector()
    shard = ShardConnection(0, _settings(), Tokens(), Sink(), connector, rng=random.Random(1))
    shard.set_desired({1: "full", 2: "quote", 3: "ltp"})
    async with asyncio.TaskGroup() as tg:
        task = tg.create_task(shard.run())
        for n in range(1, 31):
            await eventually(lambda n=n: len(connector.opened) >= n and shard.state == "connected")  # type: ignore[misc]
            socket = connector.opened[-1]
            # Let the resubscribe start, then kill the socket while the writer is
            # mid-send and the reader is waiting: both see the death at once.
            shard.set_desired({1: "full", 2: "quote", 3: "ltp", 100 + n: "full"})
            await asyncio.sleep(0)
            socket.abort()
        await eventually(lambda: len(connector.opened) >= 31)
        task.cancel()
    assert connector.max_live == 1
    assert connector.live == 0
    assert shard.counters.attempts.get("internal_error", 0) == 0
    assert shard.counters.attempts["closed_by_server"] >= 30
    assert shard.status().reconnect_count >= 30


async def test_every_connect_resubscribes_everything_in_its_mode_in_chunks() -> None:
    connector = MemoryConnector()
    shard = ShardConnection(0, _settings(), Tokens(), Sink(), connector)
    shard.set_desired({1: "full", 2: "quote", 3: "ltp", 4: "full", 5: "full"})
    async with asyncio.TaskGroup() as tg:
        task = tg.create_task(shard.run())
        for _ in range(2):
            await eventually(lambda: bool(connector.opened) and len(connector.opened[-1].sent) >= 6)
            sent = connector.opened[-1].sent
            assert sent[:3] == [
                {"a": "subscribe", "v": [1, 2]},
                {"a": "subscribe", "v": [3, 4]},
                {"a": "subscribe", "v": [5]},
            ]
            assert sorted(json.dumps(m) for m in sent[3:]) == sorted(
                json.dumps(m)
                for m in [
                    {"a": "mode", "v": ["full", [1, 4]]},
                    {"a": "mode", "v": ["full", [5]]},
                    {"a": "mode", "v": ["ltp", [3]]},
                    {"a": "mode", "v": ["quote", [2]]},
                ]
            )
            connector.opened[-1].abort()
        task.cancel()


async def test_live_changes_are_sent_as_deltas_without_reconnecting() -> None:
    connector = MemoryConnector()
    shard = ShardConnection(0, _settings(), Tokens(), Sink(), connector)
    shard.set_desired({1: "quote", 2: "quote"})
    async with asyncio.TaskGroup() as tg:
        task = tg.create_task(shard.run())
        await eventually(lambda: bool(connector.opened) and len(connector.opened[0].sent) == 2)
        shard.set_desired({2: "full", 3: "ltp"})
        await eventually(lambda: len(connector.opened[0].sent) == 6)
        assert connector.opened[0].sent[2:] == [
            {"a": "unsubscribe", "v": [1]},
            {"a": "subscribe", "v": [3]},
            {"a": "mode", "v": ["full", [2]]},
            {"a": "mode", "v": ["ltp", [3]]},
        ]
        assert len(connector.opened) == 1
        # Emptying the shard closes its socket; refilling opens one again.
        shard.set_desired({})
        await eventually(lambda: shard.state == "stopped" and connector.live == 0)
        shard.set_desired({9: "ltp"})
        await eventually(lambda: len(connector.opened) == 2 and shard.state == "connected")
        task.cancel()


async def test_auth_failure_waits_for_a_new_token_then_recovers_promptly() -> None:
    rejected = ConnectFailed("auth_403", "handshake rejected: HTTP 403", 403)
    connector = MemoryConnector(failures=[rejected])
    tokens = Tokens("old-token")
    # A long auth retry delay: only a new token can bring the shard back quickly.
    shard = ShardConnection(
        0, _settings(auth_retry_delay=60.0), tokens, Sink(), connector, auth_poll_interval=0.01
    )
    shard.set_desired({1: "quote"})
    async with asyncio.TaskGroup() as tg:
        task = tg.create_task(shard.run())
        await eventually(lambda: shard.state == "auth_required")
        # No retry storm with the same token: only the provider is polled meanwhile.
        await always(lambda: connector.tokens == ["old-token"], duration=0.1, interval=0.01)
        tokens.token = "new-token"
        await eventually(lambda: shard.state == "connected")
        assert connector.tokens == ["old-token", "new-token"]
        assert shard.status().last_disconnect_reason == "auth_403"
        task.cancel()


async def test_silent_socket_is_declared_dead_by_the_watchdog() -> None:
    connector = MemoryConnector()
    shard = ShardConnection(0, _settings(liveness_timeout=0.05), Tokens(), Sink(), connector)
    shard.set_desired({1: "quote"})
    async with asyncio.TaskGroup() as tg:
        task = tg.create_task(shard.run())
        await eventually(lambda: shard.counters.attempts.get("liveness_timeout", 0) >= 2)
        task.cancel()
    assert connector.max_live == 1


async def test_a_crash_in_the_sink_restarts_the_connection() -> None:
    class FailingSink:
        calls = 0

        async def put_many(self, ticks: list[Tick]) -> None:
            FailingSink.calls += 1
            raise RuntimeError("downstream bug")

    from alphapanda.kite.protocol import encode_message, encode_tick

    frame = encode_message(
        [encode_tick(Tick(instrument_token=408065, mode="ltp", tradable=True, last_price=1.5))]
    )
    connector = MemoryConnector()
    shard = ShardConnection(0, _settings(), Tokens(), FailingSink(), connector)
    shard.set_desired({408065: "ltp"})
    async with asyncio.TaskGroup() as tg:
        task = tg.create_task(shard.run())
        for n in (1, 2):
            await eventually(lambda n=n: len(connector.opened) >= n)  # type: ignore[misc]
            await connector.opened[n - 1].frames.put(frame)
        await eventually(lambda: shard.counters.attempts.get("internal_error", 0) >= 2)
        task.cancel()
    assert FailingSink.calls >= 2
    assert connector.max_live == 1


async def test_a_slow_sink_is_backpressure_not_a_dead_socket() -> None:
    from alphapanda.kite.protocol import encode_message, encode_tick

    class SlowSink:
        finished = 0

        async def put_many(self, ticks: list[Tick]) -> None:
            # Much longer than the liveness timeout: the reader is blocked downstream,
            # and the socket must not be blamed for the silence meanwhile.
            await asyncio.sleep(0.3)
            SlowSink.finished += 1

    tick = Tick(instrument_token=408065, mode="ltp", tradable=True, last_price=1.5)
    frame = encode_message([encode_tick(tick)])
    connector = MemoryConnector()
    shard = ShardConnection(0, _settings(liveness_timeout=0.05), Tokens(), SlowSink(), connector)
    shard.set_desired({408065: "ltp"})
    async with asyncio.TaskGroup() as tg:
        task = tg.create_task(shard.run())
        await eventually(lambda: bool(connector.opened))
        await connector.opened[0].frames.put(frame)
        await eventually(lambda: SlowSink.finished == 1)
        assert shard.counters.attempts.get("liveness_timeout", 0) == 0
        assert len(connector.opened) == 1
        task.cancel()


# -- ShardConnection on a virtual clock ---------------------------------------------------


def test_a_real_liveness_timeout_runs_in_virtual_time() -> None:
    # Production-sized timings (30 s of silence, 30 s retry cap) on a virtual clock that
    # jumps whenever the loop is idle: the test proves the watchdog counts on the
    # injected clock, and costs no real time.
    clock = VirtualClock(autojump_threshold=0)
    connector = MemoryConnector()
    settings = _settings(liveness_timeout=30.0, reconnect_base_delay=1.0, reconnect_max_delay=30.0)
    shard = ShardConnection(
        0, settings, Tokens(), Sink(), connector, clock=clock.monotonic, wall=clock.now
    )
    shard.set_desired({1: "quote"})

    async def main() -> float:
        start = clock.monotonic()
        async with asyncio.TaskGroup() as tg:
            task = tg.create_task(shard.run())
            await eventually(
                lambda: shard.counters.attempts.get("liveness_timeout", 0) >= 2, timeout=600
            )
            task.cancel()
        return clock.monotonic() - start

    elapsed = clock.run(main())
    assert 60.0 <= elapsed < 600.0  # two silent sessions of 30 virtual seconds each
    assert connector.max_live == 1
    assert len(connector.opened) >= 2
    # The state machine's timestamps come from the same virtual clock.
    status = shard.status()
    assert status.last_disconnect_reason == "liveness_timeout"
    assert clock.now() - timedelta(seconds=1) <= status.since <= clock.now()


async def test_frames_are_stamped_by_the_injected_wall_clock() -> None:
    from alphapanda.kite.protocol import encode_message, encode_tick

    clock = VirtualClock()
    clock.advance(1.5)
    stamps: list[int] = []
    sink = Sink()
    connector = MemoryConnector()
    shard = ShardConnection(
        0,
        _settings(),
        Tokens(),
        sink,
        connector,
        wall_ns=clock.wall_ns,
        frame_listener=lambda frame, received_at_ns: stamps.append(received_at_ns),
    )
    shard.set_desired({408065: "ltp"})
    tick = Tick(instrument_token=408065, mode="ltp", tradable=True, last_price=1.5)
    async with asyncio.TaskGroup() as tg:
        task = tg.create_task(shard.run())
        await eventually(lambda: bool(connector.opened))
        await connector.opened[0].frames.put(encode_message([encode_tick(tick)]))
        await eventually(lambda: len(sink.ticks) == 1)
        task.cancel()
    assert stamps == [clock.wall_ns()]
    assert sink.ticks[0].received_at_ns == clock.wall_ns() == 1_767_225_601_500_000_000
