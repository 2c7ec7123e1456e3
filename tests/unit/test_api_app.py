"""``create_app``: the two roles, the status page, the OpenAPI document, the secrets the
app scrubs from free text, and the rate limiter it builds from the settings."""

from __future__ import annotations

from typing import Any

import pytest
from limits.aio.storage import MemoryStorage
from limits.aio.strategies import MovingWindowRateLimiter
from pydantic import SecretStr

from alphapanda.api.app import ApiContext, create_app
from alphapanda.api.ratelimit import RateLimiter
from alphapanda.settings import Settings
from tests.support.api import API_KEY, FakeFeed, ScriptedLimiter, build_app, client_of

pytestmark = pytest.mark.unit


async def _openapi(control: Any) -> dict[str, Any]:
    async with client_of(build_app(control)) as http:
        response = await http.get("/openapi.json")
    assert response.status_code == 200
    document: dict[str, Any] = response.json()
    return document


def test_the_role_follows_whether_a_feed_is_given() -> None:
    assert build_app(FakeFeed()).state.ctx.role == "feed"
    assert build_app(None).state.ctx.role == "monitor"


async def test_the_status_page_is_html_that_is_never_cached() -> None:
    limiter = ScriptedLimiter()
    async with client_of(build_app(FakeFeed(), limiter=limiter)) as http:
        response = await http.get("/")
    assert response.status_code == 200
    assert response.headers["content-type"].startswith("text/html")
    assert response.headers["cache-control"] == "no-store"
    assert "<html" in response.text.lower()
    assert [route_class for route_class, _ in limiter.checks] == ["read"]


async def test_the_feeds_openapi_documents_subscriptions_and_the_key_they_need() -> None:
    document = await _openapi(FakeFeed())
    assert document["info"]["title"] == "Alpha Panda market feed"
    paths = document["paths"]
    assert {"/health", "/ready", "/status", "/metrics", "/subscriptions"} <= set(paths)
    assert set(paths["/subscriptions"]) == {"get", "post", "delete"}
    schemes = document["components"]["securitySchemes"]
    assert schemes == {"APIKeyHeader": {"type": "apiKey", "in": "header", "name": "X-API-Key"}}
    for method in ("post", "delete"):
        assert paths["/subscriptions"][method]["security"] == [{"APIKeyHeader": []}]
        assert {"401", "413", "422", "429", "503"} <= set(
            paths["/subscriptions"][method]["responses"]
        )
    assert "409" in paths["/subscriptions"]["post"]["responses"]
    assert "security" not in paths["/subscriptions"]["get"]


async def test_the_monitors_openapi_has_no_feed_routes() -> None:
    document = await _openapi(None)
    assert document["info"]["title"] == "Alpha Panda market feed (monitor)"
    paths = set(document["paths"])
    assert {"/health", "/status", "/metrics", "/monitoring/health"} <= paths
    assert not {"/ready", "/subscriptions", "/quotes", "/quotes/{instrument_token}"} & paths


async def test_the_status_page_docs_and_chart_library_are_not_in_the_openapi() -> None:
    paths = set((await _openapi(FakeFeed()))["paths"])
    assert not {"/", "/docs", "/static/vendor/lightweight-charts.js"} & paths


def test_the_secrets_to_scrub_include_tokens_keys_and_url_passwords() -> None:
    settings = Settings(  # type: ignore[call-arg]
        _env_file=None,
        api={"api_key": SecretStr(API_KEY)},  # type: ignore[arg-type]
        kite={"access_token": SecretStr("tok-abcdef"), "api_secret": SecretStr("sec-123456")},  # type: ignore[arg-type]
        redis={"url": SecretStr("redis://:hunter22@redis:6379/0")},  # type: ignore[arg-type]
    )
    ctx = build_app(FakeFeed(), settings=settings).state.ctx
    assert isinstance(ctx, ApiContext)
    for secret in (API_KEY, "tok-abcdef", "sec-123456", "hunter22"):
        assert secret in ctx.secrets


async def test_without_a_limiter_one_is_built_from_the_settings() -> None:
    settings = Settings(_env_file=None, api={"rate_limit": "7/minute"})  # type: ignore[call-arg, arg-type]
    app = create_app(settings, FakeFeed(), None)
    limiter = app.state.ctx.limiter
    try:
        assert isinstance(limiter, RateLimiter)
        # Its Redis strategy swapped for process memory: the limit is the configured one.
        limiter._strategy = MovingWindowRateLimiter(MemoryStorage())
        assert (await limiter.check("read", "addr:1.1.1.1")).limit == 7
        assert (await limiter.check("mutating", "addr:1.1.1.1")).limit == 30  # the default
    finally:
        await limiter.aclose()
