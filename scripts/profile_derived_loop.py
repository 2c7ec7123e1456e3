#!/usr/bin/env python3
"""Process CPU of the derived streams' loop alone, at Kite's cadence.

Builds ``DerivedStreams`` with its real Kafka producer (against
``ALPHAPANDA_KAFKA__BOOTSTRAP_SERVERS``, default the dev stack's 127.0.0.1:19092) and hands
it one batch of N full-mode ticks per second, encoded by the feed's ``RecordBuilder`` on
the chosen hot path, exactly as the publisher does. Prints the process CPU per tick,
split into encoding (the tick path's part) and everything else (the derived loop, its
producer's threads, the event loop); ``idle`` hands over nothing, which shows the fixed
cost per second. ``--profile`` adds the functions that took the most time.

Usage: ``python scripts/profile_derived_loop.py {native,python,idle} [--instruments N]
[--seconds S] [--profile]``. A diagnostic, not a benchmark: run it on a quiet machine and
compare runs side by side. The topics it creates are named ``profile.<random>.*``.
"""

from __future__ import annotations

import argparse
import asyncio
import cProfile
import os
import pstats
import time
import uuid
from collections.abc import Mapping, Sequence
from typing import Any

from alphapanda.kite.protocol import Tick
from alphapanda.kite.protocol.encoder import encode_message, encode_tick
from alphapanda.pipeline.accounting import Accounting
from alphapanda.pipeline.formatter import TickFormatter
from alphapanda.pipeline.hotpath import HotPath, load_native
from alphapanda.pipeline.publisher import RecordBuilder
from alphapanda.pipeline.wire import WireEncoder
from alphapanda.settings import Settings
from alphapanda.streams.runner import DerivedStreams

CHUNK = 500  # ticks per RecordBuilder call, as the publisher batches a large frame


class _QuietFeed:
    """The feed state the events sampler reads: N instruments on one healthy shard."""

    def __init__(self, tokens: Sequence[int]) -> None:
        self._subscriptions = {token: "full" for token in tokens}
        self._shards = {0: list(tokens)}

    def connection_statuses(self) -> list[Any]:
        return []

    def shard_instruments(self) -> Mapping[int, Sequence[int]]:
        return self._shards

    def subscriptions(self) -> Mapping[int, str]:
        return dict(self._subscriptions)

    def spooling(self) -> bool:
        return False

    def accounting(self) -> dict[str, Any]:
        return {}

    def tick_path_busy(self) -> bool:
        return False


def _frames(tokens: Sequence[int], seconds: int) -> list[bytes]:
    start = int(time.time())
    frames = []
    for second in range(seconds):
        ticks = [
            Tick(
                instrument_token=token,
                mode="full",
                tradable=True,
                last_price=100 + i / 100 + second,
                received_at_ns=0,
                volume_traded=1000 + i + second,
                exchange_timestamp=start + second,
                last_trade_time=start + second,
                open=100.0,
                high=101.0,
                low=99.0,
                close=100.5,
                oi=10,
                oi_day_high=12,
                oi_day_low=8,
            )
            for i, token in enumerate(tokens)
        ]
        frames.append(encode_message([encode_tick(t) for t in ticks]))
    return frames


async def _run(path: str, instruments: int, seconds: int, profile: bool) -> None:
    bootstrap = os.environ.get("ALPHAPANDA_KAFKA__BOOTSTRAP_SERVERS", "127.0.0.1:19092")
    settings = Settings(
        _env_file=None,
        kafka={"bootstrap_servers": bootstrap, "topic_prefix": f"profile.{uuid.uuid4().hex[:6]}."},
    )
    tokens = [(i << 8) | 1 for i in range(1, instruments + 1)]
    derived = DerivedStreams(settings, _QuietFeed(tokens))
    hot_path = HotPath(load_native()[0] if path == "native" else None)
    records = RecordBuilder(TickFormatter(), WireEncoder("json"), Accounting())
    records.observer = derived.offer
    task = asyncio.create_task(derived.run())
    await asyncio.sleep(3)  # topics created, producer up
    frames = _frames(tokens, seconds)
    profiler = cProfile.Profile()
    encode_cpu = 0.0
    cpu = time.process_time()
    for frame in frames:
        started = time.process_time()
        if path != "idle":
            batch = hot_path.decode(frame, time.time_ns()).ticks
            for i in range(0, len(batch), CHUNK):
                records.encode(batch[i : i + CHUNK])
        encode_cpu += time.process_time() - started
        if profile:
            profiler.enable()
        await asyncio.sleep(1)
        if profile:
            profiler.disable()
    cpu = time.process_time() - cpu
    ticks = seconds * instruments
    print(
        f"{path}: {instruments:,} instruments, {seconds} s: process CPU {cpu * 1e6 / ticks:.1f} "
        f"us/tick (encoding {encode_cpu * 1e6 / ticks:.1f}, the rest "
        f"{(cpu - encode_cpu) * 1e6 / ticks:.1f}); the rest per second "
        f"{(cpu - encode_cpu) * 1000 / seconds:.0f} ms"
    )
    derived.stop()
    await task
    if profile:
        pstats.Stats(profiler).sort_stats("tottime").print_stats(12)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("path", choices=["native", "python", "idle"])
    parser.add_argument("--instruments", type=int, default=3000)
    parser.add_argument("--seconds", type=int, default=8)
    parser.add_argument("--profile", action="store_true")
    args = parser.parse_args()
    asyncio.run(_run(args.path, args.instruments, args.seconds, args.profile))


if __name__ == "__main__":
    main()
