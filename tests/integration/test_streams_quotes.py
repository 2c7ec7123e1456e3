"""market.quotes.latest: compacted, at most one write per instrument per interval, the
latest value of every streaming instrument; GET /quotes from the same state."""

from __future__ import annotations

import asyncio
import itertools
import json

import msgspec
from confluent_kafka.admin import AdminClient, ConfigResource

from alphapanda.testing import eventually
from alphapanda.topics import TopicNames
from tests.integration.test_api import SettingsFor, running_feed
from tests.support.derived import read_raw
from tests.support.feed import quiesce

# Longer than the simulator's per-instrument cadence (about 1 s), so conflation shows.
INTERVAL_MS = 1500


def _topic_config(bootstrap: str, topic: str) -> dict[str, str]:
    admin = AdminClient({"bootstrap.servers": bootstrap})
    resource = ConfigResource(ConfigResource.Type.TOPIC, topic)
    entries = admin.describe_configs([resource])[resource].result(timeout=15)
    return {name: entry.value for name, entry in entries.items()}


async def test_latest_quotes_topic_and_api(settings_for: SettingsFor, unique: str) -> None:
    async with running_feed(settings_for, unique, quotes={"interval_ms": INTERVAL_MS}) as feed:
        parts, http = feed.parts, feed.http
        derived = parts.derived
        assert derived is not None
        streaming = set(parts.client.subscriptions())
        await eventually(
            lambda: set(derived.quotes.tokens()) == streaming, timeout=30.0, what="every quote"
        )
        await asyncio.sleep(5)  # several intervals of writes
        await quiesce(feed.sim, parts)
        await asyncio.sleep(INTERVAL_MS / 1000 * 3)  # the last dirty quotes are written
        producer = derived._producer
        assert producer is not None
        await eventually(lambda: producer.pending == 0, timeout=30.0, what="quotes acked")
        latest = {t: derived.quotes.get(t) for t in streaming}

        # API: one, several (with an unknown one), all; 404 for an unknown instrument.
        token = min(streaming)
        one = (await http.get(f"/quotes/{token}")).json()
        assert one == msgspec.to_builtins(latest[token])
        several = (
            await http.get("/quotes", params={"tokens": f"{token},1,{max(streaming)}"})
        ).json()
        assert set(several["quotes"]) == {str(token), str(max(streaming))}
        assert several["missing"] == [1]
        everything = (await http.get("/quotes")).json()
        assert set(everything["quotes"]) == {str(t) for t in streaming}
        assert (await http.get("/quotes/1")).status_code == 404
        assert (await http.get("/quotes", params={"tokens": "x"})).status_code == 422

    bootstrap = feed.settings.kafka.bootstrap_servers
    topic = TopicNames.market_quotes_latest(feed.settings.kafka.topic_prefix)
    config = await asyncio.to_thread(_topic_config, bootstrap, topic)
    assert config["cleanup.policy"] == "compact"

    records = await asyncio.to_thread(read_raw, bootstrap, topic)
    last: dict[bytes, dict[str, object]] = {}
    writes: dict[bytes, list[float]] = {}
    for record in sorted(records, key=lambda r: (r.partition, r.offset)):
        assert record.key is not None
        envelope = json.loads(record.value)
        assert envelope["event_type"] == "market_tick" and envelope["schema_version"] == 1
        last[record.key] = envelope["data"]
        # When it was written (the producer's time): a quote's emitted_at is its tick's.
        writes.setdefault(record.key, []).append(record.timestamp_ms / 1000)
    # A fresh reader keeping the last value per key has exactly one current value for
    # every streaming instrument: the feed's own latest tick.
    assert set(last) == {str(t).encode() for t in streaming}
    for t in streaming:
        assert last[str(t).encode()] == msgspec.to_builtins(latest[t])
    # Each quote record is its tick's market.ticks record, byte for byte.
    ticks_topic = TopicNames.market_ticks(feed.settings.kafka.topic_prefix)
    tick_values = {r.value for r in await asyncio.to_thread(read_raw, bootstrap, ticks_topic)}
    assert all(record.value in tick_values for record in records)
    # Conflated: never two writes of one instrument within the interval.
    gaps = [b - a for times in writes.values() for a, b in itertools.pairwise(times)]
    assert gaps and min(gaps) >= INTERVAL_MS / 1000 * 0.95
    assert derived.quotes.conflated > 0


async def test_the_latest_quotes_are_written_when_the_feed_stops(
    settings_for: SettingsFor, unique: str
) -> None:
    # An interval longer than the run: only the stop writes what changed since the
    # first write. A strategy reading the topic after a stop must find every
    # instrument's last tick, not one from up to an interval before.
    async with running_feed(settings_for, unique, quotes={"interval_ms": 60_000}) as feed:
        parts = feed.parts
        derived = parts.derived
        assert derived is not None
        streaming = set(parts.client.subscriptions())
        await eventually(
            lambda: set(derived.quotes.tokens()) == streaming, timeout=30.0, what="every quote"
        )
        first = {t: derived.quotes.get(t) for t in streaming}
        await eventually(
            lambda: all(derived.quotes.get(t) != first[t] for t in streaming),
            timeout=30.0,
            what="every instrument ticked again",
        )
        await quiesce(feed.sim, parts)
    latest = {str(t).encode(): msgspec.to_builtins(derived.quotes.get(t)) for t in streaming}
    bootstrap = feed.settings.kafka.bootstrap_servers
    topic = TopicNames.market_quotes_latest(feed.settings.kafka.topic_prefix)
    records = await asyncio.to_thread(read_raw, bootstrap, topic)
    last = {
        r.key: json.loads(r.value)["data"]
        for r in sorted(records, key=lambda r: (r.partition, r.offset))
    }
    assert last == latest
