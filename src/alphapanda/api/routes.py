"""Health, readiness, status, metrics and subscription routes.

``common`` exists in both roles (in the monitor role ``/status`` and ``/metrics`` come
from the collector's last Redis flush); ``feed_only`` needs the live feed.
"""

from __future__ import annotations

import asyncio
import logging
import time
from collections.abc import Iterable
from datetime import UTC, datetime
from typing import Annotated, Any

from fastapi import APIRouter, Depends, HTTPException, Request, Response, Security
from fastapi.responses import JSONResponse
from fastapi.security import APIKeyHeader
from redis.exceptions import RedisError

from alphapanda.api.app import ApiContext, context_of, now_epoch
from alphapanda.api.control import unhealthy_of
from alphapanda.api.models import (
    Health,
    Problem,
    Readiness,
    StatusView,
    SubscribeRequest,
    SubscriptionChange,
    SubscriptionsView,
    UnsubscribeRequest,
)
from alphapanda.api.security import API_KEY_HEADER, key_matches, redact
from alphapanda.api.status import by_mode, status_from_samples, status_from_snapshot
from alphapanda.metrics import catalog
from alphapanda.metrics.prometheus import build_registry, render_latest
from alphapanda.metrics.reader import samples_of
from alphapanda.metrics.samples import Sample, gather

log = logging.getLogger(__name__)

# A Redis read on behalf of a request never takes longer than this.
REDIS_READ_TIMEOUT = 1.0

Ctx = Annotated[ApiContext, Depends(context_of)]
_api_key_header = APIKeyHeader(name=API_KEY_HEADER, auto_error=False)

_LIMITED: dict[int | str, dict[str, Any]] = {
    429: {"model": Problem, "description": "Rate limited; see Retry-After"},
}
_WRITE_ERRORS: dict[int | str, dict[str, Any]] = {
    400: {"model": Problem, "description": "Body cannot be parsed (malformed encoding)"},
    401: {"model": Problem, "description": "Missing or wrong X-API-Key"},
    422: {
        "model": Problem,
        "description": "Body not valid JSON, invalid body, or unknown instrument tokens",
    },
    429: {"model": Problem, "description": "Rate limited; see Retry-After"},
    503: {"model": Problem, "description": "Rate limiting unavailable (Redis down)"},
}


def require_api_key(
    request: Request, presented: Annotated[str | None, Security(_api_key_header)]
) -> None:
    """401 unless ``X-API-Key`` equals ``settings.api.api_key`` (constant-time)."""
    if not key_matches(presented, context_of(request).settings.api.api_key):
        raise HTTPException(
            status_code=401,
            detail="missing or invalid X-API-Key",
            headers={"WWW-Authenticate": API_KEY_HEADER},
        )


common = APIRouter()
feed_only = APIRouter()


@common.get("/health", response_model=Health, tags=["health"])
async def health(ctx: Ctx) -> Any:
    """Liveness: 200 while the process serves requests and can still do its job; 503
    with the reason once it cannot (a fatal producer error: restart it). Never rate
    limited."""
    reason = unhealthy_of(ctx.control)
    if reason is not None:
        return JSONResponse(
            status_code=503, content={"status": "failing", "role": "feed", "reason": reason}
        )
    return Health(role="feed" if ctx.control is not None else "monitor")


@common.head("/health", include_in_schema=False)
async def health_head() -> Response:
    """Liveness for probes that send HEAD."""
    return Response(status_code=200)


async def read_snapshot(ctx: ApiContext) -> dict[str, Any] | None:
    """The collector's last snapshot; 503 if Redis cannot be read right now."""
    if ctx.reader is None:
        raise HTTPException(503, detail="no metrics store configured")
    try:
        async with asyncio.timeout(REDIS_READ_TIMEOUT):
            return await ctx.reader.snapshot()
    except (RedisError, OSError, TimeoutError) as exc:
        log.warning("metrics store unreachable: %s", type(exc).__name__)
        raise HTTPException(503, detail="metrics store (Redis) unreachable") from None


def _live_samples(ctx: ApiContext) -> list[Sample]:
    assert ctx.control is not None
    # One component's bug must not take /status and /metrics down with it; the metrics
    # collector counts and logs the same failure on its next flush.
    return gather(ctx.control.metrics_sources())


@common.get(
    "/status",
    response_model=StatusView,
    tags=["status"],
    responses={**_LIMITED, 503: {"model": Problem}},
)
async def status(ctx: Ctx) -> StatusView:
    """Per-connection state, subscriptions, buffer, spool, throughput and latency."""
    feed = ctx.settings.feed
    if ctx.control is None:
        snapshot = await read_snapshot(ctx)
        view = status_from_snapshot(snapshot, feed.buffer_capacity, feed.buffer_policy)
    else:
        samples = _live_samples(ctx)
        received = sum(s.value for s in samples if s.name == catalog.TICKS_RECEIVED.name)
        now = now_epoch()
        view = status_from_samples(
            samples,
            ctx.control.connections(),
            ctx.control.subscriptions(),
            ready=ctx.control.readiness()[0],
            buffer_capacity=feed.buffer_capacity,
            buffer_policy=feed.buffer_policy,
            ticks_per_second=ctx.rate_meter.observe(_monotonic(), received),
            updated_at=datetime.fromtimestamp(now, UTC).isoformat(timespec="milliseconds"),
            now_epoch=now,
        )
    # Free text from the feed (disconnect reasons) may quote a URL carrying the token.
    for connection in view.connections:
        if connection.last_disconnect_reason:
            connection.last_disconnect_reason = redact(
                connection.last_disconnect_reason, ctx.secrets
            )
    return view


def _monotonic() -> float:
    return time.monotonic()


@common.get(
    "/metrics",
    tags=["status"],
    response_class=Response,
    responses={200: {"content": {"text/plain": {}}, "description": "Prometheus text"}},
)
async def metrics(ctx: Ctx) -> Response:
    """Prometheus exposition: the feed's figures (live, or from Redis in the monitor role)
    and the API's own rate-limit counters."""
    if ctx.control is None:
        snapshot = await read_snapshot(ctx)
        base: Iterable[Sample] = samples_of(snapshot) if snapshot else []
    else:
        base = _live_samples(ctx)
    samples = [*base, *ctx.limiter.samples()]
    # process_* figures (RSS, CPU, fds) of the feed itself; in the monitor role they would
    # describe the monitor, not the feed, so they are left out there.
    registry = build_registry(
        lambda: samples, process_metrics=ctx.control is not None, pid=ctx.process_of
    )
    body, content_type = render_latest(registry)
    return Response(body, media_type=content_type)


@feed_only.get(
    "/ready",
    response_model=Readiness,
    tags=["health"],
    responses={503: {"model": Readiness, "description": "Not ready, with the reasons"}},
)
async def ready(ctx: Ctx) -> Any:
    """200 only when a ticker connection is streaming AND the broker accepts writes."""
    assert ctx.control is not None
    is_ready, reasons = ctx.control.readiness()
    body = Readiness(
        ready=is_ready, reasons=list(reasons), standby_ready=ctx.control.standby_ready()
    )
    # ``standby_ready`` only in a hot-standby group, while standby.
    return JSONResponse(body.model_dump(exclude_none=True), status_code=200 if is_ready else 503)


def _subscriptions_view(subscriptions: dict[int, str]) -> SubscriptionsView:
    return SubscriptionsView(
        total=len(subscriptions),
        by_mode=by_mode(subscriptions),
        subscriptions={str(t): m for t, m in sorted(subscriptions.items())},
    )


@feed_only.get(
    "/subscriptions", response_model=SubscriptionsView, tags=["subscriptions"], responses=_LIMITED
)
async def list_subscriptions(ctx: Ctx) -> SubscriptionsView:
    """Every subscribed instrument token and its mode."""
    assert ctx.control is not None
    return _subscriptions_view(ctx.control.subscriptions())


@feed_only.post(
    "/subscriptions",
    response_model=SubscriptionChange,
    tags=["subscriptions"],
    dependencies=[Depends(require_api_key)],
    responses={**_WRITE_ERRORS, 409: {"model": Problem, "description": "Over capacity"}},
)
async def add_subscriptions(body: SubscribeRequest, ctx: Ctx) -> SubscriptionChange:
    """Subscribe instruments in a mode, or change the mode of subscribed ones.

    Unknown tokens are refused (422, naming them) and nothing is applied; a request that
    would exceed the pool's capacity is refused with 409 and the numbers."""
    assert ctx.control is not None
    before = ctx.control.subscriptions()
    await ctx.control.add_subscriptions(sorted(set(body.tokens)), body.mode)
    after = ctx.control.subscriptions()
    changed = sum(1 for t in set(body.tokens) if before.get(t) != after.get(t))
    return SubscriptionChange(changed=changed, total=len(after), by_mode=by_mode(after))


@feed_only.delete(
    "/subscriptions",
    response_model=SubscriptionChange,
    tags=["subscriptions"],
    dependencies=[Depends(require_api_key)],
    responses=_WRITE_ERRORS,
)
async def remove_subscriptions(body: UnsubscribeRequest, ctx: Ctx) -> SubscriptionChange:
    """Unsubscribe instruments (tokens not subscribed are ignored and not counted)."""
    assert ctx.control is not None
    before = ctx.control.subscriptions()
    await ctx.control.remove_subscriptions(sorted(set(body.tokens)))
    after = ctx.control.subscriptions()
    changed = sum(1 for t in set(body.tokens) if t in before and t not in after)
    return SubscriptionChange(changed=changed, total=len(after), by_mode=by_mode(after))
