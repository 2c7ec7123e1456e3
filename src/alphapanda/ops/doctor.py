"""Reachability checks of everything the feed depends on, for ``alphapanda doctor``."""

from __future__ import annotations

import asyncio
from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from urllib.parse import urlencode

from alphapanda.settings import Settings, redact_url

CHECK_TIMEOUT = 5.0


@dataclass(frozen=True, slots=True)
class CheckResult:
    name: str
    target: str
    ok: bool
    detail: str


def _scrub(text: str, settings: Settings) -> str:
    """Remove every secret from an error text before it is shown."""
    for secret in (
        settings.kite.access_token.get_secret_value(),
        settings.kite.api_secret.get_secret_value(),
        settings.redis.url.get_secret_value(),
        settings.database.url.get_secret_value(),
    ):
        if secret:
            text = text.replace(secret, "********")
    return text


async def check_kafka(settings: Settings) -> str:
    from confluent_kafka.admin import AdminClient

    from alphapanda.kafka_security import security_config

    admin = AdminClient(
        {
            "bootstrap.servers": settings.kafka.bootstrap_servers,
            "log_level": 0,
            **security_config(settings.kafka),
        }
    )
    metadata = await asyncio.to_thread(admin.list_topics, timeout=CHECK_TIMEOUT)
    return f"{len(metadata.brokers)} broker(s), {len(metadata.topics)} topic(s)"


async def check_redis(settings: Settings) -> str:
    import redis.asyncio as redis

    client = redis.Redis.from_url(
        settings.redis.url.get_secret_value(), socket_connect_timeout=CHECK_TIMEOUT
    )
    try:
        await client.ping()
        info = await client.info("server")
        return f"redis {info.get('redis_version', '?')}"
    finally:
        await client.aclose()


async def check_postgres(settings: Settings) -> str:
    import asyncpg

    dsn = settings.database.url.get_secret_value().replace("postgresql+asyncpg://", "postgresql://")
    conn = await asyncpg.connect(dsn, timeout=CHECK_TIMEOUT)
    try:
        version = await conn.fetchval("SHOW server_version")
        return f"postgresql {version}"
    finally:
        await conn.close()


async def check_kite(settings: Settings) -> str:
    import websockets

    query = urlencode(
        {
            "api_key": settings.kite.api_key,
            "access_token": settings.kite.access_token.get_secret_value(),
        }
    )
    async with websockets.connect(
        f"{settings.kite.ws_url}?{query}",
        additional_headers={"X-Kite-Version": "3"},
        open_timeout=CHECK_TIMEOUT,
    ):
        return "handshake accepted"


def _explain(exc: BaseException) -> str:
    import websockets

    if isinstance(exc, websockets.InvalidStatus):
        status = exc.response.status_code
        reason = {403: "token rejected or expired", 429: "too many connections for this api key"}
        return f"handshake rejected: HTTP {status} ({reason.get(status, 'unexpected status')})"
    if isinstance(exc, TimeoutError):
        return f"no answer within {CHECK_TIMEOUT:.0f}s"
    text = str(exc) or type(exc).__name__
    return f"{type(exc).__name__}: {text}"


async def run_checks(settings: Settings) -> list[CheckResult]:
    """Run every check concurrently; each gets a bounded time and an explained failure."""
    checks: list[tuple[str, str, Callable[[Settings], Awaitable[str]]]] = [
        ("kafka", settings.kafka.bootstrap_servers, check_kafka),
        ("redis", redact_url(settings.redis.url.get_secret_value()), check_redis),
        ("postgres", redact_url(settings.database.url.get_secret_value()), check_postgres),
        ("kite", settings.kite.ws_url, check_kite),
    ]

    async def one(
        name: str, target: str, check: Callable[[Settings], Awaitable[str]]
    ) -> CheckResult:
        try:
            detail = await asyncio.wait_for(check(settings), CHECK_TIMEOUT + 1)
        except Exception as exc:
            return CheckResult(name, target, False, _scrub(_explain(exc), settings))
        return CheckResult(name, target, True, detail)

    return list(await asyncio.gather(*(one(*c) for c in checks)))
