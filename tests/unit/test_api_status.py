"""Building the ``/status`` document: connection rows from live statuses and Redis shard
objects, the WAL and access-token views, live figures from samples, and the
per-connection samples the feed ships to Redis. (``RateMeter`` and the snapshot path's
main figures are covered in ``test_api_security``.)"""

from __future__ import annotations

from datetime import UTC, datetime
from typing import Any

import pytest

from alphapanda.api.status import (
    ConnectionFigures,
    RateMeter,
    by_mode,
    connection_view,
    status_from_samples,
    status_from_snapshot,
)
from alphapanda.kite.state import ConnectionStatus
from alphapanda.metrics import catalog
from alphapanda.metrics.samples import Sample

pytestmark = pytest.mark.unit

NOW = 1_764_000_000.0
SINCE = datetime(2025, 11, 24, 15, 59, tzinfo=UTC)


def _live(samples: list[Sample], **overrides: Any) -> Any:
    arguments: dict[str, Any] = {
        "connections": [],
        "subscriptions": {},
        "ready": True,
        "buffer_capacity": 100,
        "buffer_policy": "block",
        "ticks_per_second": None,
        "updated_at": "now",
        "now_epoch": NOW,
        **overrides,
    }
    return status_from_samples(samples, **arguments)


# --- by_mode and connection rows ---------------------------------------------------


def test_by_mode_counts_instruments_per_mode_in_name_order() -> None:
    counts = by_mode({1: "quote", 2: "full", 3: "quote", 4: "ltp"})
    assert counts == {"full": 1, "ltp": 1, "quote": 2}
    assert list(counts) == ["full", "ltp", "quote"]
    assert by_mode({}) == {}


def test_a_live_connection_dict_becomes_a_row() -> None:
    row = connection_view(
        {
            "shard": 3,
            "state": "connected",
            "since": "2025-11-24T15:59:00+00:00",
            "reconnect_count": 2,
            "last_disconnect_reason": "closed_by_server",
            "instruments": 50,
            "frames_received": 9,
            "ticks_received": 1000,
            "last_frame_age": 0.5,
        }
    )
    assert row.model_dump() == {
        "shard": "3",
        "state": "connected",
        "since": "2025-11-24T15:59:00+00:00",
        "reconnect_count": 2,
        "last_disconnect_reason": "closed_by_server",
        "instruments": 50,
        "ticks_received": 1000,
        "last_frame_age_seconds": 0.5,
    }


def test_a_redis_shard_object_becomes_the_same_row() -> None:
    row = connection_view(
        {
            "state": "connected",
            catalog.CONNECTION_SINCE_TIMESTAMP_SECONDS.name: SINCE.timestamp(),
            catalog.CONNECTION_RECONNECTS.name: 2.0,
            catalog.CONNECTION_INSTRUMENTS.name: 50.0,
            catalog.CONNECTION_TICKS_RECEIVED.name: 1000.0,
            catalog.CONNECTION_LAST_FRAME_AGE_SECONDS.name: "0.5",
        },
        shard="3",
    )
    assert row.shard == "3" and row.state == "connected"
    assert row.since == SINCE.isoformat()
    assert (row.reconnect_count, row.instruments, row.ticks_received) == (2, 50, 1000)
    assert row.last_frame_age_seconds == 0.5


def test_a_row_with_missing_or_garbled_figures_shows_them_as_unknown() -> None:
    row = connection_view({"reconnect_count": "lots", "instruments": "", "last_frame_age": None})
    assert (row.shard, row.state) == ("?", "unknown")
    assert row.reconnect_count is None and row.instruments is None
    assert row.last_frame_age_seconds is None and row.since is None


# --- live status ---------------------------------------------------------------------


def test_live_status_with_no_samples_is_available_with_unknown_figures() -> None:
    view = _live([], ready=False)
    assert view.source == "feed" and view.available and view.ready is False
    assert view.ticks_received is None and view.sends_ok is None
    # With no send counter at all, failures are unknown rather than zero.
    assert view.sends_failed is None
    assert view.last_tick_age_seconds is None
    assert view.buffer.model_dump() == {"depth": None, "capacity": 100, "policy": "block"}


def test_live_status_sums_failures_over_error_kinds() -> None:
    view = _live(
        [
            catalog.SENDS_OK.sample(10),
            catalog.SENDS_FAILED.sample(2, (("error", "timeout"),)),
            catalog.SENDS_FAILED.sample(3, (("error", "fatal"),)),
        ]
    )
    assert (view.sends_ok, view.sends_failed) == (10, 5)


def test_live_status_reports_latency_quantiles() -> None:
    samples = [
        catalog.SEND_LATENCY_SECONDS.sample(value, (("quantile", q),))
        for q, value in (("0.5", 0.001), ("0.9", 0.002), ("0.99", 0.005), ("1", 0.02))
    ]
    latency = _live(samples).send_latency_seconds
    assert (latency.p50, latency.p90, latency.p99, latency.max) == (0.001, 0.002, 0.005, 0.02)


def test_the_last_tick_age_is_from_the_newest_tick_and_never_negative() -> None:
    samples = [
        catalog.LAST_TICK_TIMESTAMP_SECONDS.sample(NOW - 9.0),
        catalog.LAST_TICK_TIMESTAMP_SECONDS.sample(NOW - 3.0),
        catalog.LAST_TICK_TIMESTAMP_SECONDS.sample(0.0),  # a source that saw no tick yet
    ]
    assert _live(samples).last_tick_age_seconds == pytest.approx(3.0)
    ahead = [catalog.LAST_TICK_TIMESTAMP_SECONDS.sample(NOW + 1.0)]  # clock skew
    assert _live(ahead).last_tick_age_seconds == 0.0


def test_reconnects_and_malformed_are_counted_by_reason_without_zero_rows() -> None:
    view = _live(
        [
            catalog.KITE_RECONNECT_ATTEMPTS.sample(2, (("reason", "closed_by_server"),)),
            catalog.KITE_RECONNECT_ATTEMPTS.sample(0, (("reason", "timeout"),)),
            catalog.TICKS_MALFORMED.sample(4, (("reason", "bad_price"),)),
        ]
    )
    assert view.reconnects == {"closed_by_server": 2}
    assert view.malformed == {"bad_price": 4}


def test_the_wal_is_unreported_without_its_samples() -> None:
    wal = _live([]).wal
    assert wal.enabled is None and wal.crash_protection is None


def test_a_writing_wal_reports_crash_protection_on_with_its_figures() -> None:
    wal = _live(
        [
            catalog.WAL_PAUSED.sample(0),
            catalog.WAL_BYTES.sample(4096),
            catalog.WAL_SEGMENTS.sample(2),
            catalog.WAL_RECOVERED.sample(7),
        ]
    ).wal
    assert (wal.enabled, wal.paused, wal.crash_protection) == (True, False, "on")
    assert (wal.bytes, wal.segments, wal.recovered, wal.corrupt) == (4096, 2, 7, None)


def test_a_paused_wal_says_crash_protection_is_off() -> None:
    wal = _live([catalog.WAL_PAUSED.sample(1)]).wal
    assert wal.paused is True
    assert wal.crash_protection is not None and wal.crash_protection.startswith("OFF:")


def test_the_access_token_view_comes_from_the_auth_samples() -> None:
    auth = _live(
        [
            catalog.AUTH_TOKEN_VALID.sample(1, (("source", "database"),)),
            catalog.AUTH_TOKEN_SECONDS_LEFT.sample(3600),
        ]
    ).auth
    assert (auth.token_valid, auth.source, auth.seconds_left) == (True, "database", 3600)
    assert _live([]).auth.model_dump() == {
        "token_valid": None,
        "source": None,
        "seconds_left": None,
    }


# --- status from the Redis snapshot --------------------------------------------------


def test_snapshot_status_orders_shards_and_skips_malformed_ones() -> None:
    snapshot = {
        "count": 1,
        "connections": {"1": {"state": "backoff"}, "0": {"state": "connected"}, "2": "junk"},
    }
    view = status_from_snapshot(snapshot, 10, "block")
    assert [(c.shard, c.state) for c in view.connections] == [("0", "connected"), ("1", "backoff")]


def test_snapshot_status_has_ready_only_when_the_feed_reported_it() -> None:
    assert status_from_snapshot({"count": 1}, 10, "block").ready is None
    not_ready = {"samples": [{"name": "feed_ready", "kind": "gauge", "value": 0, "labels": {}}]}
    assert status_from_snapshot(not_ready, 10, "block").ready is False


# --- the per-connection samples shipped to Redis -------------------------------------


def _status(shard: int, state: str, age: float | None) -> ConnectionStatus:
    return ConnectionStatus(shard, state, SINCE, 1, None, 50, 99, 1000, age)  # type: ignore[arg-type]


def test_connection_figures_report_one_row_per_shard_and_instruments_per_mode() -> None:
    figures = ConnectionFigures(
        lambda: [_status(0, "connected", 0.25), _status(1, "backoff", None)],
        lambda: {1: "quote", 2: "quote", 3: "full"},
    )
    got = {(s.name, s.labels): s.value for s in figures.samples()}
    assert got[(catalog.CONNECTION_STATE.name, (("shard", "0"), ("state", "connected")))] == 1
    assert got[(catalog.CONNECTION_STATE.name, (("shard", "1"), ("state", "backoff")))] == 1
    assert got[(catalog.CONNECTION_SINCE_TIMESTAMP_SECONDS.name, (("shard", "0"),))] == (
        SINCE.timestamp()
    )
    assert got[(catalog.CONNECTION_TICKS_RECEIVED.name, (("shard", "1"),))] == 1000
    assert got[(catalog.CONNECTION_LAST_FRAME_AGE_SECONDS.name, (("shard", "0"),))] == 0.25
    # No frame yet: no age sample rather than a made-up one.
    assert (catalog.CONNECTION_LAST_FRAME_AGE_SECONDS.name, (("shard", "1"),)) not in got
    assert got[(catalog.CONNECTION_SUBSCRIPTIONS.name, (("mode", "full"),))] == 1
    assert got[(catalog.CONNECTION_SUBSCRIPTIONS.name, (("mode", "quote"),))] == 2


def test_connection_figures_round_trip_into_status_rows() -> None:
    figures = ConnectionFigures(lambda: [_status(0, "connected", 0.25)], dict)
    shard_row = {
        name: value
        for name, labels, value in ((s.name, dict(s.labels), s.value) for s in figures.samples())
        if labels.get("shard") == "0" and name != catalog.CONNECTION_STATE.name
    }
    row = connection_view({**shard_row, "state": "connected"}, shard="0")
    assert row.since == SINCE.isoformat()
    assert (row.instruments, row.ticks_received, row.reconnect_count) == (50, 1000, 1)


# --- RateMeter edges -----------------------------------------------------------------


def test_rate_meter_needs_half_a_second_of_readings() -> None:
    meter = RateMeter(min_span_seconds=0.5)
    assert meter.observe(10.0, 0) is None
    assert meter.observe(10.4, 100) is None
    assert meter.observe(10.5, 100) == pytest.approx(200.0)


def test_rate_meter_forgets_readings_older_than_its_window() -> None:
    meter = RateMeter(window_seconds=2.0)
    meter.observe(0.0, 0)
    meter.observe(1.0, 1000)  # a burst long ago
    meter.observe(2.0, 1000)
    meter.observe(3.0, 1010)
    # Only the last two seconds (2.0 → 4.0) count: 20 ticks over 2 s.
    assert meter.observe(4.0, 1020) == pytest.approx(10.0)
