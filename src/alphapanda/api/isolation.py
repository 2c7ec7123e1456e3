"""The control API on a thread and event loop of its own, away from the tick path.

The feed serves its API from a child process by default (``alphapanda.api.process``);
this thread variant remains for ``ALPHAPANDA_API__ISOLATION=thread`` and for comparison
(the isolation test measures both). ``FrozenSource`` and ``CALL_TIMEOUT`` serve the
process's bridge too.

Inside the feed process the API used to share the event loop with the socket readers:
whatever a client made the loop do (parse a huge body, answer a flood of requests) was
time the readers did not read, and a long enough stall tripped the liveness watchdog.
Now uvicorn runs in its own thread with its own loop; the feed's loop only ever sees
the few calls the routes make into the feed, each hopped over as a coroutine:

* ``ThreadedControl`` is the ``FeedControl`` the API gets. Every call runs on the feed's
  loop (``run_coroutine_threadsafe``), so feed state is only ever touched from the
  thread that owns it. Metric sources are read there too and handed back frozen.
* ``ApiThread`` starts and stops that thread from the feed's ``TaskGroup`` like any
  other background service: ``run()`` returns when the server has stopped, and is
  cancellable.

What a client can still cost the feed is the interpreter lock while Python code of the
API runs; the body limit, the key check before the body, and the connection cap bound
that (see ``alphapanda.api.limits``).
"""

from __future__ import annotations

import asyncio
import threading
from collections.abc import Awaitable, Callable, Iterable, Iterator, Sequence
from concurrent.futures import Future
from typing import Any, TypeVar

from alphapanda.api.control import FeedControl, unhealthy_of
from alphapanda.metrics.samples import MetricsSource, Sample

T = TypeVar("T")

# A feed loop that does not answer a read within this long is reported as an error to
# the caller (503) rather than holding an API worker.
CALL_TIMEOUT = 5.0


class FrozenSource:
    """Samples read once on the feed's loop (a ``MetricsSource``)."""

    def __init__(self, samples: list[Sample]) -> None:
        self._samples = samples

    def samples(self) -> Iterator[Sample]:
        return iter(self._samples)


class ThreadedControl:
    """``FeedControl`` whose every call runs on the feed's own loop."""

    def __init__(self, control: FeedControl, feed_loop: asyncio.AbstractEventLoop) -> None:
        self._control = control
        self._loop = feed_loop

    def _on_feed_loop(self, fn: Callable[[], T]) -> T:
        async def call() -> T:
            return fn()

        future: Future[T] = asyncio.run_coroutine_threadsafe(call(), self._loop)
        return future.result(CALL_TIMEOUT)

    async def _await_on_feed_loop(self, make: Callable[[], Awaitable[T]]) -> T:
        async def call() -> T:
            return await make()

        future: Future[T] = asyncio.run_coroutine_threadsafe(call(), self._loop)
        return await asyncio.wrap_future(future)

    def connections(self) -> list[dict[str, Any]]:
        return self._on_feed_loop(self._control.connections)

    def readiness(self) -> tuple[bool, list[str]]:
        return self._on_feed_loop(self._control.readiness)

    def standby_ready(self) -> bool | None:
        return self._on_feed_loop(self._control.standby_ready)

    def unhealthy(self) -> str | None:
        # A plain attribute of the feed, set once (atomic under the GIL).
        return unhealthy_of(self._control)

    def subscriptions(self) -> dict[int, str]:
        return self._on_feed_loop(lambda: dict(self._control.subscriptions()))

    async def add_subscriptions(self, tokens: Sequence[int], mode: str) -> None:
        await self._await_on_feed_loop(lambda: self._control.add_subscriptions(tokens, mode))

    async def remove_subscriptions(self, tokens: Sequence[int]) -> None:
        await self._await_on_feed_loop(lambda: self._control.remove_subscriptions(tokens))

    def latest_quotes(self) -> Any:
        # The latest-quote state (dict lookups only, atomic under the GIL); None: off.
        source = getattr(self._control, "latest_quotes", None)
        return source() if source is not None else None

    def recent_candles(self, token: int, limit: int) -> dict[str, Any] | None:
        source = getattr(self._control, "recent_candles", None)
        if source is None:
            return None
        result: dict[str, Any] | None = self._on_feed_loop(lambda: source(token, limit))
        return result

    def metrics_sources(self) -> Iterable[MetricsSource]:
        def read() -> list[MetricsSource]:
            return [FrozenSource(list(s.samples())) for s in self._control.metrics_sources()]

        return self._on_feed_loop(read)


class ApiThread:
    """Runs ``serve(stop)`` in a new thread on a new event loop.

    ``run()`` (awaited on the feed's loop) returns or raises as the server does; if it is
    cancelled it stops the server and waits for the thread before re-raising, so no
    thread outlives the feed's ``TaskGroup``.
    """

    def __init__(self, serve: Callable[[asyncio.Event], Awaitable[None]], name: str) -> None:
        self._serve = serve
        self._name = name
        self._lock = threading.Lock()
        self._stop_requested = False
        self._loop: asyncio.AbstractEventLoop | None = None
        self._stop_event: asyncio.Event | None = None

    async def run(self) -> None:
        feed_loop = asyncio.get_running_loop()
        done: asyncio.Future[None] = feed_loop.create_future()

        def report(exc: BaseException | None) -> None:
            if done.done():
                return
            if exc is None:
                done.set_result(None)
            else:
                done.set_exception(exc)

        def main() -> None:
            error: BaseException | None = None
            try:
                asyncio.run(self._main())
            except BaseException as exc:  # carried to the feed's loop and raised there
                error = exc
            feed_loop.call_soon_threadsafe(report, error)

        thread = threading.Thread(target=main, name=self._name, daemon=True)
        thread.start()
        try:
            await asyncio.shield(done)
        except asyncio.CancelledError:
            self.stop()
            await done
            raise
        finally:
            # The thread has reported, so it is at most returning from ``main``.
            await asyncio.to_thread(thread.join)

    async def _main(self) -> None:
        stop = asyncio.Event()
        with self._lock:
            self._loop = asyncio.get_running_loop()
            self._stop_event = stop
            if self._stop_requested:
                stop.set()
        try:
            await self._serve(stop)
        finally:
            with self._lock:
                self._loop = None
                self._stop_event = None

    def stop(self) -> None:
        """Ask the server to stop (from any thread); ``run()`` then returns."""
        with self._lock:
            self._stop_requested = True
            loop, event = self._loop, self._stop_event
            if loop is not None and event is not None:
                try:
                    loop.call_soon_threadsafe(event.set)
                except RuntimeError:
                    pass  # the API loop is already closing
