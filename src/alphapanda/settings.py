"""The one settings object.

Built once at start-up from the environment (prefix ``ALPHAPANDA_``, nested groups
joined by ``__``), an optional ``.env`` file and an optional TOML file, then passed
down explicitly. Nothing in the package reads the environment anywhere else.

Every secret (API secret, access token, database and Redis URLs, which may carry
passwords) is a ``SecretStr`` so that reprs, logs and error messages never show it.
"""

from __future__ import annotations

import os
from pathlib import Path
from typing import Any, Literal
from urllib.parse import urlsplit, urlunsplit

from pydantic import (
    BaseModel,
    ConfigDict,
    Field,
    SecretStr,
    ValidationError,
    field_validator,
    model_validator,
)
from pydantic_settings import (
    BaseSettings,
    PydanticBaseSettingsSource,
    SettingsConfigDict,
    TomlConfigSettingsSource,
)

from alphapanda.modes import Mode
from alphapanda.topics import validate_topic_name

ENV_PREFIX = "ALPHAPANDA_"
ENV_NESTED_DELIMITER = "__"
CONFIG_FILE_ENV = "ALPHAPANDA_CONFIG_FILE"

SubscriptionMode = Mode
Environment = Literal["production", "development"]
KafkaSecurityProtocol = Literal["PLAINTEXT", "SSL", "SASL_PLAINTEXT", "SASL_SSL"]
SaslMechanism = Literal["PLAIN", "SCRAM-SHA-256", "SCRAM-SHA-512"]
BufferPolicy = Literal["block", "drop_oldest", "conflate"]
KiteEnv = Literal["live", "sim"]

# The endpoints ``ALPHAPANDA_KITE__ENV`` selects; an explicitly set URL always wins.
KITE_ENDPOINTS: dict[str, dict[str, str]] = {
    "live": {
        "ws_url": "wss://ws.kite.trade",
        "api_root": "https://api.kite.trade",
        "login_url": "https://kite.zerodha.com/connect/login",
    },
    "sim": {
        "ws_url": "ws://127.0.0.1:18765",
        "api_root": "http://127.0.0.1:18766",
        "login_url": "http://127.0.0.1:18766/connect/login",
    },
}


class _Group(BaseModel):
    model_config = ConfigDict(frozen=True, extra="forbid")


class KiteSettings(_Group):
    """Kite Connect ticker and API endpoints, and the shape of the connection pool."""

    # live: Zerodha's real endpoints; sim: the simulator on loopback (``alphapanda sim``).
    env: KiteEnv = "sim"
    ws_url: str = KITE_ENDPOINTS["sim"]["ws_url"]
    api_root: str = KITE_ENDPOINTS["sim"]["api_root"]
    login_url: str = KITE_ENDPOINTS["sim"]["login_url"]
    api_key: str = "alphapanda-dev"
    access_token: SecretStr = SecretStr("dev-access-token")
    api_secret: SecretStr = SecretStr("dev-api-secret")
    max_connections: int = Field(3, ge=1, le=3)
    max_instruments_per_connection: int = Field(3000, ge=1, le=3000)
    subscribe_chunk_size: int = Field(500, ge=1, le=3000)
    subscribe_pacing_ms: int = Field(0, ge=0)
    liveness_timeout: float = Field(5.0, gt=0)
    connect_timeout: float = Field(10.0, gt=0)
    reconnect_base_delay: float = Field(0.5, gt=0)
    reconnect_max_delay: float = Field(30.0, gt=0)
    healthy_reset_after: float = Field(30.0, gt=0)
    auth_retry_delay: float = Field(15.0, gt=0)
    capacity_retry_delay: float = Field(30.0, gt=0)
    # While auth_required: how often the token provider is asked for a new token
    # (cheap, no handshake), so recovery follows a new token within about this long.
    auth_poll_interval: float = Field(1.0, gt=0)
    # Largest WebSocket message accepted; full mode x 3000 instruments is ~558 kB.
    max_frame_bytes: int = Field(4 * 1024 * 1024, ge=65536)
    # Where Kite sends the browser after login (`alphapanda auth login` listens there);
    # register exactly this URL as the redirect URL of the Kite app.
    redirect_url: str = "http://127.0.0.1:18770/kite/callback"

    @property
    def capacity(self) -> int:
        """How many instruments the connection pool can carry in all."""
        return self.max_connections * self.max_instruments_per_connection

    @model_validator(mode="before")
    @classmethod
    def _endpoints_of_env(cls, data: Any) -> Any:
        # The URLs follow ``env`` unless they are given explicitly.
        if isinstance(data, dict):
            endpoints = KITE_ENDPOINTS.get(str(data.get("env", "sim")))
            if endpoints is not None:
                return {**endpoints, **data}
        return data

    @field_validator("ws_url")
    @classmethod
    def _ws_scheme(cls, value: str) -> str:
        if urlsplit(value).scheme not in ("ws", "wss"):
            raise ValueError("must be a ws:// or wss:// URL")
        return value

    @field_validator("api_root", "login_url")
    @classmethod
    def _http_scheme(cls, value: str) -> str:
        if urlsplit(value).scheme not in ("http", "https"):
            raise ValueError("must be an http:// or https:// URL")
        return value.rstrip("/")


class KafkaSettings(_Group):
    """The broker and the producer's tuning. Topic names live in ``alphapanda.topics``."""

    bootstrap_servers: str = "127.0.0.1:19092"
    topic_prefix: str = ""
    topic_partitions: int = Field(6, ge=1)
    replication_factor: int = Field(1, ge=1)
    compression: Literal["none", "lz4", "zstd", "snappy", "gzip"] = "lz4"
    # 2, not 5: ~3 ms lower p50 at 20k ticks/s and no measurable throughput cost at 100k
    # (side-by-side runs in docs/benchmarks.md); under load batches fill before it expires.
    linger_ms: int = Field(2, ge=0, le=1000)
    batch_size_bytes: int = Field(1_000_000, ge=1024)
    queue_max_messages: int = Field(200_000, ge=1000)
    request_timeout_ms: int = Field(5_000, ge=100)
    # How long the feed waits for any delivery report while messages are outstanding
    # before it treats the broker as away: what librdkafka has not sent yet is withdrawn
    # and new ticks go to the spool. librdkafka's own message timeout is set well after
    # it (see ``backstop_timeout_ms``), so it never fails an older message while a newer
    # one is delivered. Long enough to ride out a broker restart.
    message_timeout_ms: int = Field(60_000, ge=1000)
    flush_timeout: float = Field(10.0, gt=0)
    # Managed brokers (Confluent Cloud, Redpanda Cloud, MSK) need SASL over TLS; every
    # Kafka client of the project takes these (see ``alphapanda.kafka_security``).
    security_protocol: KafkaSecurityProtocol = "PLAINTEXT"
    sasl_mechanism: SaslMechanism = "SCRAM-SHA-512"
    sasl_username: str = ""
    sasl_password: SecretStr = SecretStr("")
    ssl_ca_location: Path | None = None
    ssl_certificate_location: Path | None = None
    ssl_key_location: Path | None = None

    @field_validator("bootstrap_servers")
    @classmethod
    def _host_port_list(cls, value: str) -> str:
        for item in value.split(","):
            host, sep, port = item.strip().rpartition(":")
            if not sep or not host or not port.isdigit():
                raise ValueError(f"expected host:port[,host:port...], got {item.strip()!r}")
        return value

    @model_validator(mode="after")
    def _sasl_needs_credentials(self) -> KafkaSettings:
        if self.security_protocol.startswith("SASL") and not (
            self.sasl_username and self.sasl_password.get_secret_value()
        ):
            raise ValueError(
                "security_protocol SASL_* needs ALPHAPANDA_KAFKA__SASL_USERNAME and "
                "ALPHAPANDA_KAFKA__SASL_PASSWORD"
            )
        return self

    @field_validator("topic_prefix")
    @classmethod
    def _legal_prefix(cls, value: str) -> str:
        if value:
            validate_topic_name(value + "x")
        return value


class RedisSettings(_Group):
    url: SecretStr = SecretStr("redis://127.0.0.1:16379/0")

    @field_validator("url")
    @classmethod
    def _redis_scheme(cls, value: SecretStr) -> SecretStr:
        if urlsplit(value.get_secret_value()).scheme not in ("redis", "rediss", "unix"):
            raise ValueError("must be a redis://, rediss:// or unix:// URL")
        return value


class DatabaseSettings(_Group):
    url: SecretStr = SecretStr(
        "postgresql+asyncpg://alphapanda:dev-db-password@127.0.0.1:15432/alphapanda"
    )
    # Every table of the service lives in this schema (set through the search_path).
    schema_name: str = Field("public", pattern=r"^[a-z_][a-z0-9_]{0,62}$")

    @field_validator("url")
    @classmethod
    def _pg_scheme(cls, value: SecretStr) -> SecretStr:
        if not urlsplit(value.get_secret_value()).scheme.startswith("postgresql"):
            raise ValueError("must be a postgresql+asyncpg:// URL")
        return value


class FeedSettings(_Group):
    """What to stream and how the tick path behaves under pressure."""

    # Streamed only while the registry has no streaming set or PostgreSQL is down; unset,
    # the feed streams nothing until `alphapanda instruments stream` chooses instruments.
    instruments_csv: Path | None = None
    mode: SubscriptionMode = "full"
    buffer_capacity: int = Field(50_000, ge=1)
    buffer_policy: BufferPolicy = "block"
    batch_max: int = Field(5_000, ge=1)
    include_depth: bool = True
    include_oi: bool = True
    wire_format: Literal["json", "msgpack"] = "json"
    # Frames to records: the Rust extension when it can be imported ("auto"), always
    # ("native": start-up fails without it), or the pure-Python reference ("python").
    hot_path: Literal["auto", "native", "python"] = "auto"
    spool_dir: Path = Path(".alphapanda/spool")
    spool_max_bytes: int = Field(1 << 30, ge=1 << 20)
    # The spool stops taking ticks while less than this is free on its filesystem
    # (the buffer policy then applies), so it never fills the disk for everyone else.
    spool_min_free_bytes: int = Field(64 << 20, ge=0)
    shutdown_deadline: float = Field(10.0, gt=0)
    # Write-ahead log of raw frames (crash protection): fsync at most every
    # wal_fsync_ms (0: after every write); a power cut loses at most that window.
    wal_enabled: bool = True
    wal_dir: Path = Path(".alphapanda/wal")
    wal_fsync_ms: int = Field(20, ge=0, le=10_000)
    wal_max_bytes: int = Field(4 << 30, ge=1 << 20)


class ApiSettings(_Group):
    host: str = "127.0.0.1"
    port: int = Field(18080, ge=1, le=65535)
    api_key: SecretStr = SecretStr("dev-api-key")
    rate_limit: str = "120/minute"
    rate_limit_mutating: str = "30/minute"
    # Redis key prefix of the shared rate-limit buckets; API processes that should share
    # one limit use the same prefix (and the same Redis).
    rate_limit_key_prefix: str = "alphapanda:ratelimit"
    trusted_proxies: tuple[str, ...] = ()
    # Request bodies are refused with 413 as soon as they pass this size, before they
    # are read whole; the largest legitimate body (3,000 tokens) is ~25 KiB.
    max_body_bytes: int = Field(64 * 1024, ge=1024)
    # Open connections beyond this are answered 503 at once (uvicorn limit_concurrency).
    max_connections: int = Field(64, ge=1)
    # Where the feed serves its API: a supervised child process (no client can cost the
    # tick path the interpreter lock), or a thread of the feed process.
    isolation: Literal["process", "thread"] = "process"


class MetricsSettings(_Group):
    namespace: str = "market"
    flush_interval_ms: int = Field(500, ge=50)
    key_ttl_seconds: int = Field(3600, ge=10)


class LogSettings(_Group):
    level: Literal["DEBUG", "INFO", "WARNING", "ERROR"] = "INFO"
    json_output: bool = False


class CandlesSettings(_Group):
    """Candles built from the ticks (topics ``market.candles.<interval>``)."""

    # Comma-separated, from 1s, 5s, 15s, 1m, 3m, 5m, 15m, 30m, 1h.
    intervals: str = "1m"
    # A bar is closed this long after its bucket ends; a tick later than that is "late".
    grace_ms: int = Field(500, ge=0, le=60_000)
    # Session opens (IST, "HH:MM") overriding the built-in table, e.g. {"MCX": "09:00"}.
    session_opens: dict[str, str] = Field(default_factory=dict)

    @field_validator("intervals")
    @classmethod
    def _known_intervals(cls, value: str) -> str:
        from alphapanda.streams.sessions import INTERVALS

        items = [item.strip() for item in value.split(",") if item.strip()]
        unknown = [item for item in items if item not in INTERVALS]
        if unknown or not items:
            raise ValueError(f"unknown interval(s) {unknown}; allowed: {', '.join(INTERVALS)}")
        return ",".join(dict.fromkeys(items))

    @field_validator("session_opens")
    @classmethod
    def _times_of_day(cls, value: dict[str, str]) -> dict[str, str]:
        from alphapanda.streams.sessions import parse_hhmm

        for time_of_day in value.values():
            parse_hhmm(time_of_day)
        return value

    @property
    def interval_list(self) -> list[str]:
        return self.intervals.split(",")


class QuotesSettings(_Group):
    """The latest-quotes topic ``market.quotes.latest`` (compacted)."""

    # At most one record per instrument per this many milliseconds (conflated).
    interval_ms: int = Field(250, ge=10, le=60_000)


class StreamsSettings(_Group):
    """Derived streams (candles, latest quotes, feed events, order updates)."""

    enabled: bool = True
    # Ticks waiting for the derived streams; beyond it a batch is dropped and counted
    # (the bars of its instruments are then marked incomplete), never blocking ticks.
    queue_capacity: int = Field(100_000, ge=1000)


class HaSettings(_Group):
    """Hot standby: several feeds in one group, exactly one of them publishing."""

    # The group's name; empty: no group, this feed publishes on its own.
    group: str = ""
    # warm: a standby keeps its own subscribed connection and holds what it receives, so
    # a takeover has no gap; cold: it connects only on takeover (the gap is published as
    # a feed event); auto: warm when the key's connections leave room for it.
    standby: Literal["auto", "warm", "cold"] = "auto"
    # Leadership lease: an active that has not renewed it for this long (paused, cut
    # off from the database) loses it. SIGKILL frees it at once. It bounds the takeover
    # after a host is cut off (one lease + the takeover: under 3 s with 1.5 s); the
    # active deposes itself if it could not renew for 3/4 of it.
    lease_ms: int = Field(1500, ge=200)
    # How often a standby tries to take the lease.
    poll_ms: int = Field(200, ge=20)
    # transactions: the ticks are written in Kafka transactions, so a deposed active
    # that wakes up cannot add a record a read_committed consumer sees (costs up to
    # commit_interval_ms of latency for such consumers); lease: the lease only (a
    # deposed active may publish for up to lease_ms before it notices).
    fencing: Literal["transactions", "lease"] = "transactions"
    commit_interval_ms: int = Field(100, ge=5)
    # What a warm standby holds per instrument to replay after the active's last
    # published tick (seconds of history).
    window_seconds: float = Field(30.0, gt=0)


class Settings(BaseSettings):
    """Everything the service can be told, grouped as the operator thinks of it."""

    model_config = SettingsConfigDict(
        env_prefix=ENV_PREFIX,
        env_nested_delimiter=ENV_NESTED_DELIMITER,
        env_file=".env",
        env_file_encoding="utf-8",
        extra="ignore",
        frozen=True,
    )

    # production: every dev-default secret is refused at start-up (also whenever the
    # API listens on a non-loopback address).
    env: Environment = "development"
    # Base of relative paths (instrument CSV, spool); the working directory when unset.
    home: Path | None = None
    kite: KiteSettings = KiteSettings()
    kafka: KafkaSettings = KafkaSettings()
    redis: RedisSettings = RedisSettings()
    database: DatabaseSettings = DatabaseSettings()
    feed: FeedSettings = FeedSettings()
    api: ApiSettings = ApiSettings()
    metrics: MetricsSettings = MetricsSettings()
    log: LogSettings = LogSettings()
    candles: CandlesSettings = CandlesSettings()
    quotes: QuotesSettings = QuotesSettings()
    streams: StreamsSettings = StreamsSettings()
    ha: HaSettings = HaSettings()

    @classmethod
    def settings_customise_sources(
        cls,
        settings_cls: type[BaseSettings],
        init_settings: PydanticBaseSettingsSource,
        env_settings: PydanticBaseSettingsSource,
        dotenv_settings: PydanticBaseSettingsSource,
        file_secret_settings: PydanticBaseSettingsSource,
    ) -> tuple[PydanticBaseSettingsSource, ...]:
        # Precedence: explicit arguments, environment, .env, then the TOML file.
        sources: list[PydanticBaseSettingsSource] = [init_settings, env_settings, dotenv_settings]
        config_file = os.environ.get(CONFIG_FILE_ENV)
        if config_file:
            sources.append(TomlConfigSettingsSource(settings_cls, toml_file=Path(config_file)))
        return tuple(sources)


# Fields of ``Settings`` that are plain values rather than groups.
TOP_LEVEL_FIELDS = ("env", "home")


class SettingsError(Exception):
    """Invalid configuration; the message names each offending environment variable."""


def env_name(loc: tuple[int | str, ...]) -> str:
    """The environment variable that sets the field at ``loc`` (e.g. ``('kafka', 'linger_ms')``)."""
    return ENV_PREFIX + ENV_NESTED_DELIMITER.join(str(part).upper() for part in loc if part != "")


def load_settings(env_file: Path | None = None, **overrides: Any) -> Settings:
    """Build the settings, turning validation failures into one readable ``SettingsError``."""
    config_file = os.environ.get(CONFIG_FILE_ENV)
    if config_file and not Path(config_file).is_file():
        raise SettingsError(f"{CONFIG_FILE_ENV}={config_file}: no such file")
    try:
        if env_file is not None:
            return resolve_paths(Settings(_env_file=env_file, **overrides))
        return resolve_paths(Settings(**overrides))
    except ValidationError as exc:
        lines = []
        for err in exc.errors():
            loc = tuple(err["loc"])
            # Never echo the rejected value: it may be a secret.
            lines.append(f"  {env_name(loc)}: {err['msg']}")
        raise SettingsError("invalid configuration:\n" + "\n".join(lines)) from None


def path_base(settings: Settings) -> Path:
    """Where relative paths are resolved: ``ALPHAPANDA_HOME``, else the working directory."""
    return (settings.home or Path.cwd()).expanduser().absolute()


def resolve_paths(settings: Settings) -> Settings:
    """``settings`` with every relative path made absolute against ``path_base``, so that
    error messages can say exactly where a file was looked for."""
    base = path_base(settings)
    feed = settings.feed
    update = {
        name: base / path
        for name in ("instruments_csv", "spool_dir")
        if (value := getattr(feed, name)) is not None
        and not (path := value.expanduser()).is_absolute()
    }
    if not update:
        return settings
    return settings.model_copy(update={"feed": feed.model_copy(update=update)})


def redact_url(url: str) -> str:
    """``scheme://user:***@host:port/path`` — safe to print."""
    parts = urlsplit(url)
    if parts.password is None:
        return url
    netloc = parts.netloc.rsplit("@", 1)[1]
    user = parts.username or ""
    return urlunsplit(parts._replace(netloc=f"{user}:***@{netloc}"))


def effective_settings(settings: Settings) -> dict[str, dict[str, Any]]:
    """Settings as plain data with secrets masked (URLs keep all but their password)."""
    shown: dict[str, dict[str, Any]] = {}
    # Top-level settings (ALPHAPANDA_ENV, ALPHAPANDA_HOME) are shown under the group "".
    top = {name: getattr(settings, name) for name in TOP_LEVEL_FIELDS}
    shown[""] = {k: str(v) if isinstance(v, Path) else v for k, v in top.items()}
    for group_name in Settings.model_fields:
        if group_name in TOP_LEVEL_FIELDS:
            continue
        group = getattr(settings, group_name)
        values: dict[str, Any] = {}
        for field_name in type(group).model_fields:
            value = getattr(group, field_name)
            if isinstance(value, SecretStr):
                secret = value.get_secret_value()
                value = redact_url(secret) if field_name == "url" else "********"
            elif isinstance(value, Path):
                value = str(value)
            values[field_name] = value
        shown[group_name] = values
    return shown
