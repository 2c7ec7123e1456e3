"""The simulated Kite ticker: a WebSocket server, its tick sender and its fault switches.

One event loop runs everything: the WebSocket server (one handler per connection that
only reads client messages), one sender task that turns elapsed time into ticks and
writes one batched binary message per connection per ``send_interval``, and the admin
HTTP app (see :mod:`alphapanda.sim.admin`). A single sender keeps the ledger simple:
ticks are generated only for open connections and written in generation order, so the
``volume_traded`` sequence a client sees is complete unless its socket died under it.
"""

from __future__ import annotations

import asyncio
import contextlib
import http
import logging
import socket
import struct
import time
from collections import Counter
from dataclasses import dataclass, field
from typing import Any
from urllib.parse import parse_qs, urlsplit

from websockets.asyncio.server import ServerConnection, serve
from websockets.exceptions import ConnectionClosed
from websockets.http11 import Request, Response
from websockets.protocol import State

from alphapanda.instruments import load_instrument_dump
from alphapanda.kite.protocol import (
    HEARTBEAT,
    MODE_FULL,
    MODE_LTP,
    MODE_QUOTE,
    encode_message,
    encode_tick,
)
from alphapanda.sim.config import SimConfig
from alphapanda.sim.market import Market, in_mode
from alphapanda.sim.pregen import PregenBuffer, fill_once_settled
from alphapanda.sim.schedule import TickSchedule
from alphapanda.sim.sessions import SessionBook
from alphapanda.sim.subscriptions import SubscriptionBook, error_text

# The "malformed" fault: a frame of two packets, one of a length no packet kind has
# (13 bytes) and one that declares 184 bytes but carries 10. A correct decoder skips
# both; the official parser ignores both without crashing.
MALFORMED_FRAME = struct.pack(">HH", 2, 13) + b"\xab" * 13 + struct.pack(">H", 184) + b"\x01" * 10


log = logging.getLogger(__name__)

# Which mode carries more: a tick is generated in the richest mode any subscriber wants.
_MODE_RANK = {MODE_LTP: 0, MODE_QUOTE: 1, MODE_FULL: 2}


@dataclass(eq=False)
class _Connection:
    id: str
    api_key: str
    ws: ServerConnection
    last_sent: float
    packets_sent: int = 0


@dataclass
class _Counters:
    handshakes: Counter[str] = field(default_factory=Counter)
    ticks: Counter[int] = field(default_factory=Counter)
    max_concurrent: Counter[str] = field(default_factory=Counter)
    packets_sent: int = 0
    messages_sent: int = 0
    heartbeats_sent: int = 0
    malformed_sent: int = 0
    dropped: int = 0
    slow_clients_cut: int = 0


def _bind(host: str, port: int) -> socket.socket:
    sock = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
    sock.bind((host, port))
    sock.listen(128)
    sock.setblocking(False)
    return sock


class Simulator:
    """The exchange. ``await run()`` serves until :meth:`stop`; the other public methods
    are the admin controls (thread-unsafe: call them from the simulator's loop)."""

    def __init__(self, config: SimConfig, market: Market) -> None:
        self.config = config
        self.market = market
        self.ready = asyncio.Event()
        self._stopping = asyncio.Event()
        self._book = SubscriptionBook(market, config.max_instruments_per_connection)
        self._schedule = TickSchedule(config.ticks_per_second)
        self._sessions = SessionBook(config.api_key, config.access_token, config.api_secret)
        self._connections: dict[str, _Connection] = {}
        self._pending: dict[ServerConnection, str] = {}
        self._next_id = 0
        self._count = _Counters()
        self._send_lock = asyncio.Lock()
        self._stalled_until = 0.0
        self._reading_paused = False
        self._pregen: PregenBuffer | None = None
        if config.pregenerate_seconds > 0:
            self._pregen = PregenBuffer(market, config.pregenerate_limit)
        # Bound at construction so the ports are known (port 0 → a free one) before run.
        self._ws_sock = _bind(config.host, config.port)
        self._admin_sock = _bind(config.host, config.admin_port)

    @classmethod
    def from_config(cls, config: SimConfig) -> Simulator:
        """Load the instrument universe named by the config (bad rows are skipped)."""
        instruments, _errors = load_instrument_dump(config.instruments)
        return cls(config, Market(instruments, seed=config.seed))

    @property
    def ws_port(self) -> int:
        return int(self._ws_sock.getsockname()[1])

    @property
    def admin_port(self) -> int:
        return int(self._admin_sock.getsockname()[1])

    @property
    def ws_url(self) -> str:
        return f"ws://{self.config.host}:{self.ws_port}"

    @property
    def admin_url(self) -> str:
        return f"http://{self.config.host}:{self.admin_port}"

    # -- lifecycle -------------------------------------------------------------------

    async def run(self) -> None:
        """Serve WebSocket and admin HTTP until :meth:`stop` is called."""
        from alphapanda.sim.admin import AdminServer

        admin = AdminServer(self, self._admin_sock)
        try:
            # Kite sends its own 1-byte heartbeats; protocol pings would keep a "stalled"
            # server looking alive, so they are off.
            async with (
                serve(
                    self._serve_connection,
                    sock=self._ws_sock,
                    process_request=self._check_handshake,
                    process_response=self._after_handshake,
                    compression=None,
                    ping_interval=None,
                    close_timeout=2,
                    max_size=1 << 20,
                ),
                asyncio.TaskGroup() as tasks,
            ):
                tasks.create_task(self._send_loop())
                tasks.create_task(admin.serve())
                if self._pregen is not None:
                    tasks.create_task(
                        fill_once_settled(
                            self._pregen,
                            self._book.active_tokens,
                            seconds=self.config.pregenerate_seconds,
                            rate=self.config.pregenerate_rate or self.config.ticks_per_second,
                            stopping=self._stopping,
                        )
                    )
                self.ready.set()
                await self._stopping.wait()
                admin.should_exit = True
        finally:
            self._ws_sock.close()
            self._admin_sock.close()

    def stop(self) -> None:
        self._stopping.set()

    # -- handshake and connections ---------------------------------------------------

    def _check_handshake(self, ws: ServerConnection, request: Request) -> Response | None:
        query = parse_qs(urlsplit(request.path).query)
        api_key = (query.get("api_key") or [""])[0]
        token = (query.get("access_token") or [""])[0]
        if not self._sessions.admits(api_key, token):
            self._count.handshakes["403"] += 1
            return ws.respond(http.HTTPStatus.FORBIDDEN, "invalid api_key or access_token\n")
        # Handshakes in progress hold a slot too, or two concurrent ones could both
        # squeeze past the limit.
        for pending in [p for p in self._pending if p.state is State.CLOSED]:
            del self._pending[pending]
        in_use = sum(1 for c in self._connections.values() if c.api_key == api_key)
        in_use += sum(1 for key in self._pending.values() if key == api_key)
        if in_use >= self.config.max_connections:
            self._count.handshakes["429"] += 1
            return ws.respond(http.HTTPStatus.TOO_MANY_REQUESTS, "too many connections\n")
        self._pending[ws] = api_key
        return None

    def _after_handshake(
        self, ws: ServerConnection, request: Request, response: Response
    ) -> Response | None:
        if response.status_code != http.HTTPStatus.SWITCHING_PROTOCOLS:
            self._pending.pop(ws, None)
        return None

    async def _serve_connection(self, ws: ServerConnection) -> None:
        api_key = self._pending.pop(ws, None)
        if api_key is None:  # pragma: no cover - handshake bookkeeping lost it
            return
        self._next_id += 1
        conn = _Connection(f"c{self._next_id}", api_key, ws, asyncio.get_running_loop().time())
        self._connections[conn.id] = conn
        self._book.open(conn.id)
        self._count.handshakes["accepted"] += 1
        live = sum(1 for c in self._connections.values() if c.api_key == api_key)
        self._count.max_concurrent[api_key] = max(self._count.max_concurrent[api_key], live)
        log.info("connection %s open (%d live for this api key)", conn.id, live)
        try:
            async for message in ws:
                if isinstance(message, str):
                    replies = self._book.apply(conn.id, message)
                else:
                    replies = [error_text("binary client messages are not understood")]
                for reply in replies:
                    await ws.send(reply)
        except ConnectionClosed:
            pass
        finally:
            self._forget(conn)
            log.info("connection %s closed", conn.id)

    def _forget(self, conn: _Connection) -> None:
        # Idempotent: faults forget a connection at once, its handler again later.
        if self._connections.pop(conn.id, None) is not None:
            self._book.close(conn.id)

    # -- the sender ------------------------------------------------------------------

    async def _send_loop(self) -> None:
        loop = asyncio.get_running_loop()
        last = loop.time()
        while not self._stopping.is_set():
            # A fixed cadence, not a wait for a condition: ticks are batched per interval.
            await asyncio.sleep(self.config.send_interval)
            now = loop.time()
            elapsed, last = now - last, now
            if now < self._stalled_until:
                self._schedule.reset()
                continue
            if self._reading_paused:
                self._set_reading(True)
            async with self._send_lock:
                await self._send_cycle(elapsed, now)

    async def _send_cycle(self, elapsed: float, now: float) -> None:
        open_ids = {c.id for c in self._connections.values() if c.ws.state is State.OPEN}
        due = self._schedule.due(elapsed)
        if not (due and open_ids):
            outgoing: dict[str, list[bytes]] = {}
        elif self._pregen is not None:
            outgoing = self._take_pregenerated(due, open_ids, self._pregen)
        else:
            outgoing = self._generate(due, open_ids)
        step = self.config.max_packets_per_message
        for conn in list(self._connections.values()):
            packets_out = outgoing.get(conn.id)
            if packets_out:
                for start in range(0, len(packets_out), step):
                    chunk = packets_out[start : start + step]
                    if await self._send(conn, encode_message(chunk), now):
                        conn.packets_sent += len(chunk)
                        self._count.packets_sent += len(chunk)
                        self._count.messages_sent += 1
            elif now - conn.last_sent >= self.config.heartbeat_interval and await self._send(
                conn, HEARTBEAT, now
            ):
                self._count.heartbeats_sent += 1

    def _generate(self, due: int, open_ids: set[str]) -> dict[str, list[bytes]]:
        """The next ``due`` ticks, encoded, per connection id (no awaits: the book
        cannot change under it)."""
        outgoing: dict[str, list[bytes]] = {cid: [] for cid in open_ids}
        now_s = int(time.time())
        advance, ticks, subscribers_of = (
            self.market.advance,
            self._count.ticks,
            self._book.subscribers,
        )
        for token in self._schedule.pick(self._book.active_tokens(), due):
            subscribers = subscribers_of(token)
            if len(subscribers) == 1:
                # The common case (one client, or shards splitting the universe).
                [(cid, mode)] = subscribers.items()
                if cid in open_ids:
                    outgoing[cid].append(encode_tick(advance(token, now_s, mode)))
                    ticks[token] += 1
                continue
            live = [(cid, mode) for cid, mode in subscribers.items() if cid in open_ids]
            if not live:
                # Nobody can receive it: don't generate it, so the instrument's volume
                # sequence continues unbroken when a client resubscribes.
                continue
            top = max((mode for _, mode in live), key=_MODE_RANK.__getitem__)
            tick = advance(token, now_s, top)
            ticks[token] += 1
            packets = {top: encode_tick(tick)}
            for cid, mode in live:
                packet = packets.get(mode)
                if packet is None:
                    packet = packets[mode] = encode_tick(in_mode(tick, mode))
                outgoing[cid].append(packet)
        return outgoing

    def _take_pregenerated(
        self, due: int, open_ids: set[str], pregen: PregenBuffer
    ) -> dict[str, list[bytes]]:
        """:meth:`_generate`, but from pre-built packets while an instrument has any
        (live once it runs out: the book continues where the pre-built path ended)."""
        outgoing: dict[str, list[bytes]] = {cid: [] for cid in open_ids}
        now_s = int(time.time())
        advance, ticks, subscribers_of = (
            self.market.advance,
            self._count.ticks,
            self._book.subscribers,
        )
        take, narrow = pregen.take, pregen.narrow
        for token in self._schedule.pick(self._book.active_tokens(), due):
            live = [(cid, mode) for cid, mode in subscribers_of(token).items() if cid in open_ids]
            if not live:
                continue  # as in _generate: nobody can receive it, so don't spend it
            full = take(token)
            if full is None:
                full = encode_tick(advance(token, now_s, MODE_FULL))
            ticks[token] += 1
            for cid, mode in live:
                outgoing[cid].append(narrow(token, full, mode))
        return outgoing

    async def _send(self, conn: _Connection, data: bytes, now: float) -> bool:
        try:
            async with asyncio.timeout(self.config.write_timeout):
                await conn.ws.send(data)
        except ConnectionClosed:
            self._forget(conn)
            return False
        except TimeoutError:
            # The client stopped reading; cut it off so the others keep their ticks.
            self._count.slow_clients_cut += 1
            log.warning(
                "connection %s cut off: not reading for %ss", conn.id, self.config.write_timeout
            )
            conn.ws.transport.abort()
            self._forget(conn)
            return False
        conn.last_sent = now
        return True

    def _set_reading(self, on: bool) -> None:
        for conn in self._connections.values():
            transport = conn.ws.transport
            if not transport.is_closing():
                if on:
                    transport.resume_reading()
                else:
                    transport.pause_reading()
        self._reading_paused = not on

    # -- admin controls ----------------------------------------------------------------

    async def drop_connections(self) -> int:
        """Close every connection abruptly (TCP close, no WebSocket close frame)."""
        async with self._send_lock:
            conns = list(self._connections.values())
            # Let what was already written reach the kernel first: a drop should cost the
            # client a reconnect, never ticks it was sent (abort() discards the buffer,
            # while the kernel still delivers what it holds before its FIN). With both
            # limits at 0, drain() returns only once the buffer is empty.
            with contextlib.suppress(TimeoutError, ConnectionClosed):
                async with asyncio.timeout(2.0):
                    for conn in conns:
                        conn.ws.transport.set_write_buffer_limits(high=0, low=0)
                        await conn.ws.drain()
            for conn in conns:
                conn.ws.transport.abort()
                self._forget(conn)
            self._count.dropped += len(conns)
        log.info("fault: dropped %d connection(s)", len(conns))
        return len(conns)

    def stall(self, seconds: float) -> None:
        """Send nothing (heartbeats included) and read nothing for ``seconds``."""
        self._stalled_until = asyncio.get_running_loop().time() + seconds
        # Not reading means not answering pings either, as a frozen server would.
        self._set_reading(False)
        log.info("fault: stalled for %.1fs", seconds)

    async def send_malformed(self) -> int:
        """Send :data:`MALFORMED_FRAME` to every open connection."""
        sent = 0
        async with self._send_lock:
            now = asyncio.get_running_loop().time()
            for conn in list(self._connections.values()):
                if await self._send(conn, MALFORMED_FRAME, now):
                    sent += 1
            self._count.malformed_sent += sent
        return sent

    async def expire_tokens(self) -> int:
        """Invalidate every access token and close every connection (code 1008)."""
        self._sessions.expire_all()
        log.info("fault: access tokens expired")
        async with self._send_lock:
            conns = list(self._connections.values())
            for conn in conns:
                self._forget(conn)
            async with asyncio.TaskGroup() as closing:
                for conn in conns:
                    closing.create_task(conn.ws.close(1008, "access token expired"))
        return len(conns)

    async def send_order_update(self, api_key: str, order: dict[str, Any]) -> int:
        """Send a Kite ``order`` postback to every connection of ``api_key``."""
        from alphapanda.sim.orders import order_message

        text = order_message(order)
        sent = 0
        async with self._send_lock:
            for conn in list(self._connections.values()):
                if conn.api_key != api_key:
                    continue
                with contextlib.suppress(ConnectionClosed):
                    await conn.ws.send(text)
                    sent += 1
        log.info("order postback %s sent to %d connection(s)", order.get("order_id"), sent)
        return sent

    def accept_token(self, access_token: str) -> None:
        """Start accepting ``access_token`` at the handshake."""
        self._sessions.accept(access_token)

    def set_rate(self, ticks_per_second: float) -> None:
        self._schedule.set_rate(ticks_per_second)

    def login(self, api_key: str, request_token: str, checksum: str) -> dict[str, Any]:
        """Kite's ``POST /session/token`` (see :class:`SessionBook`)."""
        login_time = time.strftime("%Y-%m-%d %H:%M:%S")
        return self._sessions.login(api_key, request_token, checksum, login_time)

    def _pregen_stats(self) -> dict[str, Any] | None:
        pregen = self._pregen
        if pregen is None:
            return None
        return {
            "ready": pregen.ready,
            "buffered": pregen.buffered,
            "generated": pregen.generated,
            "taken": pregen.taken,
        }

    def stats(self) -> dict[str, Any]:
        """Plain JSON-able figures (see the README's Simulator section)."""
        live: Counter[str] = Counter(c.api_key for c in self._connections.values())
        count = self._count
        return {
            "connections": dict(live),
            "max_concurrent": dict(count.max_concurrent),
            "subscriptions": self._book.snapshot(),
            "ticks_sent": {str(token): n for token, n in count.ticks.items()},
            "total_ticks_sent": sum(count.ticks.values()),
            "handshakes": {k: count.handshakes[k] for k in ("accepted", "403", "429")},
            "packets_sent": count.packets_sent,
            "messages_sent": count.messages_sent,
            "heartbeats_sent": count.heartbeats_sent,
            "malformed_sent": count.malformed_sent,
            "connections_dropped": count.dropped,
            "slow_clients_cut": count.slow_clients_cut,
            "tokens_expired": self._sessions.expiries,
            "logins": self._sessions.logins,
            "ticks_per_second": self._schedule.ticks_per_second,
            "ticks_shortfall": self._schedule.shortfall,
            "pregenerated": self._pregen_stats(),
            "stalled": asyncio.get_running_loop().time() < self._stalled_until,
        }
