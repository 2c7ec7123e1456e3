"""Typed, schema-version-checked records of the feed's topics.

``decode_record(topic_kind, value, headers)`` turns one Kafka record into its typed
envelope (``MarketTickEvent``, ``CandleEvent``, ``FeedEventRecord`` or
``OrderUpdateEvent``). A record of a schema version this code does not know is refused
with ``UnsupportedSchemaVersion`` rather than guessed at.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Final, Literal

import msgspec

from alphapanda.pipeline.wire import (
    CONTENT_TYPES,
    MarketTickEvent,
    WireDecoder,
)
from alphapanda.pipeline.wire import (
    SCHEMA_VERSION as TICK_SCHEMA_VERSION,
)
from alphapanda.streams.records import (
    SCHEMA_VERSION as DERIVED_SCHEMA_VERSION,
)
from alphapanda.streams.records import (
    CandleEvent,
    FeedEventRecord,
    OrderUpdateEvent,
)

# As confluent-kafka's ``Message.headers()`` returns them.
Headers = Sequence[tuple[str, bytes | str | None]] | dict[str, bytes | str | None] | None
RecordKind = Literal["tick", "candle", "feed_event", "order_update"]
Record = MarketTickEvent | CandleEvent | FeedEventRecord | OrderUpdateEvent

SUPPORTED_VERSIONS: Final[dict[RecordKind, int]] = {
    "tick": TICK_SCHEMA_VERSION,
    "candle": DERIVED_SCHEMA_VERSION,
    "feed_event": DERIVED_SCHEMA_VERSION,
    "order_update": DERIVED_SCHEMA_VERSION,
}
EXPECTED_EVENT_TYPE: Final[dict[RecordKind, str]] = {
    "tick": "market_tick",
    "candle": "candle",
    "feed_event": "feed_event",
    "order_update": "order_update",
}


class UnsupportedSchemaVersion(Exception):
    """A record of a schema version (or event type) this consumer does not understand."""


class _Probe(msgspec.Struct):
    schema_version: int
    event_type: str


_probe = msgspec.json.Decoder(_Probe).decode
_ticks = WireDecoder()
_decoders = {
    "candle": msgspec.json.Decoder(CandleEvent).decode,
    "feed_event": msgspec.json.Decoder(FeedEventRecord).decode,
    "order_update": msgspec.json.Decoder(OrderUpdateEvent).decode,
}


def _header(headers: Headers, name: str) -> str | None:
    items = headers.items() if isinstance(headers, dict) else headers or ()
    for key, value in items:
        if key == name and value is not None:
            return value.decode() if isinstance(value, bytes) else value
    return None


def decode_record(
    kind: RecordKind,
    value: bytes,
    headers: Headers = None,
) -> Record:
    """The typed envelope of one record; raises ``UnsupportedSchemaVersion`` for a
    version or event type other than this module's, ``msgspec.DecodeError`` /
    ``ValidationError`` for a malformed value."""
    supported = SUPPORTED_VERSIONS[kind]
    header_version = _header(headers, "schema_version")
    if header_version is not None and header_version != str(supported):
        raise UnsupportedSchemaVersion(
            f"{kind} record of schema version {header_version}; this consumer reads {supported}"
        )
    content_type = _header(headers, "content-type") or CONTENT_TYPES["json"]
    if kind == "tick":
        if content_type == CONTENT_TYPES["json"]:
            _check(kind, value)
        return _ticks.decode(value, content_type)
    _check(kind, value)
    record = _decoders[kind](value)
    assert isinstance(record, CandleEvent | FeedEventRecord | OrderUpdateEvent)
    return record


def _check(kind: RecordKind, value: bytes) -> None:
    probe = _probe(value)
    if probe.schema_version != SUPPORTED_VERSIONS[kind]:
        raise UnsupportedSchemaVersion(
            f"{kind} record of schema version {probe.schema_version}; "
            f"this consumer reads {SUPPORTED_VERSIONS[kind]}"
        )
    if probe.event_type != EXPECTED_EVENT_TYPE[kind]:
        raise UnsupportedSchemaVersion(f"expected a {kind} record, got {probe.event_type!r}")
