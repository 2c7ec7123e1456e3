"""Envelopes of the derived streams, shared by the feed (encoding) and the consumer SDK.

Every record has the shape of the ``market.ticks`` envelope::

    {"schema_version": 1, "event_type": "...", "broker": "...", "id": "<UUIDv7>",
     "emitted_at": "<ISO 8601 UTC>", "data": {...}}

with headers ``schema_version``, ``source``, ``content-type`` and ``event_type``.
``market.quotes.latest`` carries ``market_tick`` envelopes: each the very
``market.ticks`` record of that tick (``streams.quotes``). Layouts: ``schemas/*.v1.schema.json`` and ``docs/schema.md``.
"""

from __future__ import annotations

import secrets
from datetime import UTC, datetime, timedelta
from typing import Any, Final

import msgspec

from alphapanda.clock import SYSTEM_CLOCK, Clock
from alphapanda.pipeline.wire import BROKER_SHARED, DEFAULT_SOURCE
from alphapanda.streams.candles import Candle

SCHEMA_VERSION: Final = 1
EVENT_CANDLE: Final = "candle"
EVENT_FEED: Final = "feed_event"
EVENT_ORDER_UPDATE: Final = "order_update"
BROKER_ZERODHA: Final = "zerodha"

_EPOCH: Final = datetime(1970, 1, 1, tzinfo=UTC)

#: Kinds of feed event.
FEED_STARTED: Final = "feed_started"
FEED_STOPPED: Final = "feed_stopped"
CONNECTION_UP: Final = "connection_up"
CONNECTION_DOWN: Final = "connection_down"
GAP: Final = "gap"
AUTH_REQUIRED: Final = "auth_required"
AUTH_RESTORED: Final = "auth_restored"
SUBSCRIPTIONS_CHANGED: Final = "subscriptions_changed"
SPOOLING_STARTED: Final = "spooling_started"
SPOOLING_STOPPED: Final = "spooling_stopped"
# Hot standby: which instance of the group became active (and its epoch); instruments
# whose takeover could not be matched exactly (a tick may be missing between the old
# active's last and the new active's first).
HA_ACTIVE: Final = "ha_active"
GAP_POSSIBLE: Final = "gap_possible"
# The write-ahead log held frames of a previous run that had not been resolved (a
# crash, a kill, a power cut): what recovery at this start found and published again,
# or that it was abandoned (the feed stopped before the broker answered).
CRASH_RECOVERY: Final = "crash_recovery"
FEED_EVENT_KINDS: Final = (
    FEED_STARTED,
    FEED_STOPPED,
    CONNECTION_UP,
    CONNECTION_DOWN,
    GAP,
    AUTH_REQUIRED,
    AUTH_RESTORED,
    SUBSCRIPTIONS_CHANGED,
    SPOOLING_STARTED,
    SPOOLING_STOPPED,
    HA_ACTIVE,
    GAP_POSSIBLE,
    CRASH_RECOVERY,
)


class FeedEvent(msgspec.Struct, frozen=True, omit_defaults=True):
    """Something that happened to the feed (``schemas/feed_event.v1.schema.json``).

    ``at`` is when it happened. Per kind: ``shard`` (connection events, gap),
    ``reason`` (``connection_down``, ``auth_required``, ``feed_stopped``),
    ``instruments`` (tokens affected: connection events, gap, subscription changes
    — the added ones), ``removed`` (subscription changes), ``start``/``end`` (gap: the
    interval in which those instruments could not have been received), ``accounting``
    (``feed_started``/``feed_stopped``: the tick accounting at that moment),
    ``recovery`` (``crash_recovery``: what the write-ahead log recovery found and did;
    its ``start``/``end`` are the receive times of the first and last frame whose ticks
    were published again).
    """

    kind: str
    at: datetime
    shard: int | None = None
    reason: str | None = None
    instruments: list[int] | None = None
    removed: list[int] | None = None
    start: datetime | None = None
    end: datetime | None = None
    accounting: dict[str, Any] | None = None
    instance: str | None = None
    epoch: int | None = None
    recovery: dict[str, int] | None = None

    @property
    def key(self) -> bytes:
        return b"feed" if self.shard is None else b"shard-%d" % self.shard


class OrderUpdate(msgspec.Struct, frozen=True):
    """A Kite order postback from the ticker socket, as Kite sent it, and when we got it."""

    order: dict[str, Any]
    received_at: datetime


class CandleEvent(msgspec.Struct, frozen=True):
    schema_version: int
    event_type: str
    broker: str
    id: str
    emitted_at: datetime
    data: Candle


class FeedEventRecord(msgspec.Struct, frozen=True):
    schema_version: int
    event_type: str
    broker: str
    id: str
    emitted_at: datetime
    data: FeedEvent


class OrderUpdateEvent(msgspec.Struct, frozen=True):
    schema_version: int
    event_type: str
    broker: str
    id: str
    emitted_at: datetime
    data: OrderUpdate


def ns_to_datetime(ns: int) -> datetime:
    return _EPOCH + timedelta(microseconds=ns // 1000)


class EnvelopeEncoder:
    """Wraps derived records in the envelope: ``(key, value, headers)``."""

    def __init__(self, source: str = DEFAULT_SOURCE, clock: Clock = SYSTEM_CLOCK) -> None:
        self._encode = msgspec.json.Encoder().encode
        self._clock = clock.wall_ns
        self._source = source.encode()
        rand = secrets.randbits(26)
        self._id_mid = f"7{rand >> 14:03x}-{0x8000 | (rand & 0x3FFF):04x}"
        self._seq = 0

    def _id(self, now_ns: int) -> str:
        self._seq = (self._seq + 1) & 0xFFFF_FFFF_FFFF
        ms = now_ns // 1_000_000
        return f"{ms >> 16:08x}-{ms & 0xFFFF:04x}-{self._id_mid}-{self._seq:012x}"

    def headers(self, event_type: str) -> list[tuple[str, bytes]]:
        return [
            ("schema_version", str(SCHEMA_VERSION).encode()),
            ("source", self._source),
            ("content-type", b"application/json"),
            ("event_type", event_type.encode()),
        ]

    def candle(self, candle: Candle) -> tuple[bytes, bytes, list[tuple[str, bytes]]]:
        now = self._clock()
        event = CandleEvent(
            SCHEMA_VERSION, EVENT_CANDLE, BROKER_SHARED, self._id(now), ns_to_datetime(now), candle
        )
        key = b"%d" % candle.instrument_token
        return key, self._encode(event), self.headers(EVENT_CANDLE)

    def feed_event(self, event: FeedEvent) -> tuple[bytes, bytes, list[tuple[str, bytes]]]:
        now = self._clock()
        record = FeedEventRecord(
            SCHEMA_VERSION, EVENT_FEED, BROKER_SHARED, self._id(now), ns_to_datetime(now), event
        )
        return event.key, self._encode(record), self.headers(EVENT_FEED)

    def order_update(self, update: OrderUpdate) -> tuple[bytes, bytes, list[tuple[str, bytes]]]:
        now = self._clock()
        record = OrderUpdateEvent(
            SCHEMA_VERSION,
            EVENT_ORDER_UPDATE,
            BROKER_ZERODHA,
            self._id(now),
            ns_to_datetime(now),
            update,
        )
        order_id = update.order.get("order_id")
        key = str(order_id).encode() if order_id is not None else b"unknown"
        return key, self._encode(record), self.headers(EVENT_ORDER_UPDATE)
