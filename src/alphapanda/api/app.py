"""The FastAPI application: ``create_app(settings, control, metrics_reader)``.

Two roles share one factory:

``feed``     (``control`` given) — served inside the feed process by ``serve_api``:
             health, readiness, live status, Prometheus metrics, subscription
             management, and the monitoring routes.
``monitor``  (``control`` is None) — ``alphapanda api``, a separate read-only process:
             health, status and metrics as of the collector's last flush to Redis, and
             the monitoring routes. Subscription routes do not exist there (404).

Every request except ``GET /health`` passes the shared Redis rate limit
(``alphapanda.api.ratelimit``); mutating routes need ``X-API-Key``.
"""

from __future__ import annotations

import time
from dataclasses import dataclass, field
from importlib import resources
from typing import Any

import msgspec
from fastapi import FastAPI, Request
from fastapi.exceptions import RequestValidationError
from fastapi.responses import HTMLResponse, JSONResponse
from fastapi.routing import APIRoute
from starlette.exceptions import HTTPException as StarletteHTTPException

from alphapanda.api.control import FeedControl, OverCapacity, UnknownInstruments
from alphapanda.api.docs import install_offline_docs
from alphapanda.api.limits import RequestGuardMiddleware
from alphapanda.api.middleware import RateLimitMiddleware
from alphapanda.api.ratelimit import RateLimiter
from alphapanda.api.security import secret_values
from alphapanda.api.status import RateMeter
from alphapanda.metrics.reader import MetricsReader
from alphapanda.settings import Settings


@dataclass
class ApiContext:
    """What every route may use; stored on ``app.state.ctx``."""

    settings: Settings
    control: FeedControl | None
    reader: MetricsReader | None
    limiter: RateLimiter
    rate_meter: RateMeter = field(default_factory=RateMeter)
    secrets: tuple[str, ...] = ()
    # The feed's pid when the API serves it from another process (None: this one).
    process_of: int | None = None

    @property
    def role(self) -> str:
        return "feed" if self.control is not None else "monitor"


def context_of(request: Request) -> ApiContext:
    ctx = request.app.state.ctx
    assert isinstance(ctx, ApiContext)
    return ctx


def _validation_message(exc: RequestValidationError) -> str:
    parts = []
    for error in exc.errors():
        # loc is ("body", "tokens", 0) etc.; the first element is where, not what.
        loc = ".".join(str(p) for p in error.get("loc", ())[1:]) or "body"
        parts.append(f"{loc}: {error.get('msg', 'invalid')}")
    return "; ".join(parts) or "invalid request"


def _install_error_handlers(app: FastAPI) -> None:
    async def on_validation(request: Request, exc: Exception) -> JSONResponse:
        assert isinstance(exc, RequestValidationError)
        # The default handler echoes the rejected input; a short message is clearer and
        # cannot reflect anything sensitive back.
        return JSONResponse({"detail": _validation_message(exc)}, status_code=422)

    async def on_unknown(request: Request, exc: Exception) -> JSONResponse:
        assert isinstance(exc, UnknownInstruments)
        return JSONResponse({"detail": str(exc), "unknown_tokens": exc.tokens}, status_code=422)

    async def on_capacity(request: Request, exc: Exception) -> JSONResponse:
        assert isinstance(exc, OverCapacity)
        body = {"detail": str(exc), "requested": exc.requested_total, "capacity": exc.capacity}
        return JSONResponse(body, status_code=409)

    async def on_http(request: Request, exc: Exception) -> JSONResponse:
        assert isinstance(exc, StarletteHTTPException)
        headers = dict(exc.headers or {})
        if exc.status_code == 405:
            # Starlette names only the first route on the path; GET, POST and DELETE
            # /subscriptions are three routes, and Allow must list them all.
            headers["Allow"] = ", ".join(_methods_for(request))
        return JSONResponse({"detail": exc.detail}, status_code=exc.status_code, headers=headers)

    async def on_timeout(request: Request, exc: Exception) -> JSONResponse:
        # The feed's loop did not answer a call in time (``api.isolation.CALL_TIMEOUT``):
        # the feed is busy or stalled, which is a 503, not an error of the API.
        return JSONResponse({"detail": "the feed did not answer in time"}, status_code=503)

    app.add_exception_handler(RequestValidationError, on_validation)
    app.add_exception_handler(TimeoutError, on_timeout)
    app.add_exception_handler(UnknownInstruments, on_unknown)
    app.add_exception_handler(OverCapacity, on_capacity)
    app.add_exception_handler(StarletteHTTPException, on_http)


def _methods_for(request: Request) -> list[str]:
    # The included routers' own routes: recent FastAPI versions keep an included router
    # wrapped in ``app.routes`` instead of copying its APIRoutes there.
    routes = [*request.app.routes, *getattr(request.app.state, "api_routes", ())]
    methods: set[str] = set()
    for route in routes:
        if isinstance(route, APIRoute) and route.path_regex.match(request.url.path):
            methods |= route.methods or set()
    return sorted(methods)


def _status_page() -> str:
    return (resources.files("alphapanda.api") / "static" / "status.html").read_text("utf-8")


def create_app(
    settings: Settings,
    control: FeedControl | None,
    metrics_reader: MetricsReader | None,
    *,
    limiter: RateLimiter | None = None,
    process_of: int | None = None,
) -> FastAPI:
    """Build the API. ``control`` None makes the read-only monitoring API; ``process_of``
    is the feed's pid when this is not the feed's process.

    ``metrics_reader`` reads the Redis snapshot for the monitoring routes (and for
    ``/status`` and ``/metrics`` in the monitor role); the caller owns its Redis client.
    The limiter is created from the settings unless given; ``app.state.ctx.limiter``
    must be closed by whoever serves the app (``serve_api`` does).
    """
    # Imported here: the route modules import ``context_of`` from this module.
    from alphapanda.api import monitoring, quotes, routes

    api = settings.api
    limiter = limiter or RateLimiter(
        settings.redis.url, api.rate_limit, api.rate_limit_mutating, api.rate_limit_key_prefix
    )
    ctx = ApiContext(
        settings=settings,
        control=control,
        reader=metrics_reader,
        limiter=limiter,
        process_of=process_of,
        secrets=secret_values(
            settings.kite.access_token,
            settings.kite.api_secret,
            settings.api.api_key,
            settings.redis.url,
            settings.database.url,
        ),
    )
    role = ctx.role
    app = FastAPI(
        title="Alpha Panda market feed" + (" (monitor)" if role == "monitor" else ""),
        version="1",
        description=(
            "Control and monitoring API of the market feed. Mutating routes need the "
            "`X-API-Key` header. Every route except `/health` is rate limited per caller "
            "(shared across API processes through Redis); 429 carries `Retry-After`."
        ),
        # /docs is served below from assets bundled with the app: it must render on a
        # machine with no internet access (the default loads them from a CDN).
        docs_url=None,
        responses={413: {"description": "Request body larger than ALPHAPANDA_API__MAX_BODY_BYTES"}},
    )
    app.state.ctx = ctx
    _install_error_handlers(app)
    routers = [
        routes.common,
        *([routes.feed_only, quotes.router] if control is not None else []),
        monitoring.router,
    ]
    # Refuses a keyless write or an oversized body before anything reads it.
    app.add_middleware(
        RequestGuardMiddleware,
        api_key=api.api_key,
        max_body_bytes=api.max_body_bytes,
        protected=[
            route
            for router in routers
            for route in router.routes
            if isinstance(route, APIRoute)
            and any(dep.dependency is routes.require_api_key for dep in route.dependencies)
        ],
    )
    # Outermost (added last): every request is counted before the guard looks at its
    # key, so guessing keys spends the write limit like any other write. Its refusals
    # close the connection, as the guard's do, so a refused body is never read.
    app.add_middleware(
        RateLimitMiddleware,
        limiter=limiter,
        api_key=api.api_key,
        trusted_proxies=api.trusted_proxies,
    )
    for router in routers:
        app.include_router(router)
    app.state.api_routes = [
        route for router in routers for route in router.routes if isinstance(route, APIRoute)
    ]

    install_offline_docs(app)
    page = _status_page()

    @app.get("/", response_class=HTMLResponse, include_in_schema=False)
    async def status_page() -> HTMLResponse:
        return HTMLResponse(page, headers={"Cache-Control": "no-store"})

    return app


def now_epoch() -> float:
    """Wall-clock seconds (one place, so the routes read the clock the same way)."""
    return time.time()


def jsonable(value: Any) -> Any:
    """msgspec structs and the like → plain JSON data."""
    return msgspec.to_builtins(value)
