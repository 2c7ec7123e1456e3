"""Who is subscribed to what, in which mode: the server side of Kite's client messages.

Pure: the WebSocket shell hands in the text a client sent and gets back the error
texts to send; no sockets here. Rules, as on Kite: a new subscription is in quote mode,
at most ``max_per_connection`` instruments per connection (a subscribe that would
exceed it is refused whole), unknown tokens are reported, never crash anything.
"""

from __future__ import annotations

from collections.abc import Container, Iterable

import msgspec

from alphapanda.kite.protocol import (
    ACTION_MODE,
    ACTION_SUBSCRIBE,
    ACTION_UNSUBSCRIBE,
    MODE_QUOTE,
    MODES,
)


class ClientMessageError(ValueError):
    """A client message the server cannot act on; the text goes back as an ``error``."""


_decode_json = msgspec.json.Decoder().decode
_encode_json = msgspec.json.Encoder().encode


def error_text(message: str) -> str:
    """A Kite ``error`` text message."""
    return _encode_json({"type": "error", "data": message}).decode()


def _tokens(value: object) -> list[int]:
    if not isinstance(value, list) or not all(
        isinstance(t, int) and not isinstance(t, bool) for t in value
    ):
        raise ClientMessageError("expected a list of integer instrument tokens")
    return value


def parse_client_message(text: str | bytes) -> tuple[str, list[int], str | None]:
    """``(action, tokens, mode)`` of a client message, or ClientMessageError."""
    try:
        message = _decode_json(text)
    except (msgspec.DecodeError, UnicodeError, RecursionError):
        raise ClientMessageError("invalid JSON") from None
    if not isinstance(message, dict):
        raise ClientMessageError('expected {"a": action, "v": value}')
    action, value = message.get("a"), message.get("v")
    if action in (ACTION_SUBSCRIBE, ACTION_UNSUBSCRIBE):
        return action, _tokens(value), None
    if action == ACTION_MODE:
        if not (isinstance(value, list) and len(value) == 2 and value[0] in MODES):
            raise ClientMessageError('mode expects ["ltp"|"quote"|"full", [tokens]]')
        return action, _tokens(value[1]), value[0]
    raise ClientMessageError(f"unknown action {action!r}")


class SubscriptionBook:
    """Subscriptions of every connection, indexed both ways.

    ``subscribers(token)`` (connection → mode) is what the sender reads on every tick,
    so it is kept ready rather than computed; ``active_tokens()`` is the list the tick
    scheduler walks, rebuilt only when the set of subscribed instruments changes.
    """

    def __init__(self, universe: Container[int], max_per_connection: int) -> None:
        self._universe = universe
        self._max = max_per_connection
        self._by_connection: dict[str, dict[int, str]] = {}
        self._by_token: dict[int, dict[str, str]] = {}
        self._active: list[int] | None = None

    def open(self, connection_id: str) -> None:
        self._by_connection[connection_id] = {}

    def close(self, connection_id: str) -> None:
        """Forget a connection and everything it subscribed."""
        tokens = self._by_connection.pop(connection_id, {})
        self._remove(connection_id, tokens)

    def apply(self, connection_id: str, text: str | bytes) -> list[str]:
        """Act on one client message; returns the ``error`` texts to send back."""
        try:
            action, tokens, mode = parse_client_message(text)
        except ClientMessageError as exc:
            return [error_text(f"invalid message: {exc}")]
        if action == ACTION_SUBSCRIBE:
            return self.subscribe(connection_id, tokens)
        if action == ACTION_UNSUBSCRIBE:
            self.unsubscribe(connection_id, tokens)
            return []
        assert mode is not None
        return self.set_mode(connection_id, tokens, mode)

    def subscribe(self, connection_id: str, tokens: Iterable[int]) -> list[str]:
        mine = self._by_connection[connection_id]
        known = [t for t in dict.fromkeys(tokens) if t in self._universe]
        unknown = [t for t in dict.fromkeys(tokens) if t not in self._universe]
        errors = []
        if unknown:
            errors.append(error_text(f"invalid instrument token(s): {_preview(unknown)}"))
        new = [t for t in known if t not in mine]
        if len(mine) + len(new) > self._max:
            errors.append(
                error_text(
                    f"subscription limit: {len(mine)} + {len(new)} instruments exceed "
                    f"{self._max} per connection; nothing was subscribed"
                )
            )
            return errors
        for token in new:
            mine[token] = MODE_QUOTE
            self._by_token.setdefault(token, {})[connection_id] = MODE_QUOTE
        if new:
            self._active = None
        return errors

    def unsubscribe(self, connection_id: str, tokens: Iterable[int]) -> None:
        mine = self._by_connection[connection_id]
        gone = [t for t in tokens if mine.pop(t, None) is not None]
        self._remove(connection_id, gone)

    def set_mode(self, connection_id: str, tokens: Iterable[int], mode: str) -> list[str]:
        mine = self._by_connection[connection_id]
        missing = []
        for token in tokens:
            if token in mine:
                mine[token] = mode
                self._by_token[token][connection_id] = mode
            else:
                missing.append(token)
        if missing:
            return [error_text(f"mode {mode}: not subscribed: {_preview(missing)}")]
        return []

    def _remove(self, connection_id: str, tokens: Iterable[int]) -> None:
        for token in tokens:
            holders = self._by_token.get(token)
            if holders is None:
                continue
            holders.pop(connection_id, None)
            if not holders:
                del self._by_token[token]
                self._active = None

    def subscribers(self, token: int) -> dict[str, str]:
        """Connection id → mode for every connection subscribed to ``token``."""
        return self._by_token.get(token, {})

    def active_tokens(self) -> list[int]:
        """Every token at least one connection subscribes to (stable order)."""
        if self._active is None:
            self._active = sorted(self._by_token)
        return self._active

    def modes_of(self, connection_id: str) -> dict[int, str]:
        return dict(self._by_connection.get(connection_id, {}))

    def snapshot(self) -> dict[str, dict[str, str]]:
        """Connection id → {token: mode}, as plain JSON-able data."""
        return {
            conn: {str(token): mode for token, mode in subs.items()}
            for conn, subs in self._by_connection.items()
        }


def _preview(tokens: list[int], limit: int = 10) -> str:
    shown = ", ".join(str(t) for t in tokens[:limit])
    return shown + (f" (+{len(tokens) - limit} more)" if len(tokens) > limit else "")
