"""The standby gate's takeover plan: what follows the active's last published tick."""

from __future__ import annotations

import asyncio
import time
from collections.abc import Sequence

import msgspec
import pytest

from alphapanda.ha.controller import covers
from alphapanda.ha.gate import StandbyGate, plan_takeover
from alphapanda.ha.tail import TailFollower
from alphapanda.kite.protocol import Tick, decode_message, encode_message, encode_tick
from alphapanda.pipeline.formatter import MarketTick, TickFormatter
from alphapanda.pipeline.wire import WireDecoder, WireEncoder, content_type_of
from alphapanda.sim.market import Market
from tests.support.sim import default_instruments

NOW = int(time.time())  # the formatter refuses implausible exchange times
BASE_NS = NOW * 1_000_000_000


def stream(count: int, tokens: int = 3) -> list[Tick]:
    """Ticks as a connection decodes them (through the Kite wire format)."""
    instruments = [i for i in default_instruments() if i.segment != "INDICES"][:tokens]
    market = Market(instruments, seed=7)
    out: list[Tick] = []
    for i in range(count):
        token = instruments[i % tokens].instrument_token
        frame = encode_message([encode_tick(market.advance(token, NOW + i // 10))])
        out.extend(decode_message(frame, BASE_NS + i).ticks)
    return out


def published(ticks: Sequence[Tick], fmt: str = "json") -> dict[int, MarketTick]:
    """The last tick per instrument as it comes back from the topic."""
    formatter, wire, decoder = TickFormatter(), WireEncoder(fmt), WireDecoder()  # type: ignore[arg-type]
    last: dict[int, MarketTick] = {}
    for tick in ticks:
        market_tick = formatter.format(tick)
        assert market_tick is not None
        _, value, headers = wire.encode(market_tick, 1)
        last[tick.instrument_token] = decoder.decode(value, content_type_of(headers)).data
    return last


def by_token(ticks: Sequence[Tick]) -> dict[int, list[Tick]]:
    held: dict[int, list[Tick]] = {}
    for tick in ticks:
        held.setdefault(tick.instrument_token, []).append(tick)
    return held


def test_replays_exactly_what_follows_the_active_last_tick() -> None:
    ticks = stream(300)
    # The active published the first 200; the standby holds ticks 50..299.
    replay, report = plan_takeover(by_token(ticks[50:]), published(ticks[:200]))
    assert replay and sorted(replay, key=lambda t: t.received_at_ns) == ticks[200:]
    assert report.matched == 3 and not report.gap_possible and report.not_in_topic == 0


def test_matching_works_through_msgpack_too() -> None:
    ticks = stream(90)
    replay, report = plan_takeover(by_token(ticks), published(ticks[:60], "msgpack"))
    assert len(replay) == 30 and report.matched == 3


def test_not_found_falls_back_to_newer_exchange_time_and_says_gap_possible() -> None:
    ticks = stream(300)
    # The standby's window starts after the active's last tick: not found.
    replay, report = plan_takeover(by_token(ticks[250:]), published(ticks[:200]))
    assert sorted(report.gap_possible) == sorted({t.instrument_token for t in ticks})
    # Newer than the last published: a later exchange time, or the same with more
    # volume; here every held tick is (the held window starts after the last one).
    assert sorted(replay, key=lambda t: t.received_at_ns) == ticks[250:]


def test_not_found_never_replays_an_older_snapshot() -> None:
    ticks = stream(300)
    # A standby behind the active: its held ticks end before the active's last one.
    replay, report = plan_takeover(by_token(ticks[:150]), published(ticks[:200]))
    assert len(report.gap_possible) == 3 and replay == []


def test_instrument_absent_from_the_topic_replays_all_held() -> None:
    ticks = stream(30)
    replay, report = plan_takeover(by_token(ticks), {})
    assert len(replay) == 30 and report.not_in_topic == 3


class Sink:
    def __init__(self) -> None:
        self.got: list[Tick] = []

    async def put_many(self, ticks: Sequence[Tick], source: str = "socket") -> None:
        self.got.extend(ticks)


def test_gate_holds_while_standby_then_replays_then_passes_live() -> None:
    ticks = stream(120)

    async def scenario() -> list[Tick]:
        sink = Sink()
        gate = StandbyGate(sink, window_seconds=60)
        await gate.put_many(ticks[:100])
        assert not sink.got and gate.holding == 100
        report = await gate.promote(published(ticks[:80]))
        assert report.replayed == 20
        await gate.put_many(ticks[100:])
        return sink.got

    got = asyncio.run(scenario())
    # Replayed (per instrument, in order), then live: each instrument's order is kept.
    assert sorted(got, key=lambda t: t.received_at_ns) == ticks[80:]
    assert by_token(got) == by_token(ticks[80:])


def test_window_expires_old_ticks() -> None:
    ticks = stream(100)

    async def scenario() -> StandbyGate:
        gate = StandbyGate(Sink(), window_seconds=20e-9)
        await gate.put_many(ticks)
        return gate

    gate = asyncio.run(scenario())
    assert gate.holding < 100 and gate.expired == 100 - gate.holding


def test_absent_instrument_replays_only_what_the_tail_read_covered() -> None:
    ticks = stream(60)
    # The tail was read completely from tick 40's receive time on, and none of these
    # instruments was in it: their ticks received before that were published.
    replay, report = plan_takeover(by_token(ticks), {}, ticks[40].received_at_ns)
    assert report.not_in_topic == 3
    assert sorted(replay, key=lambda t: t.received_at_ns) == ticks[41:]


def test_a_standby_behind_the_active_skips_live_ticks_up_to_its_last() -> None:
    ticks = stream(300)

    async def scenario() -> list[Tick]:
        sink = Sink()
        gate = StandbyGate(sink, window_seconds=60)
        await gate.put_many(ticks[:150])
        await gate.promote(published(ticks[:200]))
        await gate.put_many(ticks[150:])  # arrives late on this connection
        return sink.got

    got = asyncio.run(scenario())
    assert sorted(got, key=lambda t: t.received_at_ns) == ticks[200:]


def test_a_standby_is_ready_once_its_window_reaches_back_to_the_actives_frontier() -> None:
    async def scenario() -> None:
        ticks = stream(100)  # received 1 ns apart from BASE_NS on
        gate = StandbyGate(Sink(), window_seconds=30e-9)
        follower = TailFollower("127.0.0.1:9", "t", 10)  # never run: its frontier is set
        assert gate.held_since_ns == 0 and covers(gate.held_since_ns, follower)
        await gate.put_many(ticks[:10])
        assert gate.held_since_ns == BASE_NS
        # The active has published up to a tick it received before the standby held
        # anything: what it received in between is lost by a takeover now.
        follower.frontier_ns = BASE_NS - 1
        assert not covers(gate.held_since_ns, follower)
        assert not covers(gate.held_since_ns, None)
        follower.frontier_ns = BASE_NS + 5
        assert covers(gate.held_since_ns, follower)
        # The window moves on: what left it is no longer covered.
        await gate.put_many(ticks[10:])
        assert gate.held_since_ns == ticks[-1].received_at_ns - int(30e-9 * 1e9)
        assert not covers(gate.held_since_ns, follower)

    asyncio.run(scenario())


def _index_ticks(prices: Sequence[float], token: int = 256265) -> list[Tick]:
    """An index (no volume) ticking several times within one exchange second."""
    return [
        Tick(
            instrument_token=token,
            mode="full",
            tradable=False,
            last_price=price,
            exchange_timestamp=NOW,
            received_at_ns=BASE_NS + i * 100_000_000,  # 100 ms apart
        )
        for i, price in enumerate(prices)
    ]


@pytest.mark.parametrize("last_published", [1, 2])
def test_a_repeated_index_snapshot_is_told_apart_by_receive_time(last_published: int) -> None:
    # Ticks 1 and 2 have the same content (same second, same price): only the receive
    # time says which of them the active published last.
    active = _index_ticks([100.0, 100.5, 100.5, 101.0, 100.5])
    stocks = stream(30)
    skew = 3_000_000  # the standby receives each frame 3 ms after the active
    standby = [msgspec.structs.replace(t, received_at_ns=t.received_at_ns + skew) for t in active]
    held = by_token(
        [msgspec.structs.replace(t, received_at_ns=t.received_at_ns + skew) for t in stocks]
    )
    held[256265] = standby
    last = published([*stocks[:20], *active[: last_published + 1]])
    replay, report = plan_takeover(held, last)
    replayed_index = [t for t in replay if t.instrument_token == 256265]
    assert replayed_index == standby[last_published + 1 :]
    assert report.matched == 4 and report.ambiguous == 1 and not report.gap_possible


@pytest.mark.parametrize("last_published", [1, 2])
def test_the_ticks_before_a_repeated_snapshot_decide_over_a_misleading_receive_time(
    last_published: int,
) -> None:
    # The standby lags the active by 150 ms (more than the 100 ms between the index's
    # ticks) and no other instrument shows it: receive times point at the wrong tick,
    # what the active published before its last one points at the right one.
    active = _index_ticks([100.0, 100.5, 100.5, 101.0])
    standby = [
        msgspec.structs.replace(t, received_at_ns=t.received_at_ns + 150_000_000) for t in active
    ]
    formatter = TickFormatter()
    history = [formatter.format(t) for t in active[: last_published + 1]]
    assert all(t is not None for t in history)
    replay, report = plan_takeover(
        {256265: standby},
        {256265: history[-1]},  # type: ignore[dict-item]
        recent={256265: history},  # type: ignore[dict-item]
    )
    assert replay == standby[last_published + 1 :]
    assert report.ambiguous == 1


def test_a_standby_behind_the_active_skips_every_repeat_of_its_last_snapshot() -> None:
    # The active published A, B, B (the same index snapshot twice); this connection is
    # behind: it held only an older tick, and A, B, B, C arrive after the takeover.
    live = _index_ticks([100.0, 100.5, 100.5, 101.0])
    older = msgspec.structs.replace(live[0], exchange_timestamp=NOW - 1, last_price=99.5)
    formatter = TickFormatter()
    history = [formatter.format(t) for t in live[:3]]

    async def scenario() -> tuple[list[Tick], int]:
        sink = Sink()
        gate = StandbyGate(sink, window_seconds=60)
        await gate.put_many([older])
        report = await gate.promote(
            {256265: history[-1]},  # type: ignore[dict-item]
            recent={256265: history},  # type: ignore[dict-item]
        )
        assert report.gap_possible == [256265] and report.replayed == 0
        await gate.put_many(live)
        return sink.got, gate.skipped_live

    got, skipped = asyncio.run(scenario())
    assert got == live[3:] and skipped == 3
