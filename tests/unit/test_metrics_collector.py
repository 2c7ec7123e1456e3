"""PipelineMetricsCollector's pure side: key mapping, rates, Prometheus exposition, health."""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import dataclass, field

import pytest
from prometheus_client.parser import text_string_to_metric_families

from alphapanda.metrics import keys as k
from alphapanda.metrics.collector import PipelineMetricsCollector, RateTracker
from alphapanda.metrics.prometheus import asgi_app, build_registry, render_latest, render_samples
from alphapanda.metrics.reader import health_of, samples_of, status_rows
from alphapanda.metrics.samples import MetricsSource, Sample
from alphapanda.settings import Settings
from alphapanda.testing import VirtualClock

T0 = 1_764_000_000.0  # 2025-11-24T16:00:00Z


def clock_at_t0() -> VirtualClock:
    return VirtualClock(wall_ns=round(T0 * 1e9), monotonic=100.0)


@dataclass
class FeedSource:
    """A stand-in component that keeps plain ints, as the real ones do."""

    received: int = 0
    sent_ok: int = 0
    sent_failed: int = 0
    last_tick_at: float = 0.0
    drops: dict[str, int] = field(default_factory=dict)
    latency: dict[str, float] = field(default_factory=dict)
    depth: int = 0

    def samples(self) -> Iterable[Sample]:
        yield Sample(k.TICKS_RECEIVED, "counter", self.received, (), "Ticks received.")
        yield Sample(k.SENDS_OK_SAMPLE, "counter", self.sent_ok)
        yield Sample(k.SENDS_FAILED_SAMPLE, "counter", self.sent_failed)
        if self.last_tick_at:
            yield Sample(k.LAST_TICK_TIMESTAMP, "gauge", self.last_tick_at)
        for reason, count in self.drops.items():
            yield Sample(k.DROPS_SAMPLE, "counter", count, (("reason", reason),))
        for quantile, seconds in self.latency.items():
            yield Sample(k.SEND_LATENCY, "gauge", seconds, (("quantile", quantile),))
        yield Sample(k.BUFFER_DEPTH_SAMPLE, "gauge", self.depth)


@dataclass
class ShardSource:
    shard: str
    state: str = "connected"
    reconnects: dict[str, int] = field(default_factory=dict)
    skipped: int = 0

    def samples(self) -> Iterable[Sample]:
        shard = ("shard", self.shard)
        for state in ("connecting", "connected", "backoff"):
            yield Sample(
                k.CONNECTION_STATE, "gauge", float(state == self.state), (shard, ("state", state))
            )
        for reason, count in self.reconnects.items():
            yield Sample(k.RECONNECTS_SAMPLE, "counter", count, (shard, ("reason", reason)))
        yield Sample(
            k.PACKETS_SKIPPED_SAMPLE, "counter", self.skipped, (shard, ("reason", "unknown_length"))
        )


class BrokenSource:
    def samples(self) -> Iterable[Sample]:
        raise RuntimeError("bug in a component")


def make(*sources: MetricsSource, clock: VirtualClock | None = None) -> PipelineMetricsCollector:
    settings = Settings(_env_file=None, metrics={"flush_interval_ms": 500})  # type: ignore[call-arg, arg-type]
    return PipelineMetricsCollector(settings, sources, clock=clock or clock_at_t0())


def test_sources_satisfy_the_protocol() -> None:
    assert isinstance(FeedSource(), MetricsSource)
    assert isinstance(make(), MetricsSource)


def test_rates_are_derived_from_counter_deltas_over_the_interval() -> None:
    clock = clock_at_t0()
    feed = FeedSource(received=1000, sent_ok=900)
    collector = make(feed, clock=clock)

    first = collector.collect()
    assert first[k.COUNT] == 1000
    assert first[k.TICKS_PER_SECOND] is None  # nothing to compare with yet

    feed.received += 250
    feed.sent_ok += 200
    clock.advance(0.5)
    second = collector.collect()
    assert second[k.COUNT] == 1250
    assert second[k.TICKS_PER_SECOND] == pytest.approx(500.0)
    assert second["rates"][k.SENDS_OK] == pytest.approx(400.0)
    assert second["rates"][k.SENDS_FAILED] == 0.0


def test_a_counter_reset_is_not_a_negative_rate() -> None:
    tracker = RateTracker()
    tracker.update({"count": 500.0}, 10.0)
    assert tracker.update({"count": 40.0}, 11.0) == {"count": 40.0}


def test_declared_keys_receive_the_mapped_samples() -> None:
    clock = clock_at_t0()
    feed = FeedSource(
        received=7,
        sent_ok=5,
        sent_failed=1,
        last_tick_at=T0 - 2.5,
        drops={"conflated": 3, "drop_oldest": 2},
        latency={"0.5": 0.004, "0.9": 0.007, "0.99": 0.012, "1.0": 0.030},
        depth=42,
    )
    shards = [
        ShardSource("0", reconnects={"liveness_timeout": 2}, skipped=1),
        ShardSource("1", "backoff", {"refused": 4, "liveness_timeout": 1}),
    ]
    snap = make(feed, *shards, clock=clock).collect()

    assert snap[k.COUNT] == 7
    assert snap["sends"] == {"ok": 5, "failed": 1}
    # Percentiles pass straight through; "1.0" is the max.
    assert snap["send_latency"] == {"p50": 0.004, "p90": 0.007, "p99": 0.012, "max": 0.030}
    assert snap[k.LAST_ACTIVITY] == "2025-11-24T15:59:57.500+00:00"
    assert snap[k.LAST_TICK_AGE] == pytest.approx(2.5)
    assert snap[k.DROPS] == {"conflated": 3, "drop_oldest": 2}
    # Summed over shards, split by reason.
    assert snap[k.RECONNECTS] == {"liveness_timeout": 3, "refused": 4}
    assert snap[k.MALFORMED] == {"unknown_length": 1}
    assert snap[k.BUFFER_DEPTH] == 42
    assert snap[k.CONNECTIONS]["0"]["state"] == "connected"
    assert snap[k.CONNECTIONS]["1"]["state"] == "backoff"
    assert snap[k.CONNECTIONS]["1"][k.RECONNECTS_SAMPLE] == 5
    # Nothing fed the spool keys: they are unknown, not zero.
    assert snap["spool"] == {"bytes": None, "messages": None}
    assert snap["updated_at"] == "2025-11-24T16:00:00.000+00:00"


def test_latency_percentiles_take_the_worst_source_not_the_sum() -> None:
    a = FeedSource(latency={"0.99": 0.010})
    b = FeedSource(latency={"0.99": 0.025})
    assert make(a, b).collect()["send_latency"] == {"p99": 0.025}


def test_last_activity_is_inferred_from_the_count_when_no_source_stamps_it() -> None:
    clock = clock_at_t0()
    feed = FeedSource(received=10)
    collector = make(feed, clock=clock)
    assert collector.collect()[k.LAST_ACTIVITY] is None
    clock.advance(1.0)
    feed.received += 1
    moved_at = clock.time()
    assert collector.collect()[k.LAST_TICK_AGE] == 0.0
    clock.advance(3.0)
    snap = collector.collect()
    assert snap[k.LAST_TICK_AGE] == pytest.approx(3.0)
    assert snap["updated_at_epoch"] - moved_at == pytest.approx(3.0)


def test_a_failing_source_is_counted_and_the_others_still_report() -> None:
    collector = make(BrokenSource(), FeedSource(received=3))
    snap = collector.collect()
    assert snap[k.COUNT] == 3
    assert collector.source_errors == {"BrokenSource": 1}
    names = {s["name"] for s in snap["samples"]}
    assert "metrics_source_errors_total" in names


def test_custom_rules_map_other_sample_names() -> None:
    @dataclass
    class Legacy:
        def samples(self) -> Iterable[Sample]:
            yield Sample("feed_ticks_total", "counter", 11)

    rules = (*k.DEFAULT_RULES, k.KeyRule(k.COUNT, "feed_ticks_total"))
    settings = Settings(_env_file=None)  # type: ignore[call-arg]
    collector = PipelineMetricsCollector(settings, [Legacy()], clock=clock_at_t0(), rules=rules)
    assert collector.collect()[k.COUNT] == 11


def test_registered_sources_are_pulled() -> None:
    collector = make()
    assert collector.collect()[k.COUNT] is None
    collector.register(FeedSource(received=9))
    assert collector.collect()[k.COUNT] == 9


def test_key_layout_uses_the_pipeline_prefix_and_namespace() -> None:
    keys = k.MetricsKeys("market")
    assert keys.key(k.COUNT) == "pipeline:market_ticks:market:count"
    assert keys.key(k.SENDS_FAILED) == "pipeline:market_ticks:market:sends:failed"
    assert keys.key(k.LATENCY_P99) == "pipeline:market_ticks:market:send_latency:p99"
    assert len(set(keys.all_keys())) == len(k.ALL_SUFFIXES)
    assert all(key.startswith("pipeline:market_ticks:market:") for key in keys.all_keys())


# ---------------------------------------------------------------- Prometheus


def _families(body: bytes) -> dict[str, object]:
    return {family.name: family for family in text_string_to_metric_families(body.decode())}


def test_prometheus_exposition_round_trips_through_the_parser() -> None:
    feed = FeedSource(received=1234, sent_failed=2, drops={"conflated": 5}, latency={"0.99": 0.012})
    collector = make(feed, ShardSource("0", reconnects={"refused": 1}))
    body, content_type = render_latest(build_registry(collector.gather))
    assert content_type.startswith("text/plain")

    samples = {
        (s.name, tuple(sorted(s.labels.items()))): s.value
        for family in text_string_to_metric_families(body.decode())
        for s in family.samples
    }
    families = {f.name: f.type for f in text_string_to_metric_families(body.decode())}
    assert families["alphapanda_ticks_received"] == "counter"
    assert families["alphapanda_buffer_depth"] == "gauge"
    assert samples[("alphapanda_ticks_received_total", ())] == 1234
    assert samples[("alphapanda_ticks_dropped_total", (("reason", "conflated"),))] == 5
    assert samples[("alphapanda_send_latency_seconds", (("quantile", "0.99"),))] == 0.012
    assert samples[("alphapanda_reconnects_total", (("reason", "refused"), ("shard", "0")))] == 1
    # The collector's own health is exported too.
    assert samples[("alphapanda_metrics_flush_failures_total", (("reason", "timeout"),))] == 0
    # A counter is never exported as <name>_total_total.
    assert b"_total_total" not in body


def test_prometheus_sums_duplicates_and_pulls_fresh_values_per_scrape() -> None:
    a, b = FeedSource(received=10), FeedSource(received=5)
    registry = build_registry(make(a, b).gather)
    first = render_latest(registry)[0]
    assert b"alphapanda_ticks_received_total 15.0" in first
    a.received = 20
    assert b"alphapanda_ticks_received_total 25.0" in render_latest(registry)[0]


def test_prometheus_skips_invalid_and_conflicting_names() -> None:
    bad = [
        Sample("ticks received", "counter", 1),
        Sample("depth", "gauge", 1),
        Sample("depth", "counter", 2),
        Sample("ok_metric", "gauge", 3, (("__reserved", "x"),)),
    ]
    body, _ = render_samples(bad)
    parsed = _families(body)
    assert set(parsed) == {"alphapanda_depth"}


def test_counters_without_total_suffix_gain_it() -> None:
    body, _ = render_samples([Sample("frames", "counter", 4)])
    assert b"alphapanda_frames_total 4.0" in body


def test_mixed_label_sets_in_one_family_are_exported() -> None:
    body, _ = render_samples(
        [
            Sample("frames_total", "counter", 1, (("shard", "0"),)),
            Sample("frames_total", "counter", 2, (("shard", "1"), ("kind", "binary"))),
        ]
    )
    # An absent label is exposed as label="" (the same thing to Prometheus).
    values = {
        tuple(sorted((n, v) for n, v in s.labels.items() if v)): s.value
        for family in text_string_to_metric_families(body.decode())
        for s in family.samples
        if s.name == "alphapanda_frames_total"
    }
    assert values == {(("shard", "0"),): 1, (("kind", "binary"), ("shard", "1")): 2}


async def test_asgi_app_serves_the_exposition() -> None:
    app = asgi_app(build_registry(make(FeedSource(received=3)).gather))
    sent: list[dict[str, object]] = []

    async def receive() -> dict[str, object]:
        return {"type": "http.request", "body": b"", "more_body": False}

    async def send(message: dict[str, object]) -> None:
        sent.append(message)

    scope = {
        "type": "http",
        "method": "GET",
        "path": "/metrics",
        "query_string": b"",
        "headers": [],
    }
    await app(scope, receive, send)
    assert sent[0]["status"] == 200
    body = b"".join(m.get("body", b"") for m in sent[1:])  # type: ignore[misc]
    assert b"alphapanda_ticks_received_total 3.0" in body


# ---------------------------------------------------------------- reader (pure parts)


def _snapshot(**changes: object) -> dict[str, object]:
    clock = clock_at_t0()
    feed = FeedSource(received=100, sent_ok=90, last_tick_at=T0 - 1)
    collector = make(feed, clock=clock)
    collector.collect()
    clock.advance(1.0)
    feed.received += 50
    feed.sent_ok += 50
    feed.last_tick_at = clock.time() - 0.5
    for name, value in changes.items():
        setattr(feed, name, value)
    return collector.collect()


def test_health_is_ok_for_a_fresh_flowing_snapshot() -> None:
    snap = _snapshot()
    health = health_of(snap, "market", now=snap["updated_at_epoch"] + 0.2)  # type: ignore[operator]
    assert health.status == "ok", health.reasons
    assert health.ticks_per_second == pytest.approx(50.0)
    assert health.last_tick_age_seconds == pytest.approx(0.7)
    assert health.ticks_total == 150


def test_health_flags_failures_staleness_idleness_and_absence() -> None:
    failing = _snapshot(sent_failed=3)
    at = failing["updated_at_epoch"]
    assert health_of(failing, "m", now=at).status == "degraded"  # type: ignore[arg-type]
    fresh = _snapshot()
    assert health_of(fresh, "m", now=at + 60).status == "stale"  # type: ignore[operator]
    assert health_of(fresh, "m", now=at + 1, idle_after=0.1).status == "idle"  # type: ignore[operator]
    assert health_of(None, "m", now=at).status == "no_data"  # type: ignore[arg-type]


def test_snapshot_samples_render_as_prometheus_and_status_rows() -> None:
    snap = _snapshot(drops={"conflated": 2})
    body, _ = render_samples(samples_of(snap))
    assert b'alphapanda_ticks_dropped_total{reason="conflated"} 2.0' in body
    rows = dict(status_rows(snap))
    assert rows["ticks received"] == "150"
    assert rows["drops"] == "conflated=2"
    assert status_rows(None)[0][0] == "metrics"
