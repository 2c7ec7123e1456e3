"""TickBuffer: bounds, policies and the accounting of every drop."""

from __future__ import annotations

import asyncio
from collections.abc import Callable

import pytest

from alphapanda.kite.protocol import Tick
from alphapanda.pipeline.accounting import Accounting
from alphapanda.pipeline.buffer import TickBuffer


def tick(token: int, seq: int) -> Tick:
    return Tick(instrument_token=token, mode="ltp", tradable=True, last_price=float(seq))


async def until(condition: Callable[[], bool]) -> None:
    for _ in range(1000):
        if condition():
            return
        await asyncio.sleep(0)
    raise AssertionError("condition never held")


def make(capacity: int, policy: str) -> tuple[TickBuffer, Accounting]:
    acct = Accounting()
    return TickBuffer(capacity, policy, acct), acct  # type: ignore[arg-type]


async def test_fifo_order_and_batches() -> None:
    buf, acct = make(10, "block")
    await buf.put_many([tick(1, i) for i in range(7)])
    first = await buf.take_batch(4, 0.1)
    second = await buf.take_batch(10, 0.1)
    assert [t.last_price for t in first + second] == [float(i) for i in range(7)]
    assert acct.received == 7 and acct.encoding == 7 and acct.buffered == 0
    assert acct.imbalance() == 0


async def test_take_batch_times_out_empty() -> None:
    buf, _ = make(10, "block")
    assert await buf.take_batch(10, 0.01) == []


async def test_block_waits_for_room_then_completes() -> None:
    buf, acct = make(3, "block")
    put = asyncio.ensure_future(buf.put_many([tick(1, i) for i in range(8)]))
    taken: list[Tick] = []
    async with asyncio.timeout(5):
        while len(taken) < 8:
            taken += await buf.take_batch(2, 0.5)
            assert len(buf) <= 3
    await put
    assert [t.last_price for t in taken] == [float(i) for i in range(8)]
    assert acct.received == 8 and acct.dropped_total == 0
    assert buf.blocked_puts >= 1 and buf.high_water == 3


async def test_block_cancelled_put_counts_the_rest_as_dropped() -> None:
    buf, acct = make(2, "block")
    put = asyncio.ensure_future(buf.put_many([tick(1, i) for i in range(5)]))
    await until(lambda: len(buf) == 2)
    put.cancel()
    with pytest.raises(asyncio.CancelledError):
        await put
    assert acct.received == 5 and acct.buffered == 2
    assert acct.dropped == {"shutdown": 3}
    assert acct.imbalance() == 0


async def test_drop_oldest_keeps_newest_and_counts() -> None:
    buf, acct = make(4, "drop_oldest")
    await buf.put_many([tick(1, i) for i in range(3)])
    await buf.put_many([tick(1, i) for i in range(3, 10)])
    assert len(buf) == 4
    batch = await buf.take_batch(10, 0.1)
    assert [t.last_price for t in batch] == [6.0, 7.0, 8.0, 9.0]
    assert acct.dropped == {"drop_oldest": 6}
    assert acct.received == 10 and acct.imbalance() == 0


async def test_conflate_keeps_latest_per_instrument_in_place() -> None:
    buf, acct = make(10, "conflate")
    await buf.put_many([tick(1, 0), tick(2, 1), tick(1, 2), tick(3, 3), tick(2, 4)])
    batch = await buf.take_batch(10, 0.1)
    assert [(t.instrument_token, t.last_price) for t in batch] == [(1, 2.0), (2, 4.0), (3, 3.0)]
    assert acct.dropped == {"conflated": 2}
    assert acct.imbalance() == 0


async def test_conflate_overflow_drops_oldest_instrument() -> None:
    buf, acct = make(2, "conflate")
    await buf.put_many([tick(1, 0), tick(2, 1), tick(3, 2)])
    batch = await buf.take_batch(10, 0.1)
    assert [t.instrument_token for t in batch] == [2, 3]
    assert acct.dropped == {"conflate_overflow": 1}


async def test_close_drains_then_returns_empty_and_counts_late_puts() -> None:
    buf, acct = make(10, "block")
    await buf.put_many([tick(1, 0), tick(1, 1)])
    buf.close()
    await buf.put_many([tick(1, 2)])
    assert len(await buf.take_batch(10, 0.1)) == 2
    assert await buf.take_batch(10, 5) == []
    assert acct.dropped == {"shutdown": 1} and acct.imbalance() == 0


async def test_close_wakes_blocked_put() -> None:
    buf, acct = make(1, "block")
    put = asyncio.ensure_future(buf.put_many([tick(1, 0), tick(1, 1), tick(1, 2)]))
    await until(lambda: buf.blocked_puts > 0)
    buf.close()
    await put
    assert acct.received == 3 and acct.buffered == 1 and acct.dropped == {"shutdown": 2}


def test_rejects_bad_configuration() -> None:
    with pytest.raises(ValueError, match="capacity"):
        make(0, "block")
    with pytest.raises(ValueError, match="policy"):
        make(1, "fifo")
