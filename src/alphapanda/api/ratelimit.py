"""Rate limiting shared by every API process, through Redis (``limits``, moving window).

Route classes and their limits (``settings.api``):

``exempt``    ``GET /health`` — never limited, so liveness probes cannot be starved.
``read``      every other ``GET``/``HEAD``/``OPTIONS`` (including unknown paths and the
              status page) — ``rate_limit`` (default ``120/minute``).
``mutating``  ``POST``/``PUT``/``PATCH``/``DELETE`` — ``rate_limit_mutating`` (default
              ``30/minute``), counted *before* the API key is checked so that guessing
              keys is limited too.

The bucket is the caller identity from ``alphapanda.api.security.identify``: a digest
of a valid API key, otherwise the peer address (``X-Forwarded-For`` only behind a
trusted proxy). Buckets live in Redis under ``settings.api.rate_limit_key_prefix``, so
two API processes sharing a Redis share the limit: the combined count is limited.

Redis-down policy (a deliberate asymmetry):

* ``read`` fails **open**: the request is served with the header
  ``X-RateLimit-Status: unavailable`` and ``rate_limit_storage_errors_total`` is
  counted. An operator must still be able to see what the feed is doing while Redis is
  broken; reads cannot harm the feed.
* ``mutating`` fails **closed**: 503 with ``Retry-After``. Changing subscriptions without
  the shared limit would let a runaway script hammer the live Kite connections.

A Redis call is bounded by a short socket timeout, so a paused Redis costs at most that
much per request and never blocks the feed's tick path (it runs on the same loop only
between awaits of the API's own coroutines).
"""

from __future__ import annotations

import logging
import math
import time
from collections.abc import Iterable
from dataclasses import dataclass
from typing import Any, Final, Literal

from limits import RateLimitItem, parse
from limits.aio.storage import RedisStorage
from limits.aio.strategies import MovingWindowRateLimiter
from limits.errors import StorageError
from pydantic import SecretStr
from redis.exceptions import RedisError

from alphapanda.metrics import catalog
from alphapanda.metrics.samples import Sample

RouteClass = Literal["exempt", "read", "mutating"]
ROUTE_CLASSES: Final[tuple[RouteClass, ...]] = ("read", "mutating")
EXEMPT_PATHS: Final = frozenset({"/health"})
_MUTATING_METHODS: Final = frozenset({"POST", "PUT", "PATCH", "DELETE"})
_STORAGE_TIMEOUT_SECONDS: Final = 0.5
# A storage failure is logged at most this often; it is always counted.
_WARN_EVERY_SECONDS: Final = 30.0

log = logging.getLogger(__name__)


def classify(method: str, path: str) -> RouteClass:
    """Which limit applies to a request."""
    method = method.upper()
    if method in _MUTATING_METHODS:
        return "mutating"
    return "exempt" if path in EXEMPT_PATHS and method in ("GET", "HEAD") else "read"


@dataclass(frozen=True, slots=True)
class Decision:
    """The outcome of one check.

    ``allowed`` false with ``storage_ok`` true is a 429; with ``storage_ok`` false it is
    the fail-closed 503. ``allowed`` with ``storage_ok`` false is the fail-open case.
    """

    allowed: bool
    storage_ok: bool = True
    retry_after: int = 0
    limit: int = 0


def storage_uri(redis_url: str) -> str:
    """``redis://…`` → the ``limits`` async URI (``async+redis://…``)."""
    if redis_url.startswith("unix://"):
        return "async+redis+unix://" + redis_url.removeprefix("unix://")
    return "async+" + redis_url


class RateLimiter:
    """The shared limiter. One per API process; ``aclose()`` when the process stops."""

    def __init__(
        self,
        redis_url: SecretStr,
        read_limit: str,
        mutating_limit: str,
        key_prefix: str,
    ) -> None:
        self._limits: dict[RouteClass, RateLimitItem] = {
            "read": parse(read_limit),
            "mutating": parse(mutating_limit),
        }
        self._storage = RedisStorage(
            storage_uri(redis_url.get_secret_value()),
            wrap_exceptions=True,
            implementation="redispy",
            key_prefix=key_prefix,
            socket_timeout=_STORAGE_TIMEOUT_SECONDS,
            socket_connect_timeout=_STORAGE_TIMEOUT_SECONDS,
        )
        self._strategy = MovingWindowRateLimiter(self._storage)
        self._allowed = dict.fromkeys(ROUTE_CLASSES, 0)
        self._limited = dict.fromkeys(ROUTE_CLASSES, 0)
        self._storage_errors = dict.fromkeys(ROUTE_CLASSES, 0)
        self._last_warning = -math.inf

    async def check(self, route_class: RouteClass, bucket: str) -> Decision:
        """Count one request of ``bucket`` against its class's limit."""
        if route_class == "exempt":
            return Decision(allowed=True)
        item = self._limits[route_class]
        try:
            if await self._strategy.hit(item, route_class, bucket):
                self._allowed[route_class] += 1
                return Decision(allowed=True, limit=item.amount)
            stats = await self._strategy.get_window_stats(item, route_class, bucket)
        except (StorageError, RedisError, OSError) as exc:
            return self._storage_failed(route_class, item, exc)
        self._limited[route_class] += 1
        retry_after = max(1, math.ceil(stats.reset_time - time.time()))
        return Decision(allowed=False, retry_after=retry_after, limit=item.amount)

    def _storage_failed(
        self, route_class: RouteClass, item: RateLimitItem, exc: BaseException
    ) -> Decision:
        self._storage_errors[route_class] += 1
        now = time.monotonic()
        if now - self._last_warning >= _WARN_EVERY_SECONDS:
            self._last_warning = now
            # The exception type is enough; its text may carry the Redis URL.
            log.warning(
                "rate-limit storage unavailable (%s); reads fail open, writes fail closed",
                type(exc).__name__,
            )
        if route_class == "read":
            self._allowed[route_class] += 1
            return Decision(allowed=True, storage_ok=False, limit=item.amount)
        return Decision(allowed=False, storage_ok=False, retry_after=5, limit=item.amount)

    def samples(self) -> Iterable[Sample]:
        """Counters of allowed, limited and storage-failed requests per route class."""
        for route_class in ROUTE_CLASSES:
            labels = (("route_class", route_class),)
            yield catalog.API_REQUESTS_ALLOWED.sample(self._allowed[route_class], labels)
            yield catalog.API_REQUESTS_RATE_LIMITED.sample(self._limited[route_class], labels)
            yield catalog.RATE_LIMIT_STORAGE_ERRORS.sample(
                self._storage_errors[route_class], labels
            )

    async def aclose(self) -> None:
        """Close the Redis connection pool."""
        # limits exposes no close(); the redis-py bridge holds the client it created.
        bridge: Any = self._storage.bridge
        await bridge.get_connection().aclose()
