"""Derived-stream records: envelopes satisfy their schema files; quotes conflation;
feed events from state snapshots."""

from __future__ import annotations

import json
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import pytest

from alphapanda.streams.candles import Candle
from alphapanda.streams.events import FeedEventTracker, ShardSnapshot
from alphapanda.streams.quotes import LatestQuotes
from alphapanda.streams.records import (
    FEED_EVENT_KINDS,
    EnvelopeEncoder,
    FeedEvent,
    OrderUpdate,
)
from tests.support.quotes import records_for, update
from tests.unit.test_candles import NSE_TOKEN, OPEN_NSE, tick
from tests.unit.test_wire import validate

pytestmark = pytest.mark.unit

SCHEMAS = Path(__file__).resolve().parents[2] / "schemas"
T0 = datetime(2026, 12, 1, 4, 0, tzinfo=UTC)


def _schema(name: str) -> dict[str, Any]:
    loaded: dict[str, Any] = json.loads((SCHEMAS / f"{name}.v1.schema.json").read_text())
    return loaded


def test_candle_record_satisfies_its_schema() -> None:
    schema = _schema("candle")
    candle = Candle(
        NSE_TOKEN, "1m", T0, T0 + timedelta(minutes=1), 1, 2, 0.5, 1.5, 10, None, 3, True
    )
    key, value, headers = EnvelopeEncoder().candle(candle)
    document = json.loads(value)
    validate(document, schema, schema)
    assert set(document["data"]) == set(schema["properties"]["data"]["properties"])
    assert key == str(NSE_TOKEN).encode()
    assert dict(headers)["event_type"] == b"candle"


def test_feed_event_records_satisfy_their_schema() -> None:
    schema = _schema("feed_event")
    assert set(schema["properties"]["data"]["properties"]["kind"]["enum"]) == set(FEED_EVENT_KINDS)
    encoder = EnvelopeEncoder()
    gap = FeedEvent("gap", T0, shard=1, instruments=[1, 2], start=T0, end=T0 + timedelta(seconds=2))
    key, value, _ = encoder.feed_event(gap)
    assert key == b"shard-1"
    validate(json.loads(value), schema, schema)
    started = FeedEvent("feed_started", T0, accounting={"received": 0})
    key, value, _ = encoder.feed_event(started)
    assert key == b"feed"
    document = json.loads(value)
    validate(document, schema, schema)
    assert "shard" not in document["data"]  # absent fields are omitted
    recovery = {
        "frames": 3,
        "wal_recovered": 4,
        "wal_already_published": 3,
        "wal_corrupt": 0,
        "wal_torn": 1,
    }
    crash = FeedEvent(
        "crash_recovery",
        T0,
        reason="completed",
        start=T0 - timedelta(seconds=5),
        end=T0 - timedelta(seconds=1),
        recovery=recovery,
    )
    key, value, _ = encoder.feed_event(crash)
    assert key == b"feed"
    document = json.loads(value)
    validate(document, schema, schema)
    recovery_schema = schema["properties"]["data"]["properties"]["recovery"]
    assert set(recovery_schema["required"]) == set(recovery_schema["properties"]) == set(recovery)
    assert document["data"]["recovery"] == recovery
    assert document["data"]["start"] == "2026-12-01T03:59:55Z"


def test_order_update_record_keeps_the_order_as_sent() -> None:
    schema = _schema("order_update")
    order = {"order_id": "220303000308932", "status": "COMPLETE", "unknown_field": [1, {"x": None}]}
    key, value, _ = EnvelopeEncoder().order_update(OrderUpdate(order, T0))
    document = json.loads(value)
    validate(document, schema, schema)
    assert document["broker"] == "zerodha" and document["event_type"] == "order_update"
    assert document["data"]["order"] == order
    assert key == b"220303000308932"


def test_latest_quotes_conflate_per_instrument() -> None:
    quotes = LatestQuotes()
    update(
        quotes,
        [tick(NSE_TOKEN, OPEN_NSE, 1.0), tick(NSE_TOKEN, OPEN_NSE, 2.0), tick(7, OPEN_NSE, 3.0)],
    )
    latest = [tick(NSE_TOKEN, OPEN_NSE, 4.0)]
    quotes.update(records := records_for(latest))
    # What is written is each instrument's latest market.ticks record itself.
    dirty = {int(r.key): json.loads(r.value)["data"]["last_price"] for r in quotes.take_dirty()}
    assert dirty == {NSE_TOKEN: 4.0, 7: 3.0}
    quotes.update(records)
    assert quotes.take_dirty() == records
    assert quotes.conflated == 2 and quotes.updates == 5
    assert quotes.take_dirty() == []  # nothing changed since
    quote = quotes.get(NSE_TOKEN)
    assert quote is not None and quote.last_price == 4.0
    assert set(quotes.many([7, 99])) == {7}


def _snap(
    state: str, reconnects: int, *, since: datetime, age: float | None = 0.1
) -> ShardSnapshot:
    return ShardSnapshot(0, state, since, reconnects, "closed_by_server", age, (11, 12))


def test_events_from_snapshots() -> None:
    tracker = FeedEventTracker()
    now = T0
    kinds = lambda events: [e.kind for e in events]  # noqa: E731
    assert (
        kinds(tracker.observe(now, [_snap("connecting", 0, since=now)], {11: "full"}, False)) == []
    )
    now += timedelta(seconds=1)
    up = tracker.observe(now, [_snap("connected", 0, since=now)], {11: "full"}, False)
    assert kinds(up) == ["connection_up"] and up[0].instruments == [11, 12]
    now += timedelta(seconds=1)
    tracker.observe(now, [_snap("connected", 0, since=now, age=0.5)], {11: "full"}, False)
    last_frame = now - timedelta(seconds=0.5)
    now += timedelta(seconds=1)
    down = tracker.observe(now, [_snap("backoff", 0, since=now)], {11: "full", 12: "ltp"}, True)
    assert kinds(down) == ["connection_down", "subscriptions_changed", "spooling_started"]
    assert down[0].reason == "closed_by_server" and down[1].instruments == [12]
    now += timedelta(seconds=2)
    back = tracker.observe(now, [_snap("connected", 1, since=now)], {11: "full", 12: "ltp"}, False)
    assert kinds(back) == ["connection_up", "gap", "spooling_stopped"]
    gap = back[1]
    assert (gap.start, gap.end, gap.instruments) == (last_frame, now, [11, 12])
    # Down and up again between two samples: seen through the reconnect count.
    now += timedelta(seconds=5)
    bounced = tracker.observe(
        now, [_snap("connected", 2, since=now)], {11: "full", 12: "ltp"}, False
    )
    assert kinds(bounced) == ["connection_down", "connection_up", "gap"]
    # Token rejected, then a new one works.
    now += timedelta(seconds=1)
    auth = tracker.observe(
        now, [_snap("auth_required", 3, since=now)], {11: "full", 12: "ltp"}, False
    )
    assert kinds(auth) == ["connection_down", "auth_required"]
    now += timedelta(seconds=1)
    restored = tracker.observe(
        now, [_snap("connected", 4, since=now)], {11: "full", 12: "ltp"}, False
    )
    assert kinds(restored) == ["connection_up", "auth_restored", "gap"]


def test_simulated_postback_is_what_the_official_client_hands_on_order_update() -> None:
    from kiteconnect import KiteTicker

    from alphapanda.sim.orders import order_message, order_postback

    order = order_postback({"status": "OPEN"})
    received: list[dict[str, Any]] = []
    ticker = KiteTicker("key", "token")
    ticker.on_order_update = lambda _ws, data: received.append(data)
    ticker._parse_text_message(order_message(order).encode())
    assert received == [order]
    assert order["status"] == "OPEN" and {"order_id", "exchange_order_id", "average_price"} <= set(
        order
    )


def test_candle_history_keeps_the_last_bars_oldest_first() -> None:
    from alphapanda.streams.history import CandleHistory

    history = CandleHistory("1m", bars=3)
    assert history.recent(NSE_TOKEN) == []
    for i in range(5):
        start = T0 + timedelta(minutes=i)
        volume = None if i == 4 else 10 * i
        history.record(
            Candle(
                NSE_TOKEN,
                "1m",
                start,
                start + timedelta(minutes=1),
                i,
                i + 1,
                i - 0.5,
                i,
                volume,
                None,
                1,
                i != 2,
            )
        )
    bars = history.recent(NSE_TOKEN)
    assert [b["open"] for b in bars] == [2, 3, 4]
    assert bars[0]["start"] == "2026-12-01T04:02:00Z"
    assert [b["volume"] for b in bars] == [20, 30, None]
    assert [b["complete"] for b in bars] == [False, True, True]
    assert [b["open"] for b in history.recent(NSE_TOKEN, 2)] == [3, 4]
