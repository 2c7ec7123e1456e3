"""In-process fakes for unit tests of the control API: a ``FeedControl`` in a few lines,
a scripted rate limiter, a metrics reader over a fake Redis, and an ``httpx`` client that
drives the ASGI app without a socket."""

from __future__ import annotations

from collections.abc import Iterable, Iterator, Sequence
from dataclasses import dataclass, field
from typing import Any, cast

import httpx
import msgspec
from fastapi import FastAPI
from pydantic import SecretStr
from redis.exceptions import RedisError

from alphapanda.api.app import create_app
from alphapanda.api.control import check_subscription_request
from alphapanda.api.ratelimit import Decision, RateLimiter, RouteClass
from alphapanda.metrics import catalog
from alphapanda.metrics.reader import MetricsReader
from alphapanda.metrics.samples import MetricsSource, Sample
from alphapanda.settings import Settings

API_KEY = "unit-test-api-key-0123"
KEY_HEADER = {"X-API-Key": API_KEY}
BASE_URL = "http://api.test"


def unit_settings(**api: Any) -> Settings:
    """Settings of a development feed with a known API key (and no .env, no TOML file)."""
    values: dict[str, Any] = {"api_key": SecretStr(API_KEY), **api}
    return Settings(_env_file=None, api=values)  # type: ignore[call-arg, arg-type]


@dataclass
class StaticSource:
    """A ``MetricsSource`` reporting fixed samples."""

    figures: list[Sample] = field(default_factory=list)

    def samples(self) -> Iterable[Sample]:
        return list(self.figures)


class BrokenSource:
    """A ``MetricsSource`` whose generator fails halfway."""

    def samples(self) -> Iterator[Sample]:
        yield catalog.TICKS_RECEIVED.sample(999_999)
        raise RuntimeError("component bug")


@dataclass
class FakeFeed:
    """A ``FeedControl``: a set of known instruments, a capacity and canned state.

    Refuses what the real feed refuses (unknown tokens, over capacity) through the same
    ``check_subscription_request``, and records every change it is asked for."""

    known: set[int] = field(default_factory=lambda: set(range(1, 101)))
    capacity: int = 10
    subscribed: dict[int, str] = field(default_factory=dict)
    ready: bool = True
    reasons: list[str] = field(default_factory=list)
    standby: bool | None = None  # in a hot-standby group, while standby
    shards: list[dict[str, Any]] = field(default_factory=list)
    sources: list[MetricsSource] = field(default_factory=list)
    added: list[tuple[list[int], str]] = field(default_factory=list)
    removed: list[list[int]] = field(default_factory=list)

    def connections(self) -> list[dict[str, Any]]:
        return [dict(shard) for shard in self.shards]

    def readiness(self) -> tuple[bool, list[str]]:
        return self.ready, list(self.reasons)

    def standby_ready(self) -> bool | None:
        return self.standby

    def subscriptions(self) -> dict[int, str]:
        return dict(self.subscribed)

    async def add_subscriptions(self, tokens: Sequence[int], mode: str) -> None:
        self.added.append((list(tokens), mode))
        check_subscription_request(self.subscribed, tokens, self.known, self.capacity)
        for token in tokens:
            self.subscribed[token] = mode

    async def remove_subscriptions(self, tokens: Sequence[int]) -> None:
        self.removed.append(list(tokens))
        for token in tokens:
            self.subscribed.pop(token, None)

    def metrics_sources(self) -> list[MetricsSource]:
        return list(self.sources)


@dataclass
class FailingFeed(FakeFeed):
    """A feed that knows it must be restarted (``ServiceControl.unhealthy``)."""

    failure: str | None = "producer fatal error: _FENCED"

    def unhealthy(self) -> str | None:
        return self.failure


@dataclass
class ScriptedLimiter:
    """Stands in for ``RateLimiter``: answers each route class with a chosen decision and
    records every check (route class, bucket)."""

    decisions: dict[RouteClass, Decision] = field(default_factory=dict)
    checks: list[tuple[RouteClass, str]] = field(default_factory=list)
    closed: bool = False

    async def check(self, route_class: RouteClass, bucket: str) -> Decision:
        self.checks.append((route_class, bucket))
        return self.decisions.get(route_class, Decision(allowed=True, limit=100))

    def samples(self) -> Iterable[Sample]:
        labels = (("route_class", "read"),)
        yield catalog.API_REQUESTS_ALLOWED.sample(len(self.checks), labels)

    async def aclose(self) -> None:
        self.closed = True

    def as_limiter(self) -> RateLimiter:
        return cast(RateLimiter, self)


class FakeRedis:
    """The one call ``MetricsReader.snapshot`` makes: ``get``; or a Redis that is down."""

    def __init__(self, snapshot: dict[str, Any] | None = None, *, down: bool = False) -> None:
        self.snapshot = snapshot
        self.down = down
        self.keys_read: list[str] = []

    async def get(self, key: str) -> bytes | None:
        self.keys_read.append(key)
        if self.down:
            raise RedisError("Connection refused")
        return None if self.snapshot is None else msgspec.json.encode(self.snapshot)


def reader_of(redis: FakeRedis, namespace: str = "market") -> MetricsReader:
    return MetricsReader(cast(Any, redis), namespace)


def build_app(
    control: Any,
    *,
    limiter: ScriptedLimiter | None = None,
    reader: MetricsReader | None = None,
    settings: Settings | None = None,
) -> FastAPI:
    """The real app over fakes (``control`` None: the monitor role)."""
    return create_app(
        settings or unit_settings(),
        control,
        reader,
        limiter=(limiter or ScriptedLimiter()).as_limiter(),
    )


def client_of(app: FastAPI, client: tuple[str, int] = ("127.0.0.1", 50000)) -> httpx.AsyncClient:
    """An ``httpx`` client that calls the ASGI app in-process (no socket)."""
    transport = httpx.ASGITransport(app=app, client=client)
    return httpx.AsyncClient(transport=transport, base_url=BASE_URL)
