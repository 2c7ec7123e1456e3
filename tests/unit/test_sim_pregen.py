"""Pre-built ticks (sim.pregen): the same market path as live generation, narrowed by
slicing, bounded by its limit, and continuous into live generation when exhausted."""

from __future__ import annotations

import asyncio
import itertools

import pytest

from alphapanda.kite.protocol import (
    MODE_FULL,
    MODE_LTP,
    MODE_QUOTE,
    SEGMENT_INDICES,
    decode_message,
    encode_message,
    encode_tick,
)
from alphapanda.sim.market import Market, in_mode
from alphapanda.sim.pregen import PregenBuffer, fill_once_settled
from tests.support.sim import default_instruments


def _tokens() -> list[int]:
    """One instrument per segment of the shipped universe (indices included)."""
    by_segment: dict[str, int] = {}
    for inst in default_instruments():
        by_segment.setdefault(inst.segment, inst.instrument_token)
    return list(by_segment.values())


def _volumes(packets: list[bytes]) -> list[tuple[int | None, int | None]]:
    ticks = decode_message(encode_message(packets), 0).ticks
    return [(t.volume_traded, t.last_traded_quantity) for t in ticks]


def test_prebuilt_packets_are_the_live_path_and_continue_into_live_generation() -> None:
    tokens = _tokens()
    assert any(t & 0xFF == SEGMENT_INDICES for t in tokens)
    market = Market(default_instruments(), seed=7)
    prebuilt = PregenBuffer(market, limit=10_000)
    assert list(prebuilt.fill(tokens, 50, 1_700_000_000, 10.0))[-1] == 50 * len(tokens)
    reference = Market(default_instruments(), seed=7)
    for token in tokens:
        # 50 pre-built, then the buffer runs dry and the sender generates live.
        got = [prebuilt.take(token) for _ in range(50)]
        assert prebuilt.take(token) is None
        live_after = [encode_tick(market.advance(token, 1_700_000_010)) for _ in range(5)]
        expected = [encode_tick(reference.advance(token, 0)) for _ in range(55)]
        packets = [p for p in got if p is not None] + live_after
        assert len(packets) == 55
        # Same prices, volumes, depth as the live path (timestamps differ by design).
        for a, b in zip(
            decode_message(encode_message(packets), 0).ticks,
            decode_message(encode_message(expected), 0).ticks,
            strict=True,
        ):
            assert (a.last_price, a.volume_traded, a.depth_buy) == (
                b.last_price,
                b.volume_traded,
                b.depth_buy,
            )
        if token & 0xFF != SEGMENT_INDICES:
            # The sequence ledger: volume grows by exactly the traded quantity.
            for (v0, _), (v1, q1) in itertools.pairwise(_volumes(packets)):
                assert v0 is not None and v1 is not None and q1 is not None
                assert v1 == v0 + q1
    assert prebuilt.buffered == 0 and prebuilt.taken == prebuilt.generated == 50 * len(tokens)


@pytest.mark.parametrize("mode", [MODE_LTP, MODE_QUOTE, MODE_FULL])
def test_narrowing_a_full_packet_equals_encoding_in_that_mode(mode: str) -> None:
    market = Market(default_instruments(), seed=3)
    for token in _tokens():
        tick = market.advance(token, 1_700_000_000)
        assert PregenBuffer.narrow(token, encode_tick(tick), mode) == encode_tick(
            in_mode(tick, mode)
        )


def test_limit_bounds_what_is_held_and_timestamps_spread_over_the_window() -> None:
    tokens = _tokens()
    buffer = PregenBuffer(Market(default_instruments()), limit=120)
    list(buffer.fill(tokens, 100, 1_000, 10.0))
    assert buffer.buffered == buffer.generated == 120
    first = tokens[0]
    packets = [p for p in iter(lambda: buffer.take(first), None)]
    assert len(packets) == 100
    stamps = [t.exchange_timestamp for t in decode_message(encode_message(packets), 0).ticks]
    assert stamps[0] == 1_000 and stamps[-1] == 1_009  # spread over the 10 s window
    assert stamps == sorted(stamps)
    # Topping up again only adds what is missing, still within the limit.
    list(buffer.fill(tokens, 100, 2_000, 10.0))
    assert buffer.buffered == 120
    with pytest.raises(ValueError, match="limit"):
        PregenBuffer(Market([]), limit=-1)


async def test_fill_once_settled_fills_once_for_the_settled_set_and_honours_stop() -> None:
    tokens = _tokens()
    buffer = PregenBuffer(Market(default_instruments()), limit=100_000)
    stopping = asyncio.Event()
    await fill_once_settled(
        buffer, lambda: tokens, seconds=2.0, rate=10.0 * len(tokens), stopping=stopping
    )
    assert buffer.ready and buffer.generated == 20 * len(tokens)

    stopped = PregenBuffer(Market(default_instruments()), limit=100_000)
    stopping.set()
    await fill_once_settled(stopped, lambda: tokens, seconds=2.0, rate=1e4, stopping=stopping)
    assert not stopped.ready and stopped.generated == 0
