"""Delivery reports without an offset count as failures whose outcome is unknown
(the tick path checks the topic for them; a derived record is counted failed)."""

from __future__ import annotations

from confluent_kafka import KafkaError, Message

from alphapanda.pipeline.producer import (
    UNCONFIRMED,
    UNCONFIRMED_REASON,
    EncodedMessage,
    MessageProducer,
    _Delivery,
)
from alphapanda.settings import KafkaSettings
from alphapanda.streams.sink import DerivedProducer

NO_OFFSET = -1001  # librdkafka's RD_KAFKA_OFFSET_INVALID


def _producer(outcomes: list[tuple[bytes, KafkaError | None]]) -> MessageProducer:
    # No broker is contacted: librdkafka only connects when there is something to send.
    return MessageProducer(
        KafkaSettings(bootstrap_servers="127.0.0.1:9"),
        "t",
        lambda message, _context, error: outcomes.append((message.value, error)),
        on_ack=lambda n: None,
    )


def _report(offset: int, value: bytes = b"v") -> Message:
    return Message(topic="t", partition=0, offset=offset, key=b"1", value=value)


def test_an_ack_with_an_offset_is_an_ack_and_one_without_is_unconfirmed() -> None:
    outcomes: list[tuple[bytes, KafkaError | None]] = []
    producer = _producer(outcomes)
    producer.pending = 3
    headers = [("pkt", b"0")]
    _Delivery(producer, 11, headers)(None, _report(0))
    _Delivery(producer, 12, headers)(None, _report(NO_OFFSET, b"lost"))
    producer._settle_acks()
    assert producer.delivered == 1 and producer.pending == 1
    assert outcomes == [(b"lost", UNCONFIRMED)]
    assert producer.failed == {UNCONFIRMED_REASON: 1}

    # The per-message handler of try_produce (replays) tells them apart alike.
    message = EncodedMessage(b"1", b"again", headers, 13)
    producer._report(message, None, None, _report(NO_OFFSET, b"again"))
    assert outcomes[-1] == (b"again", UNCONFIRMED)
    assert producer.failed == {UNCONFIRMED_REASON: 2} and producer.pending == 0
    producer._report(message, None, None, _report(7, b"again"))
    assert outcomes[-1][1] is None and producer.delivered == 2


async def test_a_derived_record_acked_without_an_offset_counts_as_failed(caplog) -> None:  # type: ignore[no-untyped-def]
    producer = DerivedProducer(KafkaSettings(bootstrap_servers="127.0.0.1:9"), "quotes")
    counts = producer.stream("candles")
    producer._reported_pending = 2
    producer._on_delivery(counts, "candles", b"1", None, _report(3))
    producer._on_delivery(counts, "candles", b"2", None, _report(NO_OFFSET))
    assert (counts.delivered, counts.failed) == (1, 1)
    assert "derived stream candles: delivery failed (unconfirmed_ack), e.g. key 2" in caplog.text
