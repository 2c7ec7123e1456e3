"""Candles on market.candles.<interval> equal an independent recomputation from the
consumed market.ticks, field by field."""

from __future__ import annotations

import asyncio
import json
from datetime import datetime

import pytest

from alphapanda.testing import eventually
from alphapanda.topics import TopicNames
from tests.support.candles import recompute
from tests.support.derived import read_raw
from tests.support.feed import assert_topic_holds_published, feed_settings, new_feed, quiesce
from tests.support.ledger import read_topic
from tests.support.sim import running_simulator

INTERVAL = "5s"


# Both hot paths: on the native one the derived streams format its ticks themselves.
@pytest.mark.parametrize("hot_path", ["native", "python"])
async def test_candles_match_recomputation_from_ticks(settings_for, hot_path: str) -> None:  # type: ignore[no-untyped-def]
    async with running_simulator(ticks_per_second=400) as sim:
        settings = feed_settings(settings_for, sim, hot_path=hot_path)
        settings = settings.model_copy(
            update={
                "candles": settings.candles.model_copy(update={"intervals": INTERVAL}),
            }
        )
        feed, service = new_feed(settings)
        assert feed.hot_path.impl == hot_path
        derived = feed.derived
        assert derived is not None
        (agg,) = derived.aggregators
        async with asyncio.TaskGroup() as tg:
            tg.create_task(service.run())
            await eventually(lambda: service.readiness()[0], timeout=30.0, what="ready")
            # Three full buckets at least, then silence until every bar is closed.
            try:
                await eventually(lambda: agg.emitted >= 100, timeout=40, what="bars")
            except AssertionError as exc:
                figures = (agg.emitted, agg.late, agg.ticks_by_source, derived.ticks_offered)
                raise AssertionError(f"{exc}: emitted/late/sources/offered {figures}") from None
            await asyncio.sleep(11)
            await quiesce(sim, feed)
            await eventually(lambda: agg.next_due() is None, timeout=15, what="all bars closed")
            await eventually(
                lambda: derived._producer is not None and derived._producer.pending == 0,
                timeout=30.0,
                what="candles acked",
            )
            service.request_stop()
    assert agg.late == 0
    assert agg.ticks_by_source["exchange"] > 0
    bootstrap = settings.kafka.bootstrap_servers
    ticks = await asyncio.to_thread(read_topic, bootstrap, feed.topic)
    assert_topic_holds_published(ticks, feed)
    ticks.sort(key=lambda r: (r.partition, r.offset))
    topic = TopicNames.market_candles(INTERVAL, settings.kafka.topic_prefix)
    raw = await asyncio.to_thread(read_raw, bootstrap, topic)
    got = []
    for record in raw:
        envelope = json.loads(record.value)
        assert envelope["schema_version"] == 1 and envelope["event_type"] == "candle"
        assert record.headers["event_type"] == b"candle"
        c = envelope["data"]
        assert record.key == str(c["instrument_token"]).encode()
        assert c["interval"] == INTERVAL
        start = datetime.fromisoformat(c["start"])
        assert (datetime.fromisoformat(c["end"]) - start).total_seconds() == 5
        got.append(
            (
                c["instrument_token"],
                start,
                c["open"],
                c["high"],
                c["low"],
                c["close"],
                c["volume"],
                c["oi"],
                c["ticks"],
                c["complete"],
            )
        )
    expected = [
        (
            n.instrument_token,
            n.start,
            n.open,
            n.high,
            n.low,
            n.close,
            n.volume,
            n.oi,
            n.ticks,
            n.complete,
        )
        for n in recompute([r.tick for r in ticks], 5)
    ]
    assert len(got) == len(expected) == agg.emitted
    assert sorted(got) == sorted(expected)
    # Each traded instrument's first bar has no volume before it; the rest are complete.
    # Indices carry prices only (no volume, always complete).
    traded = {g[0] for g in got if g[6] is not None}
    assert traded and len(traded) < len({g[0] for g in got})
    assert all(g[6] is None and g[7] is None for g in got if g[0] not in traded)
    assert sum(1 for g in got if not g[-1]) == len(traded)
    assert sum(g[8] for g in got) == len(ticks)
