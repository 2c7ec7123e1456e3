"""Fuzzing the codec: the decoder never raises, never misaligns, and the way
a stream of packets is cut into messages does not change what comes out."""

from __future__ import annotations

import itertools
import json

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from alphapanda.kite.protocol import (
    MODES,
    SKIP_TRUNCATED,
    SKIP_UNKNOWN_LENGTH,
    ProtocolError,
    SkippedPacket,
    TextMessage,
    decode_message,
    encode_message,
    parse_text_message,
)
from tests.unit.test_protocol_differential import KNOWN_LENGTHS, known_packets, unknown_packets

RECEIVED = 42
FUZZ = settings(max_examples=300, deadline=None)


@FUZZ
@given(st.binary(max_size=1500))
def test_arbitrary_bytes_never_raise(data: bytes) -> None:
    decoded = decode_message(data, RECEIVED)
    assert all(t.mode in MODES and t.received_at_ns == RECEIVED for t in decoded.ticks)
    assert all(s.reason in (SKIP_TRUNCATED, SKIP_UNKNOWN_LENGTH) for s in decoded.skipped)
    assert decoded.heartbeat == (len(data) == 1)


@st.composite
def mutated_messages(draw: st.DrawFn) -> bytes:
    """Valid messages with a few bytes flipped, inserted or removed: closer to the
    frames a broken server or a torn read produces than uniformly random bytes."""
    data = bytearray(encode_message(draw(st.lists(known_packets(), max_size=8))))
    for _ in range(draw(st.integers(1, 4))):
        at = draw(st.integers(0, len(data)))
        action = draw(st.sampled_from(("flip", "insert", "delete")))
        if action == "insert" or not data:
            data[at:at] = draw(st.binary(min_size=1, max_size=4))
        elif action == "flip":
            data[min(at, len(data) - 1)] ^= draw(st.integers(1, 255))
        else:
            del data[at : at + draw(st.integers(1, 4))]
    return bytes(data)


@FUZZ
@given(mutated_messages())
def test_mutated_messages_never_raise(data: bytes) -> None:
    decoded = decode_message(data, RECEIVED)
    assert all(t.mode in MODES for t in decoded.ticks)


@FUZZ
@given(st.lists(known_packets(), min_size=1, max_size=10), st.data())
def test_truncated_message_keeps_whole_packets_and_reports_the_cut(
    packets: list[bytes], data: st.DataObject
) -> None:
    message = encode_message(packets)
    whole = decode_message(message, RECEIVED).ticks
    cut = data.draw(st.integers(0, len(message) - 1))
    # Packets that end at or before the cut survive; the next one is reported, once.
    ends, end = [], 2
    for packet in packets:
        end += 2 + len(packet)
        ends.append(end)
    complete = sum(1 for e in ends if e <= cut)
    decoded = decode_message(message[:cut], RECEIVED)
    if cut == 1:
        assert decoded.heartbeat
        return
    assert decoded.ticks == whole[:complete]
    assert len(decoded.skipped) == 1
    assert decoded.skipped[0].reason == SKIP_TRUNCATED
    assert decoded.skipped[0].index == complete


@FUZZ
@given(
    st.lists(known_packets(), max_size=10),
    st.lists(st.tuples(st.integers(0, 10), unknown_packets()), max_size=5),
)
def test_unknown_lengths_do_not_misalign_later_packets(
    packets: list[bytes], junk: list[tuple[int, bytes]]
) -> None:
    mixed = list(packets)
    for at, packet in sorted(junk, key=lambda j: j[0], reverse=True):
        mixed.insert(min(at, len(mixed)), packet)
    decoded = decode_message(encode_message(mixed), RECEIVED)
    assert decoded.ticks == decode_message(encode_message(packets), RECEIVED).ticks
    assert decoded.skipped == [
        SkippedPacket(i, len(p), SKIP_UNKNOWN_LENGTH)
        for i, p in enumerate(mixed)
        if len(p) not in KNOWN_LENGTHS
    ]


@FUZZ
@given(st.lists(known_packets(), max_size=20), st.data())
def test_chunking_does_not_change_the_ticks(packets: list[bytes], data: st.DataObject) -> None:
    cuts = sorted(data.draw(st.sets(st.integers(0, len(packets)), max_size=6)))
    bounds = [0, *cuts, len(packets)]
    messages = [encode_message(packets[a:b]) for a, b in itertools.pairwise(bounds)]
    chunked = [t for m in messages for t in decode_message(m, RECEIVED).ticks]
    assert chunked == decode_message(encode_message(packets), RECEIVED).ticks
    assert len(chunked) == len(packets)


@FUZZ
@given(st.one_of(st.text(max_size=200), st.binary(max_size=200)))
def test_text_parser_raises_only_protocol_error(text: str | bytes) -> None:
    try:
        message = parse_text_message(text)
    except ProtocolError:
        return
    assert isinstance(message, TextMessage)
    assert isinstance(message.type, str)


json_values = st.recursive(
    st.none() | st.booleans() | st.integers() | st.floats(allow_nan=False) | st.text(),
    lambda inner: st.lists(inner, max_size=4) | st.dictionaries(st.text(), inner, max_size=4),
    max_leaves=20,
)


@FUZZ
@given(st.one_of(json_values, st.dictionaries(st.sampled_from(["type", "data", "x"]), json_values)))
def test_text_parser_accepts_exactly_objects_with_a_string_type(value: object) -> None:
    text = json.dumps(value)
    valid = isinstance(value, dict) and isinstance(value.get("type"), str)
    if valid:
        assert isinstance(value, dict)
        assert parse_text_message(text) == TextMessage(value["type"], value.get("data"))
    else:
        with pytest.raises(ProtocolError):
            parse_text_message(text)


@pytest.mark.parametrize(
    "text", ["[" * 100_000, '{"type": "x", "data": ' + "[" * 100_000, "\ud800", b"\xc3"]
)
def test_text_parser_pathological_inputs(text: str | bytes) -> None:
    with pytest.raises(ProtocolError):
        parse_text_message(text)
