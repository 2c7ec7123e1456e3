"""``PipelineMetricsCollector``: pull every source periodically, ship one snapshot to Redis.

The tick path never touches Redis. Components keep plain integers and expose them as
samples; this collector asks for them every ``settings.metrics.flush_interval_ms``,
derives rates, and writes the whole snapshot in ONE non-transactional pipeline under
``pipeline:market_ticks:<namespace>:*`` (layout in ``alphapanda.metrics.keys``).

A slow or dead Redis costs at most ``flush_timeout`` per interval on this collector's
own task: the write is abandoned at the deadline, the failure is counted (and logged at
most once a minute), and the next interval simply tries again; the redis client opens
a fresh connection once the server is back.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
from collections.abc import Iterable, Mapping
from datetime import UTC, datetime
from typing import Any

import msgspec
import redis.asyncio as aioredis
from redis.asyncio.retry import Retry
from redis.backoff import NoBackoff
from redis.exceptions import RedisError
from redis.exceptions import TimeoutError as RedisTimeoutError

from alphapanda.clock import SYSTEM_CLOCK, Clock
from alphapanda.metrics import keys as k
from alphapanda.metrics.samples import MetricsSource, Sample
from alphapanda.settings import Settings

log = logging.getLogger(__name__)

# Figures whose per-second rate the snapshot carries (key suffix → reduced value).
_RATED_SCALARS = (k.COUNT, k.SENDS_OK, k.SENDS_FAILED)
_RATED_HASHES = (k.DROPS, k.MALFORMED, k.RECONNECTS)
_FAILURE_LOG_EVERY = 60.0


def iso_utc(epoch_seconds: float) -> str:
    return datetime.fromtimestamp(epoch_seconds, UTC).isoformat(timespec="milliseconds")


class RateTracker:
    """Per-second rates of counters between two consecutive observations (pure).

    A counter that went down was reset (its component restarted); like Prometheus'
    ``rate()`` we then take the new value as the increase rather than a negative rate.
    """

    def __init__(self) -> None:
        self._previous: dict[str, float] = {}
        self._previous_at: float | None = None

    def update(self, counters: Mapping[str, float], now: float) -> dict[str, float | None]:
        """Rates since the last call; ``None`` for a figure seen for the first time."""
        elapsed = None if self._previous_at is None else now - self._previous_at
        rates: dict[str, float | None] = {}
        for name, value in counters.items():
            before = self._previous.get(name)
            if before is None or elapsed is None or elapsed <= 0:
                rates[name] = None
                continue
            increase = value - before if value >= before else value
            rates[name] = increase / elapsed
        self._previous = dict(counters)
        self._previous_at = now
        return rates


class PipelineMetricsCollector:
    """Aggregates every registered ``MetricsSource`` and flushes the figures to Redis.

    ``run()`` loops until ``stop()``; ``flush()`` does one round and is what tests call.
    The collector is itself a ``MetricsSource`` (flush counts and failures), and
    ``gather()`` is what the Prometheus collector pulls, so both outputs show the same
    figures.
    """

    def __init__(
        self,
        settings: Settings,
        sources: Iterable[MetricsSource] = (),
        *,
        redis_client: aioredis.Redis | None = None,
        clock: Clock | None = None,
        namespace: str | None = None,
        flush_timeout: float | None = None,
        rules: Iterable[k.KeyRule] = k.DEFAULT_RULES,
    ) -> None:
        self._interval = settings.metrics.flush_interval_ms / 1000
        # Never let one write outlive its interval; a quarter of a second is ample for
        # a few dozen commands to a healthy local Redis.
        self._flush_timeout = flush_timeout or min(self._interval, 0.25)
        self._ttl = settings.metrics.key_ttl_seconds
        self.keys = k.MetricsKeys(namespace or settings.metrics.namespace)
        self._rules = tuple(rules)
        self._sources: list[MetricsSource] = list(sources)
        self._clock: Clock = clock or SYSTEM_CLOCK
        # Created on first use, so building a collector (e.g. just for Prometheus) opens
        # nothing; a client we created is closed when run() ends.
        self._redis_url = settings.redis.url
        self._redis = redis_client
        self._owns_redis = redis_client is None
        self._rates = RateTracker()
        self._stop = asyncio.Event()
        # Inferred last activity, for when no source reports a last-tick timestamp.
        self._last_count: float | None = None
        self._inferred_last_tick: float | None = None
        # Plain counters about ourselves.
        self.flushes = 0
        self.flush_failures: dict[str, int] = {"timeout": 0, "error": 0}
        self.source_errors: dict[str, int] = {}
        self._failing_since: float | None = None
        self._failures_in_row = 0
        self._last_failure_log = 0.0
        self.last_snapshot: dict[str, Any] | None = None

    # ------------------------------------------------------------------ sources
    def register(self, source: MetricsSource) -> None:
        """Add a source; it is pulled from the next flush/scrape on."""
        self._sources.append(source)

    @property
    def sources(self) -> tuple[MetricsSource, ...]:
        return tuple(self._sources)

    def samples(self) -> Iterable[Sample]:
        """The collector's own figures (it is a ``MetricsSource`` too)."""
        yield Sample(
            "metrics_flushes_total", "counter", self.flushes, (), "Metrics flush attempts."
        )
        for reason, count in self.flush_failures.items():
            yield Sample(
                "metrics_flush_failures_total",
                "counter",
                count,
                (("reason", reason),),
                "Metrics flushes to Redis that failed or timed out.",
            )
        for source, count in self.source_errors.items():
            yield Sample(
                "metrics_source_errors_total",
                "counter",
                count,
                (("source", source),),
                "Exceptions raised by a metrics source's samples().",
            )

    def gather(self) -> list[Sample]:
        """Samples of every source plus our own. A failing source is counted and skipped."""
        gathered: list[Sample] = []
        for source in self._sources:
            try:
                # list() first: a generator failing halfway must not leave half its figures.
                gathered.extend(list(source.samples()))
            except Exception:
                # A bug in one component's samples() must not blind us to all the others.
                name = type(source).__name__
                count = self.source_errors.get(name, 0) + 1
                self.source_errors[name] = count
                if count == 1:  # once per source; the counter tells the rest
                    log.exception("metrics source %s failed; counting further failures", name)
        gathered.extend(self.samples())
        return gathered

    # ------------------------------------------------------------------ snapshot
    def collect(self) -> dict[str, Any]:
        """Gather samples and build the snapshot document (pure apart from the pull)."""
        samples = self.gather()
        now = self._clock.wall_ns() / 1e9
        scalars, hashes = k.apply_rules(samples, self._rules)
        counters = {name: scalars[name] for name in _RATED_SCALARS if name in scalars}
        counters.update(
            {name: sum(hashes[name].values()) for name in _RATED_HASHES if name in hashes}
        )
        rates = self._rates.update(counters, self._clock.monotonic())

        last_tick = self._last_tick_time(samples, scalars.get(k.COUNT), now)
        latency = {
            suffix.split(":", 1)[1]: scalars[suffix]
            for suffix in (k.LATENCY_P50, k.LATENCY_P90, k.LATENCY_P99, k.LATENCY_MAX)
            if suffix in scalars
        }
        snapshot: dict[str, Any] = {
            "namespace": self.keys.namespace,
            "updated_at": iso_utc(now),
            "updated_at_epoch": now,
            "flush_interval_seconds": self._interval,
            k.COUNT: _num(scalars.get(k.COUNT)),
            k.LAST_ACTIVITY: iso_utc(last_tick) if last_tick is not None else None,
            k.LAST_TICK_AGE: max(0.0, now - last_tick) if last_tick is not None else None,
            k.TICKS_PER_SECOND: rates.get(k.COUNT),
            "sends": {
                "ok": _num(scalars.get(k.SENDS_OK)),
                "failed": _num(scalars.get(k.SENDS_FAILED)),
            },
            "send_latency": latency,
            k.RECONNECTS: k.render_hash(hashes.get(k.RECONNECTS, {})),
            k.DROPS: k.render_hash(hashes.get(k.DROPS, {})),
            k.MALFORMED: k.render_hash(hashes.get(k.MALFORMED, {})),
            k.BUFFER_DEPTH: _num(scalars.get(k.BUFFER_DEPTH)),
            "spool": {
                "bytes": _num(scalars.get(k.SPOOL_BYTES)),
                "messages": _num(scalars.get(k.SPOOL_MESSAGES)),
            },
            k.CONNECTIONS: k.connections_from(samples),
            "rates": rates,
            "flush": {
                "attempts": self.flushes,
                "failures": dict(self.flush_failures),
            },
            "samples": [
                {"name": s.name, "kind": s.kind, "value": s.value, "labels": dict(s.labels)}
                for s in samples
            ],
        }
        return snapshot

    def _last_tick_time(
        self, samples: list[Sample], count: float | None, now: float
    ) -> float | None:
        stamps = [s.value for s in samples if s.name == k.LAST_TICK_TIMESTAMP and s.value > 0]
        if stamps:
            return max(stamps)
        # No source stamps its last tick: the count moving is proof of activity within
        # the last interval, so "now" is accurate to one flush interval.
        if count is not None and self._last_count is not None and count != self._last_count:
            self._inferred_last_tick = now
        if count is not None:
            self._last_count = count
        return self._inferred_last_tick

    # ------------------------------------------------------------------ redis
    async def flush(self) -> bool:
        """Collect and write one snapshot; ``True`` if Redis took it within the timeout."""
        snapshot = self.collect()
        self.last_snapshot = snapshot
        self.flushes += 1
        try:
            async with asyncio.timeout(self._flush_timeout):
                await self._write(snapshot)
        except (TimeoutError, RedisTimeoutError):
            self._failed("timeout", None)
            return False
        except (RedisError, OSError) as exc:
            self._failed("error", exc)
            return False
        except Exception as exc:
            # Metrics must never take the feed down with them: an unexpected error is a
            # failed flush like any other, but logged with its traceback.
            self._failed("error", exc, unexpected=True)
            return False
        self._succeeded()
        return True

    async def _write(self, snapshot: Mapping[str, Any]) -> None:
        ttl = self._ttl
        key = self.keys.key

        def text(value: object) -> str:
            return "" if value is None else str(value)

        sends = snapshot["sends"]
        spool = snapshot["spool"]
        latency = snapshot["send_latency"]
        strings: dict[str, object] = {
            k.COUNT: snapshot[k.COUNT],
            k.LAST_ACTIVITY: snapshot[k.LAST_ACTIVITY],
            k.LAST_TICK_AGE: snapshot[k.LAST_TICK_AGE],
            k.TICKS_PER_SECOND: snapshot[k.TICKS_PER_SECOND],
            k.SENDS_OK: sends["ok"],
            k.SENDS_FAILED: sends["failed"],
            k.LATENCY_P50: latency.get("p50"),
            k.LATENCY_P90: latency.get("p90"),
            k.LATENCY_P99: latency.get("p99"),
            k.LATENCY_MAX: latency.get("max"),
            k.BUFFER_DEPTH: snapshot[k.BUFFER_DEPTH],
            k.SPOOL_BYTES: spool["bytes"],
            k.SPOOL_MESSAGES: spool["messages"],
            k.UPDATED_AT: snapshot["updated_at"],
        }
        hashes: dict[str, Mapping[str, object]] = {
            k.RECONNECTS: snapshot[k.RECONNECTS],
            k.DROPS: snapshot[k.DROPS],
            k.MALFORMED: snapshot[k.MALFORMED],
            k.CONNECTIONS: {
                shard: msgspec.json.encode(figures).decode()
                for shard, figures in snapshot[k.CONNECTIONS].items()
            },
        }
        if self._redis is None:
            self._redis = redis_from_url(
                self._redis_url.get_secret_value(), timeout=self._flush_timeout
            )
        pipe = self._redis.pipeline(transaction=False)
        for suffix, value in strings.items():
            pipe.set(key(suffix), text(value), ex=ttl)
        for suffix, fields in hashes.items():
            # Replace, not merge: a shard or reason that disappeared must not linger.
            pipe.delete(key(suffix))
            if fields:
                pipe.hset(key(suffix), mapping={f: text(v) for f, v in fields.items()})
                pipe.expire(key(suffix), ttl)
        pipe.set(key(k.SNAPSHOT), msgspec.json.encode(snapshot), ex=ttl)
        await pipe.execute()

    def _failed(self, reason: str, exc: BaseException | None, *, unexpected: bool = False) -> None:
        self.flush_failures[reason] += 1
        self._failures_in_row += 1
        now = self._clock.monotonic()
        first = self._failing_since is None
        if first:
            self._failing_since = now
        if first or now - self._last_failure_log >= _FAILURE_LOG_EVERY:
            self._last_failure_log = now
            cause = type(exc).__name__ if exc is not None else f"no reply in {self._flush_timeout}s"
            log.warning(
                "metrics flush to Redis failed (%s: %s); %d failure(s) in a row, retrying "
                "every %.1fs",
                reason,
                cause,
                self._failures_in_row,
                self._interval,
                exc_info=exc if unexpected else None,
            )

    def _succeeded(self) -> None:
        if self._failing_since is not None:
            log.info("metrics flush to Redis recovered after %d failure(s)", self._failures_in_row)
        self._failing_since = None
        self._failures_in_row = 0

    # ------------------------------------------------------------------ loop
    async def run(self) -> None:
        """Flush every interval until ``stop()``; one last flush on the way out."""
        loop = asyncio.get_running_loop()
        try:
            while not self._stop.is_set():
                started = loop.time()
                await self.flush()
                pause = max(0.0, self._interval - (loop.time() - started))
                with contextlib.suppress(TimeoutError):
                    async with asyncio.timeout(pause):
                        await self._stop.wait()
            await self.flush()
        finally:
            await self.aclose()

    async def aclose(self) -> None:
        """Close the Redis client if this collector created it."""
        if self._owns_redis and self._redis is not None:
            client, self._redis = self._redis, None
            await client.aclose()

    def stop(self) -> None:
        """Ask ``run()`` to do its final flush and return."""
        self._stop.set()


def redis_from_url(url: str, *, timeout: float) -> aioredis.Redis:
    """A client for metrics: short socket timeouts and no internal retries, because the
    flush loop is the retry and a flush must give up within its own deadline."""
    return aioredis.Redis.from_url(
        url,
        socket_connect_timeout=timeout,
        socket_timeout=timeout,
        retry=Retry(NoBackoff(), 0),
    )


def _num(value: float | None) -> int | float | None:
    return None if value is None else k.plain_number(value)
