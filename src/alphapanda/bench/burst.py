"""``bench burst``: Kite's real cadence, end to end, against the physical limit.

The real exchange sends each connection one frame a second holding a packet for every
subscribed instrument that changed: 3,000 instruments in full mode is one ~560 KB
frame, and 9,000 over three connections are three such frames at once. What a strategy
feels is how long the last tick of a frame takes to reach it. Four processes:

* the simulator in Kite cadence (``alphapanda sim --cadence kite``, packets pre-built),
* the feed as an operator runs it (``alphapanda feed``, its own process, sharding the
  instruments over connections of at most 3,000),
* a consumer (``bench.burst_procs consume``) noting ``now - received_at_ns`` for every
  record: frame receipt by the feed → readable by a strategy,
* then, in the same run, the reference: a bare confluent-kafka producer with the feed's
  producer settings pushing the same number of pre-built records of the same size at
  once every interval, stamped at the interval's start, read by the same consumer.

Also reported: frame → broker ack (the feed's own latency figures, via its metrics in
Redis), the feed's CPU per tick (psutil, feed process only) and the official
``KiteTicker._parse_binary`` time for one such frame. Loss: every instrument's count on
the topic must equal the simulator's, and the consumer-side ledger (volume sequence per
instrument) must find no gap, duplicate or reordering.
"""

from __future__ import annotations

import asyncio
import contextlib
import os
import shutil
import signal
import statistics
import sys
import tempfile
import time
import uuid
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from functools import partial
from pathlib import Path
from typing import Any, Final

import httpx
import msgspec
import psutil
import redis.asyncio as aioredis
from confluent_kafka.admin import AdminClient

from alphapanda.bench.harness import SimProcess, StreamLedger, percentile, until
from alphapanda.bench.universe import universe_tokens, write_universe
from alphapanda.metrics import redis_layout as k
from alphapanda.pipeline.hotpath import select_hot_path
from alphapanda.pipeline.topics_admin import ensure_topic
from alphapanda.settings import Settings
from alphapanda.topics import TopicNames

# Frames before the measurement starts (connections settle, caches warm up).
_WARMUP_FRAMES: Final = 2
_PER_CONNECTION: Final = 3000


@dataclass
class LatencyFigures:
    """Frame → consumer latencies (ms) over every tick of the measured frames."""

    ticks: int = 0
    p50: float = 0.0
    p90: float = 0.0
    p99: float = 0.0
    max: float = 0.0
    # Per interval (the frames of every connection that arrived in one interval, i.e.
    # the ticks a strategy gets that second): how long its first and its last tick
    # took, the medians over the intervals.
    intervals: int = 0
    first_p50: float = 0.0
    last_p50: float = 0.0

    @classmethod
    def of(
        cls, latencies_ns: list[int], stamps_ns: list[int], interval_ns: int = 0
    ) -> LatencyFigures:
        """``stamps_ns[i]``: the receive stamp of the frame that carried tick ``i``.
        Stamps are grouped by ``interval_ns`` from the first one (each stamp its own
        group when 0): with 3 connections the feed stamps three frames a second, the
        reference one batch of the same ticks."""
        ms = sorted(v / 1e6 for v in latencies_ns)
        if not ms:
            return cls()
        origin = min(stamps_ns)
        first: dict[int, int] = {}
        last: dict[int, int] = {}
        for latency, stamp in zip(latencies_ns, stamps_ns, strict=True):
            group = round((stamp - origin) / interval_ns) if interval_ns else stamp
            if latency < first.get(group, latency + 1):
                first[group] = latency
            if latency > last.get(group, -1):
                last[group] = latency
        return cls(
            len(ms),
            percentile(ms, 0.5),
            percentile(ms, 0.9),
            percentile(ms, 0.99),
            ms[-1],
            intervals=len(last),
            first_p50=percentile(sorted(v / 1e6 for v in first.values()), 0.5),
            last_p50=percentile(sorted(v / 1e6 for v in last.values()), 0.5),
        )

    def interval_line(self) -> str:
        return (
            f"          per interval: first tick p50 {self.first_p50:.1f}, last tick p50 "
            f"{self.last_p50:.1f} ms over {self.intervals} intervals"
        )


@dataclass
class BurstResult:
    instruments: int
    connections: int
    seconds: float
    frame_interval: float
    hot_path: str
    record_bytes: int
    feed: LatencyFigures
    reference: LatencyFigures | None
    ack_p50_ms: float
    ack_p99_ms: float
    feed_cpu_us_per_tick: float
    official_parse_ms: float
    sent: int
    consumed: int
    missing_instruments: int
    ledger_problems: int
    errors: list[str] = field(default_factory=list)
    wal: bool = True
    derived: bool = True

    @property
    def ratio(self) -> float:
        """Feed p99 / reference p99 (1.0 = the physical limit)."""
        if self.reference is None or not self.reference.p99:
            return 0.0
        return self.feed.p99 / self.reference.p99

    @property
    def last_tick_ratio(self) -> float:
        """Feed / reference for the last tick of an interval's frames, medians over the
        intervals: less at the mercy of the one slowest frame than a short run's p99."""
        if self.reference is None or not self.reference.last_p50:
            return 0.0
        return self.feed.last_p50 / self.reference.last_p50

    @property
    def lossless(self) -> bool:
        return (
            not self.errors
            and self.sent > 0
            and self.consumed == self.sent
            and not self.missing_instruments
            and not self.ledger_problems
        )


def _official_parse_ms(csv: Path, count: int) -> float:
    """Best of three: ``KiteTicker._parse_binary`` on one full-mode frame of ``count``
    instruments of ``csv``, built by the simulator's market model."""
    from kiteconnect import KiteTicker

    from alphapanda.instruments import load_instrument_dump
    from alphapanda.kite.protocol import encode_message, encode_tick
    from alphapanda.sim.market import Market

    instruments, _errors = load_instrument_dump(csv)
    market = Market(instruments[:count])
    now = int(time.time())
    frame = encode_message([encode_tick(market.advance(t, now)) for t in market.tokens])
    parse = KiteTicker("bench", "bench")._parse_binary
    best = float("inf")
    for _ in range(3):
        start = time.perf_counter()
        parse(frame)
        best = min(best, time.perf_counter() - start)
    return best * 1000


def _record_bytes() -> int:
    """The size of one of the feed's records for these instruments (JSON, full mode)."""
    from alphapanda.bench.decode import build_full_frames
    from alphapanda.pipeline.formatter import TickFormatter
    from alphapanda.pipeline.hotpath import FrameRecordBuilder
    from alphapanda.pipeline.wire import WireEncoder

    frame = build_full_frames(50, 50)[0]
    now = time.time_ns()
    records = FrameRecordBuilder(TickFormatter(), WireEncoder("json"), None).encode(frame, now, now)
    return round(sum(len(r.value) for r in records.records) / len(records.records))


class _Consumer:
    """The consumer process: started before the load, stopped after it."""

    def __init__(self, bootstrap: str, topic: str, out: Path) -> None:
        self._argv = ["-m", "alphapanda.bench.burst_procs", "consume", bootstrap, topic, str(out)]
        self._out = out
        self._proc: asyncio.subprocess.Process | None = None

    async def start(self) -> None:
        self._proc = await asyncio.create_subprocess_exec(
            sys.executable,
            *self._argv,
            stdin=asyncio.subprocess.PIPE,
            stdout=asyncio.subprocess.PIPE,
        )
        assert self._proc.stdout is not None
        async with asyncio.timeout(60):
            line = await self._proc.stdout.readline()
        if line.strip() != b"ready":
            raise RuntimeError("the consumer did not start")

    async def stop(self) -> dict[str, Any]:
        proc = self._proc
        assert proc is not None and proc.stdin is not None
        proc.stdin.write(b"stop\n")
        await proc.stdin.drain()
        proc.stdin.close()
        async with asyncio.timeout(60):
            await proc.wait()
        result: dict[str, Any] = msgspec.json.decode(self._out.read_bytes())
        return result


async def _retrying(call: Any, attempts: int = 5) -> Any:
    """An admin call to a busy simulator on a loaded machine: retried on timeouts."""
    for attempt in range(attempts):
        try:
            return await call()
        except httpx.TransportError:
            if attempt == attempts - 1:
                raise
            await asyncio.sleep(0.5)
    raise AssertionError("unreachable")


def _feed_env(
    settings: Settings,
    sim: SimProcess,
    *,
    prefix: str,
    namespace: str,
    spool: Path,
    csv: Path,
    hot_path: str,
    connections: int,
    wal: bool,
    derived: bool,
) -> dict[str, str]:
    env = {key: value for key, value in os.environ.items() if not key.startswith("ALPHAPANDA_")}
    env.update(
        {
            "ALPHAPANDA_KITE__WS_URL": sim.ws_url,
            "ALPHAPANDA_KITE__API_KEY": sim.api_key,
            "ALPHAPANDA_KITE__ACCESS_TOKEN": sim.access_token,
            "ALPHAPANDA_KITE__MAX_CONNECTIONS": str(connections),
            "ALPHAPANDA_KAFKA__BOOTSTRAP_SERVERS": settings.kafka.bootstrap_servers,
            "ALPHAPANDA_KAFKA__TOPIC_PREFIX": prefix,
            "ALPHAPANDA_REDIS__URL": settings.redis.url.get_secret_value(),
            "ALPHAPANDA_DATABASE__URL": settings.database.url.get_secret_value(),
            # A schema of its own: no access token stored by anyone else applies.
            "ALPHAPANDA_DATABASE__SCHEMA_NAME": f"bench_{namespace}",
            "ALPHAPANDA_METRICS__NAMESPACE": namespace,
            "ALPHAPANDA_FEED__SPOOL_DIR": str(spool),
            "ALPHAPANDA_FEED__WAL_DIR": str(spool.parent / "wal"),
            "ALPHAPANDA_FEED__WAL_ENABLED": "true" if wal else "false",
            "ALPHAPANDA_STREAMS__ENABLED": "true" if derived else "false",
            "ALPHAPANDA_FEED__INSTRUMENTS_CSV": str(csv),
            "ALPHAPANDA_FEED__MODE": "full",
            "ALPHAPANDA_FEED__HOT_PATH": hot_path,
            "ALPHAPANDA_LOG__LEVEL": "WARNING",
        }
    )
    return env


async def _ack_latency(redis: aioredis.Redis, namespace: str) -> tuple[float, float]:
    raw = await redis.get(k.MetricsKeys(namespace).key(k.SNAPSHOT))
    if raw is None:
        return 0.0, 0.0
    latency = msgspec.json.decode(raw).get("send_latency") or {}
    return float(latency.get("p50") or 0) * 1000, float(latency.get("p99") or 0) * 1000


async def run_burst(
    settings: Settings,
    *,
    instruments: int,
    seconds: float,
    frame_interval: float = 1.0,
    hot_path: str = "auto",
    with_reference: bool = True,
    wal: bool = True,
    derived: bool = True,
) -> BurstResult:
    """Run the burst benchmark against ``settings``' Kafka and Redis (module doc)."""
    run_id = uuid.uuid4().hex[:8]
    prefix = f"{settings.kafka.topic_prefix}bench.burst.{run_id}."
    namespace = f"burst{run_id}"
    topic = TopicNames.market_ticks(prefix)
    reference_topic = TopicNames.market_ticks(prefix + "reference.")
    connections = -(-instruments // _PER_CONNECTION)
    frames = max(1, round(seconds / frame_interval))
    tokens = universe_tokens(instruments)
    errors: list[str] = []
    work = Path(tempfile.mkdtemp(prefix=f"alphapanda-burst-{run_id}-"))
    csv = write_universe(work / "instruments.csv", instruments)
    record_bytes = _record_bytes()
    official_ms = await asyncio.to_thread(_official_parse_ms, csv, _PER_CONNECTION)
    redis = aioredis.from_url(settings.redis.url.get_secret_value())
    feed_figures = LatencyFigures()
    reference_figures: LatencyFigures | None = None
    ack_p50 = ack_p99 = cpu_per_tick = 0.0
    sent = consumed = 0
    missing: dict[int, tuple[int, int]] = {}
    ledger_problems = 0
    finished = False
    try:
        sim_process = SimProcess(
            ticks_per_second=0,  # paused until the feed is up
            instruments=csv,
            pregenerate=(frames + _WARMUP_FRAMES + 3) * frame_interval,
            pregenerate_rate=instruments / frame_interval,
            extra_args=["--cadence", "kite", "--frame-interval", str(frame_interval)],
        )
        async with sim_process as sim:
            env = _feed_env(
                settings,
                sim,
                prefix=prefix,
                namespace=namespace,
                spool=work / "spool",
                csv=csv,
                hot_path=hot_path,
                connections=connections,
                wal=wal,
                derived=derived,
            )
            log_path = work / "feed.log"
            with log_path.open("w") as log_file:
                feed = await asyncio.create_subprocess_exec(
                    sys.executable,
                    "-m",
                    "alphapanda",
                    "feed",
                    "--no-api",
                    "--no-registry",
                    env=env,
                    stdout=asyncio.subprocess.DEVNULL,
                    stderr=log_file,
                )
            try:
                process = psutil.Process(feed.pid)

                async def subscribed() -> bool:
                    stats = await sim.stats()
                    subs = stats["subscriptions"].values()
                    pregen = stats.get("pregenerated") or {}
                    return sum(len(s) for s in subs) >= instruments and bool(pregen.get("ready"))

                await until(
                    partial(_retrying, subscribed), 300, "feed subscribed, simulator pre-built"
                )
                await ensure_topic(settings.kafka, topic)
                consumer = _Consumer(settings.kafka.bootstrap_servers, topic, work / "feed.json")
                await consumer.start()
                await _retrying(lambda: sim.set_rate(1))  # frames on
                await asyncio.sleep(_WARMUP_FRAMES * frame_interval)
                # Nothing but the clock is read in the window: the simulator's /stats is
                # big at 9,000 instruments and it is busy sending.
                measure_from = time.time_ns()
                cpu0 = sum(process.cpu_times()[:2])
                await asyncio.sleep(frames * frame_interval)
                measure_to = time.time_ns()
                cpu1 = sum(process.cpu_times()[:2])
                ack_p50, ack_p99 = await _ack_latency(redis, namespace)
                await _retrying(lambda: sim.set_rate(0))  # frames off
                await asyncio.sleep(frame_interval)
                stats = await _retrying(sim.stats)
                sent = int(stats["total_ticks_sent"])
                # Let the last frame through, then read what the consumer saw.
                ledger = StreamLedger(settings.kafka.bootstrap_servers, topic)
                ledger.start()
                try:
                    with contextlib.suppress(TimeoutError):
                        await until(lambda: ledger.figures().consumed >= sent, 60, "ledger")
                    figures = ledger.figures()
                    consumed = figures.consumed
                    ledger_problems = figures.problems
                    missing = ledger.missing_against(stats["ticks_sent"])
                finally:
                    await asyncio.to_thread(ledger.stop)
                seen = await consumer.stop()
                feed_figures = LatencyFigures.of(
                    *_window(seen, lambda stamp: measure_from <= stamp < measure_to),
                    interval_ns=int(frame_interval * 1e9),
                )
                # CPU over the window per tick received in it.
                cpu_per_tick = (cpu1 - cpu0) / max(1, feed_figures.ticks) * 1e6
            finally:
                if feed.returncode is None:
                    feed.send_signal(signal.SIGTERM)
                try:
                    async with asyncio.timeout(60):
                        code = await feed.wait()
                except TimeoutError:
                    feed.kill()
                    code = await feed.wait()
                    errors.append("the feed did not stop within 60 s of SIGTERM")
                if code not in (0, None):
                    tail = log_path.read_text(errors="replace")[-1500:]
                    errors.append(f"feed exit code {code}: {tail}")
        if with_reference:
            reference_figures = await _run_reference(
                settings, reference_topic, tokens, record_bytes, frame_interval, frames, work
            )
        finished = True
    finally:
        await redis.aclose()
        await asyncio.to_thread(
            _delete_topics, settings.kafka.bootstrap_servers, [topic, reference_topic]
        )
        # The run's files (WAL, spool, the consumers' figures) go; the feed's log stays
        # when something went wrong, and the errors say where.
        if errors or not finished:
            errors.append(f"the run's files are kept in {work}")
        else:
            shutil.rmtree(work, ignore_errors=True)
    if hot_path == "auto":
        hot_path = f"auto ({select_hot_path('auto').impl})"
    return BurstResult(
        instruments=instruments,
        connections=connections,
        seconds=frames * frame_interval,
        frame_interval=frame_interval,
        hot_path=hot_path,
        record_bytes=record_bytes,
        feed=feed_figures,
        reference=reference_figures,
        ack_p50_ms=ack_p50,
        ack_p99_ms=ack_p99,
        feed_cpu_us_per_tick=cpu_per_tick,
        official_parse_ms=official_ms,
        sent=sent,
        consumed=consumed,
        missing_instruments=len(missing),
        ledger_problems=ledger_problems,
        errors=errors,
        wal=wal,
        derived=derived,
    )


async def _run_reference(
    settings: Settings,
    topic: str,
    tokens: list[int],
    record_bytes: int,
    frame_interval: float,
    frames: int,
    work: Path,
) -> LatencyFigures:
    await ensure_topic(settings.kafka, topic)
    keys_file = work / "keys.txt"
    keys_file.write_text("\n".join(str(t) for t in tokens))
    consumer = _Consumer(settings.kafka.bootstrap_servers, topic, work / "reference.json")
    await consumer.start()
    env = {key: value for key, value in os.environ.items() if not key.startswith("ALPHAPANDA_")}
    env["ALPHAPANDA_KAFKA__BOOTSTRAP_SERVERS"] = settings.kafka.bootstrap_servers
    producer = await asyncio.create_subprocess_exec(
        sys.executable,
        "-m",
        "alphapanda.bench.burst_procs",
        "reference",
        settings.kafka.bootstrap_servers,
        topic,
        str(keys_file),
        str(record_bytes),
        str(frame_interval),
        str(frames + _WARMUP_FRAMES),
        env=env,
        stdout=asyncio.subprocess.PIPE,
    )
    assert producer.stdout is not None
    await producer.stdout.readline()
    measure_from = time.time_ns() + int(_WARMUP_FRAMES * frame_interval * 1e9)
    await producer.wait()
    await asyncio.sleep(1.0)
    seen = await consumer.stop()
    return LatencyFigures.of(
        *_window(seen, lambda stamp: stamp >= measure_from), interval_ns=int(frame_interval * 1e9)
    )


def _window(seen: dict[str, Any], measured: Callable[[int], bool]) -> tuple[list[int], list[int]]:
    """The consumer's latencies and frame stamps of the ticks whose stamp is ``measured``."""
    pairs = [
        (latency, stamp)
        for latency, stamp in zip(seen["latencies_ns"], seen["received_at_ns"], strict=True)
        if measured(stamp)
    ]
    return [latency for latency, _ in pairs], [stamp for _, stamp in pairs]


def _delete_topics(bootstrap: str, topics: list[str]) -> None:
    admin = AdminClient({"bootstrap.servers": bootstrap, "log_level": 0})
    for future in admin.delete_topics(topics, operation_timeout=30).values():
        with contextlib.suppress(Exception):
            future.result(timeout=30)


# The target for both ratios: the feed within 1.5x of the bare producer.
RATIO_TARGET: Final = 1.5


def rounds_lines(results: Sequence[BurstResult]) -> list[str]:
    """Several runs of one configuration: the median and range of each ratio and in how
    many runs it was within ``RATIO_TARGET``. On a shared machine a single run's p99
    is its slowest frame, on either side; the medians over rounds are the figures to
    quote."""
    if not results:
        raise ValueError("no runs to summarise")
    n = len(results)

    lines = [f"burst over {n} run(s), medians:"]
    lines.append(
        f"  feed p99 {statistics.median(r.feed.p99 for r in results):.1f} ms, last tick "
        f"{statistics.median(r.feed.last_p50 for r in results):.1f} ms, CPU per tick "
        f"{statistics.median(r.feed_cpu_us_per_tick for r in results):.1f} us"
    )
    if all(r.reference is not None for r in results):
        ratios = (
            ("p99 ratio", [r.ratio for r in results]),
            ("last-tick ratio", [r.last_tick_ratio for r in results]),
        )
        for label, values in ratios:
            within = sum(1 for v in values if v <= RATIO_TARGET)
            lines.append(
                f"  {label}: median {statistics.median(values):.2f}x (from {min(values):.2f} "
                f"to {max(values):.2f}), at most {RATIO_TARGET}x in {within} of {n}"
            )
    lossless = sum(1 for r in results if r.lossless)
    lines.append(f"  zero loss in {lossless} of {n}")
    return lines


def summary_lines(result: BurstResult) -> list[str]:
    f = result.feed
    lines = [
        f"burst: {result.instruments:,} instruments over {result.connections} connection(s), "
        f"one full-mode frame per connection every {result.frame_interval:g} s, "
        f"{result.seconds:g} s measured, hot path {result.hot_path}, "
        f"WAL {'on' if result.wal else 'off'}, "
        f"derived streams {'on' if result.derived else 'off'}, records ~{result.record_bytes} B",
        f"feed      frame -> consumer: p50 {f.p50:.1f}  p90 {f.p90:.1f}  p99 {f.p99:.1f}  "
        f"max {f.max:.1f} ms over {f.ticks:,} ticks",
        f.interval_line(),
    ]
    if result.reference is not None:
        r = result.reference
        lines.append(
            f"reference frame -> consumer: p50 {r.p50:.1f}  p90 {r.p90:.1f}  p99 {r.p99:.1f}  "
            f"max {r.max:.1f} ms over {r.ticks:,} records (bare producer: feed's settings, "
            "same-size records and headers)"
        )
        lines.append(r.interval_line())
        lines.append(
            f"ratio feed p99 / reference p99: {result.ratio:.2f}x (target <= {RATIO_TARGET}x)"
        )
        lines.append(
            f"ratio of an interval's last tick, medians over intervals: "
            f"{result.last_tick_ratio:.2f}x"
        )
    lines += [
        f"feed frame -> ack: p50 {result.ack_p50_ms:.1f}  p99 {result.ack_p99_ms:.1f} ms "
        "(the feed's latest 8,192 acks)",
        f"feed CPU per tick: {result.feed_cpu_us_per_tick:.1f} us (feed process, user+system)",
        f"official KiteTicker._parse_binary, one {min(result.instruments, _PER_CONNECTION):,}-"
        f"packet frame: {result.official_parse_ms:.1f} ms",
        f"sent {result.sent:,}  consumed {result.consumed:,}  missing instruments "
        f"{result.missing_instruments}  ledger problems {result.ledger_problems}  -> "
        + ("zero loss" if result.lossless else "LOSS"),
    ]
    lines += [f"error: {e}" for e in result.errors]
    return lines
