"""Checks of everything the feed depends on, for ``alphapanda doctor``.

Reachability (Kafka, Redis, PostgreSQL, the Kite ticker) and readiness for a real
account: endpoints that match the API key, a usable access token, a streaming set the
key can carry, and the topic.
"""

from __future__ import annotations

import asyncio
import re
from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from urllib.parse import urlencode, urlsplit

from alphapanda.settings import KITE_ENDPOINTS, Settings, redact_url
from alphapanda.topics import TopicNames

CHECK_TIMEOUT = 5.0
# Kite Connect API keys are 16 lower-case letters and digits.
_REAL_API_KEY = re.compile(r"^[a-z0-9]{16}$")
_LOOPBACK_HOSTS = ("127.0.0.1", "localhost", "::1", "[::1]")


class CheckWarning(Exception):
    """Not a failure, but something the operator should look at (``WARN``)."""


@dataclass(frozen=True, slots=True)
class CheckResult:
    name: str
    target: str
    ok: bool
    detail: str
    warning: bool = False

    @property
    def status(self) -> str:
        """``OK``, ``WARN`` or ``FAIL``."""
        if not self.ok:
            return "FAIL"
        return "WARN" if self.warning else "OK"


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


def _is_loopback(url: str) -> bool:
    return (urlsplit(url).hostname or "") in _LOOPBACK_HOSTS


async def check_endpoints(settings: Settings) -> str:
    """The API key and the endpoints must belong together: a real key against the
    simulator (or the simulator's key against Kite) is a configuration slip."""
    kite = settings.kite
    urls = (kite.ws_url, kite.api_root, kite.login_url)
    loopback = [u for u in urls if _is_loopback(u)]
    if _REAL_API_KEY.match(kite.api_key) and loopback:
        raise CheckWarning(
            f"the API key looks like a real Kite Connect key but {', '.join(loopback)} "
            "is loopback (the simulator); set ALPHAPANDA_KITE__ENV=live"
        )
    if kite.env == "live" and kite.api_key == "alphapanda-dev":
        raise CheckWarning(
            "ALPHAPANDA_KITE__ENV=live with the simulator's API key; set ALPHAPANDA_KITE__API_KEY"
        )
    real = KITE_ENDPOINTS["live"]
    if kite.env == "live" and any(getattr(kite, k) != v for k, v in real.items()):
        return f"env live with overridden URL(s): {kite.ws_url}, {kite.api_root}"
    return f"env {kite.env}: {kite.ws_url}, {kite.api_root}"


async def _access_token(settings: Settings) -> str:
    """The token the feed would use: the stored one, else the settings' fallback."""
    from alphapanda.auth import AuthService

    async with AuthService(settings) as auth:
        return await auth.get_access_token()


async def check_token(settings: Settings) -> str:
    from alphapanda.auth import AuthService

    async with AuthService(settings) as auth:
        status = await auth.status()
    if not status.has_token:
        state = "expired" if status.expired else "missing"
        raise RuntimeError(
            f"access token {state}: run `alphapanda auth login` (log in at "
            f"{settings.kite.login_url}?v=3&api_key={settings.kite.api_key})"
        )
    left = ""
    if status.seconds_left is not None:
        hours, rest = divmod(int(status.seconds_left), 3600)
        left = f", {hours}h {rest // 60:02d}m left"
    return f"valid (from {status.source}{left})"


async def check_instruments(settings: Settings) -> str:
    from alphapanda.registry import InstrumentRegistryService

    async with InstrumentRegistryService(settings) as registry:
        summary = await registry.summary()
    csv = settings.feed.instruments_csv
    if summary.streaming == 0:
        if csv is not None:
            raise CheckWarning(
                f"no streaming set in the registry; the feed streams the CSV {csv} "
                f"({summary.known} instrument(s) known)"
            )
        raise RuntimeError(
            f"nothing to stream ({summary.known} instrument(s) known): run `alphapanda "
            "instruments fetch` then `alphapanda instruments stream NSE:INFY ...`"
        )
    detail = (
        f"{summary.streaming} streaming of {summary.capacity} the key allows; {summary.known} known"
    )
    if summary.streaming > summary.capacity:
        raise RuntimeError(detail + ": over capacity")
    if summary.expired_streaming:
        raise CheckWarning(
            f"{detail}; {summary.expired_streaming} streaming contract(s) expired: run "
            "`alphapanda instruments fetch --retire-expired`"
        )
    return detail


async def check_topic(settings: Settings) -> str:
    from confluent_kafka.admin import AdminClient

    topic = TopicNames.market_ticks(settings.kafka.topic_prefix)
    admin = AdminClient({"bootstrap.servers": settings.kafka.bootstrap_servers, "log_level": 0})
    metadata = await asyncio.to_thread(admin.list_topics, topic=topic, timeout=CHECK_TIMEOUT)
    found = metadata.topics.get(topic)
    if found is None or found.error is not None:
        raise CheckWarning(
            f"{topic} does not exist yet; the feed creates it at start with "
            f"{settings.kafka.topic_partitions} partition(s)"
        )
    return f"{len(found.partitions)} partition(s)"


async def check_kite(settings: Settings) -> str:
    import websockets

    try:
        token = await _access_token(settings)
    except Exception:
        # No stored token (or no database): the token check explains that; try the
        # settings' own token so the endpoint itself is still checked.
        token = settings.kite.access_token.get_secret_value()
    query = urlencode({"api_key": settings.kite.api_key, "access_token": token})
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
    if isinstance(exc, RuntimeError) and str(exc):
        return str(exc)
    if isinstance(exc, TimeoutError):
        return f"no answer within {CHECK_TIMEOUT:.0f}s"
    text = str(exc) or type(exc).__name__
    return f"{type(exc).__name__}: {text}"


async def run_checks(settings: Settings) -> list[CheckResult]:
    """Run every check concurrently; each gets a bounded time and an explained failure."""
    topic = TopicNames.market_ticks(settings.kafka.topic_prefix)
    checks: list[tuple[str, str, Callable[[Settings], Awaitable[str]]]] = [
        ("kafka", settings.kafka.bootstrap_servers, check_kafka),
        ("redis", redact_url(settings.redis.url.get_secret_value()), check_redis),
        ("postgres", redact_url(settings.database.url.get_secret_value()), check_postgres),
        ("endpoints", f"api key {settings.kite.api_key}", check_endpoints),
        ("token", "stored or configured token", check_token),
        ("instruments", "instrument registry", check_instruments),
        ("topic", topic, check_topic),
        ("kite", settings.kite.ws_url, check_kite),
    ]

    async def one(
        name: str, target: str, check: Callable[[Settings], Awaitable[str]]
    ) -> CheckResult:
        try:
            detail = await asyncio.wait_for(check(settings), CHECK_TIMEOUT * 2)
        except CheckWarning as warning:
            return CheckResult(name, target, True, _scrub(str(warning), settings), warning=True)
        except Exception as exc:
            return CheckResult(name, target, False, _scrub(_explain(exc), settings))
        return CheckResult(name, target, True, detail)

    return list(await asyncio.gather(*(one(*c) for c in checks)))
