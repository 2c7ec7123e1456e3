"""Kite order postbacks on the ticker socket -> zerodha.orders.updates, as Kite sent them."""

from __future__ import annotations

import asyncio
import json

from alphapanda.service import MarketFeedService
from alphapanda.topics import TopicNames
from tests.support.derived import read_raw
from tests.support.feed import eventually, feed_settings
from tests.support.sim import running_simulator


async def test_order_updates_reach_their_topic(settings_for) -> None:  # type: ignore[no-untyped-def]
    async with running_simulator(ticks_per_second=200, heartbeat_interval=0.5) as sim:
        settings = feed_settings(settings_for, sim)
        settings = settings.model_copy(
            update={
                "kite": settings.kite.model_copy(
                    update={"max_connections": 2, "max_instruments_per_connection": 50}
                )
            }
        )
        service = MarketFeedService(settings)
        derived = service.derived
        assert derived is not None
        async with asyncio.TaskGroup() as tg:
            tg.create_task(service.run())
            await eventually(lambda: len(service.client.statuses()) == 2, what="statuses")
            await eventually(
                lambda: all(s.state == "connected" for s in service.client.statuses()),
                what="both shards connected",
            )
            sent = [
                await sim.order_postback(status="OPEN", filled_quantity=0, quantity=5),
                await sim.order_postback(status="COMPLETE", tradingsymbol="SBIN"),
                await sim.order_postback(status="REJECTED", status_message="RMS: margin"),
            ]
            other = await sim.order_postback(api_key="someone-else")
            assert [s["sent"] for s in sent] == [2, 2, 2] and other["sent"] == 0
            # Each postback arrives on both sockets: published once, the copy counted.
            await eventually(lambda: derived.orders_received == 6, what="order messages")
            await eventually(
                lambda: (
                    derived._producer is not None
                    and derived._producer.counts["orders"].delivered == 3
                ),
                what="orders acked",
            )
            service.request_stop()
    assert derived.orders_duplicate == 3 and derived.orders_lost == 0
    raw = await asyncio.to_thread(
        read_raw,
        settings.kafka.bootstrap_servers,
        TopicNames.zerodha_orders_updates(settings.kafka.topic_prefix),
    )
    assert len(raw) == 3
    by_id = {}
    for record in raw:
        envelope = json.loads(record.value)
        assert envelope["broker"] == "zerodha" and envelope["event_type"] == "order_update"
        assert record.headers["event_type"] == b"order_update"
        order = envelope["data"]["order"]
        assert record.key == order["order_id"].encode()
        assert envelope["data"]["received_at"].endswith("Z")
        by_id[order["order_id"]] = order
    # The order object exactly as the simulator (as Kite) sent it.
    assert by_id == {s["order"]["order_id"]: s["order"] for s in sent}
