"""The JSON text half of the ticker protocol: server messages in, client messages out."""

from __future__ import annotations

from collections.abc import Sequence
from typing import Final

import msgspec

from alphapanda.kite.protocol.ticks import MODES, ProtocolError, TextMessage

ACTION_SUBSCRIBE: Final = "subscribe"
ACTION_UNSUBSCRIBE: Final = "unsubscribe"
ACTION_MODE: Final = "mode"
#: Kinds of text message the server sends (others are passed through, not rejected).
TEXT_ORDER: Final = "order"
TEXT_ERROR: Final = "error"
TEXT_MESSAGE: Final = "message"


class _ServerText(msgspec.Struct):
    type: str
    data: object = None


_decode_server_text = msgspec.json.Decoder(_ServerText).decode
_encode_json = msgspec.json.Encoder().encode


def parse_text_message(text: str | bytes) -> TextMessage:
    """Parse a server text message ``{"type": ..., "data": ...}``.

    Raises :class:`ProtocolError` on invalid JSON, invalid UTF-8 or a JSON value that is
    not an object with a string ``type``. Unknown types are returned as they are: the
    caller decides what to do with a kind of message Kite may add later.
    """
    try:
        wire = _decode_server_text(text)
    except (msgspec.DecodeError, UnicodeError, RecursionError) as exc:
        raise ProtocolError(f"invalid text message: {exc}") from None
    return TextMessage(wire.type, wire.data)


def client_message(action: str, tokens: Sequence[int], mode: str | None = None) -> str:
    """The JSON a client sends to subscribe, unsubscribe or set the mode of ``tokens``.

    ``{"a": "subscribe", "v": [tokens]}``, ``{"a": "unsubscribe", "v": [tokens]}``,
    ``{"a": "mode", "v": [mode, [tokens]]}``. ``mode`` is required for ``mode`` and
    refused for the others (Kite's subscribe message carries no mode; a new
    subscription starts in quote mode).
    """
    token_list = [int(t) for t in tokens]
    if action in (ACTION_SUBSCRIBE, ACTION_UNSUBSCRIBE):
        if mode is not None:
            raise ProtocolError(f"{action!r} takes no mode; send a separate 'mode' message")
        return _encode_json({"a": action, "v": token_list}).decode()
    if action == ACTION_MODE:
        if mode not in MODES:
            raise ProtocolError(f"unknown mode {mode!r}")
        return _encode_json({"a": action, "v": [mode, token_list]}).decode()
    raise ProtocolError(f"unknown action {action!r}")
