"""Read Alpha Panda's market ticks from Kafka: a starting point for a strategy.

    python examples/consume_ticks.py --bootstrap 127.0.0.1:19092 --topic-prefix "" \
        --group my-strategy

What it shows (docs/consuming.md explains each point):

* the topic is ``<ALPHAPANDA_KAFKA__TOPIC_PREFIX>market.ticks``; the key is the
  instrument token, so one instrument's ticks stay in order on one partition;
* the value is JSON (or msgpack: see the ``content-type`` header) with
  ``schema_version`` 1 — anything else is skipped, not guessed at;
* ``id`` is unique per event: a redelivered record (after a producer retry or a
  consumer restart before its commit) is dropped by a bounded de-duplication window;
* a record with the header ``replayed`` came from ``alphapanda replay``, not the
  market; a tick whose Kafka timestamp is well after ``data.received_at`` was held in
  the feed's disk spool during a broker outage (late, but in order).

Only needs ``confluent-kafka`` (and ``msgpack`` decoding through ``msgspec`` if the feed
uses ``ALPHAPANDA_FEED__WIRE_FORMAT=msgpack``).
"""

from __future__ import annotations

import argparse
import json
import signal
import sys
from collections import OrderedDict
from typing import Any

import msgspec
from confluent_kafka import Consumer, KafkaError

SCHEMA_VERSION = b"1"
# Ticks whose broker timestamp is this much later than their receive time were delayed
# (spooled during a broker outage, or a consumer far behind); report them as late.
LATE_AFTER_MS = 5_000


class DedupeWindow:
    """The last ``size`` event ids seen; ``seen(id)`` is True for a repeat."""

    def __init__(self, size: int) -> None:
        self.size = size
        self._ids: OrderedDict[str, None] = OrderedDict()

    def seen(self, event_id: str) -> bool:
        if event_id in self._ids:
            return True
        self._ids[event_id] = None
        if len(self._ids) > self.size:
            self._ids.popitem(last=False)
        return False


def decode(value: bytes, content_type: bytes) -> dict[str, Any]:
    if content_type == b"application/msgpack":
        return msgspec.msgpack.decode(value)  # type: ignore[no-any-return]
    return json.loads(value)  # type: ignore[no-any-return]


def main() -> int:
    parser = argparse.ArgumentParser(description="Print Alpha Panda market ticks.")
    parser.add_argument("--bootstrap", default="127.0.0.1:19092", help="Kafka bootstrap servers")
    parser.add_argument("--topic-prefix", default="", help="ALPHAPANDA_KAFKA__TOPIC_PREFIX")
    parser.add_argument("--group", default="alphapanda-example", help="consumer group id")
    parser.add_argument(
        "--from-beginning", action="store_true", help="a new group starts at the oldest record"
    )
    parser.add_argument("--max-ticks", type=int, default=0, help="stop after N ticks (0: never)")
    parser.add_argument(
        "--idle-exit", type=float, default=0.0, help="stop after N s without records (0: never)"
    )
    parser.add_argument(
        "--dedupe-window", type=int, default=200_000, help="event ids remembered for dedupe"
    )
    args = parser.parse_args()

    topic = f"{args.topic_prefix}market.ticks"
    consumer = Consumer(
        {
            "bootstrap.servers": args.bootstrap,
            "group.id": args.group,
            "auto.offset.reset": "earliest" if args.from_beginning else "latest",
            # Commit after processing (at-least-once); the dedupe window absorbs repeats.
            "enable.auto.commit": True,
            "enable.auto.offset.store": False,
        }
    )
    consumer.subscribe([topic])
    stop = False

    def request_stop(*_: object) -> None:
        nonlocal stop
        stop = True

    signal.signal(signal.SIGINT, request_stop)
    signal.signal(signal.SIGTERM, request_stop)
    window = DedupeWindow(args.dedupe_window)
    figures = {"ticks": 0, "duplicates": 0, "replayed": 0, "late": 0, "skipped": 0}
    idle = 0.0
    try:
        while not stop:
            message = consumer.poll(0.5)
            if message is None:
                idle += 0.5
                if args.idle_exit and idle >= args.idle_exit:
                    break
                continue
            idle = 0.0
            error = message.error()
            if error is not None:
                if error.code() != KafkaError._PARTITION_EOF:
                    print(f"kafka error: {error}", file=sys.stderr)
                continue
            headers = dict(message.headers() or [])
            if headers.get("schema_version") != SCHEMA_VERSION:
                figures["skipped"] += 1  # a version this consumer does not know
                consumer.store_offsets(message)
                continue
            event = decode(message.value() or b"", headers.get("content-type", b""))
            if window.seen(event["id"]):
                figures["duplicates"] += 1
                consumer.store_offsets(message)
                continue
            tick = event["data"]
            flags = []
            if "replayed" in headers:
                flags.append("REPLAYED")
                figures["replayed"] += 1
            _kind, broker_ms = message.timestamp()
            if broker_ms - tick["received_at_ns"] // 1_000_000 > LATE_AFTER_MS:
                flags.append("LATE")
                figures["late"] += 1
            print(
                f"{tick['instrument_token']:>10} {tick['mode']:<5} {tick['last_price']:>12} "
                f"received {tick['received_at']} {' '.join(flags)}".rstrip()
            )
            figures["ticks"] += 1
            consumer.store_offsets(message)
            if args.max_ticks and figures["ticks"] >= args.max_ticks:
                break
    finally:
        consumer.close()  # commits the stored offsets
        print(json.dumps(figures), file=sys.stderr)
    return 0


if __name__ == "__main__":
    sys.exit(main())
