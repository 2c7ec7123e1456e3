"""The shared rate limiter's decisions and counters, over in-memory storage instead of
Redis: the limit per class and bucket, Retry-After, and the Redis-down policy (reads
fail open, writes fail closed)."""

from __future__ import annotations

import logging
from typing import Any

import pytest
from limits import RateLimitItem
from limits.aio.storage import MemoryStorage
from limits.aio.strategies import MovingWindowRateLimiter
from limits.errors import StorageError
from pydantic import SecretStr
from redis.exceptions import ConnectionError as RedisConnectionError

from alphapanda.api.ratelimit import Decision, RateLimiter
from alphapanda.metrics.samples import Sample

pytestmark = pytest.mark.unit

REDIS_URL = "redis://:pw-SECRET-x9@127.0.0.1:1/0"  # never connected to


class FailingStrategy:
    """A strategy whose storage is down; fails the test if a check ever reaches it when
    it should not (``reachable=False``)."""

    def __init__(self, error: BaseException, *, reachable: bool = True) -> None:
        self.error = error
        self.reachable = reachable
        self.hits = 0

    async def hit(self, item: RateLimitItem, *identifiers: str, cost: int = 1) -> bool:
        assert self.reachable, "the storage was consulted"
        self.hits += 1
        raise self.error

    async def get_window_stats(self, item: RateLimitItem, *identifiers: str) -> Any:
        raise AssertionError("not reached")


def _limiter(
    read: str = "3/minute", mutating: str = "2/minute", strategy: Any = None
) -> RateLimiter:
    limiter = RateLimiter(SecretStr(REDIS_URL), read, mutating, "test:ratelimit")
    # The Redis strategy swapped for one over process memory (or a failing one): the
    # decisions and counters are the limiter's own either way.
    limiter._strategy = strategy or MovingWindowRateLimiter(MemoryStorage())
    return limiter


def _counters(limiter: RateLimiter) -> dict[tuple[str, str], float]:
    samples: list[Sample] = list(limiter.samples())
    return {(s.name, dict(s.labels)["route_class"]): s.value for s in samples}


async def test_a_bucket_is_allowed_up_to_its_limit_then_refused_with_retry_after() -> None:
    limiter = _limiter(read="3/minute")
    decisions = [await limiter.check("read", "addr:1.1.1.1") for _ in range(4)]
    assert [d.allowed for d in decisions] == [True, True, True, False]
    refused = decisions[-1]
    assert refused.storage_ok
    assert refused.limit == 3
    assert 1 <= refused.retry_after <= 60


async def test_buckets_are_limited_separately() -> None:
    limiter = _limiter(read="1/minute")
    assert (await limiter.check("read", "addr:1.1.1.1")).allowed
    assert not (await limiter.check("read", "addr:1.1.1.1")).allowed
    assert (await limiter.check("read", "addr:2.2.2.2")).allowed


async def test_reads_and_writes_have_their_own_limits() -> None:
    limiter = _limiter(read="5/minute", mutating="1/minute")
    assert (await limiter.check("mutating", "addr:1.1.1.1")).allowed
    refused = await limiter.check("mutating", "addr:1.1.1.1")
    assert not refused.allowed and refused.limit == 1
    # Spending the write limit leaves the reads of the same caller alone.
    read = await limiter.check("read", "addr:1.1.1.1")
    assert read.allowed and read.limit == 5


async def test_exempt_requests_never_touch_the_storage() -> None:
    strategy = FailingStrategy(StorageError(OSError("down")), reachable=False)
    limiter = _limiter(strategy=strategy)
    assert await limiter.check("exempt", "addr:1.1.1.1") == Decision(allowed=True)


@pytest.mark.parametrize(
    "error", [StorageError(OSError("down")), RedisConnectionError("down"), OSError("down")]
)
async def test_with_the_storage_down_reads_fail_open(error: BaseException) -> None:
    limiter = _limiter(strategy=FailingStrategy(error))
    decision = await limiter.check("read", "addr:1.1.1.1")
    assert decision == Decision(allowed=True, storage_ok=False, limit=3)


@pytest.mark.parametrize(
    "error", [StorageError(OSError("down")), RedisConnectionError("down"), OSError("down")]
)
async def test_with_the_storage_down_writes_fail_closed(error: BaseException) -> None:
    limiter = _limiter(strategy=FailingStrategy(error))
    decision = await limiter.check("mutating", "addr:1.1.1.1")
    assert decision == Decision(allowed=False, storage_ok=False, retry_after=5, limit=2)


async def test_any_other_error_of_the_storage_is_not_swallowed() -> None:
    limiter = _limiter(strategy=FailingStrategy(ValueError("a bug")))
    with pytest.raises(ValueError, match="a bug"):
        await limiter.check("read", "addr:1.1.1.1")


async def test_counters_count_allowed_limited_and_storage_failures_per_class() -> None:
    limiter = _limiter(read="2/minute", mutating="1/minute")
    for _ in range(3):
        await limiter.check("read", "addr:1.1.1.1")
    await limiter.check("mutating", "addr:1.1.1.1")
    await limiter.check("exempt", "addr:1.1.1.1")  # not counted anywhere
    assert _counters(limiter) == {
        ("api_requests_allowed_total", "read"): 2,
        ("api_requests_rate_limited_total", "read"): 1,
        ("rate_limit_storage_errors_total", "read"): 0,
        ("api_requests_allowed_total", "mutating"): 1,
        ("api_requests_rate_limited_total", "mutating"): 0,
        ("rate_limit_storage_errors_total", "mutating"): 0,
    }


async def test_storage_failures_are_counted_and_a_failed_open_read_counts_as_allowed() -> None:
    limiter = _limiter(strategy=FailingStrategy(StorageError(OSError("down"))))
    await limiter.check("read", "addr:1.1.1.1")
    await limiter.check("mutating", "addr:1.1.1.1")
    await limiter.check("mutating", "addr:1.1.1.1")
    counters = _counters(limiter)
    assert counters[("rate_limit_storage_errors_total", "read")] == 1
    assert counters[("rate_limit_storage_errors_total", "mutating")] == 2
    assert counters[("api_requests_allowed_total", "read")] == 1
    assert counters[("api_requests_allowed_total", "mutating")] == 0
    assert counters[("api_requests_rate_limited_total", "mutating")] == 0


async def test_a_storage_outage_is_logged_once_per_period_without_the_redis_url(
    caplog: pytest.LogCaptureFixture,
) -> None:
    error = RedisConnectionError(f"Error connecting to {REDIS_URL}")
    limiter = _limiter(strategy=FailingStrategy(error))
    with caplog.at_level(logging.WARNING, logger="alphapanda.api.ratelimit"):
        for _ in range(5):
            await limiter.check("read", "addr:1.1.1.1")
    warnings = [r for r in caplog.records if r.levelno == logging.WARNING]
    assert len(warnings) == 1
    message = warnings[0].getMessage()
    assert "ConnectionError" in message
    assert "pw-SECRET" not in message and "127.0.0.1" not in message


def test_a_bad_limit_string_is_refused_when_the_limiter_is_built() -> None:
    with pytest.raises(ValueError, match="many per minute"):
        RateLimiter(SecretStr(REDIS_URL), "many per minute", "1/minute", "p")
