"""Request and response bodies of the control API (they are its OpenAPI schema)."""

from __future__ import annotations

from typing import Annotated, Literal

from pydantic import BaseModel, ConfigDict, Field

from alphapanda.modes import Mode

# Kite instrument tokens are unsigned 32-bit integers on the wire. Strict: "123" or 1.5
# is a client bug to report, not something to coerce.
Token = Annotated[int, Field(strict=True, ge=1, le=2**32 - 1)]
MAX_TOKENS_PER_REQUEST = 9000


class _Body(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)


class SubscribeRequest(_Body):
    """Add instruments, or change the mode of instruments already subscribed."""

    tokens: list[Token] = Field(min_length=1, max_length=MAX_TOKENS_PER_REQUEST)
    mode: Mode = "quote"

    model_config = ConfigDict(
        extra="forbid",
        frozen=True,
        json_schema_extra={"examples": [{"tokens": [256265, 738561], "mode": "full"}]},
    )


class UnsubscribeRequest(_Body):
    tokens: list[Token] = Field(min_length=1, max_length=MAX_TOKENS_PER_REQUEST)


class SubscriptionsView(BaseModel):
    total: int
    by_mode: dict[str, int]
    subscriptions: dict[str, str] = Field(description="token → mode")


class SubscriptionChange(BaseModel):
    changed: int
    total: int
    by_mode: dict[str, int]


class Health(BaseModel):
    status: Literal["ok"] = "ok"
    role: Literal["feed", "monitor"]


class Readiness(BaseModel):
    ready: bool
    reasons: list[str]
    # Hot standby: a standby is not ready (it does not publish) but can be ready to take
    # over. Left out of the body outside a hot-standby group and while active.
    standby_ready: bool | None = None


class Problem(BaseModel):
    """Every error body: a human-readable ``detail``."""

    detail: str


class ConnectionView(BaseModel):
    shard: str
    state: str
    since: str | None = None
    reconnect_count: int | None = None
    last_disconnect_reason: str | None = None
    instruments: int | None = None
    ticks_received: int | None = None
    last_frame_age_seconds: float | None = None


class LatencyView(BaseModel):
    p50: float | None = None
    p90: float | None = None
    p99: float | None = None
    max: float | None = None


class BufferView(BaseModel):
    depth: int | None = None
    capacity: int | None = None
    policy: str | None = None


class SpoolView(BaseModel):
    bytes: int | None = None
    messages: int | None = None


class WalView(BaseModel):
    """The write-ahead log of raw frames (crash protection)."""

    enabled: bool | None = Field(None, description="None: not reported by this process")
    paused: bool | None = Field(None, description="the WAL cannot write (disk full, size cap)")
    crash_protection: str | None = Field(None, description="'on', or why it is off")
    bytes: int | None = None
    segments: int | None = None
    recovered: int | None = Field(None, description="ticks published again after a crash")
    already_published: int | None = None
    corrupt: int | None = None


class HaView(BaseModel):
    """The hot-standby group this feed is in (all None: not in a group)."""

    group: str | None = None
    instance: str | None = None
    role: str | None = Field(None, description="'active' (publishing) or 'standby'")
    standby_mode: str | None = Field(None, description="'warm' or 'cold'")
    active_since: float | None = Field(None, description="unix time this instance became active")
    epoch: int | None = Field(None, description="leadership epoch held (grows at each change)")
    standby_ready: bool | None = Field(
        None,
        description="standby able to take over without a gap (warm: its connections stream "
        "and the ticks it holds reach back to the newest one the active published; cold: "
        "its database session to the lease is up)",
    )
    held: int | None = Field(None, description="ticks a warm standby holds for a takeover")
    last_received_at: float | None = Field(None, description="unix time of the newest tick")
    takeover_seconds: float | None = Field(
        None, description="lease taken -> publishing, at this instance's takeover"
    )


class AuthView(BaseModel):
    token_valid: bool | None = Field(None, description="a usable access token is known")
    source: str | None = Field(None, description="where it came from: database or settings")
    seconds_left: float | None = Field(None, description="until its 06:00 IST expiry")


class StatusView(BaseModel):
    """What the feed is doing, in one document (the status page and CLI read this)."""

    source: Literal["feed", "redis"] = Field(
        description="'feed': live from the feed process; 'redis': the last metrics flush"
    )
    available: bool = Field(description="False when no figures could be read")
    ready: bool | None = None
    updated_at: str | None = None
    ticks_received: int | None = None
    ticks_per_second: float | None = None
    last_tick_age_seconds: float | None = None
    sends_ok: int | None = None
    sends_failed: int | None = None
    send_latency_seconds: LatencyView = LatencyView()
    drops: dict[str, int] = {}
    malformed: dict[str, int] = {}
    reconnects: dict[str, int] = {}
    buffer: BufferView = BufferView()
    spool: SpoolView = SpoolView()
    auth: AuthView = AuthView()
    wal: WalView = WalView()
    ha: HaView = HaView()
    connections: list[ConnectionView] = []
    subscriptions: dict[str, int] = Field(default={}, description="mode → instruments")
