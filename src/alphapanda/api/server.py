"""Serving the API inside a process that owns its event loop and its signals.

``serve_api`` is one coroutine the feed's ``TaskGroup`` (or ``alphapanda api``) awaits.
It returns when ``stop`` is set, and shuts uvicorn down gracefully (listening socket
closed, open requests given ``shutdown_grace`` seconds) when its task is cancelled, so
the caller stops it either way without leaking a socket. uvicorn's own signal handlers
are disabled: SIGTERM/SIGINT belong to the feed's shutdown sequence (drain, flush, spool),
and uvicorn would otherwise re-raise them after it stopped.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import socket
from collections.abc import Callable, Generator

import uvicorn
from fastapi import FastAPI

from alphapanda.api.app import ApiContext, create_app
from alphapanda.api.control import FeedControl
from alphapanda.api.isolation import ApiThread, ThreadedControl
from alphapanda.api.process import ApiProcess
from alphapanda.metrics.collector import redis_from_url
from alphapanda.metrics.reader import MetricsReader
from alphapanda.settings import Settings

log = logging.getLogger(__name__)

# Redis reads for monitoring give up quickly; the routes answer 503 meanwhile.
_READER_TIMEOUT = 1.0


class ApiStartupError(RuntimeError):
    """The API could not start serving (typically: the port is taken)."""


class EmbeddedServer(uvicorn.Server):
    """uvicorn without signal handling; the host process decides when it stops.

    ``on_started`` (optional) is called once it listens."""

    on_started: Callable[[], None] | None = None

    async def startup(self, sockets: list[socket.socket] | None = None) -> None:
        await super().startup(sockets)
        if self.started and self.on_started is not None:
            self.on_started()

    @contextlib.contextmanager
    def capture_signals(self) -> Generator[None, None, None]:
        yield


def server_config(
    app: FastAPI, host: str, port: int, shutdown_grace: float, max_connections: int | None = None
) -> uvicorn.Config:
    return uvicorn.Config(
        app,
        host=host,
        port=port,
        lifespan="off",
        # Logging is configured once by the process (alphapanda.logs); uvicorn must not redo it.
        log_config=None,
        # The status page polls every second; per-request INFO lines would drown the log.
        access_log=False,
        timeout_graceful_shutdown=max(1, round(shutdown_grace)),
        server_header=False,
        # uvicorn would otherwise rewrite the client address from X-Forwarded-For for
        # any loopback peer; the API applies settings.api.trusted_proxies itself.
        proxy_headers=False,
        # Beyond this many open connections and tasks uvicorn answers 503 at once.
        limit_concurrency=max_connections,
        # The C parser: a flood of requests costs the process (and so the tick path
        # sharing its GIL) far less than the pure-Python h11 parser.
        http="httptools",
    )


async def serve_app(
    app: FastAPI,
    host: str,
    port: int,
    *,
    stop: asyncio.Event | None = None,
    shutdown_grace: float = 1.0,
    on_started: Callable[[], None] | None = None,
) -> None:
    """Serve an already built app until ``stop`` is set or the task is cancelled;
    ``on_started`` is called once it listens."""
    ctx = app.state.ctx
    assert isinstance(ctx, ApiContext)
    server = EmbeddedServer(
        server_config(app, host, port, shutdown_grace, ctx.settings.api.max_connections)
    )
    server.on_started = on_started
    try:
        async with asyncio.TaskGroup() as tg:
            tg.create_task(_serve(server, host, port))
            if stop is not None:
                tg.create_task(_exit_when(stop, server))
    except ExceptionGroup as group:
        # One failing task is the usual case (cannot bind); surface it as itself so a
        # caller can ``except ApiStartupError`` (the watcher only ever gets cancelled).
        if len(group.exceptions) == 1:
            raise group.exceptions[0] from None
        raise
    finally:
        await ctx.limiter.aclose()


async def _serve(server: EmbeddedServer, host: str, port: int) -> None:
    try:
        await server.serve()
    except SystemExit:
        # uvicorn exits the interpreter when it cannot bind; in a service that must be an
        # ordinary error the supervisor sees, not a process exit from inside a task.
        raise ApiStartupError(f"could not serve the API on {host}:{port}") from None
    except asyncio.CancelledError:
        # Cancelled while serving: close the listening socket and give open requests
        # their grace period. If should_exit was already set, uvicorn is shutting down
        # (or has) by itself and a second shutdown must not be started.
        if server.started and not server.should_exit:
            server.should_exit = True
            await server.shutdown()
        raise


async def _exit_when(stop: asyncio.Event, server: EmbeddedServer) -> None:
    # Server failures end the TaskGroup and cancel this wait, so it never outlives it.
    await stop.wait()
    server.should_exit = True


async def serve_api(
    settings: Settings,
    control: FeedControl | None,
    *,
    metrics_reader: MetricsReader | None = None,
    stop: asyncio.Event | None = None,
    host: str | None = None,
    port: int | None = None,
    on_started: Callable[[], None] | None = None,
    process_of: int | None = None,
) -> None:
    """Build and serve the API on ``settings.api.host:port`` until stopped or cancelled.

    ``control`` is the running feed (None for the read-only monitoring API). Without a
    ``metrics_reader`` one is created on ``settings.redis.url`` and closed on exit.
    ``on_started`` is called once it listens; ``process_of``: the feed's pid, when the
    API serves it from another process (its ``process_*`` figures on ``/metrics``).
    """
    own_redis = None
    if metrics_reader is None:
        own_redis = redis_from_url(settings.redis.url.get_secret_value(), timeout=_READER_TIMEOUT)
        metrics_reader = MetricsReader(own_redis, settings.metrics.namespace)
    try:
        app = create_app(settings, control, metrics_reader, process_of=process_of)
        await serve_app(
            app,
            host or settings.api.host,
            settings.api.port if port is None else port,
            stop=stop,
            on_started=on_started,
        )
    finally:
        if own_redis is not None:
            await own_redis.aclose()


class ApiServer:
    """The API as a background service of the feed (``build`` adds it with
    ``Overrides(api=True)``, over the feed's ``ServiceControl``).

    ``run()`` serves until ``stop()``; the service calls both. With
    ``settings.api.isolation`` ``process`` (the default) the API runs in a supervised
    child process (``alphapanda.api.process``): HTTP parsing, the key check, body limits
    and rate limiting then cost the feed nothing, not even the interpreter lock.
    ``thread`` serves it from a thread of this process instead (its own loop, the
    interpreter lock shared; ``alphapanda.api.isolation``); so does an API without a
    feed to control.
    """

    def __init__(
        self,
        settings: Settings,
        control: FeedControl | None,
        *,
        metrics_reader: MetricsReader | None = None,
        host: str | None = None,
        port: int | None = None,
        feed_stopping: Callable[[], bool] = lambda: False,
    ) -> None:
        if host is not None or port is not None:
            served_at = {
                "host": host or settings.api.host,
                "port": settings.api.port if port is None else port,
            }
            settings = settings.model_copy(
                update={"api": settings.api.model_copy(update=served_at)}
            )
        self._settings = settings
        self._control = control
        self._reader = metrics_reader
        self._process: ApiProcess | None = None
        if settings.api.isolation == "process" and control is not None:
            if metrics_reader is not None:
                raise ValueError("the API process reads Redis with a client of its own")
            self._process = ApiProcess(settings, control, feed_stopping=feed_stopping)
        self._thread = ApiThread(self._serve, name="alphapanda-api")
        self._feed_loop: asyncio.AbstractEventLoop | None = None

    @property
    def process(self) -> ApiProcess | None:
        """The supervised API process (None when the API runs on a thread)."""
        return self._process

    async def run(self) -> None:
        if self._process is not None:
            await self._process.run()
            return
        # The API gets its own thread and loop so no client can stall the tick path
        # (see alphapanda.api.isolation); feed calls hop back to this loop.
        self._feed_loop = asyncio.get_running_loop()
        await self._thread.run()

    async def _serve(self, stop: asyncio.Event) -> None:
        assert self._feed_loop is not None
        control = (
            ThreadedControl(self._control, self._feed_loop) if self._control is not None else None
        )
        await serve_api(self._settings, control, metrics_reader=self._reader, stop=stop)

    def stop(self) -> None:
        if self._process is not None:
            self._process.stop()
        else:
            self._thread.stop()
