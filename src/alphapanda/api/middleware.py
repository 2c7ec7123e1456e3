"""The rate-limit gate, as plain ASGI middleware in front of every route.

Middleware rather than per-route dependencies so that nothing can be forgotten: unknown
paths, the status page and the OpenAPI document are all counted as reads, and only the
paths in ``ratelimit.EXEMPT_PATHS`` pass untouched.
"""

from __future__ import annotations

import json
from typing import Final

from pydantic import SecretStr
from starlette.datastructures import Headers
from starlette.types import ASGIApp, Message, Receive, Scope, Send

from alphapanda.api.ratelimit import RateLimiter, classify
from alphapanda.api.security import identify, parse_trusted_proxies

DEGRADED_HEADER: Final = "X-RateLimit-Status"


class RateLimitMiddleware:
    """Counts each HTTP request against the shared limit of its route class."""

    def __init__(
        self,
        app: ASGIApp,
        limiter: RateLimiter,
        api_key: SecretStr,
        trusted_proxies: tuple[str, ...],
    ) -> None:
        self._app = app
        self._limiter = limiter
        self._api_key = api_key
        self._trusted = parse_trusted_proxies(trusted_proxies)

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self._app(scope, receive, send)
            return
        route_class = classify(scope["method"], scope["path"])
        if route_class == "exempt":
            await self._app(scope, receive, send)
            return
        client = scope.get("client")
        identity = identify(
            Headers(scope=scope), client[0] if client else None, self._api_key, self._trusted
        )
        decision = await self._limiter.check(route_class, identity.bucket)
        if not decision.allowed:
            if decision.storage_ok:
                detail = f"rate limit exceeded ({decision.limit} {route_class} requests per window)"
                await _reply(send, 429, detail, decision.retry_after)
            else:
                detail = "rate limiting is unavailable (Redis unreachable); writes are refused"
                await _reply(send, 503, detail, decision.retry_after)
            return
        if decision.storage_ok:
            await self._app(scope, receive, send)
            return

        async def send_marked(message: Message) -> None:
            # Fail-open: tell the caller (and any proxy logs) the limit was not applied.
            if message["type"] == "http.response.start":
                headers = list(message.get("headers", []))
                headers.append((DEGRADED_HEADER.lower().encode(), b"unavailable"))
                message = {**message, "headers": headers}
            await send(message)

        await self._app(scope, receive, send_marked)


async def _reply(send: Send, status: int, detail: str, retry_after: int) -> None:
    body = json.dumps({"detail": detail}).encode()
    await send(
        {
            "type": "http.response.start",
            "status": status,
            "headers": [
                (b"content-type", b"application/json"),
                (b"content-length", str(len(body)).encode()),
                (b"retry-after", str(retry_after).encode()),
                # A refused request's body is not read: the connection cannot be reused.
                (b"connection", b"close"),
            ],
        }
    )
    await send({"type": "http.response.body", "body": body})
