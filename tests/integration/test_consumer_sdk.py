"""The consumer SDK against the real stack: LatestQuotes.bootstrap(), typed iterators,
and the example strategy (examples/candle_printer.py) pausing on a real gap."""

from __future__ import annotations

import asyncio
import os
import signal
import sys
from collections.abc import AsyncIterator
from typing import Any, TypeVar

from alphapanda.consumer import Candle, FeedConsumer, LatestQuotes, MarketTick, OrderUpdate
from alphapanda.service import MarketFeedService
from tests.support.feed import eventually, feed_settings, quiesce
from tests.support.sim import ROOT, running_simulator

T = TypeVar("T")


async def take(iterator: AsyncIterator[T], n: int, within: float = 30.0) -> list[T]:
    out: list[T] = []
    async with asyncio.timeout(within):
        async for item in iterator:
            out.append(item)
            if len(out) == n:
                break
    return out


def _settings(settings_for: Any, sim: Any, **candles: Any) -> Any:
    settings = feed_settings(settings_for, sim)
    return settings.model_copy(
        update={
            "candles": settings.candles.model_copy(update={"intervals": "5s", **candles}),
            "kite": settings.kite.model_copy(
                update={"max_connections": 2, "max_instruments_per_connection": 60}
            ),
        }
    )


async def test_bootstrap_and_typed_iterators(settings_for) -> None:  # type: ignore[no-untyped-def]
    async with running_simulator(ticks_per_second=300) as sim:
        settings = _settings(settings_for, sim)
        prefix = settings.kafka.topic_prefix
        bootstrap = settings.kafka.bootstrap_servers
        service = MarketFeedService(settings)
        derived = service.derived
        assert derived is not None
        async with asyncio.TaskGroup() as tg:
            tg.create_task(service.run())
            await eventually(service.is_ready, what="ready")
            streaming = set(service.client.subscriptions())
            async with FeedConsumer(bootstrap, topic_prefix=prefix, from_beginning=True) as c1:
                ticks = await take(c1.ticks(), 50)
            assert all(isinstance(t, MarketTick) for t in ticks)
            order = (await sim.order_postback(status="OPEN"))["order"]
            async with FeedConsumer(bootstrap, topic_prefix=prefix, from_beginning=True) as c2:
                (update,) = await take(c2.order_updates(), 1)
            assert isinstance(update, OrderUpdate) and update.order == order
            async with FeedConsumer(bootstrap, topic_prefix=prefix, from_beginning=True) as c3:
                (candle,) = await take(c3.candles("5s"), 1, within=30)
            assert isinstance(candle, Candle) and candle.interval == "5s"
            await eventually(lambda: set(derived.quotes.tokens()) == streaming, what="quotes")
            await quiesce(sim, service)
            await asyncio.sleep(settings.quotes.interval_ms / 1000 * 3)
            producer = derived._producer
            await eventually(lambda: producer is not None and producer.pending == 0, what="acks")
            # A fresh consumer: exactly one current value for every streaming instrument.
            quotes = await LatestQuotes.bootstrap(bootstrap, topic_prefix=prefix)
            assert set(quotes) == streaming and len(quotes) == len(streaming)
            for token in streaming:
                assert quotes[token] == derived.quotes.get(token)
            service.request_stop()


async def _lines_until(stream: asyncio.StreamReader, wanted: list[str], within: float) -> list[str]:
    """Read lines until each of ``wanted`` appeared as a line prefix, in that order."""
    lines: list[str] = []
    remaining = list(wanted)
    async with asyncio.timeout(within):
        while remaining:
            raw = await stream.readline()
            if not raw:
                raise AssertionError(f"example exited early; output: {lines}")
            line = raw.decode().rstrip()
            lines.append(line)
            if line.startswith(remaining[0]):
                remaining.pop(0)
    return lines


async def test_example_strategy_prints_candles_and_pauses_on_a_gap(settings_for) -> None:  # type: ignore[no-untyped-def]
    async with running_simulator(ticks_per_second=300, heartbeat_interval=0.5) as sim:
        settings = _settings(settings_for, sim)
        service = MarketFeedService(settings)
        derived = service.derived
        assert derived is not None
        (agg,) = derived.aggregators
        env = {**os.environ, "PYTHONUNBUFFERED": "1"}
        async with asyncio.TaskGroup() as tg:
            tg.create_task(service.run())
            await eventually(service.is_ready, what="ready")
            example = await asyncio.create_subprocess_exec(
                sys.executable,
                str(ROOT / "examples" / "candle_printer.py"),
                "--bootstrap",
                settings.kafka.bootstrap_servers,
                "--prefix",
                settings.kafka.topic_prefix,
                "--interval",
                "5s",
                "--from-beginning",
                cwd=ROOT,
                env=env,
                stdout=asyncio.subprocess.PIPE,
                stderr=asyncio.subprocess.STDOUT,
            )
            try:
                assert example.stdout is not None
                before = await _lines_until(example.stdout, ["START", "CANDLE"], within=40)
                await eventually(lambda: agg.emitted > 0, what="bars")
                assert await sim.fault_drop() == 2
                after = await _lines_until(
                    example.stdout, ["PAUSED shard", "GAP shard", "RESUMED", "CANDLE"], within=40
                )
            finally:
                example.send_signal(signal.SIGINT)
                rest, _ = await asyncio.wait_for(example.communicate(), 20)
                service.request_stop()
    assert example.returncode == 0, rest.decode()
    output = before + after
    candles = [line for line in output if line.startswith("CANDLE")]
    assert candles and all(" 5s " in line for line in candles)
    # Bars right after the reconnect are flagged (unknown volume before them / overlap).
    more = rest.decode().splitlines()
    flagged = [line for line in after + more if line.startswith("CANDLE") and "[" in line]
    assert flagged, after + more
