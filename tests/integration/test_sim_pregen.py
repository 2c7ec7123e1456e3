"""The simulator's pre-built mode (``--pregenerate``) over real sockets: every client
still sees one unbroken volume path per instrument, in its own mode, across the start
(live), the pre-built window and its end (live again)."""

from __future__ import annotations

import time
from collections import Counter
from typing import Any

import pytest

from tests.integration.test_sim import (
    CDS,
    EQ,
    FUT,
    IDX,
    Client,
    assert_volume_continuous,
    connect,
)
from tests.support.sim import SimHandle, running_simulator

# Counts what a pre-built window of a given length holds at a given rate: timing, so it
# runs alone, after the parallel part of the suite.
pytestmark = pytest.mark.serial


async def _pregen(sim: SimHandle) -> dict[str, Any]:
    stats = await sim.stats()
    pregen = stats["pregenerated"]
    assert isinstance(pregen, dict)
    return pregen


async def test_prebuilt_window_keeps_every_volume_path_whole_in_each_mode() -> None:
    tokens = [EQ, FUT, CDS, IDX]
    # 1 s of ticks at 1,200/s for 4 instruments: 300 pre-built per instrument.
    async with running_simulator(
        ticks_per_second=1_200, pregenerate_seconds=1.0, pregenerate_limit=100_000
    ) as sim:
        full, quote = await connect(sim), await connect(sim)
        try:
            await _check(sim, full, quote, tokens)
        finally:
            await full.ws.close()
            await quote.ws.close()


async def _check(sim: SimHandle, full: Client, quote: Client, tokens: list[int]) -> None:
    await full.send("subscribe", tokens)
    await full.send("mode", tokens, "full")
    await full.barrier()
    await quote.send("subscribe", [FUT])  # a second subscriber in another mode
    await quote.barrier()
    deadline = time.monotonic() + 30
    while not (await _pregen(sim))["ready"]:
        assert time.monotonic() < deadline, "never pre-built"
        await full.receive_one()
    pregen = await _pregen(sim)
    assert pregen["generated"] == 4 * 300
    # Past the window: the buffer runs dry and live generation takes over.
    ready_at = len(full.of(EQ))
    await full.until(lambda: len(full.of(EQ)) > ready_at + 300 + 50, within=30)
    assert (await _pregen(sim))["buffered"] == 0
    await sim.set_rate(0)  # stop the stream so the counts below are final
    await full.barrier()
    await quote.barrier()
    stats = await sim.stats()
    for token in tokens:
        assert {t.mode for t in full.of(token)} == {"full"}
        if token != IDX:
            assert_volume_continuous(full.of(token))
        # Every tick counted as sent reached the full-mode client.
        assert len(full.of(token)) == stats["ticks_sent"][str(token)]
    # Round-robin over the instruments: the rate is shared evenly, by count.
    counts = Counter(t.instrument_token for t in full.ticks)
    assert max(counts.values()) - min(counts.values()) <= 1
    assert {t.mode for t in quote.of(FUT)} == {"quote"}
    assert_volume_continuous(quote.of(FUT))
    shared = [t.volume_traded for t in quote.of(FUT)]
    in_full = [t.volume_traded for t in full.of(FUT)]
    start = in_full.index(shared[0])
    assert in_full[start : start + len(shared)] == shared


async def test_default_mode_has_no_prebuilt_ticks() -> None:
    async with running_simulator(ticks_per_second=100) as sim:
        assert (await sim.stats())["pregenerated"] is None
