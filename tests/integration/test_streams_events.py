"""market.feed.events through real faults: connection down/up with a gap, token
expiry and recovery, a subscription change, and start/stop with the accounting."""

from __future__ import annotations

import asyncio
import json
from datetime import datetime
from typing import Any

from alphapanda.service import MarketFeedService
from alphapanda.topics import TopicNames
from tests.support.derived import read_raw
from tests.support.feed import eventually, feed_settings
from tests.support.sim import running_simulator


class MutableToken:
    def __init__(self, token: str) -> None:
        self.token = token

    async def get_access_token(self) -> str:
        return self.token


async def test_feed_events_from_real_faults(settings_for) -> None:  # type: ignore[no-untyped-def]
    async with running_simulator(ticks_per_second=300, heartbeat_interval=0.5) as sim:
        settings = feed_settings(settings_for, sim)
        settings = settings.model_copy(
            update={
                "kite": settings.kite.model_copy(
                    update={
                        "max_connections": 2,
                        "max_instruments_per_connection": 100,
                        "reconnect_base_delay": 0.05,
                        "reconnect_max_delay": 0.3,
                        "auth_retry_delay": 0.3,
                        "auth_poll_interval": 0.1,
                    }
                )
            }
        )
        tokens = MutableToken(sim.access_token)
        service = MarketFeedService(settings, tokens=tokens)
        derived = service.derived
        assert derived is not None
        count = lambda kind: derived.tracker_counts.get(kind, 0)  # noqa: E731
        async with asyncio.TaskGroup() as tg:
            tg.create_task(service.run())
            await eventually(lambda: count("connection_up") == 2, what="both shards up")
            await asyncio.sleep(1)
            assert await sim.fault_drop() == 2
            await eventually(lambda: count("gap") == 2, what="a gap per shard")
            await asyncio.sleep(0.5)
            await sim.expire_token()
            await eventually(lambda: count("auth_required") == 2, what="auth_required")
            await sim.set_token("day-2-token")
            tokens.token = "day-2-token"
            await eventually(lambda: count("auth_restored") == 2, what="auth_restored")
            subscribed = service.client.subscriptions()
            dropped = sorted(subscribed)[:5]
            await service.client.unsubscribe(dropped)
            await eventually(lambda: count("subscriptions_changed") == 1, what="subscriptions")
            await asyncio.sleep(0.5)
            service.request_stop()
    prefix = settings.kafka.topic_prefix
    raw = await asyncio.to_thread(
        read_raw, settings.kafka.bootstrap_servers, TopicNames.market_feed_events(prefix)
    )
    events: list[tuple[bytes | None, dict[str, Any]]] = []
    for record in raw:
        envelope = json.loads(record.value)
        assert envelope["event_type"] == "feed_event"
        events.append((record.key, envelope["data"]))
    events.sort(key=lambda e: (e[1]["at"], e[1]["kind"]))
    kinds = [e["kind"] for _, e in events]
    assert kinds[0] == "feed_started" and kinds[-1] == "feed_stopped", kinds
    for kind, n in {
        "connection_up": 6,  # start, after the drop, after the new token
        "connection_down": 6,  # the drop, the expiry, the shutdown
        "gap": 4,
        "auth_required": 2,
        "auth_restored": 2,
        "subscriptions_changed": 2,  # ours, and the shutdown's unsubscribe-all
    }.items():
        assert kinds.count(kind) == n, (kind, kinds)
    stopped = events[-1][1]
    assert stopped["accounting"]["received"] == service.accounting.received
    assert stopped["accounting"]["published"] == service.accounting.published
    for key, event in events:
        shard_kinds = ("connection_up", "connection_down", "gap", "auth_required", "auth_restored")
        if event["kind"] in shard_kinds:
            assert key == b"shard-%d" % event["shard"]
        else:
            assert key == b"feed"
        if event["kind"] == "gap":
            start, end = (
                datetime.fromisoformat(event["start"]),
                datetime.fromisoformat(event["end"]),
            )
            assert start < end
            assert event["instruments"]
        if event["kind"] == "connection_down":
            assert event["reason"] and event["instruments"]
    ours, shutdown = [e for _, e in events if e["kind"] == "subscriptions_changed"]
    assert ours["removed"] == dropped and ours["instruments"] == []
    assert len(shutdown["removed"]) == len(subscribed) - len(dropped)
    downs = [e for _, e in events if e["kind"] == "connection_down"]
    assert [e["reason"] for e in downs[-2:]] == ["stopped", "stopped"]
