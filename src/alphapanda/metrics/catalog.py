"""Every metric of alphapanda, declared once: name, kind, label names and help text.

Components emit their figures only through these entries
(``catalog.TICKS_DROPPED.sample(count, (("reason", reason),))``), never through a name
spelled where it is used, so a metric cannot be renamed by accident in one place and
not in another, and nothing is reported that this page does not describe. The names
are what operators see: the Prometheus names (with the ``alphapanda_`` prefix), the
raw samples of the Redis snapshot, alert rules in ``deploy/`` and dashboards. Never
rename one; add a new entry instead.

Which entries feed which Redis key is the table ``alphapanda.metrics.redis_layout.DEFAULT_RULES``
(it refers to these entries, never to a name of its own). ``tests/unit/
test_metrics_catalog.py`` fails on an entry nothing emits and on a sample emitted
outside this catalog.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass
from types import MappingProxyType

from alphapanda.metrics.samples import Sample, SampleKind

Labels = tuple[tuple[str, str], ...]


@dataclass(frozen=True, slots=True)
class Metric:
    """One metric: ``name`` without the ``alphapanda_`` prefix (counters end in
    ``_total``), its kind, the names of its labels and its help text."""

    name: str
    kind: SampleKind
    help: str
    labels: tuple[str, ...] = ()

    def sample(self, value: float, labels: Labels = ()) -> Sample:
        """This metric's figure now. ``labels`` are ``(name, value)`` pairs of the
        declared label names; not checked here (this runs on every pull), the catalog
        test checks them on real components."""
        return Sample(self.name, self.kind, value, labels, self.help)


_declared: dict[str, Metric] = {}


def _declare(metric: Metric) -> Metric:
    if metric.name in _declared:
        raise ValueError(f"metric {metric.name!r} declared twice")
    _declared[metric.name] = metric
    return metric


def counter(name: str, help: str, *labels: str) -> Metric:
    return _declare(Metric(name, "counter", help, labels))


def gauge(name: str, help: str, *labels: str) -> Metric:
    return _declare(Metric(name, "gauge", help, labels))


# Kite connections (``TickerClient``).

KITE_RECONNECT_ATTEMPTS = counter(
    "kite_reconnect_attempts_total",
    "Connection attempts and socket endings, by outcome or cause",
    "reason",
)
KITE_FRAMES = counter("kite_frames_total", "Binary frames received")
KITE_HEARTBEATS = counter("kite_heartbeats_total", "Heartbeats")
KITE_TICKS_RECEIVED = counter("kite_ticks_received_total", "Ticks decoded")
KITE_SKIPPED_PACKETS = counter(
    "kite_skipped_packets_total", "Malformed packets skipped by the decoder, by reason", "reason"
)
KITE_TEXT_MESSAGES = counter(
    "kite_text_messages_total",
    "Text messages from the server, by type ('invalid': unparseable)",
    "type",
)
KITE_FRAME_LISTENER_ERRORS = counter(
    "kite_frame_listener_errors_total", "Frame listener (recorder) failures"
)
KITE_CONNECTIONS = gauge("kite_connections", "Connections by state", "state")
KITE_SUBSCRIBED_INSTRUMENTS = gauge("kite_subscribed_instruments", "Instruments in the desired set")
KITE_STREAMING = gauge("kite_streaming", "Feed receiving")

# One row per connection (``ConnectionFigures``): the Redis ``connections`` hash and ``/status``.

CONNECTION_STATE = gauge(
    "connection_state", "1 for the connection's current state", "shard", "state"
)
CONNECTION_SINCE_TIMESTAMP_SECONDS = gauge(
    "connection_since_timestamp_seconds", "When the connection entered its current state", "shard"
)
CONNECTION_INSTRUMENTS = gauge("connection_instruments", "Instruments", "shard")
CONNECTION_TICKS_RECEIVED = counter(
    "connection_ticks_received_total", "Ticks received on this connection", "shard"
)
CONNECTION_RECONNECTS = counter(
    "connection_reconnects_total", "Reconnects of this connection", "shard"
)
CONNECTION_LAST_FRAME_AGE_SECONDS = gauge(
    "connection_last_frame_age_seconds", "Seconds since the last frame", "shard"
)
CONNECTION_SUBSCRIPTIONS = gauge("connection_subscriptions", "Instruments by mode", "mode")

# The tick buffer (label ``policy``: ``block``, ``drop_oldest``, ...).

BUFFER_DEPTH = gauge("buffer_depth", "Ticks in the TickBuffer.", "policy")
BUFFER_CAPACITY = gauge("buffer_capacity", "TickBuffer capacity.", "policy")
BUFFER_HIGH_WATER = gauge("buffer_high_water", "Highest TickBuffer depth.", "policy")
BUFFER_BLOCKED_PUTS = counter(
    "buffer_blocked_puts_total",
    "Times a reader waited for room (block policy backpressure).",
    "policy",
)

# The formatter (frames to ``MarketTick``).

TICKS_FORMATTED = counter("ticks_formatted_total", "Ticks turned into MarketTick")
TICKS_MALFORMED_DROPPED = counter(
    "ticks_malformed_dropped_total", "Ticks rejected as unusable by the formatter"
)
TICKS_MALFORMED = counter("ticks_malformed_total", "Malformed tick fields by reason", "reason")

# The hot path (Python or the native extension).

HOT_PATH = gauge(
    "hot_path",
    "The implementation turning frames into records (native: the Rust extension).",
    "impl",
)

# The books of the tick path: received = published + dropped + spooled + in flight.

TICKS_RECEIVED = counter("ticks_received_total", "Ticks from Kite accepted by the TickBuffer.")
TICKS_RECOVERED = counter(
    "ticks_recovered_total", "Spool records of a previous run found at start-up (replayed first)."
)
TICKS_WAL_RECOVERED = counter(
    "ticks_wal_recovered_total",
    "Ticks decoded again from the write-ahead log after a crash (published first).",
)
TICKS_PUBLISHED = counter("ticks_published_total", "Ticks acked by the broker.")
TICKS_DROPPED = counter("ticks_dropped_total", "Ticks deliberately dropped, by reason.", "reason")
TICKS_SPOOLED = gauge("ticks_spooled", "Ticks waiting in the disk spool.")
TICKS_IN_FLIGHT = gauge(
    "ticks_in_flight", "Ticks between the buffer and the broker's ack.", "stage"
)
SPOOL_WRITTEN = counter("spool_written_total", "Records written to spool.")
SPOOL_REPLAYED = counter("spool_replayed_total", "Spool records sent for replay.")
TICKS_UNACCOUNTED = gauge(
    "ticks_unaccounted",
    "received - (published + dropped + spooled + in_flight); nonzero means a bug.",
)

# The Kafka producer.

KAFKA_SENT = counter("kafka_sent_total", "Messages handed to librdkafka.")
SENDS_OK = counter("sends_ok_total", "Messages acked by the broker.")
SENDS_FAILED = counter("sends_failed_total", "Delivery reports with an error.", "error")
KAFKA_CLIENT_ERRORS = counter(
    "kafka_client_errors_total", "librdkafka client errors (connection, auth, fatal).", "error"
)
KAFKA_PENDING = gauge("kafka_pending", "Messages awaiting a delivery report.")
KAFKA_QUEUE_FULL_WAITS = counter(
    "kafka_queue_full_waits_total", "Times produce() waited for room in librdkafka's queue."
)
SEND_LATENCY_SECONDS = gauge(
    "send_latency_seconds", "Frame receipt to broker ack, over the most recent acks.", "quantile"
)

# The publisher (broker or spool).

PUBLISHER_SPOOLING = gauge("publisher_spooling", "1 while new ticks go to spool.")
PUBLISHER_SPILL_EVENTS = counter(
    "publisher_spill_events_total", "Times the publisher switched to the disk spool."
)
PUBLISHER_SPOOL_FULL_WAITS = counter(
    "publisher_spool_full_waits_total",
    "Times the spool could not take ticks (full, low disk, write error).",
)
PUBLISHER_ALREADY_PUBLISHED = counter(
    "publisher_already_published_total",
    "Ticks whose delivery failed but which the topic turned out to hold: not sent again (the broker wrote them before the failure).",
)
PUBLISHER_STALLS = counter(
    "publisher_stalls_total",
    "Times no delivery report came for message_timeout_ms while messages were outstanding (the broker was treated as away).",
)
PUBLISHER_SPOOL_UNAVAILABLE = gauge(
    "publisher_spool_unavailable", "1 while the disk spool cannot take ticks."
)

# The disk spool.

SPOOL_MESSAGES = gauge("spool_messages", "Records in the disk spool.")
SPOOL_BYTES = gauge("spool_bytes", "Bytes in the disk spool.")
SPOOL_REFUSED = counter(
    "spool_refused_total", "Appends refused: spool_max_bytes or spool_min_free_bytes reached."
)
SPOOL_WRITE_ERRORS = counter(
    "spool_write_errors_total",
    "Spool writes, fsyncs or cursor updates that failed (disk full, I/O error).",
)
SPOOL_CORRUPT_TAILS = counter(
    "spool_corrupt_tails_total",
    "Damaged byte ranges skipped in spool segments (logged with segment and offset).",
)
SPOOL_CORRUPT_BYTES = counter(
    "spool_corrupt_bytes_total", "Bytes of spool segments skipped because they did not check out."
)

# The write-ahead log of raw frames.

WAL_PAUSED = gauge("wal_paused", "1 while the WAL cannot write: crash protection is off.")
WAL_BYTES = gauge("wal_bytes", "Bytes in WAL segments.")
WAL_SEGMENTS = gauge("wal_segments", "WAL segment files.")
WAL_FRAMES = counter("wal_frames_total", "Frames appended to the WAL.")
WAL_UNLOGGED_FRAMES = counter(
    "wal_unlogged_frames_total", "Frames not logged because the WAL was paused."
)
WAL_FSYNCS = counter("wal_fsyncs_total", "WAL group commits (fsyncs).")
WAL_PAUSES = counter("wal_pauses_total", "Times the WAL paused.")
WAL_SEGMENTS_DELETED = counter("wal_segments_deleted_total", "WAL segments deleted once resolved.")

# Recovery from the write-ahead log.

WAL_RECOVERY_DONE = gauge(
    "wal_recovery_done",
    "1 once start-up recovery from the WAL is done (frames are decoded as they come).",
)
WAL_RECOVERED = counter("wal_recovered_total", "Ticks of the WAL published again after a crash.")
WAL_ALREADY_PUBLISHED = counter(
    "wal_already_published_total", "Ticks of the WAL the topic already held at recovery."
)
WAL_CORRUPT = counter("wal_corrupt_total", "WAL records lost to corruption at recovery.")
WAL_HELD_FRAMES = gauge(
    "wal_held_frames", "Frames logged and held while recovery waits for the broker."
)

# The feed service.

LAST_TICK_TIMESTAMP_SECONDS = gauge(
    "last_tick_timestamp_seconds",
    "Unix time of the last tick received (0: none yet); exact to one pull.",
)
FEED_READY = gauge("feed_ready", "1 when ready.")
FEED_TOPIC_READY = gauge("feed_topic_ready", "Topic exists.")

# Access tokens (``AuthService``).

AUTH_TOKEN_VALID = gauge("auth_token_valid", "1 while a usable access token is known", "source")
AUTH_TOKEN_SECONDS_LEFT = gauge(
    "auth_token_seconds_left", "Seconds until the access token's 06:00 IST expiry"
)
AUTH_TOKEN_LOOKUPS = counter(
    "auth_token_lookups_total", "Access-token lookups in PostgreSQL (cache misses)"
)
AUTH_DB_ERRORS = counter(
    "auth_db_errors_total", "Token lookups and start-ups that found PostgreSQL unreachable"
)
AUTH_LOGINS = counter("auth_logins_total", "Kite logins that produced an access token")
AUTH_LOGIN_FAILURES = counter("auth_login_failures_total", "Kite logins that failed")

# The instrument registry.

REGISTRY_SOURCE = gauge(
    "registry_source", "Where the streaming set came from (database, csv, none)", "source"
)
REGISTRY_OVER_CAPACITY = counter(
    "registry_over_capacity_total", "Streaming sets cut to the API key's capacity"
)
REGISTRY_DB_ERRORS = counter(
    "registry_db_errors_total", "Registry operations that found PostgreSQL unreachable"
)
REGISTRY_CHANGES = counter("registry_changes_total", "Streaming-set changes delivered to the feed")
REGISTRY_WATCH_RECONNECTS = counter(
    "registry_watch_reconnects_total", "Registry listener reconnects"
)
REGISTRY_WATCH_CONNECTED = gauge(
    "registry_watch_connected", "1 while the registry listener is connected"
)

# Registry changes applied to the running feed (``RegistryFollower``).

REGISTRY_CHANGES_APPLIED = counter(
    "registry_changes_applied_total",
    "Streaming-set changes applied to the running feed as subscription deltas",
)
REGISTRY_CHANGES_REFUSED = counter(
    "registry_changes_refused_total",
    "Streaming-set changes the ticker client refused (current set kept)",
)

# Derived streams (candles, quotes, order updates, feed events).

DERIVED_TICKS_OFFERED = counter("derived_ticks_offered_total", "Ticks offered.")
DERIVED_TICKS_DROPPED = counter(
    "derived_ticks_dropped_total",
    "Ticks the derived streams dropped because they were behind (tick path unaffected).",
)
DERIVED_QUEUE_TICKS = gauge("derived_queue_ticks", "Ticks waiting.")
DERIVED_DEFERRALS = counter(
    "derived_deferrals_total",
    "Times candles and quotes waited for the tick path to hand over a frame (each wait "
    "is bounded).",
)
ORDERS_RECEIVED = counter("orders_received_total", "Kite order updates.")
ORDERS_LOST = counter("orders_lost_total", "Order updates not published.")
ORDERS_DUPLICATE = counter(
    "orders_duplicate_total", "Identical order updates received on another socket (published once)."
)
FEED_EVENTS = counter("feed_events_total", "Feed events emitted.", "kind")

# Derived streams: their Kafka sink (label ``stream``).

DERIVED_SENT = counter("derived_sent_total", "Records produced.", "stream")
DERIVED_DELIVERED = counter("derived_delivered_total", "Records acked.", "stream")
DERIVED_FAILED = counter("derived_failed_total", "Deliveries failed.", "stream")
DERIVED_DROPPED = counter(
    "derived_dropped_total", "Records dropped before sending (producer queue full).", "stream"
)

# Derived streams: candles (label ``interval``).

CANDLES_TICKS = counter(
    "candles_ticks_total",
    "Ticks aggregated into candles, by the clock that timed them.",
    "interval",
    "time_source",
)
CANDLES_LATE_TICKS = counter(
    "candles_late_ticks_total",
    "Ticks for a bar already closed (not applied; bars never re-open).",
    "interval",
)
CANDLES_CLOSED = counter("candles_closed_total", "Bars closed.", "interval")
CANDLES_INCOMPLETE = counter(
    "candles_incomplete_total",
    "Bars closed without a known volume before them (start, gap, new day).",
    "interval",
)

# Derived streams: latest quotes.

QUOTES_INSTRUMENTS = gauge("quotes_instruments", "Instruments with a quote.")
QUOTES_CONFLATED = counter(
    "quotes_conflated_total",
    "Ticks replaced by a newer one before the latest-quotes write (by design).",
)

# The metrics collector itself.

METRICS_FLUSHES = counter("metrics_flushes_total", "Metrics flush attempts.")
METRICS_FLUSH_FAILURES = counter(
    "metrics_flush_failures_total", "Metrics flushes to Redis that failed or timed out.", "reason"
)
METRICS_SOURCE_ERRORS = counter(
    "metrics_source_errors_total", "Exceptions raised by a metrics source's samples().", "source"
)

# The API rate limiter (label ``route_class``).

API_REQUESTS_ALLOWED = counter(
    "api_requests_allowed_total", "API requests admitted by the rate limiter", "route_class"
)
API_REQUESTS_RATE_LIMITED = counter(
    "api_requests_rate_limited_total", "API requests refused with 429", "route_class"
)
RATE_LIMIT_STORAGE_ERRORS = counter(
    "rate_limit_storage_errors_total", "rate-limit checks that could not reach Redis", "route_class"
)

# The control API's own process, as the feed supervises it.

API_PROCESS_UP = gauge("api_process_up", "1 while the control API process serves requests.")
API_PROCESS_RESTARTS = counter(
    "api_process_restarts_total", "Times the control API process died and was restarted."
)
API_CONTROL_CALLS = counter(
    "api_control_calls_total", "Control calls the feed answered for the API process.", "call"
)

# Recording raw frames to a file.

RECORDER_FRAMES = counter("recorder_frames_total", "Frames recorded")
RECORDER_BYTES = counter("recorder_bytes_total", "Bytes written to file")
RECORDER_DROPPED_FRAMES = counter(
    "recorder_dropped_frames_total", "Frames left out of the recording because the disk fell behind"
)

# Replaying a recording.

REPLAY_FRAMES = counter("replay_frames_total", "Frames replayed")
REPLAY_TICKS = counter("replay_ticks_total", "Ticks replayed")

# Hot standby (``HaController`` and its ``StandbyGate``; only in a group).

HA_INFO = gauge(
    "ha_info",
    "This feed's hot-standby group and role.",
    "group",
    "instance",
    "role",
    "standby_mode",
)
HA_ACTIVE = gauge("ha_active", "1 while this instance is the group's active.")
HA_EPOCH = gauge("ha_epoch", "Leadership epoch held.")
HA_ACTIVE_SINCE_TIMESTAMP = gauge("ha_active_since_timestamp", "Unix time it became active.")
HA_STANDBY_READY = gauge("ha_standby_ready", "1 while a standby is able to take over.")
HA_LAST_RECEIVED_TIMESTAMP = gauge(
    "ha_last_received_timestamp", "Unix time of the newest tick this instance received."
)
HA_TAKEOVER_SECONDS = gauge(
    "ha_takeover_seconds", "Lease taken -> publishing, at this instance's takeover."
)
HA_COMMITS = counter("ha_commits_total", "Transactions committed.")
HA_COMMIT_P50_SECONDS = gauge("ha_commit_p50_seconds", "Transaction commit time, p50.")
HA_COMMIT_P99_SECONDS = gauge("ha_commit_p99_seconds", "Transaction commit time, p99.")
HA_STANDBY_HELD = gauge("ha_standby_held", "Ticks a standby holds.")
HA_STANDBY_RECEIVED = counter(
    "ha_standby_received_total",
    "Ticks received while standby (held, never published by this instance).",
)
HA_TAKEOVER_SKIPPED_LIVE = counter(
    "ha_takeover_skipped_live_total",
    "Live ticks after a takeover that the old active had already published.",
)
HA_STANDBY_EXPIRED = counter(
    "ha_standby_expired_total", "Held ticks that left the standby's window while it was standby."
)
DERIVED_EVENTS_SUPPRESSED = counter(
    "derived_events_suppressed_total",
    "Feed events a standby did not publish (the group's active publishes its own).",
)

# Every entry above by name (the API fills in help texts from it, tests check against it).
BY_NAME: Mapping[str, Metric] = MappingProxyType(_declared)
