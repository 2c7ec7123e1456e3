"""The native asyncio Kite ticker client: up to N sharded connections, supervised.

``TickerClient`` owns one ``ShardConnection`` per allowed connection and runs them all
under one ``asyncio.TaskGroup``. Shards without instruments stay idle (no socket), so
10 instruments open one connection and 7,000 open three. Subscription changes go
through the ``ShardPlanner`` and reach each live socket as deltas, without reconnecting.

Typical use (the ``MarketFeedService`` does this)::

    client = TickerClient(settings.kite, auth_service, tick_buffer)
    await client.set_subscriptions({256265: "full", 738561: "quote"})
    async with asyncio.TaskGroup() as tg:
        tg.create_task(client.run())
        ...
        await client.stop()
"""

from __future__ import annotations

import asyncio
import random
import time
from collections.abc import Callable, Iterable, Iterator, Mapping
from typing import Final

from alphapanda.kite.connection import (
    ConnectionCounters,
    FrameListener,
    FrameLog,
    OrderListener,
    ShardConnection,
)
from alphapanda.kite.reconnect import REASONS
from alphapanda.kite.sharding import CapacityError, ShardPlanner, validate_modes
from alphapanda.kite.state import STATES, ConnectionStatus
from alphapanda.kite.tokens import TickSink, TokenProvider
from alphapanda.kite.transport import Connector, WebSocketConnector
from alphapanda.metrics.samples import Sample
from alphapanda.modes import MODES
from alphapanda.settings import KiteSettings

__all__ = ["CapacityError", "ConnectionStatus", "TickSink", "TickerClient", "TokenProvider"]

_SKIP_REASONS: Final = ("unknown_length", "truncated")


class TickerClient:
    """Streams ticks of the subscribed instruments into ``sink``; see the module doc."""

    def __init__(
        self,
        settings: KiteSettings,
        tokens: TokenProvider,
        sink: TickSink,
        *,
        frame_listener: FrameListener | None = None,
        frame_log: FrameLog | None = None,
        order_listener: OrderListener | None = None,
        clock: Callable[[], float] = time.monotonic,
        connector: Connector | None = None,
        rng: random.Random | None = None,
    ) -> None:
        self._settings = settings
        self._planner = ShardPlanner(
            settings.max_connections, settings.max_instruments_per_connection
        )
        connector = connector or WebSocketConnector(
            settings.ws_url,
            connect_timeout=settings.connect_timeout,
            max_frame_bytes=settings.max_frame_bytes,
        )
        self._shards = [
            ShardConnection(
                index,
                settings,
                tokens,
                sink,
                connector,
                frame_listener=frame_listener,
                frame_log=frame_log,
                order_listener=order_listener,
                clock=clock,
                rng=rng,
                auth_poll_interval=settings.auth_poll_interval,
            )
            for index in range(settings.max_connections)
        ]
        self._stop_requested = asyncio.Event()
        self._finished = asyncio.Event()
        self._running = False

    def __repr__(self) -> str:
        return (
            f"TickerClient(ws_url={self._settings.ws_url!r}, "
            f"instruments={len(self._planner.current())}, running={self._running})"
        )

    # -- life cycle ---------------------------------------------------------------

    async def run(self) -> None:
        """Run every shard's connection until ``stop()``.

        Each shard's task restarts its own connection after any failure (a crash of
        its logic is logged and counted as ``internal_error``), so this returns only
        after ``stop()`` or by cancellation.
        """
        if self._running:
            raise RuntimeError("TickerClient.run() is already running")
        self._running = True
        self._finished.clear()
        try:
            async with asyncio.TaskGroup() as tg:
                tasks = [
                    tg.create_task(shard.run(), name=f"kite-shard-{shard.shard}")
                    for shard in self._shards
                ]
                await self._stop_requested.wait()
                # Cancellation is how a shard task stops: wherever it is (reading,
                # connecting, backing off), its socket is closed on the way out.
                for task in tasks:
                    task.cancel()
        finally:
            self._running = False
            self._stop_requested.clear()
            self._finished.set()

    async def stop(self) -> None:
        """Close every socket and make ``run()`` return; waits until it has."""
        self._stop_requested.set()
        if self._running:
            await self._finished.wait()

    # -- subscriptions ------------------------------------------------------------

    async def set_subscriptions(self, desired: Mapping[int, str]) -> None:
        """Make the subscribed set exactly ``desired`` (token -> mode).

        Live connections get only the deltas; new instruments go to the least-loaded
        shard; a shard that is not connected applies its set when it connects.
        Raises ``CapacityError`` when ``desired`` exceeds what the API key allows,
        and ``ValueError`` on an unknown mode; the current set is unchanged then.
        """
        wanted = {int(token): mode for token, mode in desired.items()}
        # No await between planning and handing the result to the shards: concurrent
        # callers are serialised by the event loop, so no lock is needed.
        for index in self._planner.assign(wanted):
            self._shards[index].set_desired(self._planner.shard(index))

    async def subscribe(self, tokens: Iterable[int], mode: str = "quote") -> None:
        """Add ``tokens`` in ``mode`` (or move them to ``mode`` if already subscribed)."""
        if mode not in MODES:
            raise ValueError(f"unknown mode {mode!r} (use ltp, quote or full)")
        desired = self._planner.current()
        desired.update(dict.fromkeys((int(t) for t in tokens), mode))
        await self.set_subscriptions(desired)

    async def unsubscribe(self, tokens: Iterable[int]) -> None:
        """Remove ``tokens``; unknown tokens are ignored."""
        desired = self._planner.current()
        for token in tokens:
            desired.pop(int(token), None)
        await self.set_subscriptions(desired)

    async def set_mode(self, tokens: Iterable[int], mode: str) -> None:
        """Change the mode of subscribed ``tokens``; raises ``ValueError`` on unknown ones."""
        desired = self._planner.current()
        changes = dict.fromkeys((int(t) for t in tokens), mode)
        validate_modes(changes)
        missing = sorted(token for token in changes if token not in desired)
        if missing:
            shown = ", ".join(map(str, missing[:10])) + (" ..." if len(missing) > 10 else "")
            raise ValueError(f"{len(missing)} instruments are not subscribed: {shown}")
        desired.update(changes)
        await self.set_subscriptions(desired)

    def subscriptions(self) -> dict[int, str]:
        """The desired set (token -> mode), across shards."""
        return self._planner.current()

    # -- observability ------------------------------------------------------------

    def statuses(self) -> list[ConnectionStatus]:
        """One entry per shard that carries instruments or holds a socket."""
        return [
            shard.status() for shard in self._shards if shard.desired() or shard.state != "stopped"
        ]

    def shard_instruments(self) -> dict[int, tuple[int, ...]]:
        """The instruments each shard carries (shard -> tokens)."""
        return {shard.shard: tuple(shard.desired()) for shard in self._shards}

    def is_streaming(self) -> bool:
        """At least one connection is connected and receiving frames."""
        return any(shard.is_streaming() for shard in self._shards)

    def samples(self) -> Iterator[Sample]:
        """Counters and gauges of the connections (``MetricsSource``)."""
        total = ConnectionCounters()
        for shard in self._shards:
            c = shard.counters
            for reason, n in c.attempts.items():
                total.attempts[reason] = total.attempts.get(reason, 0) + n
            for reason, n in c.skipped.items():
                total.skipped[reason] = total.skipped.get(reason, 0) + n
            for kind, n in c.text_messages.items():
                total.text_messages[kind] = total.text_messages.get(kind, 0) + n
            total.frames += c.frames
            total.heartbeats += c.heartbeats
            total.ticks += c.ticks
            total.listener_errors += c.listener_errors

        for reason in sorted(set(REASONS) | set(total.attempts)):
            yield Sample(
                "kite_reconnect_attempts_total",
                "counter",
                total.attempts.get(reason, 0),
                (("reason", reason),),
                "Connection attempts and socket endings, by outcome or cause",
            )
        yield Sample("kite_frames_total", "counter", total.frames, (), "Binary frames received")
        yield Sample("kite_heartbeats_total", "counter", total.heartbeats, (), "Heartbeats")
        yield Sample("kite_ticks_received_total", "counter", total.ticks, (), "Ticks decoded")
        for reason in sorted(set(_SKIP_REASONS) | set(total.skipped)):
            yield Sample(
                "kite_skipped_packets_total",
                "counter",
                total.skipped.get(reason, 0),
                (("reason", reason),),
                "Malformed packets skipped by the decoder, by reason",
            )
        for kind in sorted(set(("error", "message", "order")) | set(total.text_messages)):
            yield Sample(
                "kite_text_messages_total",
                "counter",
                total.text_messages.get(kind, 0),
                (("type", kind),),
                "Text messages from the server, by type ('invalid': unparseable)",
            )
        yield Sample(
            "kite_frame_listener_errors_total",
            "counter",
            total.listener_errors,
            (),
            "Frame listener (recorder) failures",
        )
        # Only shards in use: idle spare shards are not "stopped" connections.
        states = [status.state for status in self.statuses()]
        for state in STATES:
            yield Sample(
                "kite_connections",
                "gauge",
                states.count(state),
                (("state", state),),
                "Connections by state",
            )
        yield Sample(
            "kite_subscribed_instruments",
            "gauge",
            len(self._planner.current()),
            (),
            "Instruments in the desired set",
        )
        yield Sample(
            "kite_streaming", "gauge", 1.0 if self.is_streaming() else 0.0, (), "Feed receiving"
        )
