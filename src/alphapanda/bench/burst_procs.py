"""The two helper processes of ``bench burst``: a consumer and a reference producer.

Each runs in its own process so neither competes with the feed for its GIL, the way a
strategy and another service would. Run as ``python -m alphapanda.bench.burst_procs``:

``consume BOOTSTRAP TOPIC OUT``
    Reads ``TOPIC`` from the beginning until a line ``stop`` (or EOF) arrives on stdin;
    for every record it notes ``now - received_at_ns`` (the tick's frame receipt by the
    feed, the last field of a JSON record) and counts records per key. Writes
    ``{"latencies_ns": [...], "received_at_ns": [...], "per_key": {...}}`` to ``OUT``.
``reference BOOTSTRAP TOPIC KEYS_FILE VALUE_SIZE INTERVAL FRAMES``
    A bare confluent-kafka producer with the feed's producer settings: every
    ``INTERVAL`` seconds it produces one record per key, all at once, each
    ``VALUE_SIZE`` bytes with the feed's headers and stamped with that interval's start
    as ``received_at_ns`` (the values are pre-built; only the stamp is added), no
    delivery callbacks, ``FRAMES`` times, then flushes.
"""

from __future__ import annotations

import json
import sys
import threading
import time
from pathlib import Path
from typing import Final

from confluent_kafka import Consumer, KafkaError, Message, Producer, TopicPartition

from alphapanda.pipeline.producer import producer_config
from alphapanda.pipeline.wire import WireEncoder
from alphapanda.settings import Settings

_STAMP_DIGITS: Final = 19  # received_at_ns of any date this century


def received_at_ns_of(value: bytes) -> int:
    """The ``received_at_ns`` of a JSON record: its last field (``…:123}}``)."""
    return int(value[value.rindex(b":") + 1 : -2])


def take_available(consumer: Consumer, most: int, timeout: float) -> list[Message]:
    """Up to ``most`` records: waits at most ``timeout`` for the first, then takes only
    what is already there.

    Not ``consume(most, timeout)``: librdkafka returns from that only once ``most``
    records are in or the whole timeout has passed, so the last records of a frame sat
    in the consumer for up to the timeout and were timed late (by up to 50 ms here,
    differently from one frame to the next). A strategy reading record by record does
    not wait like that."""
    first = consumer.poll(timeout)
    if first is None:
        return []
    return [first, *consumer.consume(most - 1, 0)]


def consume(bootstrap: str, topic: str, out: Path) -> None:
    stop = threading.Event()

    def wait_for_stop() -> None:
        for line in sys.stdin:
            if line.strip() == "stop":
                break
        stop.set()

    threading.Thread(target=wait_for_stop, daemon=True).start()
    consumer = Consumer(
        {
            "bootstrap.servers": bootstrap,
            "group.id": f"bench-burst-{time.monotonic_ns()}",
            "enable.auto.commit": False,
            "auto.offset.reset": "earliest",
            "fetch.wait.max.ms": 10,
        }
    )
    metadata = consumer.list_topics(topic, timeout=30)
    partitions = metadata.topics[topic].partitions
    consumer.assign([TopicPartition(topic, p, 0) for p in partitions])
    latencies: list[int] = []
    stamps: list[int] = []
    per_key: dict[str, int] = {}
    clock = time.time_ns
    print("ready", flush=True)
    while not stop.is_set():
        batch = take_available(consumer, 1000, 0.05)
        now = clock()
        for message in batch:
            error = message.error()
            if error is not None:
                if error.code() != KafkaError._PARTITION_EOF:
                    raise RuntimeError(str(error))
                continue
            received = received_at_ns_of(message.value() or b"")
            latencies.append(now - received)
            stamps.append(received)
            key = (message.key() or b"").decode()
            per_key[key] = per_key.get(key, 0) + 1
    consumer.close()
    out.write_text(
        json.dumps({"latencies_ns": latencies, "received_at_ns": stamps, "per_key": per_key})
    )


def reference(
    bootstrap: str, topic: str, keys_file: Path, value_size: int, interval: float, frames: int
) -> None:
    settings = Settings()
    kafka = settings.kafka.model_copy(update={"bootstrap_servers": bootstrap})
    producer = Producer(producer_config(kafka, "alphapanda-bench-reference"))
    keys = [k.encode() for k in keys_file.read_text().split()]
    head = b'{"pad":"'
    tail = b'","received_at_ns":'
    pad = b"x" * max(0, value_size - len(head) - len(tail) - _STAMP_DIGITS - 2)
    prefixes = [head + pad + tail for _ in keys]
    # The same records as the feed's: the headers are part of the contract.
    headers = WireEncoder("json").shared_headers
    produce = producer.produce
    print("ready", flush=True)
    next_at = time.monotonic() + interval
    for _ in range(frames):
        time.sleep(max(0.0, next_at - time.monotonic()))
        next_at += interval
        stamp = b"%d}}" % time.time_ns()
        for key, prefix in zip(keys, prefixes, strict=True):
            while True:
                try:
                    produce(topic, prefix + stamp, key, headers=headers)  # type: ignore[arg-type]
                    break
                except BufferError:
                    producer.poll(0.001)
        # Serve delivery reports until the next frame, as a producer loop would.
        while time.monotonic() < next_at - 0.002:
            producer.poll(0.001)
    producer.flush(60)


def main(argv: list[str]) -> None:
    command, *args = argv
    if command == "consume":
        bootstrap, topic, out = args
        consume(bootstrap, topic, Path(out))
    elif command == "reference":
        bootstrap, topic, keys_file, value_size, interval, frames = args
        reference(bootstrap, topic, Path(keys_file), int(value_size), float(interval), int(frames))
    else:
        raise SystemExit(f"unknown command {command!r}")


if __name__ == "__main__":
    main(sys.argv[1:])
