"""End to end: simulator → feed → Kafka acks, verified by a consumer.

One run, side by side on the same machine and broker:

1. **Throughput**: the simulator (a separate process) streams every instrument of the
   CSV in full mode at ``rate`` ticks/s for ``seconds``; the feed (``MarketFeedService``,
   in this process, so on one core) publishes them. Reported: ticks/s acked by the
   broker over the window, against the ticks/s the simulator managed to send.
2. **Latency**: the same at ``latency_rate`` (20,000 ticks/s by default): p50/p99 from
   frame receipt (the tick's ``received_at_ns``) to the broker's ack, every tick of
   the window.
3. **Zero loss**: the stream is stopped, the feed drains and stops, and a consumer reads
   the topic from the start: per instrument, ``volume_traded`` continuity and the
   simulator's ``ticks_sent`` must match exactly.
4. **Baseline** (``bench/baseline.py``, the original design in a child process) against
   the same simulator at each of ``baseline_rates`` (its throughput is its best run
   that kept up: every tick acked), and the **ceiling** (``bench/ceiling.py``, a bare
   producer loop of pre-encoded records) against the same broker; with it, the same
   bare producer paced at ``latency_rate`` gives the frame → ack latency the broker
   allows at that rate (the floor under the feed's figure of step 2).

Every topic the run creates is deleted at the end.
"""

from __future__ import annotations

import asyncio
import contextlib
import shutil
import tempfile
import time
import uuid
from pathlib import Path
from typing import Final

import msgspec
import psutil
from confluent_kafka.admin import AdminClient
from pydantic import SecretStr

from alphapanda.assembly import build
from alphapanda.bench.baseline import BaselineError, BaselineResult, run_baseline
from alphapanda.bench.ceiling import CeilingResult, PacedResult, run_ceiling, run_paced
from alphapanda.bench.harness import SimProcess, StreamLedger, until
from alphapanda.bench.universe import simulator_csv
from alphapanda.heap import keep_freed_memory
from alphapanda.instruments import load_instrument_dump
from alphapanda.kafka_security import security_config
from alphapanda.pipeline.producer import LatencyReservoir
from alphapanda.pipeline.topics_admin import ensure_topic
from alphapanda.service import MarketFeedService
from alphapanda.settings import Settings
from alphapanda.topics import TopicNames

# Enough to hold every ack of a latency window at 20k ticks/s for a minute.
_LATENCY_SAMPLES: Final = 1 << 21
# Pre-built seconds beyond the throughput window: start-up until the first ack.
_PREGEN_MARGIN_S: Final = 4.0


class BaselineRun(msgspec.Struct):
    """The original design at one simulator rate."""

    rate: float
    result: BaselineResult | None
    error: str | None = None


class E2EResult(msgspec.Struct):
    """The figures of one ``alphapanda bench e2e`` run."""

    seconds: float
    rate: float
    latency_rate: float
    instruments: int
    sim_sent_per_s: float  # what the simulator managed in the throughput window
    feed_acked_per_s: float  # broker acks per second in the same window
    latency_p50_ms: float
    latency_p99_ms: float
    latency_samples: int
    latency_sent_per_s: float
    sent: int  # everything the simulator sent to the feed
    published: int
    consumed: int
    ledger_problems: int
    missing_instruments: int
    dropped: int
    zero_loss: bool
    buffer_high_water: int
    sim_pregenerated: bool = False  # the simulator sent pre-built ticks (sim.pregen)
    wal: bool = True  # the feed logged every frame to its write-ahead log
    # CPU time of this process (the feed, incl. librdkafka's threads) and of its event
    # loop thread alone, per tick acked in the throughput window: less noisy than rates.
    feed_cpu_us_per_tick: float = 0.0
    feed_loop_cpu_us_per_tick: float = 0.0
    # Cores busy in the throughput window: the feed process and the simulator process
    # (they share the machine with the broker; on 2 cores this is the real limit).
    feed_cores: float = 0.0
    sim_cores: float = 0.0
    baselines: list[BaselineRun] = msgspec.field(default_factory=list)
    ceiling: CeilingResult | None = None
    # The bare producer at latency_rate, in frames like the simulator's (with ceiling).
    paced: PacedResult | None = None
    errors: list[str] = msgspec.field(default_factory=list)

    @property
    def baseline(self) -> BaselineResult | None:
        """The baseline's best *sustained* run: every tick it received was acked (at a
        rate it cannot keep up with, the original design collapses, see the docs)."""
        sustained = [
            b.result
            for b in self.baselines
            if b.result is not None
            and b.result.acked
            and not b.result.failed
            and not b.result.unfinished
            and b.result.acked >= 0.99 * b.result.received
        ]
        return max(sustained, key=lambda r: r.ticks_per_s, default=None)

    @property
    def ratio_to_baseline(self) -> float | None:
        best = self.baseline
        if best is None or not best.ticks_per_s:
            return None
        return self.feed_acked_per_s / best.ticks_per_s

    @property
    def ratio_to_ceiling(self) -> float | None:
        if self.ceiling is None or not self.ceiling.messages_per_s:
            return None
        return self.feed_acked_per_s / self.ceiling.messages_per_s


async def _pregen_ready(sim: SimProcess) -> bool:
    pregen = (await sim.stats()).get("pregenerated")
    return bool(pregen and pregen["ready"])


def _cpu_seconds(pid: int | None) -> float:
    """User + system CPU seconds of a process so far (0.0 if unknown)."""
    if pid is None:
        return 0.0
    try:
        times = psutil.Process(pid).cpu_times()
    except psutil.Error:
        return 0.0
    return float(times.user + times.system)


def _delete_topics(bootstrap: str, topics: list[str]) -> None:
    admin = AdminClient({"bootstrap.servers": bootstrap, "log_level": 0})
    for future in admin.delete_topics(topics, operation_timeout=30).values():
        with contextlib.suppress(Exception):
            future.result(timeout=30)


async def run_e2e(
    settings: Settings,
    *,
    seconds: float = 10.0,
    rate: float = 100_000.0,
    latency_rate: float = 20_000.0,
    with_baseline: bool = True,
    baseline_rates: tuple[float, ...] = (2_000.0, 4_000.0, 5_000.0),
    with_ceiling: bool = True,
    pregenerate: bool = True,
    wal: bool | None = None,
) -> E2EResult:
    """Run the end-to-end benchmark against ``settings.kafka``'s broker (see module doc)."""
    run_id = uuid.uuid4().hex[:8]
    prefix = f"{settings.kafka.topic_prefix}bench.e2e.{run_id}."
    topic = TopicNames.market_ticks(prefix)
    baseline_topic = TopicNames.market_ticks(prefix + "baseline.")
    ceiling_topic = TopicNames.market_ticks(prefix + "ceiling.")
    # The simulator's universe unless a CSV is configured.
    csv = simulator_csv(settings)
    instruments, _ = await asyncio.to_thread(load_instrument_dump, csv)
    tokens = [i.instrument_token for i in instruments]
    errors: list[str] = []
    spool_dir = Path(tempfile.mkdtemp(prefix=f"alphapanda-e2e-{run_id}-"))
    try:
        # Pre-built ticks (sim.pregen) cover the throughput window and a margin for the
        # first ack, so the simulator spends its CPU on sending, not on the market model:
        # on 2 shared cores a live simulator, not the feed, capped the rate.
        sim_process = SimProcess(
            ticks_per_second=0,
            instruments=csv,
            pregenerate=seconds + _PREGEN_MARGIN_S if pregenerate else 0.0,
            pregenerate_rate=rate if pregenerate else None,
        )
        async with sim_process as sim:
            feed_settings = settings.model_copy(
                update={
                    "kite": settings.kite.model_copy(
                        update={
                            "ws_url": sim.ws_url,
                            "api_key": sim.api_key,
                            "access_token": SecretStr(sim.access_token),
                        }
                    ),
                    "kafka": settings.kafka.model_copy(update={"topic_prefix": prefix}),
                    "feed": settings.feed.model_copy(
                        update={
                            "instruments_csv": csv,
                            "mode": "full",
                            "buffer_policy": "block",
                            "spool_dir": spool_dir,
                            "wal_dir": spool_dir / "wal",
                            "wal_enabled": settings.feed.wal_enabled if wal is None else wal,
                        }
                    ),
                }
            )
            keep_freed_memory()  # as `alphapanda feed` does
            feed = build(feed_settings)
            acct = feed.accounting
            async with asyncio.TaskGroup() as tg:
                service = MarketFeedService(feed)
                tg.create_task(service.run())
                await until(lambda: feed.readiness()[0], 60, "feed up")

                if pregenerate:
                    await until(lambda: _pregen_ready(sim), 300, "simulator pre-built its ticks")

                # 1. Throughput.
                await sim.set_rate(rate)
                await until(lambda: acct.published > 0, 30, "first ack")
                sent0 = (await sim.stats())["total_ticks_sent"]
                acked0, t0 = acct.published, time.monotonic()
                cpu0, loop_cpu0 = time.process_time(), time.thread_time()
                sim_cpu0 = _cpu_seconds(sim.pid)
                await asyncio.sleep(seconds)  # the measurement window itself
                acked1, t1 = acct.published, time.monotonic()
                cpu1, loop_cpu1 = time.process_time(), time.thread_time()
                sim_cpu1 = _cpu_seconds(sim.pid)
                sent1 = (await sim.stats())["total_ticks_sent"]
                throughput_sent = (sent1 - sent0) / (t1 - t0)
                throughput_acked = (acked1 - acked0) / (t1 - t0)

                # 2. Latency at a fixed, lower rate. Phase 1's backlog is drained with the
                # stream paused first: at the new rate a feed slower than phase 1's rate
                # would drain it only at the difference between its speed and that rate.
                await sim.set_rate(0)
                paused = (await sim.stats())["total_ticks_sent"]
                await until(
                    lambda: acct.received_socket >= paused and len(feed.buffer) < 1000,
                    120,
                    "backlog drained",
                )
                await sim.set_rate(latency_rate)
                await asyncio.sleep(1.0)  # settle at the new rate before measuring
                feed.producer.latency = LatencyReservoir(_LATENCY_SAMPLES)
                l_sent0, l_t0 = (await sim.stats())["total_ticks_sent"], time.monotonic()
                await asyncio.sleep(seconds)  # the measurement window itself
                latency = feed.producer.latency
                p50, p99 = latency.percentiles(0.5, 0.99)
                samples = min(latency.count, _LATENCY_SAMPLES)
                latency_sent = ((await sim.stats())["total_ticks_sent"] - l_sent0) / (
                    time.monotonic() - l_t0
                )

                # 3. Stop the stream; the feed drains and stops.
                await sim.set_rate(0)
                stats = await sim.stats()
                await until(
                    lambda: (
                        acct.received_socket >= stats["total_ticks_sent"] and not acct.in_flight
                    ),
                    120,
                    "feed drained",
                )
                service.request_stop()
            stats = await sim.stats()
            sent = int(stats["total_ticks_sent"])

            ledger = StreamLedger(
                settings.kafka.bootstrap_servers, topic, security_config(settings.kafka)
            )
            ledger.start()
            try:
                await until(lambda: ledger.figures().consumed >= acct.published, 300, "consumer")
            except TimeoutError as exc:
                errors.append(str(exc))
            finally:
                await asyncio.to_thread(ledger.stop)
            figures = ledger.figures()
            missing = ledger.missing_against(stats["ticks_sent"])

            # 4. Baseline (same simulator) at each rate asked, and ceiling (same broker).
            baselines: list[BaselineRun] = []
            if with_baseline:
                await ensure_topic(settings.kafka, baseline_topic)
                for baseline_rate in baseline_rates:
                    await sim.set_rate(baseline_rate)
                    try:
                        outcome = await run_baseline(
                            ws_url=sim.ws_url,
                            api_key=sim.api_key,
                            access_token=sim.access_token,
                            tokens=tokens,
                            bootstrap_servers=settings.kafka.bootstrap_servers,
                            topic=baseline_topic,
                            redis_url=settings.redis.url.get_secret_value(),
                            redis_prefix=f"bench:e2e:{run_id}:baseline",
                            duration_s=seconds,
                        )
                        baselines.append(BaselineRun(baseline_rate, outcome))
                    except BaselineError as exc:
                        baselines.append(BaselineRun(baseline_rate, None, str(exc)))
                    await sim.set_rate(0)
        ceiling: CeilingResult | None = None
        paced: PacedResult | None = None
        if with_ceiling:
            await ensure_topic(settings.kafka, ceiling_topic)
            ceiling = await asyncio.to_thread(
                run_ceiling, settings.kafka, ceiling_topic, duration_s=seconds
            )
            paced = await asyncio.to_thread(
                run_paced, settings.kafka, ceiling_topic, rate=latency_rate, duration_s=seconds
            )
    finally:
        await asyncio.to_thread(
            _delete_topics,
            settings.kafka.bootstrap_servers,
            [topic, baseline_topic, ceiling_topic],
        )
        # The run's spool and WAL (a benchmark leaves nothing behind in /tmp).
        shutil.rmtree(spool_dir, ignore_errors=True)
    if ledger.error:
        errors.append(f"ledger consumer: {ledger.error}")
    zero_loss = (
        not figures.problems
        and not missing
        and figures.consumed == sent == acct.published
        and acct.dropped_total == 0
    )
    return E2EResult(
        wal=feed_settings.feed.wal_enabled,
        seconds=seconds,
        rate=rate,
        latency_rate=latency_rate,
        instruments=len(tokens),
        sim_sent_per_s=throughput_sent,
        feed_acked_per_s=throughput_acked,
        latency_p50_ms=p50 * 1000,
        latency_p99_ms=p99 * 1000,
        latency_samples=samples,
        latency_sent_per_s=latency_sent,
        sent=sent,
        published=acct.published,
        consumed=figures.consumed,
        ledger_problems=figures.problems,
        missing_instruments=len(missing),
        dropped=acct.dropped_total,
        zero_loss=zero_loss,
        buffer_high_water=feed.buffer.high_water,
        sim_pregenerated=pregenerate,
        feed_cpu_us_per_tick=(cpu1 - cpu0) / max(1, acked1 - acked0) * 1e6,
        feed_loop_cpu_us_per_tick=(loop_cpu1 - loop_cpu0) / max(1, acked1 - acked0) * 1e6,
        feed_cores=(cpu1 - cpu0) / (t1 - t0),
        sim_cores=(sim_cpu1 - sim_cpu0) / (t1 - t0),
        baselines=baselines,
        ceiling=ceiling,
        paced=paced,
        errors=errors,
    )
