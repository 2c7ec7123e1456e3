"""What each setting means, for the README's configuration table.

Kept beside the settings rather than in them so that the settings module stays a plain
declaration; ``tests/unit/test_config_docs.py`` fails when a setting has no description
here, so the table cannot silently lose one. Allowed values are derived from the
settings' own types and bounds; only what a type cannot say is written here.
"""

from __future__ import annotations

from typing import Final

# Settings a real Zerodha account needs set (the defaults are the simulator's or the
# local dev stack's).
REAL_ACCOUNT: Final[frozenset[str]] = frozenset(
    {
        "ALPHAPANDA_KITE__ENV",
        "ALPHAPANDA_KITE__API_KEY",
        "ALPHAPANDA_KITE__API_SECRET",
        "ALPHAPANDA_KAFKA__BOOTSTRAP_SERVERS",
        "ALPHAPANDA_REDIS__URL",
        "ALPHAPANDA_DATABASE__URL",
        "ALPHAPANDA_API__API_KEY",
    }
)

# Allowed values a type or bound cannot express.
ALLOWED: Final[dict[str, str]] = {
    "ALPHAPANDA_KITE__WS_URL": "ws:// or wss:// URL",
    "ALPHAPANDA_KITE__API_ROOT": "http(s):// URL",
    "ALPHAPANDA_KITE__LOGIN_URL": "http(s):// URL",
    "ALPHAPANDA_KAFKA__BOOTSTRAP_SERVERS": "host:port[,host:port…]",
    "ALPHAPANDA_KAFKA__TOPIC_PREFIX": "letters, digits, `.`, `_`, `-`",
    "ALPHAPANDA_REDIS__URL": "redis://, rediss:// or unix:// URL",
    "ALPHAPANDA_DATABASE__URL": "postgresql+asyncpg:// URL",
    "ALPHAPANDA_DATABASE__SCHEMA_NAME": "lower-case SQL name",
    "ALPHAPANDA_API__RATE_LIMIT": "N/second\\|minute\\|hour",
    "ALPHAPANDA_API__RATE_LIMIT_MUTATING": "N/second\\|minute\\|hour",
    "ALPHAPANDA_API__TRUSTED_PROXIES": "addresses or CIDRs, comma-separated",
    "ALPHAPANDA_HOME": "a folder",
    "ALPHAPANDA_FEED__INSTRUMENTS_CSV": "a Kite instrument-dump CSV file",
    "ALPHAPANDA_FEED__SPOOL_DIR": "a folder on a local disk",
    "ALPHAPANDA_CANDLES__INTERVALS": "comma-separated of 1s, 5s, 15s, 1m, 3m, 5m, 15m, 30m, 1h",
    "ALPHAPANDA_CANDLES__SESSION_OPENS": 'JSON, e.g. `{"MCX": "09:00"}` (IST)',
}

DESCRIPTIONS: Final[dict[str, str]] = {
    # Top level (when present).
    "ALPHAPANDA_ENV": "`production` refuses every development default secret at start-up",
    "ALPHAPANDA_HOME": "base folder of relative paths (spool, CSV); e.g. `/var/lib/alphapanda`",
    # Kite
    "ALPHAPANDA_KITE__ENV": "`live`: Zerodha's real endpoints; `sim`: the simulator on loopback",
    "ALPHAPANDA_KITE__WS_URL": "ticker WebSocket; follows `KITE__ENV` unless set",
    "ALPHAPANDA_KITE__API_ROOT": "Kite REST root (login, instrument dump); follows `KITE__ENV` unless set",
    "ALPHAPANDA_KITE__LOGIN_URL": "where a person logs in each morning; follows `KITE__ENV` unless set",
    "ALPHAPANDA_KITE__API_KEY": "your Kite Connect app's API key",
    "ALPHAPANDA_KITE__ACCESS_TOKEN": "token used when none is stored (the dev value is the simulator's); a real account uses `auth login`",
    "ALPHAPANDA_KITE__API_SECRET": "your Kite Connect app's secret (for `auth login`)",
    "ALPHAPANDA_KITE__MAX_CONNECTIONS": "WebSocket connections per API key (Kite allows 3)",
    "ALPHAPANDA_KITE__MAX_INSTRUMENTS_PER_CONNECTION": "instruments per connection (Kite allows 3,000)",
    "ALPHAPANDA_KITE__SUBSCRIBE_CHUNK_SIZE": "tokens per subscribe message",
    "ALPHAPANDA_KITE__SUBSCRIBE_PACING_MS": "pause between subscribe messages",
    "ALPHAPANDA_KITE__LIVENESS_TIMEOUT": "seconds without a frame before a socket is replaced",
    "ALPHAPANDA_KITE__CONNECT_TIMEOUT": "seconds for a WebSocket handshake",
    "ALPHAPANDA_KITE__RECONNECT_BASE_DELAY": "first reconnect backoff, seconds",
    "ALPHAPANDA_KITE__RECONNECT_MAX_DELAY": "longest reconnect backoff, seconds",
    "ALPHAPANDA_KITE__HEALTHY_RESET_AFTER": "seconds connected before the backoff starts over",
    "ALPHAPANDA_KITE__AUTH_RETRY_DELAY": "seconds between handshakes while the token is refused",
    "ALPHAPANDA_KITE__CAPACITY_RETRY_DELAY": "seconds between handshakes after HTTP 429",
    "ALPHAPANDA_KITE__AUTH_POLL_INTERVAL": "how often a refused connection looks for a new token, seconds",
    "ALPHAPANDA_KITE__MAX_FRAME_BYTES": "largest WebSocket message accepted",
    "ALPHAPANDA_KITE__REDIRECT_URL": "the Kite app's redirect URL, where `auth login` listens",
    # Kafka
    "ALPHAPANDA_KAFKA__BOOTSTRAP_SERVERS": "your Kafka / Redpanda brokers",
    "ALPHAPANDA_KAFKA__TOPIC_PREFIX": "prepended to `market.ticks` as is (e.g. `paper.`)",
    "ALPHAPANDA_KAFKA__TOPIC_PARTITIONS": "partitions when the feed creates the topic",
    "ALPHAPANDA_KAFKA__REPLICATION_FACTOR": "replicas when the feed creates the topic",
    "ALPHAPANDA_KAFKA__COMPRESSION": "producer compression",
    "ALPHAPANDA_KAFKA__LINGER_MS": "producer batching delay, ms",
    "ALPHAPANDA_KAFKA__BATCH_SIZE_BYTES": "largest producer batch",
    "ALPHAPANDA_KAFKA__QUEUE_MAX_MESSAGES": "producer queue before ticks go to the spool",
    "ALPHAPANDA_KAFKA__REQUEST_TIMEOUT_MS": "broker request timeout, ms",
    "ALPHAPANDA_KAFKA__MESSAGE_TIMEOUT_MS": (
        "no delivery report for this long: the broker counts as away and new ticks go to "
        "the spool, ms"
    ),
    "ALPHAPANDA_KAFKA__FLUSH_TIMEOUT": "seconds to flush the producer at shutdown",
    "ALPHAPANDA_KAFKA__SECURITY_PROTOCOL": "how to talk to the brokers (TLS, SASL)",
    "ALPHAPANDA_KAFKA__SASL_MECHANISM": "SASL mechanism",
    "ALPHAPANDA_KAFKA__SASL_USERNAME": "SASL user name",
    "ALPHAPANDA_KAFKA__SASL_PASSWORD": "SASL password",
    "ALPHAPANDA_KAFKA__SSL_CA_LOCATION": "CA certificate file for TLS",
    "ALPHAPANDA_KAFKA__SSL_CERTIFICATE_LOCATION": "client certificate file for TLS",
    "ALPHAPANDA_KAFKA__SSL_KEY_LOCATION": "client key file for TLS",
    # Redis, PostgreSQL
    "ALPHAPANDA_REDIS__URL": "Redis for metrics and API rate limits",
    "ALPHAPANDA_REDIS__PASSWORD": "Redis password",
    "ALPHAPANDA_DATABASE__URL": "PostgreSQL for tokens and the instrument registry",
    "ALPHAPANDA_DATABASE__SCHEMA_NAME": "schema of the feed's tables (one per API key)",
    # Feed
    "ALPHAPANDA_FEED__INSTRUMENTS_CSV": "instrument-dump CSV streamed only while the registry has no set or is down; unset: none",
    "ALPHAPANDA_FEED__MODE": "tick mode for CSV instruments",
    "ALPHAPANDA_FEED__BUFFER_CAPACITY": "ticks held between the sockets and Kafka",
    "ALPHAPANDA_FEED__BUFFER_POLICY": "what a full buffer does (see docs/operations.md)",
    "ALPHAPANDA_FEED__BATCH_MAX": "ticks per publisher batch",
    "ALPHAPANDA_FEED__INCLUDE_DEPTH": "publish the 5-level market depth",
    "ALPHAPANDA_FEED__INCLUDE_OI": "publish open interest",
    "ALPHAPANDA_FEED__WIRE_FORMAT": "record encoding on the topic",
    "ALPHAPANDA_HA__GROUP": "hot-standby group name shared by every instance of one feed; empty: a single instance",
    "ALPHAPANDA_HA__STANDBY": "`warm`: a standby keeps its own connection and can fill the takeover gap; `cold`: it connects on takeover; `auto`: warm when the connection budget allows",
    "ALPHAPANDA_HA__LEASE_MS": "how long the active's leadership lasts without renewal, ms (bounds takeover time)",
    "ALPHAPANDA_HA__POLL_MS": "how often a standby tries to take the lead, ms",
    "ALPHAPANDA_HA__FENCING": "`transactions`: ticks written in Kafka transactions so a deposed active cannot publish; `lease`: leadership lock only (lower latency, no fencing)",
    "ALPHAPANDA_HA__COMMIT_INTERVAL_MS": "transaction commit interval, ms: what read_committed consumers wait at most",
    "ALPHAPANDA_HA__WINDOW_SECONDS": "seconds of ticks a warm standby keeps to fill a takeover",
    "ALPHAPANDA_FEED__SPOOL_MIN_FREE_BYTES": "free disk the spool leaves untouched; below it the buffer policy decides (block or drop with a count)",
    "ALPHAPANDA_FEED__WAL_ENABLED": "log every received frame before decoding, so a crash of the process loses nothing it read",
    "ALPHAPANDA_FEED__WAL_DIR": "write-ahead log of raw frames; keep it across restarts and upgrades",
    "ALPHAPANDA_FEED__WAL_FSYNC_MS": "group-commit interval of the WAL, ms (0: every frame); a power cut loses at most this window",
    "ALPHAPANDA_FEED__WAL_MAX_BYTES": "WAL size limit; beyond it the WAL pauses (crash protection off, ticks keep flowing)",
    "ALPHAPANDA_FEED__HOT_PATH": "frame decoding and encoding: `auto` uses the Rust extension when it loads, `python` forces the reference path, `native` refuses to start without the extension",
    "ALPHAPANDA_FEED__SPOOL_DIR": "disk spool for broker outages; keep it across upgrades",
    "ALPHAPANDA_FEED__SPOOL_MAX_BYTES": "spool size limit (1,296 B per full tick)",
    "ALPHAPANDA_FEED__SHUTDOWN_DEADLINE": "seconds to drain and flush on SIGTERM",
    # API
    "ALPHAPANDA_API__HOST": "address of the control API and status page",
    "ALPHAPANDA_API__PORT": "port of the control API and status page",
    "ALPHAPANDA_API__API_KEY": "`X-API-Key` for POST/DELETE `/subscriptions`",
    "ALPHAPANDA_API__RATE_LIMIT": "read requests per caller",
    "ALPHAPANDA_API__RATE_LIMIT_MUTATING": "write requests per caller",
    "ALPHAPANDA_API__RATE_LIMIT_KEY_PREFIX": "Redis key prefix of the rate-limit buckets",
    "ALPHAPANDA_API__TRUSTED_PROXIES": "proxies whose `X-Forwarded-For` is believed",
    "ALPHAPANDA_API__MAX_BODY_BYTES": "largest request body",
    "ALPHAPANDA_API__MAX_CONNECTIONS": "open connections before 503",
    "ALPHAPANDA_API__ISOLATION": "`process`: the API in a child process the feed supervises; `thread`: on a thread of the feed",
    # Metrics, logs
    "ALPHAPANDA_METRICS__NAMESPACE": "Redis key namespace (one per feed)",
    "ALPHAPANDA_METRICS__FLUSH_INTERVAL_MS": "how often metrics go to Redis, ms",
    "ALPHAPANDA_METRICS__KEY_TTL_SECONDS": "expiry of the Redis metric keys",
    "ALPHAPANDA_LOG__LEVEL": "log level",
    "ALPHAPANDA_LOG__JSON_OUTPUT": "one JSON object per log line (for log shippers)",
    "ALPHAPANDA_CANDLES__INTERVALS": "candle intervals, one topic market.candles.<interval> each",
    "ALPHAPANDA_CANDLES__GRACE_MS": "a bar closes this long after its bucket ends, ms",
    "ALPHAPANDA_CANDLES__SESSION_OPENS": "session opens overriding the built-in table",
    "ALPHAPANDA_QUOTES__INTERVAL_MS": "at most one market.quotes.latest write per instrument per, ms",
    "ALPHAPANDA_STREAMS__ENABLED": "candles, latest quotes, feed events, order updates",
    "ALPHAPANDA_STREAMS__QUEUE_CAPACITY": "ticks waiting for the derived streams before drops",
}
