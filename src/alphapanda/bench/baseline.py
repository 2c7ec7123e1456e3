"""The baseline: the ORIGINAL market feed design, rebuilt faithfully for comparison.

What it does per tick, as the original did:

* the official ``kiteconnect.KiteTicker`` runs its Twisted reactor in its own thread and
  calls ``on_ticks`` with parsed tick dicts (naive local datetimes and all);
* ``on_ticks`` hands each tick to the asyncio loop thread with one
  ``asyncio.run_coroutine_threadsafe(...)``;
* that coroutine converts the datetimes, ``json.dumps`` the tick dict, awaits one
  aiokafka ``send_and_wait`` (acks=all, idempotent) and makes two Redis calls (INCR of the
  tick counter and SET of last activity, as the original ``PipelineMetricsCollector``).

Deviations, all in the baseline's favour or neutral: every future gets a done-callback
that counts its outcome (the original dropped them; this code base observes every
future), and aiokafka sends uncompressed (the ``lz4`` module it needs is not installed,
and compressing would only slow it further); Redis calls share a blocking pool of 100
connections (see ``_child``).

Twisted's reactor cannot be restarted, so the baseline always runs in a child process:
``run_baseline()`` starts ``python -m alphapanda.bench.baseline ...`` and parses the JSON
line it prints. The child is the only place this module imports ``kiteconnect`` and
``aiokafka`` (the latter ships with the ``test`` extra: the feed itself never uses it).
"""

from __future__ import annotations

import argparse
import asyncio
import json
import sys
import threading
import time
from collections.abc import Sequence
from concurrent.futures import Future
from datetime import datetime
from typing import Any

import msgspec

from alphapanda.modes import MODES


class BaselineResult(msgspec.Struct, frozen=True):
    """What the original design achieved, counted inside the child process."""

    connected: bool
    received: int  # ticks handed to on_ticks
    submitted: int  # run_coroutine_threadsafe calls
    acked: int  # ticks whose Kafka send was acknowledged (and Redis calls done)
    failed: int  # ticks whose coroutine raised
    unfinished: int  # submitted but neither acked nor failed when the drain time ran out
    pending_at_stop: int  # submitted but not finished when the ticker was stopped
    redis_calls: int
    elapsed_s: float  # first tick received → last tick acked
    ticks_per_s: float  # acked / elapsed_s
    latency_p50_ms: float  # tick received → Kafka ack (and Redis done)
    latency_p99_ms: float
    first_error: str | None = None


class BaselineError(Exception):
    """The baseline child process failed or printed no result."""


async def run_baseline(
    *,
    ws_url: str,
    api_key: str,
    access_token: str,
    tokens: Sequence[int],
    bootstrap_servers: str,
    topic: str,
    redis_url: str,
    redis_prefix: str = "pipeline:market_ticks:baseline",
    mode: str = "full",
    duration_s: float = 5.0,
    connect_timeout_s: float = 15.0,
    drain_timeout_s: float = 15.0,
) -> BaselineResult:
    """Run the original design against a Kite WebSocket (the simulator) in a child process.

    ``ws_url`` is the ticker root (``ws://127.0.0.1:<port>``); the topic must exist.
    Ticks are counted for ``duration_s`` after the first one arrives, then the ticker is
    stopped and in-flight ticks get ``drain_timeout_s`` to finish.
    """
    args = [
        sys.executable, "-m", "alphapanda.bench.baseline",
        "--ws-url", ws_url, "--api-key", api_key,
        "--tokens", ",".join(str(t) for t in tokens), "--mode", mode,
        "--bootstrap-servers", bootstrap_servers, "--topic", topic,
        "--redis-prefix", redis_prefix,
        "--duration", str(duration_s), "--connect-timeout", str(connect_timeout_s),
        "--drain-timeout", str(drain_timeout_s),
    ]  # fmt: skip
    # Secrets go through stdin, never argv (argv is visible in `ps`).
    secrets = json.dumps({"access_token": access_token, "redis_url": redis_url}).encode()
    process = await asyncio.create_subprocess_exec(
        *args,
        stdin=asyncio.subprocess.PIPE,
        stdout=asyncio.subprocess.PIPE,
        stderr=asyncio.subprocess.PIPE,
    )
    budget = connect_timeout_s + duration_s + drain_timeout_s + 30.0
    try:
        async with asyncio.timeout(budget):
            stdout, stderr = await process.communicate(secrets)
    except TimeoutError:
        process.kill()
        await process.wait()
        raise BaselineError(f"baseline child did not finish within {budget:.0f} s") from None
    lines = stdout.decode().strip().splitlines()
    if process.returncode != 0 or not lines:
        tail = stderr.decode(errors="replace")[-2000:]
        raise BaselineError(f"baseline child exited {process.returncode}: {tail}")
    return msgspec.json.decode(lines[-1], type=BaselineResult)


# -- the child process: the original design ---------------------------------------------


def _jsonable(tick: dict[str, Any]) -> dict[str, Any]:
    """The original's datetime conversion before ``json.dumps`` (naive local times)."""
    out = dict(tick)
    for name in ("last_trade_time", "exchange_timestamp", "timestamp"):
        value = out.get(name)
        if isinstance(value, datetime):
            out[name] = value.isoformat()
    return out


class _OriginalPipeline:
    """The per-tick path of the original design. Counters are touched only on the loop
    thread, except ``received``/``submitted`` which only the reactor thread writes."""

    def __init__(self, loop: asyncio.AbstractEventLoop, producer: Any, redis: Any, args: Any):
        self.loop = loop
        self.producer = producer
        self.redis = redis
        self.topic: str = args.topic
        self.counter_key = f"{args.redis_prefix}:count"
        self.activity_key = f"{args.redis_prefix}:last_activity"
        self.received = 0
        self.submitted = 0
        self.finished = 0
        self.acked = 0
        self.failed = 0
        self.redis_calls = 0
        self.first_tick_at = 0.0
        self.last_ack_at = 0.0
        self.latencies_ns: list[int] = []
        self.first_error: str | None = None
        self.cancelled = 0
        self.unexpected = 0
        self.accepting = True
        self.connected = threading.Event()
        self.first_tick = asyncio.Event()
        self.drained = asyncio.Event()

    # Reactor thread.
    def on_connect(self, ws: Any, response: Any, tokens: list[int], mode: str) -> None:
        ws.subscribe(tokens)
        ws.set_mode(mode, tokens)
        self.connected.set()

    def on_ticks(self, ws: Any, ticks: list[dict[str, Any]]) -> None:
        if not self.accepting:
            return
        now_ns = time.time_ns()
        if not self.first_tick_at:
            self.first_tick_at = time.perf_counter()
            self.loop.call_soon_threadsafe(self.first_tick.set)
        for tick in ticks:
            self.received += 1
            future = asyncio.run_coroutine_threadsafe(self.handle(tick, now_ns), self.loop)
            self.submitted += 1
            future.add_done_callback(self._observe)

    # Loop thread.
    async def handle(self, tick: dict[str, Any], received_ns: int) -> None:
        # Outcomes are counted here, on the loop thread, so no counter is shared
        # between threads.
        try:
            value = json.dumps(_jsonable(tick)).encode()
            key = str(tick["instrument_token"]).encode()
            await self.producer.send_and_wait(self.topic, value, key=key)
            await self.redis.incr(self.counter_key)
            await self.redis.set(self.activity_key, datetime.now().isoformat())
            self.redis_calls += 2
            self.acked += 1
            self.last_ack_at = time.perf_counter()
            self.latencies_ns.append(time.time_ns() - received_ns)
        except Exception as exc:
            self.failed += 1
            if self.first_error is None:
                self.first_error = f"{type(exc).__name__}: {exc}"
        finally:
            self.finished += 1
            if not self.accepting:
                self.check_drained()

    def check_drained(self) -> None:
        if self.finished >= self.submitted:
            self.drained.set()

    def _observe(self, future: Future[None]) -> None:
        # handle() counts its own outcome and never raises; anything else (a cancelled
        # future at shutdown) is still looked at rather than dropped.
        if future.cancelled():
            self.cancelled += 1
        elif future.exception() is not None:
            self.unexpected += 1


def _percentile(sorted_values: list[int], q: float) -> float:
    if not sorted_values:
        return 0.0
    return sorted_values[min(len(sorted_values) - 1, int(q * len(sorted_values)))] / 1e6


async def _child(args: Any, access_token: str, redis_url: str) -> BaselineResult:
    # Imported here: only the child pays for Twisted, and only once per process.
    import redis.asyncio as aioredis
    from aiokafka import AIOKafkaProducer  # type: ignore[import-untyped]
    from kiteconnect import KiteTicker

    loop = asyncio.get_running_loop()
    producer = AIOKafkaProducer(
        bootstrap_servers=args.bootstrap_servers, acks="all", enable_idempotence=True
    )
    await producer.start()
    # The original's redis-py 5 pool was unbounded; redis-py 8 caps it at 100 and fails
    # the 101st concurrent call. A blocking pool of 100 waits instead: no failures that
    # the original would not have had, and no thousands of sockets on a shared Redis.
    redis = aioredis.Redis(
        connection_pool=aioredis.BlockingConnectionPool.from_url(
            redis_url, max_connections=100, timeout=30
        )
    )
    pipeline = _OriginalPipeline(loop, producer, redis, args)
    tokens = [int(t) for t in args.tokens.split(",") if t]
    ticker = KiteTicker(args.api_key, access_token, root=args.ws_url, reconnect=False)
    ticker.on_connect = lambda ws, response: pipeline.on_connect(ws, response, tokens, args.mode)
    ticker.on_ticks = pipeline.on_ticks
    try:
        ticker.connect(threaded=True)
        try:
            async with asyncio.timeout(args.connect_timeout):
                await pipeline.first_tick.wait()
            await asyncio.sleep(args.duration)  # the measured window
        except TimeoutError:
            pass  # never got a tick: reported as received == 0
        pipeline.accepting = False
        pending_at_stop = pipeline.submitted - pipeline.finished
        # Close the socket and stop the reactor from its own thread (Twisted is not
        # thread-safe); it can never run again in this process, which is why we are one.
        from twisted.internet import reactor

        reactor.callFromThread(ticker.close)
        reactor.callFromThread(ticker.stop)
        await asyncio.to_thread(ticker.websocket_thread.join, args.drain_timeout)
        # The reactor is gone: ``submitted`` is final now.
        pipeline.check_drained()
        try:
            async with asyncio.timeout(args.drain_timeout):
                await pipeline.drained.wait()
        except TimeoutError:
            pass  # reported as unfinished
        # Figures as of now: stopping the producer fails whatever is still in flight,
        # and those failures are the harness's doing, not the design's.
        latencies = sorted(pipeline.latencies_ns)
        elapsed = (pipeline.last_ack_at - pipeline.first_tick_at) if pipeline.acked else 0.0
        result = BaselineResult(
            connected=pipeline.connected.is_set(),
            received=pipeline.received,
            submitted=pipeline.submitted,
            acked=pipeline.acked,
            failed=pipeline.failed,
            unfinished=pipeline.submitted - pipeline.finished,
            pending_at_stop=pending_at_stop,
            redis_calls=pipeline.redis_calls,
            elapsed_s=elapsed,
            ticks_per_s=pipeline.acked / elapsed if elapsed > 0 else 0.0,
            latency_p50_ms=_percentile(latencies, 0.50),
            latency_p99_ms=_percentile(latencies, 0.99),
            first_error=pipeline.first_error,
        )
    finally:
        await producer.stop()
        await redis.aclose()
    return result


def main(argv: Sequence[str] | None = None) -> int:
    """Child entry point: run the original design, print one JSON result line."""
    parser = argparse.ArgumentParser(prog="python -m alphapanda.bench.baseline")
    parser.add_argument("--ws-url", required=True)
    parser.add_argument("--api-key", required=True)
    parser.add_argument("--tokens", required=True, help="comma-separated instrument tokens")
    parser.add_argument("--mode", default="full", choices=MODES)
    parser.add_argument("--bootstrap-servers", required=True)
    parser.add_argument("--topic", required=True)
    parser.add_argument("--redis-prefix", default="pipeline:market_ticks:baseline")
    parser.add_argument("--duration", type=float, default=5.0)
    parser.add_argument("--connect-timeout", type=float, default=15.0)
    parser.add_argument("--drain-timeout", type=float, default=15.0)
    args = parser.parse_args(argv)
    # {"access_token": ..., "redis_url": ...} on stdin, so they never show in argv.
    secrets = json.loads(sys.stdin.read())
    result = asyncio.run(_child(args, secrets["access_token"], secrets["redis_url"]))
    sys.stdout.write(msgspec.json.encode(result).decode() + "\n")
    sys.stdout.flush()
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
