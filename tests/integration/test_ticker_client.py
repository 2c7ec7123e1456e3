"""TickerClient against the real simulator over real sockets: drops, stalls, malformed
frames, server error texts, shutdown."""

from __future__ import annotations

import logging
from collections.abc import AsyncIterator

import pytest

from alphapanda.kite.client import TickerClient
from alphapanda.kite.tokens import StaticTokenProvider
from alphapanda.modes import MODES
from alphapanda.testing import eventually
from tests.support.sim import SimHandle, default_instruments, running_simulator
from tests.support.ticker import (
    RecordingSink,
    counter,
    kite_settings,
    running,
    sim_subscriptions,
)


def _desired(count: int) -> dict[int, str]:
    tokens = [i.instrument_token for i in default_instruments()[:count]]
    return {token: MODES[n % 3] for n, token in enumerate(tokens)}


@pytest.fixture
async def sim() -> AsyncIterator[SimHandle]:
    async with running_simulator(
        ticks_per_second=400, heartbeat_interval=0.2, send_interval=0.02
    ) as handle:
        yield handle


async def test_twenty_drops_recover_without_ever_doubling_a_shard(sim: SimHandle) -> None:
    # 40 instruments at 20 per connection: two shards, so the check is per shard pair.
    settings = kite_settings(sim, max_instruments_per_connection=20)
    sink = RecordingSink()
    frames: list[int] = []
    client = TickerClient(
        settings,
        StaticTokenProvider(settings),
        sink,
        frame_listener=lambda raw, ns: frames.append(len(raw)),
    )
    desired = _desired(40)
    await client.set_subscriptions(desired)
    async with running(client):
        stats = await sim.wait_for(
            lambda s: sim_subscriptions(s) == desired and len(s["subscriptions"]) == 2
        )
        for _ in range(20):
            accepted = stats["handshakes"]["accepted"]
            assert await sim.fault_drop() == 2
            stats = await sim.wait_for(
                lambda s, accepted=accepted: (
                    s["handshakes"]["accepted"] >= accepted + 2
                    and len(s["subscriptions"]) == 2
                    and sim_subscriptions(s) == desired
                )
            )
        before = len(sink.ticks)
        await eventually(lambda: len(sink.ticks) > before + 20 and client.is_streaming())

        stats = await sim.stats()
        assert stats["max_concurrent"][sim.api_key] <= 2
        assert stats["handshakes"]["accepted"] == 42
        statuses = client.statuses()
        assert [s.shard for s in statuses] == [0, 1]
        assert all(s.state == "connected" for s in statuses)
        assert all(s.instruments == 20 for s in statuses)
        assert all(s.reconnect_count == 20 for s in statuses)
        assert all(s.last_disconnect_reason == "closed_by_server" for s in statuses)
        assert counter(client, "kite_reconnect_attempts_total", reason="closed_by_server") == 40
        assert counter(client, "kite_reconnect_attempts_total", reason="connect_ok") == 42
        assert counter(client, "kite_reconnect_attempts_total", reason="internal_error") == 0
        # The listener saw every binary frame the client counted.
        assert len(frames) == counter(client, "kite_frames_total")
        assert {t.instrument_token for t in sink.ticks} <= set(desired)
    assert [s.state for s in client.statuses()] == ["stopped", "stopped"]
    await sim.wait_for(lambda s: not s["connections"])


async def test_silent_stall_is_detected_and_the_socket_replaced(sim: SimHandle) -> None:
    settings = kite_settings(sim, liveness_timeout=1.5)
    sink = RecordingSink()
    client = TickerClient(settings, StaticTokenProvider(settings), sink)
    desired = _desired(10)
    await client.set_subscriptions(desired)
    async with running(client):
        await sim.wait_for(lambda s: sim_subscriptions(s) == desired)
        await eventually(client.is_streaming)
        accepted = (await sim.stats())["handshakes"]["accepted"]
        # Longer than the liveness timeout: the server sends nothing, not even heartbeats.
        await sim.fault_stall(2.2)
        # Replaced within about the liveness timeout (generous bound, not a benchmark).
        await eventually(
            lambda: (
                counter(client, "kite_reconnect_attempts_total", reason="liveness_timeout") == 1
            ),
            timeout=1.5 + 2.0,
        )
        await sim.wait_for(
            lambda s: (
                s["handshakes"]["accepted"] == accepted + 1
                and sim_subscriptions(s) == desired
                and not s["stalled"]
            )
        )
        before = len(sink.ticks)
        await eventually(lambda: len(sink.ticks) > before and client.is_streaming())
        [status] = client.statuses()
        assert status.state == "connected"
        assert status.last_disconnect_reason == "liveness_timeout"
        assert status.reconnect_count == 1


async def test_malformed_frames_are_counted_and_the_stream_continues(sim: SimHandle) -> None:
    settings = kite_settings(sim)
    sink = RecordingSink()
    client = TickerClient(settings, StaticTokenProvider(settings), sink)
    desired = _desired(10)
    await client.set_subscriptions(desired)
    async with running(client):
        await sim.wait_for(lambda s: sim_subscriptions(s) == desired)
        for _ in range(3):
            assert await sim.fault_malformed() == 1
        await eventually(
            lambda: (
                counter(client, "kite_skipped_packets_total", reason="unknown_length") == 3
                and counter(client, "kite_skipped_packets_total", reason="truncated") == 3
            )
        )
        before = len(sink.ticks)
        await eventually(lambda: len(sink.ticks) > before + 10)
        stats = await sim.stats()
        assert stats["handshakes"]["accepted"] == 1  # no reconnect for bad data
        assert client.statuses()[0].state == "connected"


async def test_server_error_texts_are_counted_and_logged_rate_limited(
    sim: SimHandle, caplog: pytest.LogCaptureFixture
) -> None:
    settings = kite_settings(sim)
    client = TickerClient(settings, StaticTokenProvider(settings), RecordingSink())
    desired = _desired(5)
    await client.set_subscriptions(desired)
    caplog.set_level(logging.WARNING, logger="alphapanda.kite")
    async with running(client):
        await sim.wait_for(lambda s: sim_subscriptions(s) == desired)
        # Tokens the exchange does not know: it answers each subscribe with an error text.
        # (Deltas made while one is being sent are coalesced, so wait for each answer.)
        for n in range(1, 6):
            await client.subscribe([999_000_000 + n], "quote")
            await eventually(
                lambda n=n: counter(client, "kite_text_messages_total", type="error") >= n
            )
    warnings = [r for r in caplog.records if "server error message" in r.getMessage()]
    assert 1 <= len(warnings) < 5
    assert "invalid instrument token" in warnings[0].getMessage()


async def test_ten_instruments_open_one_connection_and_stop_closes_it(sim: SimHandle) -> None:
    settings = kite_settings(sim)
    client = TickerClient(settings, StaticTokenProvider(settings), RecordingSink())
    await client.set_subscriptions(_desired(10))
    async with running(client):
        stats = await sim.wait_for(lambda s: len(sim_subscriptions(s)) == 10)
        assert stats["connections"] == {sim.api_key: 1}
        assert len(client.statuses()) == 1
    stats = await sim.wait_for(lambda s: not s["connections"])
    assert stats["max_concurrent"][sim.api_key] == 1
    assert not client.is_streaming()
