"""Wire format of market.ticks: envelope, JSON/msgpack round trips, key, headers, schema."""

from __future__ import annotations

import json
import re
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import msgspec
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from alphapanda.kite.protocol import Tick
from alphapanda.market_tick import MarketTick
from alphapanda.pipeline.formatter import TickFormatter
from alphapanda.pipeline.wire import (
    BROKER_SHARED,
    SCHEMA_VERSION,
    EventType,
    MarketTickEvent,
    WireDecoder,
    WireEncoder,
    content_type_of,
)
from tests.unit.test_formatter import EQUITY, INDEX, RECEIVED_NS, _sample_ticks, full_tick

SCHEMA_PATH = Path(__file__).resolve().parents[2] / "schemas" / "market_tick.v1.schema.json"
EMITTED_NS = RECEIVED_NS + 1_500_000  # 1.5 ms later


def _ticks() -> list[MarketTick]:
    formatter = TickFormatter()
    out = [formatter.format(t) for t in _sample_ticks()]
    out.append(formatter.format(full_tick(last_trade_time=0, exchange_timestamp=0)))
    out.append(formatter.format(full_tick(high=1.0, low=2.0, volume_traded=-1)))
    assert all(t is not None for t in out)
    return [t for t in out if t is not None]


# -- a validator for the subset of JSON Schema 2020-12 the schema file uses -----------


class SchemaViolation(AssertionError):
    pass


def _type_ok(value: Any, name: str) -> bool:
    if name == "null":
        return value is None
    if name == "boolean":
        return isinstance(value, bool)
    if name == "integer":
        return isinstance(value, int) and not isinstance(value, bool)
    if name == "number":
        return isinstance(value, int | float) and not isinstance(value, bool)
    if name == "string":
        return isinstance(value, str)
    if name == "array":
        return isinstance(value, list)
    if name == "object":
        return isinstance(value, dict)
    raise SchemaViolation(f"validator does not know type {name!r}")


_KNOWN = {
    "$schema", "$id", "$defs", "$ref", "title", "description", "type", "required",
    "properties", "const", "enum", "pattern", "format", "minimum", "maximum", "anyOf",
    "items", "maxItems",
}  # fmt: skip


def validate(value: Any, schema: dict[str, Any], root: dict[str, Any], path: str = "$") -> None:
    """Raise ``SchemaViolation`` if ``value`` does not satisfy ``schema``."""
    unknown = set(schema) - _KNOWN
    if unknown:  # never silently ignore a keyword the schema relies on
        raise SchemaViolation(f"{path}: validator does not implement {sorted(unknown)}")
    if "$ref" in schema:
        ref = schema["$ref"]
        assert ref.startswith("#/$defs/")
        validate(value, root["$defs"][ref.removeprefix("#/$defs/")], root, path)
    if "anyOf" in schema:
        errors = []
        for option in schema["anyOf"]:
            try:
                validate(value, option, root, path)
                break
            except SchemaViolation as exc:
                errors.append(str(exc))
        else:
            raise SchemaViolation(f"{path}: matches no anyOf option: {errors}")
    if "type" in schema:
        types = schema["type"] if isinstance(schema["type"], list) else [schema["type"]]
        if not any(_type_ok(value, t) for t in types):
            raise SchemaViolation(f"{path}: {value!r} is not {types}")
    if "const" in schema and value != schema["const"]:
        raise SchemaViolation(f"{path}: {value!r} != const {schema['const']!r}")
    if "enum" in schema and value not in schema["enum"]:
        raise SchemaViolation(f"{path}: {value!r} not in {schema['enum']}")
    if isinstance(value, str):
        if "pattern" in schema and not re.search(schema["pattern"], value):
            raise SchemaViolation(f"{path}: {value!r} !~ {schema['pattern']}")
        if schema.get("format") == "date-time":
            parsed = datetime.fromisoformat(value)
            if parsed.tzinfo is None:
                raise SchemaViolation(f"{path}: {value!r} has no offset")
    if isinstance(value, int | float) and not isinstance(value, bool):
        if "minimum" in schema and value < schema["minimum"]:
            raise SchemaViolation(f"{path}: {value} < {schema['minimum']}")
        if "maximum" in schema and value > schema["maximum"]:
            raise SchemaViolation(f"{path}: {value} > {schema['maximum']}")
    if isinstance(value, dict):
        for key in schema.get("required", ()):
            if key not in value:
                raise SchemaViolation(f"{path}: missing {key!r}")
        for key, sub in schema.get("properties", {}).items():
            if key in value:
                validate(value[key], sub, root, f"{path}.{key}")
    if isinstance(value, list):
        if "maxItems" in schema and len(value) > schema["maxItems"]:
            raise SchemaViolation(f"{path}: more than {schema['maxItems']} items")
        for i, item in enumerate(value):
            validate(item, schema.get("items", {}), root, f"{path}[{i}]")


@pytest.fixture(scope="module")
def schema() -> dict[str, Any]:
    loaded: dict[str, Any] = json.loads(SCHEMA_PATH.read_text())
    return loaded


def test_real_encoder_output_satisfies_the_schema_file(schema: dict[str, Any]) -> None:
    encoder = WireEncoder()
    for tick in _ticks():
        _, value, _ = encoder.encode(tick, EMITTED_NS)
        document = json.loads(value)
        validate(document, schema, schema)
        # The schema names every field we send, and we send every field it names.
        assert set(document) == set(schema["properties"])
        assert set(document["data"]) == set(schema["$defs"]["MarketTick"]["properties"])


def test_the_validator_rejects_what_the_schema_forbids(schema: dict[str, Any]) -> None:
    _, value, _ = WireEncoder().encode(_ticks()[0], EMITTED_NS)
    good = json.loads(value)
    bad_documents = [
        {**good, "schema_version": 2},
        {**good, "event_type": "order"},
        {**good, "id": "not-a-uuid"},
        {**good, "emitted_at": "2025-11-25T05:20:00"},  # naive
        {**good, "data": {**good["data"], "last_price": -1.0}},
        {**good, "data": {**good["data"], "volume_traded": "12"}},
        {**good, "data": {**good["data"], "mode": "snapquote"}},
        {k: v for k, v in good.items() if k != "data"},
    ]
    for bad in bad_documents:
        with pytest.raises(SchemaViolation):
            validate(bad, schema, schema)


def test_envelope_fields_key_and_headers() -> None:
    tick = TickFormatter().format(full_tick())
    assert tick is not None
    key, value, headers = WireEncoder(source="feed-a").encode(tick, EMITTED_NS)
    document = json.loads(value)
    assert key == str(EQUITY).encode("ascii")
    assert document["schema_version"] == SCHEMA_VERSION == 1
    assert document["event_type"] == EventType.MARKET_TICK == "market_tick"
    assert document["broker"] == BROKER_SHARED == "shared"
    assert document["emitted_at"] == "2025-11-25T05:20:00.124956Z"
    assert document["data"]["received_at"] == "2025-11-25T05:20:00.123456Z"
    assert document["data"]["received_at_ns"] == RECEIVED_NS
    assert headers == [
        ("schema_version", b"1"),
        ("source", b"feed-a"),
        ("content-type", b"application/json"),
        ("event_type", b"market_tick"),
    ]
    _, _, msgpack_headers = WireEncoder("msgpack").encode(tick, EMITTED_NS)
    assert dict(msgpack_headers)["content-type"] == b"application/msgpack"
    assert content_type_of(msgpack_headers) == "application/msgpack"
    assert content_type_of(None) == "application/json"


def test_headers_are_a_fresh_list_each_time() -> None:
    encoder = WireEncoder()
    tick = _ticks()[0]
    _, _, first = encoder.encode(tick, EMITTED_NS)
    first.append(("x", b"y"))
    _, _, second = encoder.encode(tick, EMITTED_NS)
    assert ("x", b"y") not in second


def test_ids_are_unique_uuid7_and_time_ordered() -> None:
    encoder = WireEncoder()
    other = WireEncoder()
    tick = _ticks()[0]
    ids = [json.loads(encoder.encode(tick, EMITTED_NS + i * 10**6)[1])["id"] for i in range(300)]
    ids += [json.loads(other.encode(tick, EMITTED_NS)[1])["id"] for _ in range(300)]
    assert len(set(ids)) == len(ids)
    first = ids[:300]
    assert first == sorted(first)
    for event_id in ids:
        assert re.fullmatch(
            r"[0-9a-f]{8}-[0-9a-f]{4}-7[0-9a-f]{3}-[89ab][0-9a-f]{3}-[0-9a-f]{12}", event_id
        )
        ms = int(event_id[:8] + event_id[9:13], 16)
        assert EMITTED_NS // 10**6 <= ms < EMITTED_NS // 10**6 + 300


@pytest.mark.parametrize("fmt", ["json", "msgpack"])
def test_round_trip_gives_back_the_same_tick(fmt: str) -> None:
    encoder = WireEncoder(fmt)  # type: ignore[arg-type]
    decoder = WireDecoder()
    for tick in _ticks():
        _, value, headers = encoder.encode(tick, EMITTED_NS)
        event = decoder.decode(value, content_type_of(headers))
        assert isinstance(event, MarketTickEvent)
        assert event.data == tick
        assert event.event_type is EventType.MARKET_TICK
        assert event.emitted_at == datetime(2025, 11, 25, 5, 20, 0, 124956, tzinfo=UTC)
        for stamp in (event.data.received_at, event.data.exchange_timestamp):
            assert stamp is None or stamp.utcoffset() is not None


def test_msgpack_carries_the_same_structure_as_json() -> None:
    tick = TickFormatter().format(full_tick())
    assert tick is not None
    json_doc = json.loads(WireEncoder("json").encode(tick, EMITTED_NS)[1])
    packed = msgspec.msgpack.decode(WireEncoder("msgpack").encode(tick, EMITTED_NS)[1])

    def normalise(value: Any) -> Any:
        # msgpack timestamps (extension -1) come back as datetimes; JSON has ISO strings.
        if isinstance(value, datetime):
            return value
        if isinstance(value, str) and re.fullmatch(r"\d{4}-\d\d-\d\dT[\d:.]+Z", value):
            return datetime.fromisoformat(value)
        if isinstance(value, dict):
            return {k: normalise(v) for k, v in value.items() if k != "id"}
        if isinstance(value, list):
            return [normalise(v) for v in value]
        return value

    assert normalise(packed) == normalise(json_doc)


def test_nulls_are_explicit_for_fields_the_mode_lacks() -> None:
    ltp = TickFormatter().format(Tick(INDEX, "ltp", False, 24_350.5, received_at_ns=RECEIVED_NS))
    assert ltp is not None
    data = json.loads(WireEncoder().encode(ltp, EMITTED_NS)[1])["data"]
    for name in ("ohlc", "depth", "oi", "volume_traded", "change", "exchange_timestamp"):
        assert name in data
        assert data[name] is None


def test_unknown_format_and_content_type_are_rejected() -> None:
    with pytest.raises(ValueError, match="wire format"):
        WireEncoder("xml")  # type: ignore[arg-type]
    with pytest.raises(ValueError, match="content-type"):
        WireDecoder().decode(b"{}", "text/csv")
    with pytest.raises(msgspec.ValidationError):
        WireDecoder().decode(b'{"schema_version": 1}')


@settings(max_examples=100, deadline=None)
@given(
    token=st.integers(min_value=0, max_value=2**32 - 1),
    emitted=st.integers(min_value=RECEIVED_NS, max_value=RECEIVED_NS + 10**15),
)
def test_key_is_the_token_in_ascii_decimal(token: int, emitted: int) -> None:
    tick = TickFormatter().format(full_tick(token))
    assert tick is not None
    key, value, _ = WireEncoder().encode(tick, emitted)
    assert key == str(token).encode("ascii")
    assert json.loads(value)["data"]["instrument_token"] == token
