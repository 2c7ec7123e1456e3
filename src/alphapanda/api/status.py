"""Building the ``/status`` document — from live samples or from the Redis snapshot.

Pure functions (plus ``RateMeter``, which is handed the clock reading), so the shape the
status page and ``alphapanda status`` depend on is tested without a feed or a Redis.
The feed process builds it from its components' samples and connection statuses; the
read-only monitoring process builds the same shape from the collector's last flush.
"""

from __future__ import annotations

from collections import deque
from collections.abc import Iterable, Mapping
from typing import Any

from alphapanda.api.models import (
    BufferView,
    ConnectionView,
    LatencyView,
    SpoolView,
    StatusView,
)
from alphapanda.metrics import keys
from alphapanda.metrics.samples import Sample

# Per-shard sample names (as the collector stores them) → ConnectionView fields.
_SHARD_FIELDS = {
    keys.TICKS_RECEIVED: "ticks_received",
    "connection_ticks_received_total": "ticks_received",
    keys.RECONNECTS_SAMPLE: "reconnect_count",
    "connection_reconnects_total": "reconnect_count",
    "connection_instruments": "instruments",
    "subscribed_instruments": "instruments",
    "instruments": "instruments",
    "connection_last_frame_age_seconds": "last_frame_age_seconds",
    "last_frame_age_seconds": "last_frame_age_seconds",
}


class RateMeter:
    """Ticks per second from successive readings of a cumulative counter.

    Keeps a short window of ``(monotonic_seconds, count)`` readings and reports the
    rate across it, so a status page polling once a second sees a steady figure.
    """

    def __init__(self, window_seconds: float = 5.0, min_span_seconds: float = 0.5) -> None:
        self._window = window_seconds
        self._min_span = min_span_seconds
        self._readings: deque[tuple[float, float]] = deque(maxlen=64)

    def observe(self, now: float, count: float) -> float | None:
        """Record a reading; the rate over the window, or None until it spans enough time."""
        if self._readings and count < self._readings[-1][1]:
            self._readings.clear()  # the counter restarted (a new feed process)
        self._readings.append((now, count))
        while len(self._readings) > 2 and now - self._readings[1][0] >= self._window:
            self._readings.popleft()
        first_t, first_count = self._readings[0]
        span = now - first_t
        if span < self._min_span:
            return None
        return (count - first_count) / span


def _int(value: Any) -> int | None:
    try:
        return None if value is None or value == "" else int(float(value))
    except (TypeError, ValueError):
        return None


def _float(value: Any) -> float | None:
    try:
        return None if value is None or value == "" else float(value)
    except (TypeError, ValueError):
        return None


def _int_map(value: Any) -> dict[str, int]:
    if not isinstance(value, Mapping):
        return {}
    return {str(k): n for k, v in value.items() if (n := _int(v)) is not None}


def by_mode(subscriptions: Mapping[int, str]) -> dict[str, int]:
    counts: dict[str, int] = {}
    for mode in subscriptions.values():
        counts[mode] = counts.get(mode, 0) + 1
    return dict(sorted(counts.items()))


def connection_view(raw: Mapping[str, Any], shard: str | None = None) -> ConnectionView:
    """One connection from a ``FeedControl.connections()`` dict or a Redis shard object."""
    fields: dict[str, Any] = {}
    for name, value in raw.items():
        target = _SHARD_FIELDS.get(name, name)
        fields[target] = value
    age = fields.get("last_frame_age_seconds", fields.get("last_frame_age"))
    since = fields.get("since")
    reason = fields.get("last_disconnect_reason")
    return ConnectionView(
        shard=str(fields.get("shard", shard if shard is not None else "?")),
        state=str(fields.get("state", "unknown")),
        since=None if since is None else str(since),
        reconnect_count=_int(fields.get("reconnect_count")),
        last_disconnect_reason=None if reason is None else str(reason),
        instruments=_int(fields.get("instruments")),
        ticks_received=_int(fields.get("ticks_received")),
        last_frame_age_seconds=_float(age),
    )


def status_from_samples(
    samples: Iterable[Sample],
    connections: Iterable[Mapping[str, Any]],
    subscriptions: Mapping[int, str],
    ready: bool,
    buffer_capacity: int,
    buffer_policy: str,
    ticks_per_second: float | None,
    updated_at: str,
    now_epoch: float,
) -> StatusView:
    """The live status of the feed process."""
    collected = list(samples)
    scalars, hashes = keys.apply_rules(collected)
    last_tick = max(
        (s.value for s in collected if s.name == keys.LAST_TICK_TIMESTAMP and s.value > 0),
        default=None,
    )
    return StatusView(
        source="feed",
        available=True,
        ready=ready,
        updated_at=updated_at,
        ticks_received=_int(scalars.get(keys.COUNT)),
        ticks_per_second=ticks_per_second,
        last_tick_age_seconds=None if last_tick is None else max(0.0, now_epoch - last_tick),
        sends_ok=_int(scalars.get(keys.SENDS_OK)),
        sends_failed=_int(scalars.get(keys.SENDS_FAILED)),
        send_latency_seconds=LatencyView(
            p50=scalars.get(keys.LATENCY_P50),
            p90=scalars.get(keys.LATENCY_P90),
            p99=scalars.get(keys.LATENCY_P99),
            max=scalars.get(keys.LATENCY_MAX),
        ),
        drops=_int_map(hashes.get(keys.DROPS)),
        malformed=_int_map(hashes.get(keys.MALFORMED)),
        reconnects=_int_map(hashes.get(keys.RECONNECTS)),
        buffer=BufferView(
            depth=_int(scalars.get(keys.BUFFER_DEPTH)),
            capacity=buffer_capacity,
            policy=buffer_policy,
        ),
        spool=SpoolView(
            bytes=_int(scalars.get(keys.SPOOL_BYTES)),
            messages=_int(scalars.get(keys.SPOOL_MESSAGES)),
        ),
        connections=[connection_view(c) for c in connections],
        subscriptions=by_mode(subscriptions),
    )


def _nested(snapshot: Mapping[str, Any], group: str, name: str, flat: str) -> Any:
    inner = snapshot.get(group)
    if isinstance(inner, Mapping) and name in inner:
        return inner[name]
    return snapshot.get(flat)


def status_from_snapshot(
    snapshot: Mapping[str, Any] | None, buffer_capacity: int, buffer_policy: str
) -> StatusView:
    """The status as of the collector's last flush to Redis (``None``: nothing there)."""
    if not snapshot:
        return StatusView(source="redis", available=False)
    raw_connections = snapshot.get(keys.CONNECTIONS)
    connections: list[ConnectionView] = []
    if isinstance(raw_connections, Mapping):
        for shard, figures in sorted(raw_connections.items(), key=lambda kv: str(kv[0])):
            if isinstance(figures, Mapping):
                connections.append(connection_view(figures, str(shard)))
    elif isinstance(raw_connections, list):
        connections = [connection_view(c) for c in raw_connections if isinstance(c, Mapping)]
    subs = snapshot.get("subscriptions")
    return StatusView(
        source="redis",
        available=True,
        updated_at=_str_or_none(snapshot.get(keys.UPDATED_AT)),
        ticks_received=_int(snapshot.get(keys.COUNT)),
        ticks_per_second=_float(snapshot.get(keys.TICKS_PER_SECOND)),
        last_tick_age_seconds=_float(snapshot.get(keys.LAST_TICK_AGE)),
        sends_ok=_int(_nested(snapshot, "sends", "ok", keys.SENDS_OK)),
        sends_failed=_int(_nested(snapshot, "sends", "failed", keys.SENDS_FAILED)),
        send_latency_seconds=LatencyView(
            p50=_float(_nested(snapshot, "send_latency", "p50", keys.LATENCY_P50)),
            p90=_float(_nested(snapshot, "send_latency", "p90", keys.LATENCY_P90)),
            p99=_float(_nested(snapshot, "send_latency", "p99", keys.LATENCY_P99)),
            max=_float(_nested(snapshot, "send_latency", "max", keys.LATENCY_MAX)),
        ),
        drops=_int_map(snapshot.get(keys.DROPS)),
        malformed=_int_map(snapshot.get(keys.MALFORMED)),
        reconnects=_int_map(snapshot.get(keys.RECONNECTS)),
        buffer=BufferView(
            depth=_int(snapshot.get(keys.BUFFER_DEPTH)),
            capacity=buffer_capacity,
            policy=buffer_policy,
        ),
        spool=SpoolView(
            bytes=_int(_nested(snapshot, "spool", "bytes", keys.SPOOL_BYTES)),
            messages=_int(_nested(snapshot, "spool", "messages", keys.SPOOL_MESSAGES)),
        ),
        connections=connections,
        subscriptions=_int_map(subs) if isinstance(subs, Mapping) else {},
    )


def _str_or_none(value: Any) -> str | None:
    return None if value is None or value == "" else str(value)
