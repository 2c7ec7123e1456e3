"""Read the pipeline metrics back from Redis: for the control API and ``alphapanda status``.

Readers use the ``snapshot`` document (one GET, always self-consistent) rather than the
individual keys; the individual keys exist for tools and dashboards that expect the
historic ``pipeline:market_ticks:market:*`` layout.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping, Sequence
from datetime import datetime
from typing import Any, Literal

import msgspec
import redis.asyncio as aioredis

from alphapanda.metrics import catalog
from alphapanda.metrics import redis_layout as k
from alphapanda.metrics.samples import Sample, SampleKind

HealthState = Literal["ok", "idle", "degraded", "stale", "no_data"]


class HealthSummary(msgspec.Struct, frozen=True):
    """What a monitoring route answers in one glance.

    ``status``: ``no_data`` (no snapshot: the feed is not running or its keys expired),
    ``stale`` (the feed stopped flushing), ``idle`` (flushing but no tick for
    ``idle_after`` seconds), ``degraded`` (sends failing or ticks dropped during the
    last interval), else ``ok``.
    """

    status: HealthState
    namespace: str
    updated_at: str | None = None
    snapshot_age_seconds: float | None = None
    last_activity: str | None = None
    last_tick_age_seconds: float | None = None
    ticks_per_second: float | None = None
    ticks_total: int | float | None = None
    sends_ok: int | float | None = None
    sends_failed: int | float | None = None
    send_failures_per_second: float | None = None
    drops_total: float = 0.0
    send_latency_p99_seconds: float | None = None
    reasons: tuple[str, ...] = ()


def _age(snapshot: Mapping[str, Any], now: float) -> float | None:
    stamp = snapshot.get("updated_at_epoch")
    if isinstance(stamp, int | float):
        return max(0.0, now - float(stamp))
    text = snapshot.get("updated_at")
    if isinstance(text, str) and text:
        return max(0.0, now - datetime.fromisoformat(text).timestamp())
    return None


def health_of(
    snapshot: Mapping[str, Any] | None,
    namespace: str,
    now: float,
    *,
    idle_after: float = 10.0,
    stale_after: float | None = None,
) -> HealthSummary:
    """Pure: judge a snapshot. ``stale_after`` defaults to five flush intervals (≥ 5 s)."""
    if snapshot is None:
        return HealthSummary("no_data", namespace, reasons=("no metrics snapshot in Redis",))
    interval = float(snapshot.get("flush_interval_seconds") or 1.0)
    stale_limit = stale_after if stale_after is not None else max(5.0, 5 * interval)
    snapshot_age = _age(snapshot, now)
    # The snapshot's tick age was measured at flush time; add the time since.
    raw_tick_age = snapshot.get(k.LAST_TICK_AGE)
    tick_age: float | None = None
    if isinstance(raw_tick_age, int | float):
        tick_age = float(raw_tick_age) + (snapshot_age or 0.0)
    sends = snapshot.get("sends") or {}
    rates = snapshot.get("rates") or {}
    drops = snapshot.get(k.DROPS) or {}
    latency = snapshot.get("send_latency") or {}
    failed_rate = rates.get(k.SENDS_FAILED)
    drop_rate = rates.get(k.DROPS)

    reasons: list[str] = []
    status: HealthState = "ok"
    if snapshot_age is not None and snapshot_age > stale_limit:
        status = "stale"
        reasons.append(f"last metrics flush {snapshot_age:.1f}s ago")
    else:
        if isinstance(failed_rate, int | float) and failed_rate > 0:
            status = "degraded"
            reasons.append(f"{failed_rate:.1f} failed sends/s")
        if isinstance(drop_rate, int | float) and drop_rate > 0:
            status = "degraded"
            reasons.append(f"{drop_rate:.1f} dropped ticks/s")
        if status == "ok" and (tick_age is None or tick_age > idle_after):
            status = "idle"
            reasons.append("no tick yet" if tick_age is None else f"last tick {tick_age:.1f}s ago")
    return HealthSummary(
        status=status,
        namespace=namespace,
        updated_at=snapshot.get("updated_at"),
        snapshot_age_seconds=snapshot_age,
        last_activity=snapshot.get(k.LAST_ACTIVITY),
        last_tick_age_seconds=tick_age,
        ticks_per_second=snapshot.get(k.TICKS_PER_SECOND),
        ticks_total=snapshot.get(k.COUNT),
        sends_ok=sends.get("ok"),
        sends_failed=sends.get("failed"),
        send_failures_per_second=failed_rate,
        drops_total=float(sum(v for v in drops.values() if isinstance(v, int | float))),
        send_latency_p99_seconds=latency.get("p99"),
        reasons=tuple(reasons),
    )


def samples_of(snapshot: Mapping[str, Any]) -> list[Sample]:
    """The raw samples a snapshot carries (for Prometheus exposition from Redis).

    The snapshot does not store help texts; they come from the catalog (none for a name
    it does not know, e.g. one written by another version of the feed)."""
    out: list[Sample] = []
    for item in snapshot.get("samples") or ():
        kind: SampleKind = "counter" if item.get("kind") == "counter" else "gauge"
        labels = tuple(sorted((str(a), str(b)) for a, b in (item.get("labels") or {}).items()))
        name = str(item["name"])
        metric = catalog.BY_NAME.get(name)
        help_text = "" if metric is None else metric.help
        out.append(Sample(name, kind, float(item["value"]), labels, help_text))
    return out


def samples_from_rows(rows: Iterable[Sequence[Any]]) -> list[Sample]:
    """Samples sent as plain rows ``(name, kind, value, labels, help)`` from another
    process (the feed answering its API process), rebuilt."""
    return [
        Sample(
            str(name),
            "counter" if kind == "counter" else "gauge",
            float(value),
            tuple((str(label), str(text)) for label, text in labels),
            str(help_text),
        )
        for name, kind, value, labels, help_text in rows
    ]


def status_rows(snapshot: Mapping[str, Any] | None) -> list[tuple[str, str]]:
    """Pure: ``(label, value)`` rows for a human-readable status table."""
    if snapshot is None:
        return [("metrics", "no snapshot in Redis (feed not running?)")]

    def show(value: object, unit: str = "") -> str:
        if value is None:
            return "-"
        if isinstance(value, float):
            return f"{value:.3f}{unit}"
        return f"{value}{unit}"

    def pairs(mapping: Mapping[str, object]) -> str:
        return ", ".join(f"{key}={value}" for key, value in sorted(mapping.items())) or "none"

    sends = snapshot.get("sends") or {}
    spool = snapshot.get("spool") or {}
    latency = snapshot.get("send_latency") or {}
    rows = [
        ("updated at", show(snapshot.get("updated_at"))),
        ("ticks received", show(snapshot.get(k.COUNT))),
        ("ticks/s", show(snapshot.get(k.TICKS_PER_SECOND))),
        ("last tick", show(snapshot.get(k.LAST_ACTIVITY))),
        ("last tick age", show(snapshot.get(k.LAST_TICK_AGE), " s")),
        ("sends ok / failed", f"{show(sends.get('ok'))} / {show(sends.get('failed'))}"),
        (
            "send latency p50/p99/max",
            " / ".join(show(latency.get(q), " s") for q in ("p50", "p99", "max")),
        ),
        ("buffer depth", show(snapshot.get(k.BUFFER_DEPTH))),
        ("spool", f"{show(spool.get('messages'))} messages, {show(spool.get('bytes'))} bytes"),
        ("drops", pairs(snapshot.get(k.DROPS) or {})),
        ("malformed", pairs(snapshot.get(k.MALFORMED) or {})),
        ("reconnects", pairs(snapshot.get(k.RECONNECTS) or {})),
    ]
    for shard, figures in sorted((snapshot.get(k.CONNECTIONS) or {}).items()):
        rows.append((f"connection {shard}", pairs(figures)))
    return rows


class MetricsReader:
    """Reads one namespace's metrics: ``MetricsReader(redis, "market")``."""

    def __init__(self, redis: aioredis.Redis, namespace: str = "market") -> None:
        self._redis = redis
        self.keys = k.MetricsKeys(namespace)

    async def snapshot(self) -> dict[str, Any] | None:
        """The last flushed snapshot, or ``None`` if there is none (or it is unreadable)."""
        raw = await self._redis.get(self.keys.key(k.SNAPSHOT))
        if raw is None:
            return None
        try:
            value = msgspec.json.decode(raw)
        except msgspec.DecodeError:
            return None
        return value if isinstance(value, dict) else None

    async def health(self, now: float, *, idle_after: float = 10.0) -> HealthSummary:
        """Health summary at wall time ``now`` (epoch seconds)."""
        return health_of(await self.snapshot(), self.keys.namespace, now, idle_after=idle_after)

    async def samples(self) -> list[Sample]:
        snapshot = await self.snapshot()
        return [] if snapshot is None else samples_of(snapshot)

    async def hash(self, suffix: str) -> dict[str, str]:
        """One of the hash keys (``reconnects``, ``drops``, ``malformed``, ``connections``)."""
        if suffix not in k.HASH_SUFFIXES:
            raise ValueError(f"{suffix!r} is not a hash key")
        raw = await self._redis.hgetall(self.keys.key(suffix))
        return {_text(field): _text(value) for field, value in raw.items()}

    async def value(self, suffix: str) -> str | None:
        """One of the string keys, as stored."""
        raw = await self._redis.get(self.keys.key(suffix))
        return None if raw is None else _text(raw)


def _text(value: bytes | str) -> str:
    return value.decode() if isinstance(value, bytes) else value
