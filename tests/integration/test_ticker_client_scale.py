"""TickerClient sharding against the real simulator: 7,000 instruments on three
connections, and runtime changes sent as deltas without reconnecting."""

from __future__ import annotations

import msgspec
import pytest

from alphapanda.instruments import Instrument
from alphapanda.kite.client import TickerClient
from alphapanda.kite.sharding import CapacityError
from alphapanda.kite.tokens import StaticTokenProvider
from alphapanda.testing import eventually
from tests.support.sim import default_instruments, running_simulator
from tests.support.ticker import (
    RecordingSink,
    counter,
    kite_settings,
    running,
    sim_subscriptions,
)


def _universe(size: int) -> list[Instrument]:
    """``size`` instruments cloned from the shipped dump under new tokens.

    The low byte of a token is the segment, so each clone keeps its model's segment
    (and so its price divisor); the high bytes get a fresh serial number.
    """
    models = default_instruments()
    return [
        msgspec.structs.replace(
            model,
            instrument_token=((100_000 + n) << 8) | model.segment_code,
            tradingsymbol=f"{model.tradingsymbol}-{n}",
        )
        for n, model in ((n, models[n % len(models)]) for n in range(size))
    ]


async def test_seven_thousand_instruments_three_connections_and_live_deltas() -> None:
    universe = _universe(7500)
    tokens = [i.instrument_token for i in universe]
    async with running_simulator(
        universe, ticks_per_second=300, heartbeat_interval=0.2, send_interval=0.05
    ) as sim:
        settings = kite_settings(sim)
        sink = RecordingSink()
        client = TickerClient(settings, StaticTokenProvider(settings), sink)
        desired = {token: "ltp" for token in tokens[:7000]}
        await client.set_subscriptions(desired)
        async with running(client):
            stats = await sim.wait_for(lambda s: sim_subscriptions(s) == desired, within=20)
            sizes = sorted(len(subs) for subs in stats["subscriptions"].values())
            assert stats["connections"] == {sim.api_key: 3}
            assert len(sizes) == 3
            assert max(sizes) <= 3000
            assert sum(sizes) == 7000
            await eventually(lambda: len(sink.ticks) > 50)
            accepted = stats["handshakes"]["accepted"]
            assert accepted == 3

            # Runtime change: 500 out, 500 in, and 100 switched to full mode.
            changed = {token: "ltp" for token in tokens[500:7500]}
            changed.update(dict.fromkeys(tokens[1000:1100], "full"))
            await client.set_subscriptions(changed)
            stats = await sim.wait_for(lambda s: sim_subscriptions(s) == changed, within=20)
            assert stats["handshakes"]["accepted"] == accepted  # deltas only, no reconnect
            assert all(len(subs) <= 3000 for subs in stats["subscriptions"].values())

            # The same through the convenience calls.
            await client.unsubscribe(tokens[7000:7500])
            await client.subscribe(tokens[:500], "quote")
            await client.set_mode(tokens[1000:1100], "ltp")
            expected = {token: "ltp" for token in tokens[500:7000]}
            expected.update(dict.fromkeys(tokens[:500], "quote"))
            assert client.subscriptions() == expected
            stats = await sim.wait_for(lambda s: sim_subscriptions(s) == expected, within=20)
            assert stats["handshakes"]["accepted"] == accepted
            assert stats["max_concurrent"][sim.api_key] == 3

            # Over capacity: refused with the numbers, nothing changed.
            too_many = {((200_000 + n) << 8) | 1: "ltp" for n in range(9001)}
            with pytest.raises(CapacityError, match=r"9001 instruments .* at most 9000"):
                await client.set_subscriptions(too_many)
            assert client.subscriptions() == expected
            assert sum(s.instruments for s in client.statuses()) == 7000
            assert counter(client, "kite_reconnect_attempts_total", reason="connect_ok") == 3
