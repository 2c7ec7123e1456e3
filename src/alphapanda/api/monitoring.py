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

import msgspec
from fastapi import APIRouter
from fastapi.responses import JSONResponse
from pydantic import BaseModel, create_model

from alphapanda.api.app import jsonable, now_epoch
from alphapanda.api.models import Problem
from alphapanda.api.routes import Ctx, read_snapshot
from alphapanda.metrics.reader import HealthSummary, health_of

router = APIRouter(prefix="/monitoring", tags=["monitoring"])

_UNHEALTHY = frozenset({"stale", "no_data"})


def _model_of(struct: type[msgspec.Struct], name: str) -> type[BaseModel]:
    """A pydantic model with exactly the fields of ``struct``: FastAPI documents and
    validates pydantic models, not msgspec structs, and a hand-written copy drifts."""
    fields: dict[str, Any] = {
        f.name: (f.type, ... if f.default is msgspec.NODEFAULT else f.default)
        for f in msgspec.structs.fields(struct)
    }
    return create_model(name, __doc__=f"``{struct.__qualname__}`` as JSON.", **fields)


MonitoringHealth = _model_of(HealthSummary, "MonitoringHealth")


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
