"""Propagating changes of the streaming set from PostgreSQL to the feed.

LISTEN/NOTIFY rather than polling: a trigger on ``stream_subscriptions`` notifies on
commit, so a change reaches ``on_change`` in milliseconds without a query loop. Every
notification only *wakes* the watcher; it then re-reads the whole desired set and calls
``on_change`` if it differs from the last one it delivered. That makes the watcher
immune to lost or coalesced notifications: a reconnect, a periodic resync and a
notification all lead to the same "read and compare" step.

The listener needs a dedicated connection (asyncpg delivers notifications only to the
connection that LISTENs). When it dies (database restart, network cut), the watcher
reconnects with capped backoff and re-reads, catching up on anything it missed.
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Awaitable, Callable
from typing import Any

import asyncpg

from alphapanda.db.engine import Database
from alphapanda.db.lifecycle import DB_DOWN_ERRORS
from alphapanda.registry.models import NOTIFY_CHANNEL

log = logging.getLogger(__name__)

OnChange = Callable[[dict[int, str]], Awaitable[None]]

_SELECT_STREAMING = "SELECT instrument_token, mode FROM stream_subscriptions WHERE enabled"


class StreamingSetWatcher:
    """Calls ``on_change(desired)`` with the full token→mode set whenever it changes.

    ``last`` is the set the caller already has (what ``load()`` returned), so the first
    read only fires when the database disagrees with it, e.g. after a CSV fallback.
    ``on_connected`` runs after each (re)connect, before the first read (the registry
    uses it to apply migrations to a database that was down at start).
    """

    def __init__(
        self,
        database: Database,
        *,
        last: dict[int, str] | None = None,
        resync_interval: float = 30.0,
        retry_delay: float = 0.5,
        max_retry_delay: float = 5.0,
        on_connected: Callable[[], Awaitable[None]] | None = None,
        on_read: Callable[[dict[int, str]], None] | None = None,
    ) -> None:
        self._database = database
        self._last = last
        self._resync_interval = resync_interval
        self._retry_delay = retry_delay
        self._max_retry_delay = max_retry_delay
        self._on_connected = on_connected
        self._on_read = on_read
        self.notifications = 0
        self.changes = 0
        self.reconnects = 0
        self.connected = False

    async def run(self, on_change: OnChange) -> None:
        """Watch until cancelled. Only ``on_change``'s own exceptions escape."""
        delay = self._retry_delay
        failures = 0
        while True:
            try:
                conn = await self._database.connect_raw()
            except DB_DOWN_ERRORS as exc:
                failures += 1
                # Loud once, then quiet: the operator needs one clear line, not a flood.
                level = logging.WARNING if failures == 1 else logging.DEBUG
                log.log(
                    level,
                    "registry watcher cannot reach PostgreSQL (%s); retrying",
                    type(exc).__name__,
                )
                await asyncio.sleep(delay)
                delay = min(delay * 2, self._max_retry_delay)
                continue
            if failures:
                log.info("registry watcher reconnected to PostgreSQL after %d attempt(s)", failures)
                self.reconnects += 1
            failures = 0
            delay = self._retry_delay
            try:
                await self._listen(conn, on_change)
            except DB_DOWN_ERRORS as exc:
                failures = 1
                log.warning(
                    "registry watcher lost PostgreSQL (%s); reconnecting", type(exc).__name__
                )
            finally:
                self.connected = False
                await _close_quietly(conn)

    async def _listen(self, conn: asyncpg.Connection, on_change: OnChange) -> None:
        wake = asyncio.Event()
        schema = self._database.schema

        def notified(_c: Any, _pid: int, _channel: str, payload: str) -> None:
            if payload == schema:
                self.notifications += 1
                wake.set()

        def terminated(_c: Any) -> None:
            wake.set()

        conn.add_termination_listener(terminated)
        await conn.add_listener(NOTIFY_CHANNEL, notified)
        self.connected = True
        if self._on_connected is not None:
            await self._on_connected()
        while True:
            # Clear before reading: a notification arriving during the read re-arms it.
            wake.clear()
            if conn.is_closed():
                raise ConnectionResetError("listener connection closed")
            rows = await conn.fetch(_SELECT_STREAMING, timeout=self._resync_interval)
            desired = {int(r["instrument_token"]): str(r["mode"]) for r in rows}
            if self._on_read is not None:
                self._on_read(desired)
            if desired != self._last:
                self._last = desired
                self.changes += 1
                await on_change(dict(desired))
            try:
                async with asyncio.timeout(self._resync_interval):
                    await wake.wait()
            except TimeoutError:
                pass  # periodic resync, which also proves the connection still answers


async def _close_quietly(conn: asyncpg.Connection) -> None:
    try:
        async with asyncio.timeout(2.0):
            await conn.close()
    except DB_DOWN_ERRORS:
        pass
    finally:
        if not conn.is_closed():
            conn.terminate()
