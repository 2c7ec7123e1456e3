"""Record raw frames from the simulator, replay them into Kafka and to stdout.

The live feed records its own frames (``RecordingWriter`` as its frame listener) while
publishing to one topic; the recording is then replayed through a second feed into a
second topic. Both topics must hold the same records: same keys, in the same order per
key, with the same ``data`` (only the event ``id`` and ``emitted_at`` differ).
"""

from __future__ import annotations

import asyncio
import json
import os
import subprocess
import sys
import uuid
from pathlib import Path
from typing import Any

from confluent_kafka import Consumer, TopicPartition

from alphapanda.kite.protocol import decode_message
from alphapanda.parts import FeedParts
from alphapanda.recording import RecordingReader, RecordingWriter, encode_record
from alphapanda.replay import replay_to_kafka, replay_to_stdout
from alphapanda.service import MarketFeedService
from alphapanda.settings import Settings
from alphapanda.testing import eventually
from tests.support.feed import (
    assert_books_balance,
    assert_topic_holds_published,
    feed_settings,
    new_feed,
    quiesce,
)
from tests.support.ledger import read_topic
from tests.support.services import ROOT, SHARED_KAFKA
from tests.support.sim import INSTRUMENTS_CSV, running_simulator


def _read_all(bootstrap: str, topic: str) -> dict[bytes, list[dict[str, Any]]]:
    """key -> the events of that key in partition order (blocking)."""
    consumer = Consumer({"bootstrap.servers": bootstrap, "group.id": f"rr-{uuid.uuid4().hex}"})
    by_key: dict[bytes, list[dict[str, Any]]] = {}
    try:
        partitions = consumer.list_topics(topic, timeout=30).topics[topic].partitions
        highs = {}
        for p in partitions:
            low, high = consumer.get_watermark_offsets(TopicPartition(topic, p), timeout=30)
            if high > low:
                highs[p] = high
        consumer.assign([TopicPartition(topic, p, 0) for p in highs])
        seen = dict.fromkeys(highs, 0)
        while any(seen[p] < highs[p] for p in highs):
            for message in consumer.consume(5000, 1.0):
                assert message.error() is None, message.error()
                partition = message.partition()
                assert partition is not None
                seen[partition] = (message.offset() or 0) + 1
                value = message.value()
                assert isinstance(value, bytes)
                event = json.loads(value)
                event["_headers"] = dict(message.headers() or [])
                by_key.setdefault(message.key() or b"", []).append(event)
    finally:
        consumer.close()
    return by_key


def _data_only(events: list[dict[str, Any]]) -> list[dict[str, Any]]:
    for event in events:
        assert event["schema_version"] == 1 and event["event_type"] == "market_tick"
    return [event["data"] for event in events]


def _record_live(settings: Settings, path: Path) -> tuple[FeedParts, MarketFeedService]:
    writer = RecordingWriter(path, {"mode": "full"})
    # The writer runs beside the feed: stopped after the publisher has drained.
    return new_feed(settings, frame_listener=writer.on_frame, services=[writer])


async def test_replay_to_kafka_publishes_what_the_live_feed_published(
    settings_for, unique: str, tmp_path: Path
) -> None:  # type: ignore[no-untyped-def]
    path = tmp_path / "session.aprec"
    async with running_simulator(ticks_per_second=1500) as sim:
        live_settings = feed_settings(settings_for, sim)
        feed, service = _record_live(live_settings, path)
        async with asyncio.TaskGroup() as tg:
            tg.create_task(service.run())
            await eventually(
                lambda: feed.accounting.published >= 2500, timeout=30.0, what="2500 acks"
            )
            stats = await quiesce(sim, feed)
            service.request_stop()
    assert_books_balance(feed)
    assert feed.accounting.dropped_total == 0
    bootstrap = live_settings.kafka.bootstrap_servers
    in_topic = await asyncio.to_thread(read_topic, bootstrap, feed.topic)
    assert_topic_holds_published(in_topic, feed, stats["ticks_sent"])
    live_ticks = feed.accounting.published

    records = list(RecordingReader(path))
    assert sum(len(decode_message(r.frame, 0).ticks) for r in records) == live_ticks

    replay_settings = settings_for(kafka={"topic_prefix": f"test.{unique}.replay."})
    source, replayer = await replay_to_kafka(path, replay_settings, speed=None)
    assert source.stats.ticks == live_ticks and source.stats.frames == len(records)
    assert_books_balance(replayer)
    assert replayer.accounting.published == live_ticks
    assert replayer.topic != feed.topic

    live = await asyncio.to_thread(_read_all, bootstrap, feed.topic)
    replayed = await asyncio.to_thread(_read_all, bootstrap, replayer.topic)
    assert sum(map(len, live.values())) == live_ticks
    assert set(replayed) == set(live)
    for key, events in live.items():
        assert _data_only(replayed[key]) == _data_only(events), key
    ids = {e["id"] for events in live.values() for e in events}
    assert not ids & {e["id"] for events in replayed.values() for e in events}
    # A replayed record says so, with the original receive time; a live one does not.
    for events in replayed.values():
        for event in events:
            assert event["_headers"]["replayed"] == b"%d" % event["data"]["received_at_ns"]
    assert not any("replayed" in e["_headers"] for events in live.values() for e in events)


async def test_replay_paced_to_stdout_and_cli_tolerates_a_truncated_tail(
    settings_for, tmp_path: Path
) -> None:  # type: ignore[no-untyped-def]
    path = tmp_path / "short.aprec"
    async with running_simulator(ticks_per_second=1000) as sim:
        settings = feed_settings(settings_for, sim)
        feed, service = _record_live(settings, path)
        async with asyncio.TaskGroup() as tg:
            tg.create_task(service.run())
            await eventually(
                lambda: feed.accounting.published >= 500, timeout=30.0, what="500 acks"
            )
            service.request_stop()
    records = list(RecordingReader(path))
    ticks_per_record = [len(decode_message(r.frame, 0).ticks) for r in records]
    assert sum(ticks_per_record) >= 500

    # In process, at 50x the recorded pace: one line per tick, in recorded order.
    out = tmp_path / "lines.jsonl"
    with out.open("wb") as f:
        source, sink = await replay_to_stdout(path, settings, f, speed=50.0)
    lines = out.read_bytes().splitlines()
    assert len(lines) == sink.lines == sum(ticks_per_record) == source.stats.ticks
    first_tick = decode_message(records[0].frame, records[0].received_at_ns).ticks[0]
    first_line = json.loads(lines[0])["data"]
    assert first_line["instrument_token"] == first_tick.instrument_token
    assert first_line["received_at"].startswith("20")

    # The CLI on a copy cut in the middle of its last record: the complete ones replay.
    cut = tmp_path / "cut.aprec"
    whole = path.read_bytes()
    last = records[-1]
    cut.write_bytes(whole[: -len(encode_record(last.received_at_ns, last.frame)) // 2])
    proc = await asyncio.to_thread(
        subprocess.run,
        [sys.executable, "-m", "alphapanda", "replay", str(cut), "--to", "stdout", "--fast"],
        cwd=ROOT,
        capture_output=True,
        timeout=60,
        check=False,
    )
    assert proc.returncode == 0, proc.stderr.decode()[-2000:]
    assert len(proc.stdout.splitlines()) == sum(ticks_per_record[:-1])
    assert b"partial record" in proc.stderr


async def test_record_cli_captures_frames_from_the_simulator(tmp_path: Path) -> None:
    out = tmp_path / "cli.aprec"
    async with running_simulator(ticks_per_second=800) as sim:
        env = {k: v for k, v in os.environ.items() if not k.startswith("ALPHAPANDA_")}
        env.update(
            ALPHAPANDA_KITE__WS_URL=sim.ws_url,
            ALPHAPANDA_KITE__API_KEY=sim.api_key,
            ALPHAPANDA_KITE__ACCESS_TOKEN=sim.access_token,
        )
        argv = [sys.executable, "-m", "alphapanda", "record", "--out", str(out)]
        argv += ["--seconds", "2", "--mode", "quote", "--instruments", str(INSTRUMENTS_CSV)]
        proc = await asyncio.create_subprocess_exec(
            *argv, cwd=ROOT, env=env, stdout=asyncio.subprocess.PIPE, stderr=asyncio.subprocess.PIPE
        )
        _, stderr = await asyncio.wait_for(proc.communicate(), 60)
    assert proc.returncode == 0, stderr.decode()[-2000:]
    reader = RecordingReader(out)
    records = list(reader)
    ticks = [t for r in records for t in decode_message(r.frame, r.received_at_ns).ticks]
    assert reader.tail == "clean" and reader.meta["mode"] == "quote"
    assert sim.access_token not in out.read_bytes().decode("latin-1")
    assert len(ticks) > 200 and {t.mode for t in ticks} == {"quote"}
    assert f"recorded {len(records)} frames ({len(ticks)} ticks".encode() in stderr
    # Frames are kept in arrival order with their receive times.
    times = [r.received_at_ns for r in records]
    assert times == sorted(times)


async def test_replay_cli_needs_a_destination_and_marks_what_it_writes(unique: str) -> None:
    sample = ROOT / "tests" / "data" / "sample_full.aprec"
    env = {k: v for k, v in os.environ.items() if not k.startswith("ALPHAPANDA_")}
    env["ALPHAPANDA_KAFKA__BOOTSTRAP_SERVERS"] = SHARED_KAFKA

    def replay(*args: str) -> subprocess.CompletedProcess[bytes]:
        argv = [sys.executable, "-m", "alphapanda", "--env-file", "/nonexistent", "replay"]
        return subprocess.run(
            [*argv, str(sample), *args], cwd=ROOT, env=env, capture_output=True, timeout=120
        )

    # No default destination: the live topic is never written by accident.
    missing = await asyncio.to_thread(replay, "--fast")
    assert missing.returncode == 2 and b"--to" in missing.stderr

    prefix = f"test.{unique}.cli-replay."
    done = await asyncio.to_thread(
        replay, "--to", "kafka", "--topic-prefix", prefix, "--fast", "--no-progress"
    )
    assert done.returncode == 0, done.stderr.decode()[-2000:]
    ticks = sum(len(decode_message(r.frame, 0).ticks) for r in RecordingReader(sample))
    events = await asyncio.to_thread(_read_all, SHARED_KAFKA, f"{prefix}market.ticks")
    flat = [e for per_key in events.values() for e in per_key]
    assert len(flat) == ticks > 0
    assert all(e["_headers"]["replayed"] == b"%d" % e["data"]["received_at_ns"] for e in flat)
