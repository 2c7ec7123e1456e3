"""Monitoring routes: the pipeline metrics as the collector flushed them to Redis.

They read ``pipeline:market_ticks:<settings.metrics.namespace>:snapshot`` through
``alphapanda.metrics.reader.MetricsReader`` (the namespace is the reader's, built from
the settings, never a hard-coded ``market``). Same answers from the feed process and
from ``alphapanda api``, because both read the same Redis document.

``GET /monitoring/health`` answers 200 for ``ok``/``idle``/``degraded`` and 503 for
``stale``/``no_data`` or an unreachable Redis, so it can back an external probe.
"""

from __future__ import annotations

from typing import Any

from fastapi import APIRouter
from fastapi.responses import JSONResponse
from pydantic import BaseModel

from alphapanda.api.app import jsonable, now_epoch
from alphapanda.api.models import Problem
from alphapanda.api.routes import Ctx, read_snapshot
from alphapanda.metrics.reader import health_of

router = APIRouter(prefix="/monitoring", tags=["monitoring"])

_UNHEALTHY = frozenset({"stale", "no_data"})


class MonitoringHealth(BaseModel):
    """``alphapanda.metrics.reader.HealthSummary`` as JSON."""

    status: str
    namespace: str
    updated_at: str | None = None
    snapshot_age_seconds: float | None = None
    last_activity: str | None = None
    last_tick_age_seconds: float | None = None
    ticks_per_second: float | None = None
    ticks_total: float | None = None
    sends_ok: float | None = None
    sends_failed: float | None = None
    send_failures_per_second: float | None = None
    drops_total: float = 0.0
    send_latency_p99_seconds: float | None = None
    reasons: list[str] = []


@router.get(
    "/health",
    response_model=MonitoringHealth,
    responses={503: {"model": MonitoringHealth, "description": "stale, no data or no Redis"}},
)
async def monitoring_health(ctx: Ctx) -> Any:
    """The pipeline's health judged from its last metrics flush."""
    snapshot = await read_snapshot(ctx)
    assert ctx.reader is not None  # read_snapshot answered 503 otherwise
    summary = health_of(snapshot, ctx.reader.keys.namespace, now_epoch())
    body = MonitoringHealth.model_validate(jsonable(summary))
    if summary.status in _UNHEALTHY:
        return JSONResponse(body.model_dump(), status_code=503)
    return body


@router.get(
    "/pipeline",
    responses={
        200: {"description": "The snapshot document (see alphapanda.metrics.keys)"},
        503: {"model": Problem, "description": "No snapshot in Redis, or Redis unreachable"},
    },
)
async def monitoring_pipeline(ctx: Ctx) -> Any:
    """The last flushed snapshot, without the raw sample list (that is ``/metrics``)."""
    snapshot = await read_snapshot(ctx)
    if snapshot is None:
        assert ctx.reader is not None
        return _no_data(ctx.reader.keys.namespace)
    return {k: v for k, v in snapshot.items() if k != "samples"}


def _no_data(namespace: str) -> Any:
    return JSONResponse(
        {"detail": f"no metrics snapshot in Redis for namespace {namespace!r}"},
        status_code=503,
    )
