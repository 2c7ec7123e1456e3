"""Consumer SDK logic: schema-version checks and gap awareness."""

from __future__ import annotations

import json
from datetime import UTC, datetime, timedelta

import pytest

from alphapanda.consumer import (
    CandleEvent,
    GapTracker,
    MarketTickEvent,
    UnsupportedSchemaVersion,
    decode_record,
)
from alphapanda.pipeline.wire import WireEncoder
from alphapanda.streams.candles import Candle
from alphapanda.streams.records import EnvelopeEncoder, FeedEvent
from tests.unit.test_candles import NSE_TOKEN, OPEN_NSE, tick

pytestmark = pytest.mark.unit
T0 = datetime(2026, 12, 1, 4, 0, tzinfo=UTC)


def test_records_decode_typed_and_refuse_unknown_versions() -> None:
    candle = Candle(NSE_TOKEN, "1m", T0, T0 + timedelta(minutes=1), 1, 2, 0.5, 1.5, 10, 3, 2, True)
    _, value, headers = EnvelopeEncoder().candle(candle)
    record = decode_record("candle", value, headers)
    assert isinstance(record, CandleEvent) and record.data == candle
    with pytest.raises(UnsupportedSchemaVersion, match="version 2"):
        decode_record("candle", value, [("schema_version", b"2")])
    bumped = json.dumps({**json.loads(value), "schema_version": 2}).encode()
    with pytest.raises(UnsupportedSchemaVersion, match="version 2"):
        decode_record("candle", bumped)
    with pytest.raises(UnsupportedSchemaVersion, match="expected a feed_event"):
        decode_record("feed_event", value)
    _, tick_value, tick_headers = WireEncoder().encode(tick(NSE_TOKEN, OPEN_NSE, 1.0), 0)
    decoded = decode_record("tick", tick_value, tick_headers)
    assert isinstance(decoded, MarketTickEvent) and decoded.data.last_price == 1.0


def test_gap_tracker_pauses_and_remembers_gaps() -> None:
    gaps = GapTracker()
    gaps.observe(FeedEvent("connection_up", T0, shard=0, instruments=[1, 2]))
    assert not gaps.paused
    gaps.observe(FeedEvent("connection_down", T0, shard=0, reason="x", instruments=[1, 2]))
    assert gaps.paused and gaps.is_paused(1) and not gaps.is_paused(3)
    end = T0 + timedelta(seconds=3)
    gaps.observe(FeedEvent("connection_up", end, shard=0, instruments=[1, 2]))
    gaps.observe(FeedEvent("gap", end, shard=0, instruments=[1, 2], start=T0, end=end))
    assert not gaps.paused
    assert gaps.gaps(1) == [(T0, end)]
    assert gaps.overlaps(1, T0 - timedelta(seconds=60), T0 + timedelta(seconds=1))
    assert not gaps.overlaps(1, end, end + timedelta(seconds=60))
    gaps.observe(FeedEvent("feed_stopped", end))
    assert gaps.is_paused(3)
