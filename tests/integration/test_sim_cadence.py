"""The simulator in Kite's own cadence: one frame per connection per interval, holding a
packet for every subscribed instrument that changed, over a real socket; the official
``kiteconnect`` parser reads those frames."""

from __future__ import annotations

import asyncio
import itertools
import time
from pathlib import Path

import pytest
import websockets
from kiteconnect import KiteTicker

from alphapanda.bench.universe import universe_tokens, write_universe
from alphapanda.kite.protocol import client_message, decode_message
from tests.support.sim import default_instruments, running_simulator, simulator_process

pytestmark = pytest.mark.integration


def _tradable_tokens(n: int) -> list[int]:
    return [i.instrument_token for i in default_instruments() if i.segment != "INDICES"][:n]


async def _frames(ws: websockets.ClientConnection, count: int) -> list[tuple[float, bytes]]:
    """The next ``count`` binary frames that carry packets, with their arrival times."""
    out: list[tuple[float, bytes]] = []
    while len(out) < count:
        message = await asyncio.wait_for(ws.recv(), 10)
        if isinstance(message, bytes) and len(message) > 1:
            out.append((time.monotonic(), message))
    return out


async def test_each_connection_gets_one_frame_per_interval_with_every_instrument() -> None:
    tokens = _tradable_tokens(40)
    first, second = tokens[:25], tokens[25:]
    async with running_simulator(cadence="kite", frame_interval=0.25) as sim:
        a = await websockets.connect(sim.ws_url_with_auth(), max_size=1 << 22)
        b = await websockets.connect(sim.ws_url_with_auth(), max_size=1 << 22)
        await a.send(client_message("subscribe", first))
        await a.send(client_message("mode", first, "full"))
        await b.send(client_message("subscribe", second))
        await b.send(client_message("mode", second, "quote"))
        # Let the subscriptions settle (the frame built before them may carry fewer).
        await _frames(a, 2)
        await _frames(b, 2)
        got_a, got_b = await asyncio.gather(_frames(a, 4), _frames(b, 4))
        await a.close()
        await b.close()
        stats = await sim.stats()

    for frames, subscribed, mode in ((got_a, first, "full"), (got_b, second, "quote")):
        decoded = [decode_message(frame, 1) for _, frame in frames]
        for message in decoded:
            # One packet per subscribed instrument, each once, in the connection's mode.
            assert sorted(t.instrument_token for t in message.ticks) == sorted(subscribed)
            assert {t.mode for t in message.ticks} == {mode}
            assert not message.skipped
        # The ledger: each instrument's volume grows by exactly each tick's quantity.
        for token in subscribed:
            ticks = [t for m in decoded for t in m.ticks if t.instrument_token == token]
            for before, after in itertools.pairwise(ticks):
                assert after.volume_traded == before.volume_traded + after.last_traded_quantity
    assert stats["cadence"] == "kite"


async def test_change_ratio_sends_that_share_of_the_instruments() -> None:
    tokens = _tradable_tokens(100)
    async with running_simulator(cadence="kite", frame_interval=0.2, change_ratio=0.3) as sim:
        ws = await websockets.connect(sim.ws_url_with_auth(), max_size=1 << 22)
        await ws.send(client_message("subscribe", tokens))
        await _frames(ws, 1)
        frames = await _frames(ws, 3)
        await ws.close()
    sets = [{t.instrument_token for t in decode_message(f, 1).ticks} for _, f in frames]
    assert all(len(s) == 30 and s <= set(tokens) for s in sets)
    assert len(sets[0] | sets[1] | sets[2]) > 30  # a fresh share each frame


def test_a_3000_instrument_full_frame_reads_with_the_official_parser_and_ledger_holds(
    tmp_path: Path,
) -> None:
    universe = write_universe(tmp_path / "instruments.csv", 3000)
    tokens = universe_tokens(3000)

    async def run() -> list[tuple[float, bytes]]:
        with simulator_process(
            cadence="kite", frame_interval=0.5, instruments=str(universe)
        ) as sim:
            ws = await websockets.connect(sim.ws_url_with_auth(), max_size=1 << 22)
            for start in range(0, len(tokens), 500):
                chunk = tokens[start : start + 500]
                await ws.send(client_message("subscribe", chunk))
                await ws.send(client_message("mode", chunk, "full"))
            await _frames(ws, 2)
            frames = await _frames(ws, 3)
            await ws.close()
            return frames

    frames = asyncio.run(run())
    for _, frame in frames:
        assert len(frame) == 2 + 3000 * 186
        official = KiteTicker("test", "test")._parse_binary(frame)
        ours = decode_message(frame, 1).ticks
        assert [t["instrument_token"] for t in official] == [t.instrument_token for t in ours]
        assert all(t["mode"] == "full" and len(t["depth"]["buy"]) == 5 for t in official)
    decoded = [decode_message(frame, 1).ticks for _, frame in frames]
    for before, after in itertools.pairwise(decoded):
        for a, b in zip(before, after, strict=True):
            assert b.volume_traded == a.volume_traded + b.last_traded_quantity  # type: ignore[operator]
    # How fast such frames leave the simulator is shown by `alphapanda bench burst`
    # (a timed assertion here failed on a loaded CI machine: one frame 0.26 s after the
    # previous one, the next on time).
