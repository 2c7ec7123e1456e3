"""The soak benchmark (memory under load): the whole pipeline at a fixed load for minutes.

Three processes: the simulator (``alphapanda sim``), the feed (``alphapanda feed``,
exactly what an operator runs) and this one, which follows the topic with a
``StreamLedger`` and samples, every ``interval`` seconds,

* the feed's RSS (psutil, the feed process only),
* its buffer depth and send latency p50/p99, from the feed's own metrics in Redis
  (``pipeline:market_ticks:<namespace>:snapshot``, the ``PipelineMetricsCollector``),
* ticks received by the feed and consumed from Kafka.

Pass condition, printed and returned:

* **RSS flat**: after the warm-up, every sample is within ±10 % of the first sample
  after the warm-up. Warm-up = 20 % of the run, at least 60 s, at most half the run
  (caches, librdkafka buffers and the allocator's arenas settle in it).
* **Zero loss by the ledger**: after the load stops, the consumer read exactly as many
  ticks per instrument as the simulator sent, with no gap, duplicate or reordering.

The feed gets its own topic prefix and metrics namespace, so a soak never touches a
production topic; the topic is deleted at the end unless ``keep_topic``.
"""

from __future__ import annotations

import asyncio
import csv
import os
import signal
import sys
import time
import uuid
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Final

import msgspec
import psutil
import redis.asyncio as aioredis
from confluent_kafka.admin import AdminClient

from alphapanda.bench.harness import LedgerFigures, SimProcess, StreamLedger, until
from alphapanda.bench.universe import simulator_csv
from alphapanda.kafka_security import security_config
from alphapanda.metrics import redis_layout as k
from alphapanda.settings import Settings
from alphapanda.topics import TopicNames

RSS_TOLERANCE: Final = 0.10
CSV_COLUMNS: Final = (
    "elapsed_s",
    "rss_mb",
    "buffer_depth",
    "latency_p50_ms",
    "latency_p99_ms",
    "feed_received",
    "consumed",
    "ticks_per_s",
)


@dataclass(frozen=True)
class SoakSample:
    elapsed_s: float
    rss_mb: float
    buffer_depth: float
    latency_p50_ms: float
    latency_p99_ms: float
    feed_received: int
    consumed: int
    ticks_per_s: float


@dataclass
class SoakResult:
    """Everything a soak measured; ``passed`` is the pass condition above."""

    minutes: float
    rate: float
    samples: list[SoakSample]
    warmup_s: float
    rss_baseline_mb: float
    rss_min_mb: float
    rss_max_mb: float
    rss_flat: bool
    sent: int
    ledger: LedgerFigures
    missing: dict[int, tuple[int, int]]
    feed_exit_code: int | None
    errors: list[str] = field(default_factory=list)

    @property
    def lost(self) -> int:
        return self.sent - self.ledger.consumed

    @property
    def zero_loss(self) -> bool:
        return self.lost == 0 and not self.missing and self.ledger.problems == 0

    @property
    def passed(self) -> bool:
        return self.rss_flat and self.zero_loss and not self.errors and self.feed_exit_code == 0


def warmup_seconds(duration_s: float) -> float:
    """20 % of the run, at least 60 s, never more than half of it."""
    return min(max(0.2 * duration_s, 60.0), 0.5 * duration_s)


def rss_verdict(
    samples: list[SoakSample], warmup_s: float, tolerance: float = RSS_TOLERANCE
) -> tuple[bool, float, float, float]:
    """``(flat, baseline, min, max)`` of the RSS after the warm-up (see the module doc)."""
    after = [s.rss_mb for s in samples if s.elapsed_s >= warmup_s]
    if not after:
        return False, 0.0, 0.0, 0.0
    baseline = after[0]
    low, high = min(after), max(after)
    flat = high <= baseline * (1 + tolerance) and low >= baseline * (1 - tolerance)
    return flat, baseline, low, high


def write_csv(samples: list[SoakSample], path: Path) -> None:
    with path.open("w", newline="") as f:
        writer = csv.writer(f)
        writer.writerow(CSV_COLUMNS)
        for s in samples:
            writer.writerow(
                [
                    f"{s.elapsed_s:.1f}",
                    f"{s.rss_mb:.1f}",
                    f"{s.buffer_depth:.0f}",
                    f"{s.latency_p50_ms:.2f}",
                    f"{s.latency_p99_ms:.2f}",
                    s.feed_received,
                    s.consumed,
                    f"{s.ticks_per_s:.0f}",
                ]
            )


def plot(result: SoakResult, path: Path) -> None:
    """RSS, buffer depth and send latency over time, warm-up shaded, ±10 % band drawn."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    minutes = [s.elapsed_s / 60 for s in result.samples]
    fig, axes = plt.subplots(3, 1, figsize=(9, 8), sharex=True)
    rss, depth, latency = axes
    rss.plot(minutes, [s.rss_mb for s in result.samples], color="tab:blue")
    if result.rss_baseline_mb:
        base = result.rss_baseline_mb
        rss.axhspan(base * (1 - RSS_TOLERANCE), base * (1 + RSS_TOLERANCE), alpha=0.12)
    rss.set_ylabel("feed RSS (MB)")
    rss.set_ylim(bottom=0)
    depth.plot(minutes, [s.buffer_depth for s in result.samples], color="tab:orange")
    depth.set_ylabel("buffer depth (ticks)")
    latency.plot(minutes, [s.latency_p50_ms for s in result.samples], label="p50")
    latency.plot(minutes, [s.latency_p99_ms for s in result.samples], label="p99")
    latency.set_ylabel("send latency (ms)")
    latency.set_xlabel("minutes")
    latency.legend(loc="upper right")
    for ax in axes:
        ax.axvspan(0, result.warmup_s / 60, color="grey", alpha=0.15)
        ax.grid(alpha=0.3)
    verdict = "PASS" if result.passed else "FAIL"
    fig.suptitle(
        f"soak: {result.rate:,.0f} ticks/s for {result.minutes:g} min — {verdict} "
        f"(RSS {result.rss_min_mb:.0f}–{result.rss_max_mb:.0f} MB after warm-up, "
        f"lost {result.lost})"
    )
    fig.tight_layout()
    fig.savefig(path, dpi=80)
    plt.close(fig)


def _feed_env(
    settings: Settings, sim: SimProcess, topic_prefix: str, namespace: str, spool: Path
) -> dict[str, str]:
    env = dict(os.environ)
    env.update(
        {
            "ALPHAPANDA_KITE__WS_URL": sim.ws_url,
            "ALPHAPANDA_KITE__API_KEY": sim.api_key,
            "ALPHAPANDA_KITE__ACCESS_TOKEN": sim.access_token,
            "ALPHAPANDA_KAFKA__BOOTSTRAP_SERVERS": settings.kafka.bootstrap_servers,
            "ALPHAPANDA_KAFKA__TOPIC_PREFIX": topic_prefix,
            "ALPHAPANDA_REDIS__URL": settings.redis.url.get_secret_value(),
            "ALPHAPANDA_METRICS__NAMESPACE": namespace,
            "ALPHAPANDA_FEED__SPOOL_DIR": str(spool),
            "ALPHAPANDA_FEED__INSTRUMENTS_CSV": str(simulator_csv(settings)),
            "ALPHAPANDA_LOG__LEVEL": "WARNING",
        }
    )
    env.pop("ALPHAPANDA_CONFIG_FILE", None)
    return env


async def run_soak(
    settings: Settings,
    *,
    minutes: float,
    rate: float,
    out_dir: Path,
    interval: float = 5.0,
    keep_topic: bool = False,
    on_sample: Callable[[SoakSample], None] | None = None,
) -> SoakResult:
    """Run the soak; writes ``soak.csv`` and ``soak.png`` into ``out_dir``."""
    await asyncio.to_thread(out_dir.mkdir, parents=True, exist_ok=True)
    run_id = uuid.uuid4().hex[:8]
    prefix = f"{settings.kafka.topic_prefix}soak.{run_id}."
    namespace = f"soak{run_id}"
    topic = TopicNames.market_ticks(prefix)
    duration = minutes * 60
    errors: list[str] = []
    samples: list[SoakSample] = []
    redis = aioredis.from_url(settings.redis.url.get_secret_value())
    snapshot_key = k.MetricsKeys(namespace).key(k.SNAPSHOT)
    ledger = StreamLedger(settings.kafka.bootstrap_servers, topic, security_config(settings.kafka))
    sent = 0
    missing: dict[int, tuple[int, int]] = {}
    exit_code: int | None = None
    try:
        async with SimProcess(
            ticks_per_second=rate, instruments=settings.feed.instruments_csv
        ) as sim:
            env = _feed_env(settings, sim, prefix, namespace, out_dir / f"spool-{run_id}")
            # The feed's log goes to a file: a pipe nobody drains would block it.
            log_path = out_dir / f"feed-{run_id}.log"
            log_file = log_path.open("w")
            feed = await asyncio.create_subprocess_exec(
                sys.executable,
                "-m",
                "alphapanda",
                "feed",
                env=env,
                stdout=asyncio.subprocess.DEVNULL,
                stderr=log_file,
            )
            try:
                ledger.start()
                process = psutil.Process(feed.pid)
                await until(lambda: ledger.figures().consumed > 0, 90, "first tick in Kafka")
                start = time.monotonic()
                while (elapsed := time.monotonic() - start) < duration:
                    sample = await _sample(process, redis, snapshot_key, ledger, elapsed)
                    samples.append(sample)
                    if on_sample is not None:
                        on_sample(sample)
                    if feed.returncode is not None:
                        errors.append(f"the feed exited early with code {feed.returncode}")
                        break
                    await asyncio.sleep(min(interval, max(0.0, duration - elapsed)))
                samples.append(
                    await _sample(process, redis, snapshot_key, ledger, time.monotonic() - start)
                )
                # Stop the load, then wait until Kafka holds every tick the sim sent.
                await sim.set_rate(0)
                await asyncio.sleep(1.0)  # ticks already scheduled by the simulator
                stats = await sim.stats()
                sent = int(stats["total_ticks_sent"])
                await until(lambda: ledger.figures().consumed >= sent, 120, "consumer caught up")
                stats = await sim.stats()
                sent = int(stats["total_ticks_sent"])
                missing = ledger.missing_against(stats["ticks_sent"])
            except TimeoutError as exc:
                errors.append(str(exc))
            finally:
                if feed.returncode is None:
                    feed.send_signal(signal.SIGTERM)
                try:
                    async with asyncio.timeout(60):
                        exit_code = await feed.wait()
                except TimeoutError:
                    feed.kill()
                    exit_code = await feed.wait()
                    errors.append("the feed did not stop within 60 s of SIGTERM")
                log_file.close()
                if exit_code not in (0, None):
                    tail = log_path.read_text(errors="replace")[-1500:]
                    errors.append(f"feed exit code {exit_code}: {tail}")
    finally:
        ledger.stop()
        await redis.aclose()
        if not keep_topic:
            await asyncio.to_thread(_delete_topic, settings.kafka.bootstrap_servers, topic)
    if ledger.error:
        errors.append(f"ledger consumer: {ledger.error}")
    warmup = warmup_seconds(duration)
    flat, baseline, low, high = rss_verdict(samples, warmup)
    result = SoakResult(
        minutes=minutes,
        rate=rate,
        samples=samples,
        warmup_s=warmup,
        rss_baseline_mb=baseline,
        rss_min_mb=low,
        rss_max_mb=high,
        rss_flat=flat,
        sent=sent,
        ledger=ledger.figures(),
        missing=missing,
        feed_exit_code=exit_code,
        errors=errors,
    )
    write_csv(samples, out_dir / "soak.csv")
    plot(result, out_dir / "soak.png")
    return result


async def _sample(
    process: psutil.Process,
    redis: aioredis.Redis,
    snapshot_key: str,
    ledger: StreamLedger,
    elapsed: float,
) -> SoakSample:
    try:
        rss = process.memory_info().rss / 1e6
    except psutil.Error:
        rss = 0.0
    snapshot: dict[str, Any] = {}
    try:
        raw = await redis.get(snapshot_key)
        if raw is not None:
            snapshot = msgspec.json.decode(raw)
    except (OSError, aioredis.RedisError, msgspec.DecodeError):
        snapshot = {}
    latency = snapshot.get("send_latency") or {}
    return SoakSample(
        elapsed_s=elapsed,
        rss_mb=rss,
        buffer_depth=float(snapshot.get(k.BUFFER_DEPTH) or 0),
        latency_p50_ms=float(latency.get("p50") or 0) * 1000,
        latency_p99_ms=float(latency.get("p99") or 0) * 1000,
        feed_received=int(snapshot.get(k.COUNT) or 0),
        consumed=ledger.figures().consumed,
        ticks_per_s=float(snapshot.get(k.TICKS_PER_SECOND) or 0),
    )


def _delete_topic(bootstrap: str, topic: str) -> None:
    admin = AdminClient({"bootstrap.servers": bootstrap})
    for future in admin.delete_topics([topic], operation_timeout=10).values():
        try:
            future.result(15)
        except Exception:  # best effort: a leftover soak topic is harmless
            pass


def summary_lines(result: SoakResult) -> list[str]:
    """The human verdict, one fact per line."""
    lines = [
        f"load: {result.rate:,.0f} ticks/s for {result.minutes:g} min, "
        f"{len(result.samples)} samples, warm-up {result.warmup_s:.0f} s",
        f"RSS after warm-up: baseline {result.rss_baseline_mb:.1f} MB, "
        f"min {result.rss_min_mb:.1f}, max {result.rss_max_mb:.1f} "
        f"(±{RSS_TOLERANCE:.0%} allowed): {'flat' if result.rss_flat else 'NOT FLAT'}",
        f"ledger: simulator sent {result.sent:,}, consumed {result.ledger.consumed:,}, "
        f"lost {result.lost:,}, gaps {result.ledger.gaps}, duplicates/reordered "
        f"{result.ledger.duplicates_or_reordered}, instruments off {len(result.missing)}",
    ]
    if result.samples:
        p99 = max(s.latency_p99_ms for s in result.samples)
        depth = max(s.buffer_depth for s in result.samples)
        lines.append(f"max buffer depth {depth:.0f}; worst sampled send p99 {p99:.1f} ms")
    lines += [f"error: {e}" for e in result.errors]
    lines.append("PASS" if result.passed else "FAIL")
    return lines
