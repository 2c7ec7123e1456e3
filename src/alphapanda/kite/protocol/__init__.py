"""The Kite Connect v3 ticker protocol, sans-I/O: bytes in, typed ticks out, and back.

No sockets, no clock reads, no logging: the receive time is passed in. The WebSocket
client, the exchange simulator and the tests all speak the protocol through this package.

Modules: :mod:`.ticks` (what is carried), :mod:`.decoder` (binary → ticks, the hot path),
:mod:`.encoder` (ticks → binary, for the simulator), :mod:`.text` (JSON messages).
"""

from __future__ import annotations

from alphapanda.kite.protocol.decoder import (
    FULL_LENGTH,
    INDEX_FULL_LENGTH,
    INDEX_QUOTE_LENGTH,
    LTP_LENGTH,
    QUOTE_LENGTH,
    decode_message,
)
from alphapanda.kite.protocol.encoder import encode_message, encode_tick
from alphapanda.kite.protocol.text import (
    ACTION_MODE,
    ACTION_SUBSCRIBE,
    ACTION_UNSUBSCRIBE,
    TEXT_ERROR,
    TEXT_MESSAGE,
    TEXT_ORDER,
    client_message,
    parse_text_message,
)
from alphapanda.kite.protocol.ticks import (
    HEARTBEAT,
    MODE_FULL,
    MODE_LTP,
    MODE_QUOTE,
    MODES,
    SEGMENT_BCD,
    SEGMENT_CDS,
    SEGMENT_INDICES,
    SEGMENT_NCO,
    SKIP_TRUNCATED,
    SKIP_UNKNOWN_LENGTH,
    DecodedMessage,
    DepthEntry,
    ProtocolError,
    SkippedPacket,
    TextMessage,
    Tick,
    compute_change,
    is_tradable,
    price_divisor,
    segment_of,
)

__all__ = [
    "ACTION_MODE",
    "ACTION_SUBSCRIBE",
    "ACTION_UNSUBSCRIBE",
    "FULL_LENGTH",
    "HEARTBEAT",
    "INDEX_FULL_LENGTH",
    "INDEX_QUOTE_LENGTH",
    "LTP_LENGTH",
    "MODES",
    "MODE_FULL",
    "MODE_LTP",
    "MODE_QUOTE",
    "QUOTE_LENGTH",
    "SEGMENT_BCD",
    "SEGMENT_CDS",
    "SEGMENT_INDICES",
    "SEGMENT_NCO",
    "SKIP_TRUNCATED",
    "SKIP_UNKNOWN_LENGTH",
    "TEXT_ERROR",
    "TEXT_MESSAGE",
    "TEXT_ORDER",
    "DecodedMessage",
    "DepthEntry",
    "ProtocolError",
    "SkippedPacket",
    "TextMessage",
    "Tick",
    "client_message",
    "compute_change",
    "decode_message",
    "encode_message",
    "encode_tick",
    "is_tradable",
    "parse_text_message",
    "price_divisor",
    "segment_of",
]
