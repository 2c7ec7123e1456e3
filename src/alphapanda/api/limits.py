"""What a request may cost before anyone has checked who sent it.

``RequestGuardMiddleware`` sits outside everything else and does two things in plain
ASGI, before FastAPI reads or parses a body:

* a route that needs the API key answers 401 at once when ``X-API-Key`` is missing or
  wrong, without reading a byte of the body (a 50 MB body from a stranger costs a
  header parse, not a JSON parse);
* no body may pass ``max_body_bytes``: a ``Content-Length`` above it is a 413 before
  anything is read, and a chunked body is counted as it streams in and cut off with a
  413 as soon as it passes the limit.

The cap on open connections is uvicorn's ``limit_concurrency`` (503 beyond it), set by
``alphapanda.api.server``.
"""

from __future__ import annotations

import json
from collections.abc import Sequence

from fastapi.routing import APIRoute
from pydantic import SecretStr
from starlette.datastructures import Headers
from starlette.types import ASGIApp, Message, Receive, Scope, Send

from alphapanda.api.security import API_KEY_HEADER, key_matches


class RequestGuardMiddleware:
    """API key before the body on protected routes, and a streaming body-size limit."""

    def __init__(
        self,
        app: ASGIApp,
        api_key: SecretStr,
        max_body_bytes: int,
        protected: Sequence[APIRoute],
    ) -> None:
        self._app = app
        self._api_key = api_key
        self._max = max_body_bytes
        # The routes that declare the API-key dependency (passed in by ``create_app``).
        self._protected = tuple(protected)

    def _is_protected(self, scope: Scope) -> bool:
        method, path = scope["method"], scope["path"]
        return any(
            method in (route.methods or ()) and route.path_regex.match(path)
            for route in self._protected
        )

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self._app(scope, receive, send)
            return
        headers = Headers(scope=scope)
        if self._is_protected(scope) and not key_matches(
            headers.get(API_KEY_HEADER), self._api_key
        ):
            await _reply(send, 401, "missing or invalid X-API-Key", close=True)
            return
        declared = headers.get("content-length")
        if declared is not None and declared.isdigit() and int(declared) > self._max:
            await _reply(send, 413, self._too_large(), close=True)
            return

        received = 0
        started = False
        refused = False

        async def counted_receive() -> Message:
            nonlocal received, started, refused
            if refused:
                return {"type": "http.disconnect"}
            message = await receive()
            if message["type"] == "http.request":
                received += len(message.get("body", b""))
                if received > self._max and not started:
                    # Answer now, stop reading, and let the app see a client that left:
                    # whatever it tries to send afterwards is dropped.
                    refused = started = True
                    await _reply(send, 413, self._too_large(), close=True)
                    return {"type": "http.disconnect"}
            return message

        async def tracked_send(message: Message) -> None:
            nonlocal started
            if refused:
                return
            if message["type"] == "http.response.start":
                started = True
            await send(message)

        await self._app(scope, counted_receive, tracked_send)

    def _too_large(self) -> str:
        return f"request body larger than {self._max} bytes (ALPHAPANDA_API__MAX_BODY_BYTES)"


async def _reply(send: Send, status: int, detail: str, *, close: bool) -> None:
    body = json.dumps({"detail": detail}).encode()
    headers = [
        (b"content-type", b"application/json"),
        (b"content-length", str(len(body)).encode()),
    ]
    if close:
        # The unread body would otherwise have to be drained to reuse the connection.
        headers.append((b"connection", b"close"))
    await send({"type": "http.response.start", "status": status, "headers": headers})
    await send({"type": "http.response.body", "body": body})
