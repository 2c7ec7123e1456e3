"""The rate-limit gate in front of every route: which requests are counted, against which
class and bucket, and what a caller sees when the limit or its storage says no."""

from __future__ import annotations

import json
from typing import Any

import pytest
from pydantic import SecretStr
from starlette.types import Message, Receive, Scope, Send

from alphapanda.api.middleware import DEGRADED_HEADER, RateLimitMiddleware
from alphapanda.api.ratelimit import Decision
from alphapanda.api.security import key_fingerprint
from tests.support.api import (
    API_KEY,
    KEY_HEADER,
    FakeFeed,
    ScriptedLimiter,
    build_app,
    client_of,
    unit_settings,
)

pytestmark = pytest.mark.unit

KEY_BUCKET = f"key:{key_fingerprint(API_KEY)}"
DENIED = Decision(allowed=False, retry_after=17, limit=30)
STORAGE_DOWN_CLOSED = Decision(allowed=False, storage_ok=False, retry_after=5, limit=30)
STORAGE_DOWN_OPEN = Decision(allowed=True, storage_ok=False, limit=120)


# --- what is counted, and as whom ----------------------------------------------------


@pytest.mark.parametrize("method", ["GET", "HEAD"])
async def test_health_probes_are_never_counted(method: str) -> None:
    limiter = ScriptedLimiter(decisions={"read": DENIED})
    async with client_of(build_app(FakeFeed(), limiter=limiter)) as http:
        response = await http.request(method, "/health")
    assert response.status_code == 200
    assert limiter.checks == []


@pytest.mark.parametrize("path", ["/status", "/subscriptions", "/", "/openapi.json", "/nowhere"])
async def test_every_other_get_is_a_read_of_the_callers_address(path: str) -> None:
    limiter = ScriptedLimiter()
    app = build_app(FakeFeed(), limiter=limiter)
    async with client_of(app, client=("198.51.100.9", 4711)) as http:
        await http.get(path)
    assert limiter.checks == [("read", "addr:198.51.100.9")]


async def test_a_write_is_counted_as_mutating() -> None:
    limiter = ScriptedLimiter()
    async with client_of(build_app(FakeFeed(), limiter=limiter)) as http:
        response = await http.post("/subscriptions", json={"tokens": [1]}, headers=KEY_HEADER)
    assert response.status_code == 200
    assert limiter.checks == [("mutating", KEY_BUCKET)]


async def test_a_caller_with_the_valid_key_is_bucketed_by_its_digest_not_the_key() -> None:
    limiter = ScriptedLimiter()
    async with client_of(build_app(FakeFeed(), limiter=limiter)) as http:
        await http.get("/status", headers=KEY_HEADER)
    assert limiter.checks == [("read", KEY_BUCKET)]
    assert API_KEY not in limiter.checks[0][1]


async def test_a_wrong_key_does_not_earn_a_bucket_of_its_own() -> None:
    limiter = ScriptedLimiter()
    async with client_of(build_app(FakeFeed(), limiter=limiter)) as http:
        await http.get("/status", headers={"X-API-Key": "guess-1"})
        await http.get("/status", headers={"X-API-Key": "guess-2"})
    assert limiter.checks == [("read", "addr:127.0.0.1"), ("read", "addr:127.0.0.1")]


async def test_key_guesses_on_a_protected_route_are_counted_against_the_write_limit() -> None:
    # Guessing the key must cost a write each; otherwise guessing is unlimited.
    limiter = ScriptedLimiter()
    async with client_of(build_app(FakeFeed(), limiter=limiter)) as http:
        for guess in ("guess-1", "guess-2", "guess-3"):
            response = await http.post(
                "/subscriptions", json={"tokens": [1]}, headers={"X-API-Key": guess}
            )
            assert response.status_code == 401
    assert limiter.checks == [("mutating", "addr:127.0.0.1")] * 3


async def test_key_guesses_are_refused_once_the_write_limit_is_spent() -> None:
    limiter = ScriptedLimiter(decisions={"mutating": DENIED})
    async with client_of(build_app(FakeFeed(), limiter=limiter)) as http:
        response = await http.post(
            "/subscriptions", json={"tokens": [1]}, headers={"X-API-Key": "guess"}
        )
    assert response.status_code == 429


async def test_forwarded_for_from_an_untrusted_peer_is_ignored() -> None:
    limiter = ScriptedLimiter()
    app = build_app(FakeFeed(), limiter=limiter)
    async with client_of(app, client=("203.0.113.5", 1)) as http:
        await http.get("/status", headers={"X-Forwarded-For": "1.2.3.4"})
    assert limiter.checks == [("read", "addr:203.0.113.5")]


async def test_behind_a_trusted_proxy_the_forwarded_client_is_the_bucket() -> None:
    limiter = ScriptedLimiter()
    settings = unit_settings(trusted_proxies=("10.0.0.0/8",))
    app = build_app(FakeFeed(), limiter=limiter, settings=settings)
    async with client_of(app, client=("10.1.2.3", 1)) as http:
        await http.get("/status", headers={"X-Forwarded-For": "6.6.6.6, 198.51.100.7"})
    assert limiter.checks == [("read", "addr:198.51.100.7")]


# --- what the caller sees ------------------------------------------------------------


async def test_over_the_limit_is_429_with_retry_after_and_the_route_is_not_run() -> None:
    feed = FakeFeed()
    limiter = ScriptedLimiter(decisions={"mutating": DENIED})
    async with client_of(build_app(feed, limiter=limiter)) as http:
        response = await http.post("/subscriptions", json={"tokens": [1]}, headers=KEY_HEADER)
    assert response.status_code == 429
    assert response.headers["retry-after"] == "17"
    assert response.headers["content-type"] == "application/json"
    assert response.json() == {"detail": "rate limit exceeded (30 mutating requests per window)"}
    assert feed.added == []


async def test_reads_and_writes_are_limited_separately() -> None:
    limiter = ScriptedLimiter(decisions={"read": DENIED})
    feed = FakeFeed()
    async with client_of(build_app(feed, limiter=limiter)) as http:
        read = await http.get("/subscriptions")
        write = await http.post("/subscriptions", json={"tokens": [1]}, headers=KEY_HEADER)
    assert read.status_code == 429
    assert "read requests" in read.json()["detail"]
    assert write.status_code == 200
    assert feed.subscribed == {1: "quote"}


async def test_writes_fail_closed_with_503_when_the_limit_cannot_be_checked() -> None:
    feed = FakeFeed()
    limiter = ScriptedLimiter(decisions={"mutating": STORAGE_DOWN_CLOSED})
    async with client_of(build_app(feed, limiter=limiter)) as http:
        response = await http.post("/subscriptions", json={"tokens": [1]}, headers=KEY_HEADER)
    assert response.status_code == 503
    assert response.headers["retry-after"] == "5"
    assert "Redis unreachable" in response.json()["detail"]
    assert feed.added == []


async def test_reads_fail_open_and_are_marked_when_the_limit_cannot_be_checked() -> None:
    limiter = ScriptedLimiter(decisions={"read": STORAGE_DOWN_OPEN})
    async with client_of(build_app(FakeFeed(ready=True), limiter=limiter)) as http:
        response = await http.get("/ready")
    assert response.status_code == 200
    assert response.json() == {"ready": True, "reasons": []}
    assert response.headers[DEGRADED_HEADER] == "unavailable"


async def test_a_counted_request_carries_no_degraded_marker() -> None:
    async with client_of(build_app(FakeFeed())) as http:
        response = await http.get("/ready")
    assert response.status_code == 200
    assert DEGRADED_HEADER.lower() not in response.headers


# --- the middleware on its own -------------------------------------------------------


class _Inner:
    """An ASGI app that records the scopes it saw and answers 204."""

    def __init__(self) -> None:
        self.scopes: list[Scope] = []

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        self.scopes.append(scope)
        if scope["type"] == "http":
            await send({"type": "http.response.start", "status": 204, "headers": []})
            await send({"type": "http.response.body", "body": b""})


def _gate(inner: _Inner, limiter: ScriptedLimiter) -> RateLimitMiddleware:
    return RateLimitMiddleware(inner, limiter.as_limiter(), SecretStr(API_KEY), ())


async def _nothing() -> Message:
    return {"type": "http.request", "body": b"", "more_body": False}


def _http(method: str, path: str, **extra: Any) -> Scope:
    return {"type": "http", "method": method, "path": path, "headers": [], **extra}


async def test_non_http_traffic_passes_without_being_counted() -> None:
    inner, limiter = _Inner(), ScriptedLimiter(decisions={"read": DENIED})
    sent: list[Message] = []

    async def send(message: Message) -> None:
        sent.append(message)

    await _gate(inner, limiter)({"type": "lifespan"}, _nothing, send)
    assert [scope["type"] for scope in inner.scopes] == ["lifespan"]
    assert limiter.checks == []


async def test_a_request_without_a_known_peer_is_bucketed_as_unknown() -> None:
    inner, limiter = _Inner(), ScriptedLimiter()
    sent: list[Message] = []

    async def send(message: Message) -> None:
        sent.append(message)

    await _gate(inner, limiter)(_http("GET", "/status", client=None), _nothing, send)
    assert limiter.checks == [("read", "addr:unknown")]
    assert sent[0]["status"] == 204


async def test_the_refusal_body_matches_its_content_length() -> None:
    inner, limiter = _Inner(), ScriptedLimiter(decisions={"read": DENIED})
    sent: list[Message] = []

    async def send(message: Message) -> None:
        sent.append(message)

    await _gate(inner, limiter)(_http("GET", "/status", client=("127.0.0.1", 1)), _nothing, send)
    assert inner.scopes == []
    start, body = sent
    headers = dict(start["headers"])
    assert start["status"] == 429
    assert int(headers[b"content-length"]) == len(body["body"])
    assert json.loads(body["body"])["detail"].startswith("rate limit exceeded")
