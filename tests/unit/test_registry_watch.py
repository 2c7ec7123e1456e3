"""``StreamingSetWatcher`` against a scripted listener connection, on virtual time.

The watcher's logic is "wake, re-read, compare, deliver": which notifications wake it,
when a read is delivered, how it backs off and reconnects. A fake asyncpg connection
records every read with the loop's (virtual) time, so the tests can say *when* the
watcher read without sleeping. LISTEN/NOTIFY through a real PostgreSQL, restarts
included, is covered by ``tests/integration/test_registry.py``.
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Callable, Coroutine
from dataclasses import dataclass, field
from typing import Any, cast

import asyncpg
import pytest

from alphapanda.db.engine import Database
from alphapanda.registry.models import NOTIFY_CHANNEL
from alphapanda.registry.watch import StreamingSetWatcher
from alphapanda.testing import VirtualClock, eventually

pytestmark = pytest.mark.unit

SCHEMA = "test_watch"


@dataclass
class ListenConnection:
    """The asyncpg connection the watcher LISTENs on."""

    server: Server
    listeners: list[Callable[..., None]] = field(default_factory=list)
    terminations: list[Callable[..., None]] = field(default_factory=list)
    closed: bool = False

    async def add_listener(self, channel: str, callback: Callable[..., None]) -> None:
        assert channel == NOTIFY_CHANNEL
        self.listeners.append(callback)

    def add_termination_listener(self, callback: Callable[..., None]) -> None:
        self.terminations.append(callback)

    def is_closed(self) -> bool:
        return self.closed

    async def fetch(self, query: str, timeout: float) -> list[dict[str, Any]]:  # noqa: ASYNC109
        self.server.reads.append(asyncio.get_running_loop().time() - self.server.epoch)
        if self.closed:
            raise asyncpg.ConnectionDoesNotExistError("connection was closed")
        return [{"instrument_token": t, "mode": m} for t, m in self.server.desired.items()]

    async def close(self) -> None:
        self.closed = True

    def terminate(self) -> None:
        self.closed = True

    def notify(self, payload: str) -> None:
        for callback in self.listeners:
            callback(self, 4242, NOTIFY_CHANNEL, payload)

    def die(self) -> None:
        self.closed = True
        for callback in self.terminations:
            callback(self)


@dataclass
class Server:
    """Stands in for ``Database``: the desired set, refused connects, connect times."""

    desired: dict[int, str] = field(default_factory=dict)
    refusals: int = 0
    schema: str = SCHEMA
    epoch: float = 0.0
    attempts: list[float] = field(default_factory=list)
    reads: list[float] = field(default_factory=list)
    connections: list[ListenConnection] = field(default_factory=list)

    async def connect_raw(self) -> ListenConnection:
        self.attempts.append(asyncio.get_running_loop().time() - self.epoch)
        if self.refusals:
            self.refusals -= 1
            raise ConnectionRefusedError(111, "Connection refused")
        self.connections.append(ListenConnection(self))
        return self.connections[-1]

    @property
    def conn(self) -> ListenConnection:
        return self.connections[-1]

    @property
    def database(self) -> Database:
        return cast(Database, self)


def on_virtual_time(main: Callable[[], Coroutine[Any, Any, None]]) -> None:
    """Run ``main`` on a loop whose clock jumps to the next timer whenever it idles."""
    VirtualClock(autojump_threshold=0).run(main())


@dataclass
class Feed:
    """The ``on_change`` side: every delivered set, in order."""

    delivered: list[dict[int, str]] = field(default_factory=list)

    async def on_change(self, desired: dict[int, str]) -> None:
        self.delivered.append(desired)


async def start(watcher: StreamingSetWatcher, feed: Feed) -> asyncio.Task[None]:
    return asyncio.create_task(watcher.run(feed.on_change))


async def stop(task: asyncio.Task[None]) -> None:
    task.cancel()
    with pytest.raises(asyncio.CancelledError):
        await task


def watcher_for(server: Server, **options: Any) -> StreamingSetWatcher:
    server.epoch = asyncio.get_running_loop().time()
    options.setdefault("resync_interval", 600.0)
    return StreamingSetWatcher(server.database, **options)


# -- what is delivered -------------------------------------------------------------------


def test_a_first_read_equal_to_the_loaded_set_is_not_delivered() -> None:
    async def main() -> None:
        server, feed = Server({1: "full"}), Feed()
        watcher = watcher_for(server, last={1: "full"})
        task = await start(watcher, feed)
        await eventually(lambda: server.reads == [0.0])
        server.desired = {1: "full", 2: "ltp"}
        server.conn.notify(SCHEMA)
        await eventually(lambda: feed.delivered == [{1: "full", 2: "ltp"}])
        assert watcher.changes == 1
        await stop(task)

    on_virtual_time(main)


def test_a_first_read_that_differs_from_the_loaded_set_is_delivered_at_once() -> None:
    async def main() -> None:
        server, feed = Server({1: "full"}), Feed()
        task = await start(watcher_for(server, last={1: "quote", 2: "quote"}), feed)
        await eventually(lambda: feed.delivered == [{1: "full"}])
        await stop(task)

    on_virtual_time(main)


def test_without_a_loaded_set_even_an_empty_first_read_is_delivered() -> None:
    async def main() -> None:
        server, feed = Server({}), Feed()
        task = await start(watcher_for(server, last=None), feed)
        await eventually(lambda: feed.delivered == [{}])
        await stop(task)

    on_virtual_time(main)


def test_a_notification_that_changes_nothing_delivers_nothing() -> None:
    async def main() -> None:
        server, feed = Server({1: "full"}), Feed()
        watcher = watcher_for(server, last={1: "full"})
        task = await start(watcher, feed)
        await eventually(lambda: len(server.reads) == 1)
        server.conn.notify(SCHEMA)
        await eventually(lambda: len(server.reads) == 2)
        assert feed.delivered == [] and watcher.changes == 0
        assert watcher.notifications == 1
        await stop(task)

    on_virtual_time(main)


def test_the_feed_changing_the_delivered_set_does_not_fool_the_comparison() -> None:
    async def main() -> None:
        server = Server({1: "full"})

        class Meddling(Feed):
            async def on_change(self, desired: dict[int, str]) -> None:
                await super().on_change(dict(desired))
                desired.clear()

        feed = Meddling()
        task = await start(watcher_for(server, last=None), feed)
        await eventually(lambda: len(server.reads) == 1)
        server.conn.notify(SCHEMA)
        await eventually(lambda: len(server.reads) == 2)
        assert feed.delivered == [{1: "full"}]  # the same set, not delivered again
        await stop(task)

    on_virtual_time(main)


def test_every_read_is_reported_to_on_read() -> None:
    async def main() -> None:
        server, seen = Server({1: "full"}), list[dict[int, str]]()
        task = await start(watcher_for(server, last={1: "full"}, on_read=seen.append), Feed())
        await eventually(lambda: len(seen) == 1)
        server.conn.notify(SCHEMA)
        await eventually(lambda: seen == [{1: "full"}, {1: "full"}])
        await stop(task)

    on_virtual_time(main)


# -- when it reads -----------------------------------------------------------------------


def test_notifications_for_another_schema_do_not_wake_the_watcher() -> None:
    async def main() -> None:
        server, feed = Server({1: "full"}), Feed()
        watcher = watcher_for(server, last={1: "full"})
        task = await start(watcher, feed)
        await eventually(lambda: server.reads == [0.0])
        server.conn.notify("test_someone_else")
        await asyncio.sleep(5)
        assert server.reads == [0.0]
        notified_at = asyncio.get_running_loop().time() - server.epoch
        server.conn.notify(SCHEMA)
        await eventually(lambda: len(server.reads) == 2)
        assert server.reads == [0.0, notified_at]
        assert watcher.notifications == 1
        await stop(task)

    on_virtual_time(main)


def test_without_notifications_the_set_is_re_read_every_resync_interval() -> None:
    async def main() -> None:
        server, feed = Server({1: "full"}), Feed()
        task = await start(watcher_for(server, last={1: "full"}, resync_interval=30), feed)
        server.desired = {1: "ltp"}  # changed with no notification (a lost NOTIFY)
        await eventually(lambda: feed.delivered == [{1: "ltp"}], timeout=60)
        await eventually(lambda: len(server.reads) == 3, timeout=60)
        assert server.reads == [0.0, 30.0, 60.0]
        await stop(task)

    on_virtual_time(main)


def test_on_connected_runs_before_the_first_read_of_every_connection() -> None:
    async def main() -> None:
        server, events = Server({1: "full"}), list[str]()

        async def connected() -> None:
            events.append(f"connected, {len(server.reads)} reads")

        task = await start(watcher_for(server, last={1: "full"}, on_connected=connected), Feed())
        await eventually(lambda: len(server.reads) == 1)
        server.conn.die()
        await eventually(lambda: len(server.reads) == 2)
        assert events == ["connected, 0 reads", "connected, 1 reads"]
        await stop(task)

    on_virtual_time(main)


# -- losing and finding the database -----------------------------------------------------


def test_a_refused_connect_is_retried_with_capped_doubling_delays(
    caplog: pytest.LogCaptureFixture,
) -> None:
    async def main() -> None:
        server, feed = Server({1: "full"}, refusals=6), Feed()
        watcher = watcher_for(server, last=None, retry_delay=0.5, max_retry_delay=3.0)
        task = await start(watcher, feed)
        await eventually(lambda: feed.delivered == [{1: "full"}], timeout=60)
        assert server.attempts == [0.0, 0.5, 1.5, 3.5, 6.5, 9.5, 12.5]
        assert watcher.reconnects == 1 and watcher.connected
        await stop(task)

    with caplog.at_level(logging.DEBUG, logger="alphapanda.registry.watch"):
        on_virtual_time(main)
    warnings = [r for r in caplog.records if r.levelno == logging.WARNING]
    assert len(warnings) == 1 and "cannot reach PostgreSQL" in warnings[0].getMessage()
    assert any("after 6 attempt(s)" in r.getMessage() for r in caplog.records)


def test_a_lost_listener_reconnects_at_once_and_catches_up() -> None:
    async def main() -> None:
        server, feed = Server({1: "full"}), Feed()
        watcher = watcher_for(server, last={1: "full"})
        task = await start(watcher, feed)
        await eventually(lambda: watcher.connected)
        first = server.conn
        server.desired = {1: "full", 2: "quote"}  # changed while the listener was down
        lost_at = asyncio.get_running_loop().time() - server.epoch
        first.die()
        await eventually(lambda: feed.delivered == [{1: "full", 2: "quote"}])
        assert len(server.connections) == 2 and first.closed
        assert server.attempts == [0.0, lost_at] and watcher.reconnects == 1
        await stop(task)

    on_virtual_time(main)


def test_the_delay_starts_over_after_a_successful_connect() -> None:
    async def main() -> None:
        server, feed = Server({1: "full"}, refusals=3), Feed()
        watcher = watcher_for(server, last={1: "full"}, retry_delay=1.0, max_retry_delay=8.0)
        task = await start(watcher, feed)
        await eventually(lambda: watcher.connected, timeout=60)
        lost_at = asyncio.get_running_loop().time() - server.epoch
        server.refusals = 2
        server.conn.die()
        await eventually(lambda: len(server.connections) == 2, timeout=60)
        retries = [t - lost_at for t in server.attempts[4:]]
        assert retries == [0.0, 1.0, 3.0]  # 1 s, then 2 s: not 8 s where it left off
        await stop(task)

    on_virtual_time(main)


def test_an_error_of_on_change_escapes_and_the_connection_is_closed() -> None:
    async def main() -> None:
        server = Server({1: "full"})

        async def broken(_: dict[int, str]) -> None:
            raise RuntimeError("feed refused the set")

        watcher = watcher_for(server, last=None)
        with pytest.raises(RuntimeError, match="feed refused the set"):
            await watcher.run(broken)
        assert server.conn.closed and not watcher.connected
        assert len(server.attempts) == 1  # not retried: a bug of the caller, not an outage

    on_virtual_time(main)


def test_cancelling_the_watcher_closes_its_connection() -> None:
    async def main() -> None:
        server = Server({1: "full"})
        watcher = watcher_for(server, last={1: "full"})
        task = await start(watcher, Feed())
        await eventually(lambda: watcher.connected)
        await stop(task)
        assert server.conn.closed and not watcher.connected

    on_virtual_time(main)
