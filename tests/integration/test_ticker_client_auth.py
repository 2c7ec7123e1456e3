"""Handshake refusals against the real simulator: an expired token (403) puts the
connection in ``auth_required`` without a reconnect storm and recovers within seconds of
a new token; too many connections (429) backs off on its own schedule.
The access token never reaches a log line, a status or a repr."""

from __future__ import annotations

import logging

import pytest

from alphapanda.kite.client import TickerClient
from alphapanda.kite.tokens import StaticTokenProvider
from alphapanda.testing import always, eventually
from tests.support.sim import default_instruments, running_simulator
from tests.support.ticker import (
    MutableTokens,
    RecordingSink,
    counter,
    kite_settings,
    running,
    sim_subscriptions,
)


async def test_expired_token_waits_in_auth_required_then_recovers_with_a_new_token(
    caplog: pytest.LogCaptureFixture, unique: str
) -> None:
    old_token, new_token = f"old-{unique}-secret", f"new-{unique}-secret"
    caplog.set_level(logging.DEBUG)
    async with running_simulator(
        access_token=old_token, ticks_per_second=200, heartbeat_interval=0.2
    ) as sim:
        tokens = MutableTokens(old_token)
        settings = kite_settings(sim, auth_retry_delay=30.0, auth_poll_interval=0.2)
        sink = RecordingSink()
        client = TickerClient(settings, tokens, sink)
        desired = {i.instrument_token: "full" for i in default_instruments()[:10]}
        await client.set_subscriptions(desired)
        async with running(client):
            await sim.wait_for(lambda s: sim_subscriptions(s) == desired)
            assert await sim.expire_token() == 1
            await eventually(lambda: client.statuses()[0].state == "auth_required")
            rejected = (await sim.stats())["handshakes"]["403"]
            assert rejected == 1
            calls = tokens.calls

            # An observation window, not a wait for a condition: nothing may happen in it,
            # checked all along (no retry storm with a dead token, no socket, no state).
            async def still_waiting() -> bool:
                stats = await sim.stats()
                return (
                    stats["handshakes"]["403"] == rejected
                    and stats["connections"] == {}
                    and client.statuses()[0].state == "auth_required"
                )

            await always(still_waiting, duration=3.0, interval=0.2, what="auth_required, no retry")
            assert tokens.calls > calls  # ...but the provider is being watched
            [status] = client.statuses()
            assert status.state == "auth_required"
            assert status.last_disconnect_reason == "auth_403"
            assert not client.is_streaming()

            # A new token is stored (AuthService after a login) and the exchange accepts it.
            await sim.set_token(new_token)
            tokens.token = new_token
            await eventually(lambda: client.is_streaming(), timeout=5.0)
            stats = await sim.wait_for(lambda s: sim_subscriptions(s) == desired)
            assert stats["handshakes"]["403"] == 1
            assert stats["max_concurrent"][sim.api_key] == 1
            assert counter(client, "kite_reconnect_attempts_total", reason="auth_403") == 1
            shown = repr(client) + repr(client.statuses()) + repr(list(client.samples()))

    ours = [
        record.getMessage() + (record.exc_text or "")
        for record in caplog.records
        if record.name.startswith(("alphapanda", "websockets.client"))
    ]
    assert any("HTTP 403" in line for line in ours)
    for text in [*ours, shown]:
        assert old_token not in text
        assert new_token not in text


async def test_too_many_connections_backs_off_on_the_capacity_schedule() -> None:
    # The exchange allows one connection per key; the client needs two shards.
    async with running_simulator(
        max_connections=1, ticks_per_second=100, heartbeat_interval=0.2
    ) as sim:
        settings = kite_settings(sim, max_instruments_per_connection=5, capacity_retry_delay=1.0)
        client = TickerClient(settings, StaticTokenProvider(settings), RecordingSink())
        await client.set_subscriptions(
            {i.instrument_token: "quote" for i in default_instruments()[:10]}
        )
        async with running(client):
            await eventually(
                lambda: counter(client, "kite_reconnect_attempts_total", reason="capacity_429") >= 1
            )
            await eventually(client.is_streaming)
            states = sorted(s.state for s in client.statuses())
            assert states in (["backoff", "connected"], ["connected", "connecting"])
            refused = [s for s in client.statuses() if s.state != "connected"]
            assert refused[0].last_disconnect_reason == "capacity_429"
            # An observation window: retries follow capacity_retry_delay (1-1.2 s), so
            # 2.5 s hold at most 3 of them, however fast the ordinary backoff is.
            before = (await sim.stats())["handshakes"]["429"]

            async def refusals() -> int:
                return int((await sim.stats())["handshakes"]["429"]) - before

            async def at_most_three() -> bool:
                return await refusals() <= 3

            await always(at_most_three, duration=2.5, interval=0.1, what="at most 3 retries")
            assert await refusals() >= 1
            assert (await sim.stats())["max_concurrent"][sim.api_key] == 1
