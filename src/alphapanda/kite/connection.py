"""One shard's connection: the single task that owns its socket.

Single-flight by construction. ``ShardConnection.run()`` is one loop, run by one task;
the socket is a local variable of that loop. Nothing else can open, replace or
reconnect it: there is no ``reconnect()`` method, and other tasks only ever change the
shard's *desired* instruments and set an event. A session ends when any of its three
tasks (reader, liveness watchdog, subscription writer) raises; a close and an error
arriving together just end the same session twice, and the loop moves on once. So
there can never be two attempts at once nor two live sockets for one shard (the
original design's trap: a queued second attempt reconnected a healthy feed).

Per session::

    token = await tokens.get_access_token()      # fresh token on every attempt
    socket = await connector.open(api_key, token)
    TaskGroup: read frames -> decode -> sink.put_many
               watchdog: no frame for liveness_timeout -> dead
               writer: diff desired vs. sent -> chunked subscribe/unsubscribe/mode
    abort or close the socket; back off; repeat
"""

from __future__ import annotations

import asyncio
import logging
import random
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from datetime import UTC, datetime
from typing import Final, Protocol

from alphapanda.kite.protocol import (
    ACTION_MODE,
    ACTION_SUBSCRIBE,
    ACTION_UNSUBSCRIBE,
    TEXT_ERROR,
    TEXT_ORDER,
    ProtocolError,
    client_message,
    decode_message,
    parse_text_message,
)
from alphapanda.kite.reconnect import ReconnectPolicy
from alphapanda.kite.sharding import chunked, subscription_delta
from alphapanda.kite.state import ConnectionStateMachine, ConnectionStatus
from alphapanda.kite.throttle import LogThrottle
from alphapanda.kite.tokens import TickSink, TokenProvider
from alphapanda.kite.transport import ConnectFailed, Connector, FrameSocket, SocketClosed, scrub
from alphapanda.settings import KiteSettings

log = logging.getLogger(__name__)

FrameListener = Callable[[bytes, int], None]


class FrameLog(Protocol):
    """Where every binary frame goes before it is decoded: the write-ahead log."""

    @property
    def holding(self) -> bool:
        """True while crash recovery runs: frames are logged and decoded later."""
        ...

    def append(self, shard: int, frame: bytes) -> int:
        """Log ``frame``; returns its receive time (ns). Never waits on the disk."""
        ...

    async def hold(self, received_at_ns: int, frame: bytes) -> None:
        """Keep a logged frame for decoding after recovery (may wait: bounded)."""
        ...

    def decoded(self, received_at_ns: int, ticks: int) -> None:
        """``ticks`` ticks were decoded from the frame received at ``received_at_ns``."""
        ...


# Kite ``order`` text messages: (the message's ``data``, receive time in ns).
OrderListener = Callable[[object, int], None]
_TEXT_PREVIEW: Final = 200


def _utcnow() -> datetime:
    return datetime.now(UTC)


@dataclass(slots=True)
class ConnectionCounters:
    """Plain integers bumped on the read path; turned into metrics by the client."""

    attempts: dict[str, int] = field(default_factory=dict)
    frames: int = 0
    heartbeats: int = 0
    ticks: int = 0
    skipped: dict[str, int] = field(default_factory=dict)
    text_messages: dict[str, int] = field(default_factory=dict)
    listener_errors: int = 0

    def attempt(self, reason: str) -> None:
        self.attempts[reason] = self.attempts.get(reason, 0) + 1


class _SessionEnd(Exception):
    """Raised by a session task to end the session for ``reason``."""

    def __init__(self, reason: str) -> None:
        super().__init__(reason)
        self.reason = reason


# Session end reasons that are not failures: the shard has nothing to carry.
_IDLE: Final = "idle"


class ShardConnection:
    """Keeps one shard's instruments streaming over one socket, forever, until cancelled."""

    def __init__(
        self,
        shard: int,
        settings: KiteSettings,
        tokens: TokenProvider,
        sink: TickSink,
        connector: Connector,
        *,
        frame_listener: FrameListener | None = None,
        frame_log: FrameLog | None = None,
        order_listener: OrderListener | None = None,
        clock: Callable[[], float] = time.monotonic,
        wall: Callable[[], datetime] = _utcnow,
        wall_ns: Callable[[], int] = time.time_ns,
        rng: random.Random | None = None,
        auth_poll_interval: float = 1.0,
    ) -> None:
        self.shard = shard
        self._settings = settings
        self._tokens = tokens
        self._sink = sink
        self._connector = connector
        self._frame_listener = frame_listener
        self._frame_log = frame_log
        self._order_listener = order_listener
        self._clock = clock
        self._wall = wall
        self._wall_ns = wall_ns  # the receive stamp of every frame
        self._auth_poll_interval = auth_poll_interval
        self.counters = ConnectionCounters()
        self._policy = ReconnectPolicy(
            base_delay=settings.reconnect_base_delay,
            max_delay=settings.reconnect_max_delay,
            healthy_reset_after=settings.healthy_reset_after,
            auth_retry_delay=settings.auth_retry_delay,
            capacity_retry_delay=settings.capacity_retry_delay,
            rng=rng,
        )
        self._state = ConnectionStateMachine(wall())
        self._throttle = LogThrottle()
        # What the shard should carry (replaced wholesale by the client) and what the
        # server has been told on the current socket (reset on every connect).
        self._desired: dict[int, str] = {}
        self._sent: dict[int, str] = {}
        self._changed = asyncio.Event()
        self._last_frame_at: float | None = None
        self._waiting_since: float | None = None

    # -- used by the client -------------------------------------------------------

    def set_desired(self, desired: dict[int, str]) -> None:
        """Replace the shard's instruments; a live socket gets only the delta."""
        self._desired = dict(desired)
        self._changed.set()

    def desired(self) -> dict[int, str]:
        return dict(self._desired)

    @property
    def state(self) -> str:
        return self._state.state

    def status(self) -> ConnectionStatus:
        age = None if self._last_frame_at is None else self._clock() - self._last_frame_at
        return ConnectionStatus(
            shard=self.shard,
            state=self._state.state,
            since=self._state.since,
            reconnect_count=self._state.reconnect_count,
            last_disconnect_reason=self._state.last_disconnect_reason,
            instruments=len(self._desired),
            frames_received=self.counters.frames,
            ticks_received=self.counters.ticks,
            last_frame_age=age,
        )

    def is_streaming(self) -> bool:
        """Connected and a frame arrived within the liveness timeout."""
        return (
            self._state.state == "connected"
            and self._last_frame_at is not None
            and self._clock() - self._last_frame_at < self._settings.liveness_timeout
        )

    # -- the owning task ----------------------------------------------------------

    async def run(self) -> None:
        """Connect, stream, reconnect; returns only by cancellation."""
        try:
            while True:
                if not self._desired:
                    await self._idle()
                    continue
                try:
                    await self._cycle()
                except Exception:
                    # A bug in our own session logic (or in the sink) must not end the
                    # shard silently: log it, count it, back off and start over.
                    log.exception("kite shard %d: connection logic crashed; restarting", self.shard)
                    self.counters.attempt("internal_error")
                    if self._state.state in ("connecting", "connected"):
                        self._state.failed("internal_error", self._wall())
                    await asyncio.sleep(self._policy.next_delay("internal_error"))
        finally:
            self._last_frame_at = None
            self._state.stopped(self._wall())

    async def _idle(self) -> None:
        self._state.stopped(self._wall())
        self._changed.clear()
        while not self._desired:
            await self._changed.wait()
            self._changed.clear()

    async def _cycle(self) -> None:
        """One attempt, its session if it connects, and the wait before the next."""
        self._state.connecting(self._wall())
        try:
            token = await self._tokens.get_access_token()
        except Exception as exc:
            self._fail("token_error", f"token provider failed: {type(exc).__name__}")
            await asyncio.sleep(self._policy.next_delay("token_error"))
            return
        try:
            socket = await self._connector.open(self._settings.api_key, token)
        except ConnectFailed as exc:
            detail = scrub(str(exc), token)
            if exc.reason == "auth_403":
                self._fail("auth_403", detail, auth=True)
                await self._await_new_token(token, self._policy.next_delay("auth_403"))
            else:
                self._fail(exc.reason, detail)
                await asyncio.sleep(self._policy.next_delay(exc.reason))
            return

        self.counters.attempt("connect_ok")
        self._state.connected(self._wall())
        self._policy.connected(self._clock())
        log.info("kite shard %d connected (%d instruments)", self.shard, len(self._desired))
        reason = "internal_error"
        try:
            reason = await self._session(socket)
        except asyncio.CancelledError:
            reason = "stopped"
            raise
        finally:
            if reason in (_IDLE, "stopped"):
                await socket.close()
            else:
                # A dead or misbehaving socket gets no closing handshake: it may never
                # answer, and the replacement must not wait for it.
                socket.abort()
            self._policy.disconnected(self._clock())
        if reason == _IDLE:
            self._state.stopped(self._wall(), reason=_IDLE)
            return
        self._fail(reason, "socket ended")
        await asyncio.sleep(self._policy.next_delay(reason))

    def _fail(self, reason: str, detail: str, *, auth: bool = False) -> None:
        self.counters.attempt(reason)
        self._state.failed(reason, self._wall(), auth=auth)
        allowed, suppressed = self._throttle.allow(f"fail:{reason}", self._clock())
        if not allowed:
            return
        more = f" (and {suppressed} more like it)" if suppressed else ""
        if auth:
            log.error(
                "kite shard %d: access token rejected (HTTP 403); state auth_required, "
                "waiting for a new token%s",
                self.shard,
                more,
            )
        else:
            log.warning("kite shard %d: %s (%s)%s", self.shard, reason, detail, more)

    async def _await_new_token(self, rejected: str, delay: float) -> None:
        # Retrying a rejected token fast cannot help and looks like a storm to Kite;
        # but a new token (login done, AuthService refreshed) should be used within a
        # second or so. So: sleep up to ``delay``, polling the (cheap) provider.
        deadline = self._clock() + delay
        while (remaining := deadline - self._clock()) > 0:
            await asyncio.sleep(min(self._auth_poll_interval, remaining))
            try:
                if await self._tokens.get_access_token() != rejected:
                    return
            except Exception:
                continue

    # -- one live socket ----------------------------------------------------------

    async def _session(self, socket: FrameSocket) -> str:
        self._sent = {}
        self._changed.set()  # the writer starts with a full resubscribe
        self._last_frame_at = None
        self._waiting_since = self._clock()
        reason = "internal_error"
        try:
            async with asyncio.TaskGroup() as tg:
                tg.create_task(self._read(socket))
                tg.create_task(self._watch())
                tg.create_task(self._write(socket))
        except* _SessionEnd as ended:
            first = ended.exceptions[0]
            assert isinstance(first, _SessionEnd)
            reason = first.reason
        return reason

    async def _read(self, socket: FrameSocket) -> None:
        counters = self.counters
        while True:
            self._waiting_since = self._clock()
            try:
                message = await socket.recv()
            except SocketClosed:
                raise _SessionEnd("closed_by_server") from None
            received_at_ns = self._wall_ns()
            self._waiting_since = None
            self._last_frame_at = self._clock()
            if isinstance(message, str):
                self._on_text(message, received_at_ns)
                continue
            counters.frames += 1
            # A heartbeat (1 byte) carries no tick: not worth logging.
            frame_log = self._frame_log if len(message) > 1 else None
            if frame_log is not None:
                # Logged before it is decoded: from here on a crash cannot lose it.
                received_at_ns = frame_log.append(self.shard, message)
            if self._frame_listener is not None:
                self._notify_listener(message, received_at_ns)
            if frame_log is not None and frame_log.holding:
                await frame_log.hold(received_at_ns, message)
                continue
            decoded = decode_message(message, received_at_ns)
            if decoded.heartbeat:
                counters.heartbeats += 1
            for skipped in decoded.skipped:
                counters.skipped[skipped.reason] = counters.skipped.get(skipped.reason, 0) + 1
            if decoded.ticks:
                counters.ticks += len(decoded.ticks)
                if frame_log is not None:
                    frame_log.decoded(received_at_ns, len(decoded.ticks))
                # May block: that is the backpressure path. The watchdog does not
                # count this time against the socket (``_waiting_since`` is None).
                await self._sink.put_many(decoded.ticks)

    def _notify_listener(self, frame: bytes, received_at_ns: int) -> None:
        assert self._frame_listener is not None
        try:
            self._frame_listener(frame, received_at_ns)
        except Exception:
            # The recorder must not take the feed down with it.
            self.counters.listener_errors += 1
            if self._throttle.allow("listener", self._clock())[0]:
                log.exception("kite shard %d: frame listener failed", self.shard)

    def _on_text(self, text: str, received_at_ns: int = 0) -> None:
        try:
            message = parse_text_message(text)
        except ProtocolError:
            kind = "invalid"
        else:
            kind = message.type
            if kind == TEXT_ORDER and self._order_listener is not None:
                self._order_listener(message.data, received_at_ns)
        counts = self.counters.text_messages
        counts[kind] = counts.get(kind, 0) + 1
        if kind in (TEXT_ERROR, "invalid"):
            allowed, suppressed = self._throttle.allow(f"text:{kind}", self._clock())
            if allowed:
                more = f" (and {suppressed} more like it)" if suppressed else ""
                log.warning(
                    "kite shard %d: server %s message: %.*s%s",
                    self.shard,
                    kind,
                    _TEXT_PREVIEW,
                    text,
                    more,
                )

    async def _watch(self) -> None:
        timeout = self._settings.liveness_timeout
        while True:
            since = self._waiting_since
            if since is None:
                # The reader is busy handing ticks downstream (backpressure); silence
                # during that time is not the socket's fault.
                await asyncio.sleep(timeout)
                continue
            silent_for = self._clock() - since
            if silent_for >= timeout:
                raise _SessionEnd("liveness_timeout")
            await asyncio.sleep(timeout - silent_for)

    async def _write(self, socket: FrameSocket) -> None:
        while True:
            await self._changed.wait()
            self._changed.clear()
            if not self._desired:
                raise _SessionEnd(_IDLE)
            try:
                await self._sync(socket)
            except SocketClosed:
                raise _SessionEnd("closed_by_server") from None

    async def _sync(self, socket: FrameSocket) -> None:
        """Send what turns the server's view (``_sent``) into ``_desired``."""
        desired = dict(self._desired)
        delta = subscription_delta(self._sent, desired)
        size = self._settings.subscribe_chunk_size
        for chunk in chunked(delta.unsubscribe, size):
            await self._send(socket, client_message(ACTION_UNSUBSCRIBE, chunk))
            for token in chunk:
                self._sent.pop(token, None)
        for chunk in chunked(delta.subscribe, size):
            await self._send(socket, client_message(ACTION_SUBSCRIBE, chunk))
            for token in chunk:
                self._sent[token] = "quote"  # Kite's mode for a new subscription
        for mode, tokens in delta.modes.items():
            for chunk in chunked(tokens, size):
                await self._send(socket, client_message(ACTION_MODE, chunk, mode))
                for token in chunk:
                    self._sent[token] = mode
        if not delta.empty:
            log.debug(
                "kite shard %d: +%d -%d instruments, %d mode changes",
                self.shard,
                len(delta.subscribe),
                len(delta.unsubscribe),
                sum(len(t) for t in delta.modes.values()),
            )

    async def _send(self, socket: FrameSocket, text: str) -> None:
        await socket.send(text)
        if self._settings.subscribe_pacing_ms:
            await asyncio.sleep(self._settings.subscribe_pacing_ms / 1000)
