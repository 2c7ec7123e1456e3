"""Building the ``/status`` document — from live samples or from the Redis snapshot.

Pure functions (plus ``RateMeter``, which is handed the clock reading), so the shape the
status page and ``alphapanda status`` depend on is tested without a feed or a Redis.
The feed process builds it from its components' samples and connection statuses; the
read-only monitoring process builds the same shape from the collector's last flush.
"""

from __future__ import annotations

from collections import deque
from collections.abc import Callable, Iterable, Iterator, Mapping
from datetime import UTC, datetime
from typing import Any

from alphapanda.api.models import (
    AuthView,
    BufferView,
    ConnectionView,
    HaView,
    LatencyView,
    SpoolView,
    StatusView,
    WalView,
)
from alphapanda.metrics import catalog, redis_layout
from alphapanda.metrics.reader import samples_of
from alphapanda.metrics.samples import Sample

# Per-shard sample names (as the collector stores them) → ConnectionView fields.
_SHARD_FIELDS = {
    catalog.TICKS_RECEIVED.name: "ticks_received",
    catalog.CONNECTION_TICKS_RECEIVED.name: "ticks_received",
    catalog.CONNECTION_RECONNECTS.name: "reconnect_count",
    catalog.CONNECTION_INSTRUMENTS.name: "instruments",
    catalog.CONNECTION_LAST_FRAME_AGE_SECONDS.name: "last_frame_age_seconds",
    catalog.CONNECTION_SINCE_TIMESTAMP_SECONDS.name: "since_timestamp_seconds",
}


# One mapping of samples to figures for Redis and /status alike: ``redis_layout.DEFAULT_RULES``
# (it also maps the components' own names, e.g. ``kite_reconnect_attempts_total``).
STATUS_RULES = redis_layout.DEFAULT_RULES


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
    # Zero entries (every known reason is reported, most never happen) are noise here.
    return {str(k): n for k, v in sorted(value.items()) if (n := _int(v))}


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
    if since is None and isinstance(fields.get("since_timestamp_seconds"), int | float):
        since = datetime.fromtimestamp(fields["since_timestamp_seconds"], UTC).isoformat()
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


def _figures(samples: Iterable[Sample]) -> dict[str, Any]:
    """The StatusView fields that are figures of the tick path, from samples."""
    collected = list(samples)
    scalars, hashes = redis_layout.apply_rules(collected, STATUS_RULES)
    last_tick = max(
        (
            s.value
            for s in collected
            if s.name == catalog.LAST_TICK_TIMESTAMP_SECONDS.name and s.value > 0
        ),
        default=None,
    )
    return {
        "last_tick": last_tick,
        "ticks_received": _int(scalars.get(redis_layout.COUNT)),
        "sends_ok": _int(scalars.get(redis_layout.SENDS_OK)),
        # Failure counters exist per error kind, so none at all means zero failures.
        "sends_failed": _int(
            scalars.get(
                redis_layout.SENDS_FAILED, 0.0 if redis_layout.SENDS_OK in scalars else None
            )
        ),
        "send_latency_seconds": LatencyView(
            p50=scalars.get(redis_layout.LATENCY_P50),
            p90=scalars.get(redis_layout.LATENCY_P90),
            p99=scalars.get(redis_layout.LATENCY_P99),
            max=scalars.get(redis_layout.LATENCY_MAX),
        ),
        "drops": _int_map(hashes.get(redis_layout.DROPS)),
        "malformed": _int_map(hashes.get(redis_layout.MALFORMED)),
        "reconnects": _int_map(hashes.get(redis_layout.RECONNECTS)),
        "buffer_depth": _int(scalars.get(redis_layout.BUFFER_DEPTH)),
        "spool": SpoolView(
            bytes=_int(scalars.get(redis_layout.SPOOL_BYTES)),
            messages=_int(scalars.get(redis_layout.SPOOL_MESSAGES)),
        ),
        "auth": _auth_view(collected),
        "wal": _wal_view(collected),
        "ha": _ha_view(collected),
    }


def _ha_view(samples: list[Sample]) -> HaView:
    """The hot-standby state, from the controller's samples (absent: not in a group)."""
    info = next((s for s in samples if s.name == "ha_info"), None)
    if info is None:
        return HaView()
    labels = dict(info.labels)
    values = {s.name: s.value for s in samples if s.name.startswith("ha_")}

    def positive(name: str) -> float | None:
        value = values.get(name)
        return value if value else None

    epoch = positive("ha_epoch")
    held = values.get("ha_standby_held")
    return HaView(
        group=labels.get("group"),
        instance=labels.get("instance"),
        role=labels.get("role"),
        standby_mode=labels.get("standby_mode"),
        active_since=positive("ha_active_since_timestamp"),
        epoch=None if epoch is None else int(epoch),
        standby_ready=bool(values.get("ha_standby_ready", 0)),
        held=None if held is None else int(held),
        last_received_at=positive("ha_last_received_timestamp"),
        takeover_seconds=positive("ha_takeover_seconds"),
    )


_WAL_PAUSED = (
    "OFF: the WAL is paused (disk full, I/O error or size limit); ticks still flow, "
    "but a crash now would lose what is in flight. It resumes when space returns."
)


def _wal_view(samples: list[Sample]) -> WalView:
    """The WAL's state, from its samples (absent: the WAL is disabled or not reported)."""
    values = {s.name: s.value for s in samples if s.name.startswith("wal_")}
    if catalog.WAL_PAUSED.name not in values:
        return WalView()

    def number(metric: catalog.Metric) -> int | None:
        value = values.get(metric.name)
        return None if value is None else int(value)

    paused = bool(values[catalog.WAL_PAUSED.name])
    return WalView(
        enabled=True,
        paused=paused,
        crash_protection=_WAL_PAUSED if paused else "on",
        bytes=number(catalog.WAL_BYTES),
        segments=number(catalog.WAL_SEGMENTS),
        recovered=number(catalog.WAL_RECOVERED),
        already_published=number(catalog.WAL_ALREADY_PUBLISHED),
        corrupt=number(catalog.WAL_CORRUPT),
    )


def _auth_view(samples: list[Sample]) -> AuthView:
    """The access token's state, from the AuthService's samples (absent: all None)."""
    valid = next((s for s in samples if s.name == catalog.AUTH_TOKEN_VALID.name), None)
    left = next((s.value for s in samples if s.name == catalog.AUTH_TOKEN_SECONDS_LEFT.name), None)
    return AuthView(
        token_valid=None if valid is None else bool(valid.value),
        source=None if valid is None else dict(valid.labels).get("source"),
        seconds_left=left,
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
    figures = _figures(samples)
    last_tick = figures.pop("last_tick")
    depth = figures.pop("buffer_depth")
    return StatusView(
        source="feed",
        available=True,
        ready=ready,
        updated_at=updated_at,
        ticks_per_second=ticks_per_second,
        last_tick_age_seconds=None if last_tick is None else max(0.0, now_epoch - last_tick),
        buffer=BufferView(depth=depth, capacity=buffer_capacity, policy=buffer_policy),
        connections=[connection_view(c) for c in connections],
        subscriptions=by_mode(subscriptions),
        **figures,
    )


def status_from_snapshot(
    snapshot: Mapping[str, Any] | None, buffer_capacity: int, buffer_policy: str
) -> StatusView:
    """The status as of the collector's last flush to Redis (``None``: nothing there).

    Figures come from the snapshot's raw ``samples`` through the same rules as the live
    status, so both roles show the same numbers; rates and ages are the collector's."""
    if not snapshot:
        return StatusView(source="redis", available=False)
    figures = _figures(samples_of(snapshot))
    figures.pop("last_tick")
    depth = figures.pop("buffer_depth")
    if figures["ticks_received"] is None:
        figures["ticks_received"] = _int(snapshot.get(redis_layout.COUNT))
    raw_connections = snapshot.get(redis_layout.CONNECTIONS)
    connections: list[ConnectionView] = []
    if isinstance(raw_connections, Mapping):
        for shard, shard_figures in sorted(raw_connections.items(), key=lambda kv: str(kv[0])):
            if isinstance(shard_figures, Mapping):
                connections.append(connection_view(shard_figures, str(shard)))
    raw_samples = samples_of(snapshot)
    subscribed = [s for s in raw_samples if s.name == catalog.CONNECTION_SUBSCRIPTIONS.name]
    ready_flags = [s.value for s in raw_samples if s.name == catalog.FEED_READY.name]
    return StatusView(
        source="redis",
        available=True,
        ready=bool(ready_flags[0]) if ready_flags else None,
        updated_at=_str_or_none(snapshot.get(redis_layout.UPDATED_AT)),
        ticks_per_second=_float(snapshot.get(redis_layout.TICKS_PER_SECOND)),
        last_tick_age_seconds=_float(snapshot.get(redis_layout.LAST_TICK_AGE)),
        buffer=BufferView(depth=depth, capacity=buffer_capacity, policy=buffer_policy),
        connections=connections,
        subscriptions={
            dict(s.labels).get("mode", "?"): int(s.value) for s in subscribed if s.value
        },
        **figures,
    )


def _str_or_none(value: Any) -> str | None:
    return None if value is None or value == "" else str(value)


class ConnectionFigures:
    """Per-connection samples (label ``shard``) from the ticker client's statuses, so the
    Redis snapshot — and with it ``alphapanda api`` and ``alphapanda status`` — can show
    one row per connection. Register it with the metrics collector of the feed."""

    def __init__(
        self, statuses: Callable[[], Iterable[Any]], subscriptions: Callable[[], Mapping[int, str]]
    ):
        self._statuses = statuses
        self._subscriptions = subscriptions

    def samples(self) -> Iterator[Sample]:
        for status in self._statuses():
            shard = (("shard", str(status.shard)),)
            yield catalog.CONNECTION_STATE.sample(1, (*shard, ("state", str(status.state))))
            yield catalog.CONNECTION_SINCE_TIMESTAMP_SECONDS.sample(status.since.timestamp(), shard)
            yield catalog.CONNECTION_INSTRUMENTS.sample(status.instruments, shard)
            yield catalog.CONNECTION_TICKS_RECEIVED.sample(status.ticks_received, shard)
            yield catalog.CONNECTION_RECONNECTS.sample(status.reconnect_count, shard)
            if status.last_frame_age is not None:
                yield catalog.CONNECTION_LAST_FRAME_AGE_SECONDS.sample(status.last_frame_age, shard)
        for mode, count in by_mode(self._subscriptions()).items():
            yield catalog.CONNECTION_SUBSCRIPTIONS.sample(count, (("mode", mode),))
