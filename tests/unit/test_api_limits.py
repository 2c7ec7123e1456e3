"""The request guard: the API key before any body on protected routes, and a body-size
limit that holds for declared and for streamed (chunked) bodies."""

from __future__ import annotations

import json
from collections.abc import AsyncIterator

import pytest
from fastapi import APIRouter
from fastapi.routing import APIRoute
from pydantic import SecretStr
from starlette.types import Message, Receive, Scope, Send

from alphapanda.api.limits import RequestGuardMiddleware
from tests.support.api import API_KEY, KEY_HEADER, FakeFeed, build_app, client_of, unit_settings

pytestmark = pytest.mark.unit

LIMIT = 1024


def _protected_routes() -> list[APIRoute]:
    router = APIRouter()

    async def endpoint() -> None:
        return None

    router.add_api_route("/things", endpoint, methods=["POST", "DELETE"])
    router.add_api_route("/things/{thing_id}", endpoint, methods=["PUT"])
    return [route for route in router.routes if isinstance(route, APIRoute)]


class _Echo:
    """An ASGI app that reads the whole body, then answers 200 with its length; records
    every message it received."""

    def __init__(self) -> None:
        self.called = False
        self.received: list[Message] = []

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        self.called = True
        size = 0
        while True:
            message = await receive()
            self.received.append(message)
            if message["type"] == "http.disconnect":
                break
            size += len(message.get("body", b""))
            if not message.get("more_body", False):
                break
        body = json.dumps({"size": size}).encode()
        await send({"type": "http.response.start", "status": 200, "headers": []})
        await send({"type": "http.response.body", "body": body})


class _Exchange:
    """Drives one request through the guard: body chunks in, messages out."""

    def __init__(self, chunks: list[bytes]) -> None:
        self._chunks = list(chunks)
        self.reads = 0
        self.sent: list[Message] = []

    async def receive(self) -> Message:
        self.reads += 1
        chunk = self._chunks.pop(0)
        return {"type": "http.request", "body": chunk, "more_body": bool(self._chunks)}

    async def send(self, message: Message) -> None:
        self.sent.append(message)

    @property
    def status(self) -> int:
        starts = [m for m in self.sent if m["type"] == "http.response.start"]
        assert len(starts) == 1, self.sent
        status: int = starts[0]["status"]
        return status

    @property
    def headers(self) -> dict[bytes, bytes]:
        return dict(self.sent[0]["headers"])

    @property
    def detail(self) -> str:
        detail: str = json.loads(self.sent[1]["body"])["detail"]
        return detail


def _scope(method: str, path: str, headers: dict[str, str] | None = None) -> Scope:
    raw = [(k.lower().encode(), v.encode()) for k, v in (headers or {}).items()]
    return {"type": "http", "method": method, "path": path, "headers": raw}


async def _run(scope: Scope, chunks: list[bytes]) -> tuple[_Echo, _Exchange]:
    inner = _Echo()
    guard = RequestGuardMiddleware(inner, SecretStr(API_KEY), LIMIT, _protected_routes())
    exchange = _Exchange(chunks)
    await guard(scope, exchange.receive, exchange.send)
    return inner, exchange


# --- the key before the body ---------------------------------------------------------


@pytest.mark.parametrize("headers", [{}, {"X-API-Key": "wrong"}, {"X-API-Key": ""}])
async def test_a_protected_route_without_the_key_is_401_before_any_body_is_read(
    headers: dict[str, str],
) -> None:
    inner, exchange = await _run(_scope("POST", "/things", headers), [b"x" * 10])
    assert exchange.status == 401
    assert exchange.detail == "missing or invalid X-API-Key"
    assert exchange.reads == 0
    assert not inner.called
    # The unread body must not be drained to reuse the connection.
    assert exchange.headers[b"connection"] == b"close"


async def test_a_protected_route_with_the_key_reaches_the_app_with_its_body() -> None:
    _, exchange = await _run(_scope("DELETE", "/things", KEY_HEADER), [b"ab", b"cd"])
    assert exchange.status == 200
    assert json.loads(exchange.sent[1]["body"]) == {"size": 4}


async def test_a_path_parameter_route_is_protected_too() -> None:
    inner, exchange = await _run(_scope("PUT", "/things/42"), [b""])
    assert exchange.status == 401
    assert not inner.called


@pytest.mark.parametrize(("method", "path"), [("GET", "/things"), ("POST", "/other")])
async def test_other_methods_and_paths_need_no_key(method: str, path: str) -> None:
    inner, exchange = await _run(_scope(method, path), [b""])
    assert exchange.status == 200
    assert inner.called


async def test_non_http_traffic_passes_untouched() -> None:
    inner, exchange = await _run({"type": "lifespan"}, [b""])
    assert inner.called
    assert exchange.reads == 1  # the inner app read, the guard did not intervene


# --- the body-size limit -------------------------------------------------------------


async def test_a_declared_length_over_the_limit_is_413_before_anything_is_read() -> None:
    headers = {**KEY_HEADER, "Content-Length": str(LIMIT + 1)}
    inner, exchange = await _run(_scope("POST", "/things", headers), [b"x" * (LIMIT + 1)])
    assert exchange.status == 413
    assert (
        exchange.detail
        == f"request body larger than {LIMIT} bytes (ALPHAPANDA_API__MAX_BODY_BYTES)"
    )
    assert exchange.reads == 0
    assert not inner.called
    assert exchange.headers[b"connection"] == b"close"


async def test_a_body_of_exactly_the_limit_is_accepted() -> None:
    headers = {"Content-Length": str(LIMIT)}
    _, exchange = await _run(_scope("POST", "/other", headers), [b"x" * LIMIT])
    assert exchange.status == 200
    assert json.loads(exchange.sent[1]["body"]) == {"size": LIMIT}


async def test_a_streamed_body_is_cut_off_with_413_once_it_passes_the_limit() -> None:
    chunks = [b"x" * 600, b"x" * 600, b"x" * 600]
    inner, exchange = await _run(_scope("POST", "/other"), chunks)
    assert exchange.status == 413  # one response start: the app's own reply is dropped
    assert exchange.reads == 2  # the third chunk is never read
    # The app saw the first chunk, then a client that left.
    assert [m["type"] for m in inner.received] == ["http.request", "http.disconnect"]


async def test_the_limit_does_not_apply_to_gets_without_a_body() -> None:
    _, exchange = await _run(_scope("GET", "/things"), [b""])
    assert exchange.status == 200


async def test_a_non_numeric_content_length_is_left_to_the_streaming_count() -> None:
    headers = {"Content-Length": "lots"}
    _, exchange = await _run(_scope("POST", "/other", headers), [b"x" * (LIMIT + 1)])
    assert exchange.status == 413
    assert exchange.reads == 1


# --- through the app -----------------------------------------------------------------


async def test_the_app_refuses_an_oversized_subscription_body_with_413() -> None:
    feed = FakeFeed()
    app = build_app(feed, settings=unit_settings(max_body_bytes=LIMIT))
    tokens = list(range(1, 400))  # ~2 KB of JSON
    async with client_of(app) as http:
        response = await http.post("/subscriptions", json={"tokens": tokens}, headers=KEY_HEADER)
    assert response.status_code == 413
    assert f"larger than {LIMIT} bytes" in response.json()["detail"]
    assert feed.added == []


async def test_the_app_cuts_off_an_oversized_chunked_body() -> None:
    feed = FakeFeed()
    app = build_app(feed, settings=unit_settings(max_body_bytes=LIMIT))

    async def chunked() -> AsyncIterator[bytes]:
        yield b'{"tokens": ['
        for _ in range(400):  # ~1.2 KB in all
            yield b"1, "
        yield b"1]}"

    async with client_of(app) as http:
        response = await http.post("/subscriptions", content=chunked(), headers=KEY_HEADER)
    assert response.status_code == 413
    assert feed.added == []
