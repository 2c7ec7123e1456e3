"""The socket under a connection: a thin adapter around ``websockets``.

``ShardConnection`` only sees the two small protocols below, so its reconnect and
liveness logic can be exercised with an in-memory socket, and every ``websockets``
exception is translated here into one of three errors with a metric-friendly reason.

The access token travels in the handshake URL (Kite's design). The URL is built here,
at connect time only, never stored on an object, and scrubbed from any exception text
that leaves this module. ``websockets``' own debug logging would print the request
line with the token, so its connections get a logger that never emits debug records.
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Mapping
from typing import Any, Protocol
from urllib.parse import urlencode

from websockets.asyncio.client import ClientConnection, connect
from websockets.exceptions import (
    ConnectionClosed,
    InvalidHandshake,
    InvalidStatus,
    InvalidURI,
    WebSocketException,
)

from alphapanda.kite.reconnect import Reason

KITE_VERSION_HEADER = ("X-Kite-Version", "3")
# A full-mode frame for 3000 instruments is 2 + 3000 * (2 + 184) = 558,002 bytes.
DEFAULT_MAX_FRAME_BYTES = 4 * 1024 * 1024


class ConnectFailed(Exception):
    """The handshake did not produce a socket. ``reason`` labels the metric."""

    def __init__(self, reason: Reason, detail: str, status: int | None = None) -> None:
        super().__init__(detail)
        self.reason: Reason = reason
        self.status = status


class SocketClosed(Exception):
    """The live socket is gone (closed by the server, reset, or aborted by us)."""


class FrameSocket(Protocol):
    """One live ticker socket."""

    async def recv(self) -> bytes | str:
        """The next message; raises ``SocketClosed`` when the socket is gone."""
        ...

    async def send(self, text: str) -> None:
        """Send a JSON text message; raises ``SocketClosed`` when the socket is gone."""
        ...

    async def close(self) -> None:
        """Close politely (bounded wait)."""
        ...

    def abort(self) -> None:
        """Drop the TCP connection now, without a closing handshake."""
        ...


class Connector(Protocol):
    """Opens sockets. Called only by the one task that owns a shard."""

    async def open(self, api_key: str, access_token: str) -> FrameSocket: ...


def scrub(text: str, secret: str) -> str:
    """``text`` with every occurrence of ``secret`` masked."""
    return text.replace(secret, "********") if secret else text


class _NoDebugLogger(logging.LoggerAdapter[logging.Logger]):
    # websockets decides once per connection whether to log frames and the request
    # line (which holds the token) by asking isEnabledFor(DEBUG); always say no.
    def isEnabledFor(self, level: int) -> bool:
        return level > logging.DEBUG and self.logger.isEnabledFor(level)

    def debug(self, msg: object, *args: Any, **kwargs: Any) -> None:
        return None


class _WebSocket:
    def __init__(self, ws: ClientConnection, close_timeout: float) -> None:
        self._ws = ws
        self._close_timeout = close_timeout

    async def recv(self) -> bytes | str:
        try:
            return await self._ws.recv()
        except ConnectionClosed as exc:
            raise SocketClosed(str(exc)) from None

    async def send(self, text: str) -> None:
        try:
            await self._ws.send(text)
        except ConnectionClosed as exc:
            raise SocketClosed(str(exc)) from None

    async def close(self) -> None:
        try:
            async with asyncio.timeout(self._close_timeout):
                await self._ws.close()
        except (TimeoutError, OSError, WebSocketException):
            self.abort()

    def abort(self) -> None:
        self._ws.transport.abort()


class WebSocketConnector:
    """Opens Kite ticker sockets with ``websockets`` (no threads, no keepalive pings)."""

    def __init__(
        self,
        ws_url: str,
        *,
        connect_timeout: float,
        max_frame_bytes: int = DEFAULT_MAX_FRAME_BYTES,
        close_timeout: float = 1.0,
    ) -> None:
        self.ws_url = ws_url
        self.connect_timeout = connect_timeout
        self.max_frame_bytes = max_frame_bytes
        self.close_timeout = close_timeout
        self._logger = _NoDebugLogger(logging.getLogger("alphapanda.kite.websockets"), {})

    def _url(self, api_key: str, access_token: str) -> str:
        query = urlencode({"api_key": api_key, "access_token": access_token})
        return f"{self.ws_url}{'&' if '?' in self.ws_url else '?'}{query}"

    async def open(self, api_key: str, access_token: str) -> FrameSocket:
        headers: Mapping[str, str] = dict([KITE_VERSION_HEADER])
        try:
            async with asyncio.timeout(self.connect_timeout):
                ws = await connect(
                    self._url(api_key, access_token),
                    additional_headers=headers,
                    # Kite liveness is judged by frames (heartbeats included), not by
                    # WebSocket pings, which Kite's server does not promise to answer.
                    ping_interval=None,
                    ping_timeout=None,
                    # Kite does not negotiate permessage-deflate; skip the offer.
                    compression=None,
                    # A market feed connects directly; never send the token to a proxy
                    # picked up from the environment.
                    proxy=None,
                    open_timeout=None,
                    close_timeout=self.close_timeout,
                    max_size=self.max_frame_bytes,
                    logger=self._logger,
                )
        except TimeoutError:
            raise ConnectFailed("timeout", "handshake timed out") from None
        except InvalidStatus as exc:
            status = exc.response.status_code
            reason: Reason = (
                "auth_403" if status == 403 else "capacity_429" if status == 429 else "http_error"
            )
            raise ConnectFailed(reason, f"handshake rejected: HTTP {status}", status) from None
        except InvalidURI:
            raise ConnectFailed("protocol_error", f"invalid ticker URL {self.ws_url!r}") from None
        except (InvalidHandshake, WebSocketException) as exc:
            detail = scrub(f"{type(exc).__name__}: {exc}", access_token)
            raise ConnectFailed("protocol_error", detail) from None
        except OSError as exc:
            detail = scrub(f"{type(exc).__name__}: {exc}", access_token)
            raise ConnectFailed("refused", detail) from None
        return _WebSocket(ws, self.close_timeout)
