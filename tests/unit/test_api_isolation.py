"""The API on a thread of its own: every call into the feed runs on the feed's loop
(``ThreadedControl``), and ``ApiThread`` starts, stops and reports the server's thread
like any other background service."""

from __future__ import annotations

import asyncio
import threading
from collections.abc import Sequence
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from typing import Any

import httpx
import pytest

from alphapanda.api import isolation
from alphapanda.api.control import UnknownInstruments
from alphapanda.api.isolation import ApiThread, ThreadedControl
from alphapanda.metrics import catalog
from alphapanda.streams.quotes import LatestQuotes
from tests.support.api import BASE_URL, FailingFeed, FakeFeed, StaticSource, build_app, client_of

pytestmark = pytest.mark.unit


@dataclass
class ThreadNotingFeed(FakeFeed):
    """Notes the thread each call runs on."""

    threads: dict[str, int] = field(default_factory=dict)
    quotes: LatestQuotes = field(default_factory=LatestQuotes)

    def _note(self, name: str) -> None:
        self.threads[name] = threading.get_ident()

    def connections(self) -> list[dict[str, Any]]:
        self._note("connections")
        return super().connections()

    def readiness(self) -> tuple[bool, list[str]]:
        self._note("readiness")
        return super().readiness()

    def subscriptions(self) -> dict[int, str]:
        self._note("subscriptions")
        return super().subscriptions()

    async def add_subscriptions(self, tokens: Sequence[int], mode: str) -> None:
        self._note("add_subscriptions")
        await super().add_subscriptions(tokens, mode)

    async def remove_subscriptions(self, tokens: Sequence[int]) -> None:
        self._note("remove_subscriptions")
        await super().remove_subscriptions(tokens)

    def latest_quotes(self) -> LatestQuotes | None:
        return self.quotes

    def recent_candles(self, token: int, limit: int) -> dict[str, Any] | None:
        self._note("recent_candles")
        return {"token": token, "limit": limit}


def _on_api_thread(coroutine_factory: Any) -> Any:
    """Runs ``coroutine_factory()`` on a loop of its own, in another thread (the API's)."""
    return asyncio.to_thread(asyncio.run, coroutine_factory())


async def test_reads_run_on_the_feeds_loop_thread() -> None:
    feed = ThreadNotingFeed(shards=[{"shard": 0}], subscribed={1: "full"}, reasons=["r"])
    threaded = ThreadedControl(feed, asyncio.get_running_loop())
    assert await asyncio.to_thread(threaded.connections) == [{"shard": 0}]
    assert await asyncio.to_thread(threaded.readiness) == (True, ["r"])
    assert await asyncio.to_thread(threaded.subscriptions) == {1: "full"}
    assert await asyncio.to_thread(threaded.recent_candles, 7, 3) == {"token": 7, "limit": 3}
    here = threading.get_ident()
    assert feed.threads == {
        "connections": here,
        "readiness": here,
        "subscriptions": here,
        "recent_candles": here,
    }


async def test_the_subscriptions_handed_back_are_a_copy() -> None:
    feed = FakeFeed(subscribed={1: "full"})
    threaded = ThreadedControl(feed, asyncio.get_running_loop())
    copy = await asyncio.to_thread(threaded.subscriptions)
    copy[2] = "ltp"
    assert feed.subscribed == {1: "full"}


async def test_changes_awaited_on_the_api_loop_run_on_the_feeds_loop() -> None:
    feed = ThreadNotingFeed()
    threaded = ThreadedControl(feed, asyncio.get_running_loop())

    async def change() -> None:
        await threaded.add_subscriptions([1, 2], "full")
        await threaded.remove_subscriptions([1])

    await _on_api_thread(change)
    assert feed.subscribed == {2: "full"}
    here = threading.get_ident()
    assert feed.threads == {"add_subscriptions": here, "remove_subscriptions": here}


async def test_a_refusal_by_the_feed_reaches_the_api_loop_as_is() -> None:
    threaded = ThreadedControl(FakeFeed(known={1}), asyncio.get_running_loop())

    async def add_unknown() -> None:
        await threaded.add_subscriptions([1, 404], "quote")

    with pytest.raises(UnknownInstruments) as refused:
        await _on_api_thread(add_unknown)
    assert refused.value.tokens == [404]


async def test_metric_sources_are_read_once_on_the_feed_loop_and_frozen() -> None:
    source = StaticSource([catalog.TICKS_RECEIVED.sample(5)])
    threaded = ThreadedControl(FakeFeed(sources=[source]), asyncio.get_running_loop())
    frozen = await asyncio.to_thread(threaded.metrics_sources)
    source.figures = [catalog.TICKS_RECEIVED.sample(6)]
    assert [[s.value for s in f.samples()] for f in frozen] == [[5]]


async def test_health_on_the_api_thread_reports_the_feeds_failure() -> None:
    threaded = ThreadedControl(FailingFeed(), asyncio.get_running_loop())
    async with client_of(build_app(threaded)) as http:
        reply = await http.get("/health")
    assert reply.status_code == 503
    assert reply.json()["reason"] == "producer fatal error: _FENCED"
    assert ThreadedControl(FakeFeed(), asyncio.get_running_loop()).unhealthy() is None


async def test_quotes_and_candles_are_none_when_the_feed_has_no_such_state() -> None:
    threaded = ThreadedControl(FakeFeed(), asyncio.get_running_loop())
    assert threaded.latest_quotes() is None
    assert await asyncio.to_thread(threaded.recent_candles, 7, 3) is None
    feed = ThreadNotingFeed()
    assert ThreadedControl(feed, asyncio.get_running_loop()).latest_quotes() is feed.quotes


async def test_a_feed_loop_that_does_not_answer_is_a_timeout_not_a_hang(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    monkeypatch.setattr(isolation, "CALL_TIMEOUT", 0.2)
    threaded = ThreadedControl(FakeFeed(), asyncio.get_running_loop())
    with ThreadPoolExecutor(1) as pool:
        # Waiting here blocks the feed's loop: the call cannot be answered in time.
        pending = pool.submit(threaded.readiness)
        with pytest.raises(TimeoutError):
            pending.result(timeout=10)


async def test_the_api_answers_503_while_the_feed_loop_does_not_answer(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    monkeypatch.setattr(isolation, "CALL_TIMEOUT", 0.2)
    app = build_app(ThreadedControl(FakeFeed(), asyncio.get_running_loop()))

    async def ask() -> int:
        transport = httpx.ASGITransport(app=app, raise_app_exceptions=False)
        async with httpx.AsyncClient(transport=transport, base_url=BASE_URL) as http:
            return (await http.get("/ready")).status_code

    with ThreadPoolExecutor(1) as pool:
        # The API on its own loop and thread; the feed's loop (this one) is stalled.
        status = pool.submit(asyncio.run, ask()).result(timeout=10)
    assert status == 503


# --- ApiThread -----------------------------------------------------------------------


async def test_run_returns_when_the_server_returns_and_serves_on_another_thread() -> None:
    seen: list[int] = []

    async def serve(stop: asyncio.Event) -> None:
        seen.append(threading.get_ident())

    await ApiThread(serve, "api-test").run()
    assert seen and seen[0] != threading.get_ident()


async def test_the_servers_failure_is_raised_by_run() -> None:
    async def serve(stop: asyncio.Event) -> None:
        raise OSError("address already in use")

    with pytest.raises(OSError, match="address already in use"):
        await ApiThread(serve, "api-test").run()


async def test_stop_makes_the_server_return() -> None:
    started = threading.Event()
    stopped: list[bool] = []

    async def serve(stop: asyncio.Event) -> None:
        started.set()
        await stop.wait()
        stopped.append(True)

    api = ApiThread(serve, "api-test")
    running = asyncio.create_task(api.run())
    await asyncio.to_thread(started.wait, 10)
    api.stop()
    await asyncio.wait_for(running, 10)
    assert stopped == [True]


async def test_a_stop_before_the_server_starts_is_not_lost() -> None:
    async def serve(stop: asyncio.Event) -> None:
        await asyncio.wait_for(stop.wait(), 10)

    api = ApiThread(serve, "api-test")
    api.stop()
    await asyncio.wait_for(api.run(), 10)


async def test_cancelling_run_stops_the_server_and_leaves_no_thread() -> None:
    started = threading.Event()
    cleaned_up: list[bool] = []

    async def serve(stop: asyncio.Event) -> None:
        started.set()
        try:
            await stop.wait()
        finally:
            cleaned_up.append(True)

    running = asyncio.create_task(ApiThread(serve, "api-test-cancel").run())
    await asyncio.to_thread(started.wait, 10)
    running.cancel()
    with pytest.raises(asyncio.CancelledError):
        await running
    assert cleaned_up == [True]
    assert "api-test-cancel" not in {t.name for t in threading.enumerate()}
