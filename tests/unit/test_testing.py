"""``alphapanda.testing``: the virtual clock and its event loop, ``eventually()`` and
``always()``, the memory connector and the fake producer."""

from __future__ import annotations

import asyncio
import math
import threading
import time
from datetime import UTC, datetime

import pytest
from confluent_kafka import KafkaError, KafkaException

from alphapanda.clock import SYSTEM_CLOCK, Clock
from alphapanda.kite.transport import ConnectFailed, SocketClosed
from alphapanda.testing import (
    FakeMessage,
    FakeProducer,
    MemoryConnector,
    VirtualClock,
    always,
    eventually,
)

# -- VirtualClock ------------------------------------------------------------------------


def test_virtual_clock_moves_only_when_told() -> None:
    clock = VirtualClock(wall_ns=1_000_000_000_000_000_000, monotonic=50.0)
    assert (clock.monotonic(), clock.wall_ns()) == (50.0, 1_000_000_000_000_000_000)
    assert clock.monotonic() == clock.monotonic()
    clock.advance(2.25)
    clock.jump(0.75)
    assert clock.monotonic() == 53.0
    assert clock.monotonic_ns() == 53_000_000_000
    assert clock.wall_ns() == 1_000_000_003_000_000_000
    assert clock.time() == 1_000_000_003.0
    assert clock.now() == datetime.fromtimestamp(1_000_000_003, UTC)
    with pytest.raises(ValueError, match="forward"):
        clock.advance(-1)
    with pytest.raises(ValueError, match="autojump_threshold"):
        VirtualClock(autojump_threshold=-1)


def test_both_clocks_satisfy_the_clock_protocol() -> None:
    clocks: list[Clock] = [SYSTEM_CLOCK, VirtualClock()]
    for clock in clocks:
        assert isinstance(clock.monotonic(), float)
        assert isinstance(clock.wall_ns(), int)
    assert abs(SYSTEM_CLOCK.wall_ns() - time.time_ns()) < 10**9


def test_autojump_sleeps_an_hour_at_once() -> None:
    clock = VirtualClock(autojump_threshold=0)

    async def main() -> tuple[float, float]:
        loop = asyncio.get_running_loop()
        before = loop.time()
        await asyncio.sleep(3600)
        return before, loop.time()

    real_start = time.monotonic()
    before, after = clock.run(main())
    assert after - before == pytest.approx(3600)
    assert clock.monotonic() == after
    # A real hour would hang the suite; a jump takes a moment (the bound is a hang
    # guard, not a speed claim).
    assert time.monotonic() - real_start < 30


def test_timeouts_follow_virtual_time() -> None:
    clock = VirtualClock(autojump_threshold=0)

    async def main() -> float:
        start = clock.monotonic()
        with pytest.raises(TimeoutError):
            async with asyncio.timeout(30):
                await asyncio.sleep(60)
        return clock.monotonic() - start

    assert clock.run(main()) == pytest.approx(30)


def test_without_autojump_only_advance_wakes_a_sleeper() -> None:
    clock = VirtualClock()  # autojump off

    async def main() -> None:
        sleeper = asyncio.ensure_future(asyncio.sleep(10))
        try:
            for _ in range(100):
                await asyncio.sleep(0)
            assert not sleeper.done()
            clock.advance(9.9)
            for _ in range(100):
                await asyncio.sleep(0)
            assert not sleeper.done()
            clock.advance(0.1)
            await asyncio.wait_for(sleeper, timeout=None)
        finally:
            sleeper.cancel()

    clock.run(main())


def test_autojump_still_serves_real_io_and_threads() -> None:
    # While a timer is far away, a wake-up from another thread must still get through:
    # the jump happens only when the loop is idle.
    clock = VirtualClock(autojump_threshold=0.5)

    async def main() -> tuple[str, float]:
        loop = asyncio.get_running_loop()
        done: asyncio.Future[str] = loop.create_future()
        start = clock.monotonic()
        thread = threading.Thread(target=lambda: loop.call_soon_threadsafe(done.set_result, "hi"))
        async with asyncio.timeout(1000):
            thread.start()
            result = await done
        thread.join()
        return result, clock.monotonic() - start

    result, elapsed = clock.run(main())
    assert result == "hi"
    assert elapsed < 1000


# -- eventually / always ----------------------------------------------------------------


async def test_eventually_returns_the_first_truthy_result() -> None:
    calls: list[int] = []

    def grows() -> list[int] | None:
        calls.append(len(calls))
        return calls if len(calls) >= 3 else None

    assert await eventually(grows, interval=0.001) == [0, 1, 2]


async def test_eventually_awaits_async_predicates_and_retries_assertions() -> None:
    state = {"n": 0}

    async def check() -> int:
        state["n"] += 1
        assert state["n"] >= 3, "not yet"
        return state["n"]

    assert await eventually(check, interval=0.001) == 3


async def test_eventually_lets_real_errors_through_at_once() -> None:
    def broken() -> bool:
        raise KeyError("bug")

    with pytest.raises(KeyError, match="bug"):
        await eventually(broken, timeout=60)


def test_eventually_failure_names_the_condition_and_the_last_result() -> None:
    clock = VirtualClock(autojump_threshold=0)
    values = {"depth": 7}

    async def main() -> None:
        await eventually(lambda: values["depth"] == 0, timeout=1, interval=0.1)

    with pytest.raises(AssertionError) as failure:
        clock.run(main())
    message = str(failure.value)
    assert 'lambda: values["depth"] == 0' in message
    assert "within 1 s" in message
    assert "(11 checks)" in message  # at 0, 0.1, ..., 1.0 virtual seconds
    assert "last result: False" in message


def test_eventually_failure_shows_the_last_assertion() -> None:
    clock = VirtualClock(autojump_threshold=0)

    def check() -> bool:
        raise AssertionError("lag is 5")

    async def main() -> None:
        await eventually(check, timeout=2, what="the consumer catches up")

    with pytest.raises(AssertionError) as failure:
        clock.run(main())
    assert str(failure.value).startswith("the consumer catches up did not become true within 2 s")
    assert "AssertionError: lag is 5" in str(failure.value)
    assert isinstance(failure.value.__cause__, AssertionError)


def test_always_holds_for_the_window_or_fails_at_the_first_miss() -> None:
    clock = VirtualClock(autojump_threshold=0)
    calls = {"n": 0}

    def counted() -> bool:
        calls["n"] += 1
        return True

    async def main() -> None:
        await always(counted, duration=5, interval=1)
        assert calls["n"] == 6
        start = clock.monotonic()
        with pytest.raises(AssertionError, match=r"stopped holding after 3\.000 s of 10 s"):
            await always(lambda: clock.monotonic() - start < 2.5, duration=10, interval=1)

    clock.run(main())


async def test_helpers_refuse_nonsense_arguments() -> None:
    with pytest.raises(ValueError, match="interval > 0"):
        await eventually(lambda: True, interval=0)
    with pytest.raises(ValueError, match="duration >= 0"):
        await always(lambda: True, duration=-1)
    assert math.isinf(VirtualClock().autojump_threshold)


# -- MemoryConnector ---------------------------------------------------------------------


async def test_memory_connector_fails_then_opens_and_counts_live_sockets() -> None:
    refused = ConnectFailed("capacity_429", "too many", 429)
    connector = MemoryConnector(failures=[refused])
    with pytest.raises(ConnectFailed):
        await connector.open("key", "tok-1")
    socket = await connector.open("key", "tok-2")
    assert connector.tokens == ["tok-1", "tok-2"]
    assert (connector.live, connector.max_live) == (1, 1)
    await socket.send('{"a": "subscribe", "v": [1]}')
    await socket.frames.put(b"\x00")  # type: ignore[attr-defined]
    assert await socket.recv() == b"\x00"
    assert socket.sent == [{"a": "subscribe", "v": [1]}]  # type: ignore[attr-defined]
    socket.abort()
    socket.abort()  # idempotent
    assert connector.live == 0
    with pytest.raises(SocketClosed):
        await socket.recv()
    with pytest.raises(SocketClosed):
        await socket.send("{}")


async def test_memory_socket_death_reaches_a_waiting_reader() -> None:
    connector = MemoryConnector()
    socket = await connector.open("key", "tok")
    raised: list[BaseException] = []

    async def read() -> None:
        try:
            await socket.recv()
        except SocketClosed as exc:
            raised.append(exc)

    async with asyncio.TaskGroup() as tg:
        tg.create_task(read())
        await asyncio.sleep(0)
        await socket.close()
    assert len(raised) == 1


# -- FakeProducer ------------------------------------------------------------------------


def test_fake_producer_reports_only_inside_poll_in_order() -> None:
    producer = FakeProducer()
    reports: list[tuple[str | None, bytes | None, int]] = []

    def on_delivery(error: KafkaError | None, message: FakeMessage) -> None:
        reports.append((None if error is None else error.name(), message.key(), message.offset()))

    for n in range(3):
        producer.produce("t", b"v", str(n).encode(), headers=[("h", b"1")], on_delivery=on_delivery)
    assert len(producer) == 3 and producer.poll() == 0 and reports == []
    assert producer.ack(2) == 2
    assert reports == []  # settled, but reported only by poll()
    assert producer.poll() == 2
    assert reports == [(None, b"0", 0), (None, b"1", 1)]
    producer.fail(KafkaError(KafkaError._MSG_TIMED_OUT))
    assert producer.flush() == 0
    assert reports[-1] == ("_MSG_TIMED_OUT", b"2", -1)
    assert len(producer) == 0
    assert [m.key() for m in producer.acked] == [b"0", b"1"]
    assert producer.acked[0].headers() == [("h", b"1")]


def test_fake_producer_queue_limit_purge_and_fatal() -> None:
    producer = FakeProducer(capacity=2)
    failed: list[str] = []
    for key in (b"a", b"b"):
        producer.produce(
            "t", b"v", key, on_delivery=lambda e, m: failed.append(e.name() if e else "")
        )
    with pytest.raises(BufferError):
        producer.produce("t", b"v", b"c")
    assert [m.key() for m in producer.queued] == [b"a", b"b"]
    producer.purge()
    producer.poll()
    assert failed == ["_PURGE_QUEUE", "_PURGE_QUEUE"]
    producer.make_fatal()
    with pytest.raises(KafkaException):
        producer.produce("t", b"v", b"d")


def test_fake_producer_auto_ack() -> None:
    producer = FakeProducer(auto_ack=True)
    acked: list[bytes | None] = []
    producer.produce("t", b"v", b"k", on_delivery=lambda e, m: acked.append(m.key()))
    assert producer.poll() == 1
    assert acked == [b"k"]
    assert len(producer) == 0
