"""``examples/consume_ticks.py`` against the real stack: a live feed (simulator →
Kafka), a replay into the same topic, and one redelivered record. The example must
print every tick once, flag the replayed ones and drop the repeat."""

from __future__ import annotations

import asyncio
import json
import subprocess
import sys
from collections.abc import Callable

import pytest
from confluent_kafka import Consumer, Producer, TopicPartition

from alphapanda.kite.protocol import decode_message
from alphapanda.recording import RecordingReader
from alphapanda.replay import replay_to_kafka
from alphapanda.settings import Settings
from alphapanda.testing import eventually
from tests.support.feed import assert_books_balance, feed_settings, new_feed, quiesce
from tests.support.services import ROOT, SHARED_KAFKA
from tests.support.sim import running_simulator

EXAMPLE = ROOT / "examples" / "consume_ticks.py"
SAMPLE = ROOT / "tests" / "data" / "sample_full.aprec"


def _redeliver_first_record(topic: str) -> None:
    """Produce a byte-for-byte copy of partition 0's first record (same key, value,
    headers), as a producer retry or a re-run would."""
    consumer = Consumer({"bootstrap.servers": SHARED_KAFKA, "group.id": "copy-first"})
    try:
        consumer.assign([TopicPartition(topic, 0, 0)])
        message = None
        while message is None or message.error() is not None:
            message = consumer.poll(5.0)
    finally:
        consumer.close()
    producer = Producer({"bootstrap.servers": SHARED_KAFKA})
    producer.produce(topic, message.value(), message.key(), partition=0, headers=message.headers())
    assert producer.flush(10) == 0


# Counts what a subprocess printed within a time window: runs alone.
@pytest.mark.serial
async def test_consume_example_reads_flags_and_dedupes(
    settings_for: Callable[..., Settings], unique: str
) -> None:
    async with running_simulator(ticks_per_second=1000) as sim:
        settings = feed_settings(settings_for, sim)
        feed, service = new_feed(settings)
        async with asyncio.TaskGroup() as tg:
            tg.create_task(service.run())
            await eventually(
                lambda: feed.accounting.published >= 800, timeout=30.0, what="800 acks"
            )
            await quiesce(sim, feed)
            service.request_stop()
    assert_books_balance(feed)
    live = feed.accounting.published

    _, replayer = await replay_to_kafka(SAMPLE, settings, speed=None)
    replayed = sum(len(decode_message(r.frame, 0).ticks) for r in RecordingReader(SAMPLE))
    assert replayer.accounting.published == replayed > 0
    await asyncio.to_thread(_redeliver_first_record, feed.topic)

    proc = await asyncio.to_thread(
        subprocess.run,
        [
            sys.executable,
            str(EXAMPLE),
            "--bootstrap",
            SHARED_KAFKA,
            "--topic-prefix",
            settings.kafka.topic_prefix,
            "--group",
            f"example-{unique}",
            "--from-beginning",
            "--idle-exit",
            "6",
        ],
        capture_output=True,
        text=True,
        timeout=120,
        check=False,
    )
    assert proc.returncode == 0, proc.stderr[-2000:]
    figures = json.loads(proc.stderr.strip().splitlines()[-1])
    assert figures == {
        "ticks": live + replayed,
        "duplicates": 1,
        "replayed": replayed,
        "late": figures["late"],
        "skipped": 0,
    }
    lines = proc.stdout.splitlines()
    assert len(lines) == live + replayed
    assert sum("REPLAYED" in line.split() for line in lines) == replayed
