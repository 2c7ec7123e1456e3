"""An abusive API client must not be able to slow the tick path.

The feed (in this process, its API on its own thread) streams from a simulator in
another process; an abusive client in a third process sends 50 MB bodies without a key,
chunked bodies, slow-drip connections and ~1,000 keyless requests per second. The same
test measures a healthy stretch first and then the abused one, and compares: ticks per
second received, the feed loop's scheduling lag (how late a 10 ms sleep wakes up: the
delay every frame read would see), the age of the last frame per connection, and
reconnects (a tripped liveness watchdog would show as one). The tolerances are
generous: this compares two runs side by side, it does not time absolute speed.

Plus the limits themselves against the real server: 413 before the body is read, 401
before the body is read, and the connection cap.
"""

from __future__ import annotations

import asyncio
import json
import os
import socket
import statistics
import subprocess
import sys
import time
from collections.abc import AsyncIterator, Callable
from contextlib import asynccontextmanager
from dataclasses import dataclass, field
from pathlib import Path

import httpx
import pytest

from alphapanda.parts import FeedParts
from alphapanda.settings import Settings
from tests.support.feed import new_feed
from tests.support.services import free_port
from tests.support.sim import INSTRUMENTS_CSV, SimHandle, simulator_process

# Measures speed or timing: runs alone, after the parallel part of the suite.
pytestmark = pytest.mark.serial

ROOT = Path(__file__).resolve().parents[2]
API_KEY = "isolation-key-0123456789"
SettingsFor = Callable[..., Settings]


@dataclass
class Figures:
    ticks_per_second: float = 0.0
    lags: list[float] = field(default_factory=list)
    max_frame_age: float = 0.0
    reconnects: int = 0

    @property
    def lag_p99(self) -> float:
        return statistics.quantiles(self.lags, n=100)[98]


def _feed_settings(settings_for: SettingsFor, unique: str, sim: SimHandle) -> Settings:
    return settings_for(
        kite={
            "ws_url": sim.ws_url,
            "api_key": sim.api_key,
            "access_token": sim.access_token,
            "liveness_timeout": 2.0,
        },
        feed={"instruments_csv": INSTRUMENTS_CSV, "mode": "full"},
        api={
            "port": free_port(),
            "api_key": API_KEY,
            "rate_limit_key_prefix": f"test:{unique}:rl",
            "rate_limit": "1000000/minute",
            "rate_limit_mutating": "1000000/minute",
            "max_connections": 64,
        },
    )


@asynccontextmanager
async def feed_with_api(settings: Settings) -> AsyncIterator[FeedParts]:
    feed, service = new_feed(settings, api=True)
    async with asyncio.TaskGroup() as tg:
        tg.create_task(service.run())
        try:
            deadline = time.monotonic() + 30
            while not (service.readiness()[0] and _accepts(settings.api.port)):
                assert time.monotonic() < deadline, "feed never became ready"
                await asyncio.sleep(0.1)
            yield feed
        finally:
            service.request_stop()


def _accepts(port: int) -> bool:
    try:
        with socket.create_connection(("127.0.0.1", port), timeout=1):
            return True
    except OSError:
        return False


async def measure(feed: FeedParts, seconds: float) -> Figures:
    """Ticks/s, loop lag samples, worst frame age and reconnects over ``seconds``."""
    figures = Figures()
    acct = feed.accounting
    start_ticks = acct.received_socket
    start_reconnects = sum(s.reconnect_count for s in feed.client.statuses())
    started = time.monotonic()
    while (now := time.monotonic()) - started < seconds:
        await asyncio.sleep(0.01)
        figures.lags.append(time.monotonic() - now - 0.01)
        for status in feed.client.statuses():
            age = status.last_frame_age
            if age is not None:
                figures.max_frame_age = max(figures.max_frame_age, age)
    elapsed = time.monotonic() - started
    figures.ticks_per_second = (acct.received_socket - start_ticks) / elapsed
    figures.reconnects = sum(s.reconnect_count for s in feed.client.statuses()) - start_reconnects
    return figures


async def test_an_abusive_client_leaves_the_tick_path_unchanged(
    settings_for: SettingsFor, unique: str
) -> None:
    with simulator_process(ticks_per_second=2000) as sim:
        settings = _feed_settings(settings_for, unique, sim)
        async with feed_with_api(settings) as feed:
            await measure(feed, 1.0)  # warm-up
            healthy = await measure(feed, 6.0)
            env = {**os.environ, "PYTHONPATH": str(ROOT)}
            abuser = subprocess.Popen(  # noqa: ASYNC220 (started once, waited on in a thread)
                [
                    sys.executable,
                    "-m",
                    "tests.support.abuse",
                    "127.0.0.1",
                    str(settings.api.port),
                    "6",
                ],
                stdout=subprocess.PIPE,
                text=True,
                env=env,
            )
            try:
                await asyncio.sleep(0.5)  # let it reach full pressure
                abused = await measure(feed, 5.0)
                out, _ = await asyncio.to_thread(abuser.communicate, timeout=60)
            finally:
                if abuser.poll() is None:
                    abuser.kill()
                    abuser.wait()
            report = json.loads(out.strip().splitlines()[-1])["responses"]
            async with httpx.AsyncClient(base_url=f"http://127.0.0.1:{settings.api.port}") as http:
                assert (await http.get("/health")).status_code == 200
                ok = await http.get("/subscriptions", headers={"X-API-Key": API_KEY})
                assert ok.status_code == 200
            statuses = [s.state for s in feed.client.statuses()]

    print(
        f"\nhealthy: {healthy.ticks_per_second:.0f} ticks/s, lag p99 {healthy.lag_p99 * 1e3:.1f} ms, "
        f"max {max(healthy.lags) * 1e3:.1f} ms, frame age max {healthy.max_frame_age:.3f} s"
        f"\nabused:  {abused.ticks_per_second:.0f} ticks/s, lag p99 {abused.lag_p99 * 1e3:.1f} ms, "
        f"max {max(abused.lags) * 1e3:.1f} ms, frame age max {abused.max_frame_age:.3f} s"
        f"\nabuser got: {report}"
    )
    # The abuse really reached the server: hundreds of refusals, every drip connection.
    assert report.get("401", 0) >= 100, report
    assert report.get("drip", 0) == 20, report
    # Within generous tolerances (this 2-core machine is shared, and the abuser itself
    # competes for the CPU), and no watchdog tripped: no reconnect, frames kept coming.
    assert abused.ticks_per_second >= 0.5 * healthy.ticks_per_second, (healthy, abused)
    assert abused.lag_p99 <= healthy.lag_p99 + 0.5, (healthy.lag_p99, abused.lag_p99)
    assert abused.max_frame_age < settings.kite.liveness_timeout / 2, abused.max_frame_age
    assert abused.reconnects == 0 and healthy.reconnects == 0
    assert statuses and all(state == "connected" for state in statuses), statuses


def _raw(port: int, request: bytes, then_send: int = 0) -> tuple[str, int]:
    """Send ``request`` and up to ``then_send`` more body bytes; (status line, bytes the
    server let us send before answering)."""
    with socket.create_connection(("127.0.0.1", port), timeout=10) as sock:
        sock.sendall(request)
        sent = 0
        sock.setblocking(False)
        chunk = b"x" * 65536
        response = b""
        deadline = time.monotonic() + 10
        while time.monotonic() < deadline:
            try:
                response += sock.recv(65536)
                if b"\r\n" in response:
                    break
            except BlockingIOError:
                pass
            except ConnectionError:
                break
            if sent < then_send:
                try:
                    sent += sock.send(chunk)
                except (BlockingIOError, ConnectionError):
                    pass
            else:
                time.sleep(0.01)
        return response.split(b"\r\n", 1)[0].decode(), sent


async def test_limits_apply_before_the_body_is_read(settings_for: SettingsFor, unique: str) -> None:
    with simulator_process(ticks_per_second=100) as sim:
        settings = _feed_settings(settings_for, unique, sim)
        port = settings.api.port
        async with feed_with_api(settings):
            big = 50 * 1024 * 1024
            keyless = (
                b"POST /subscriptions HTTP/1.1\r\nHost: x\r\nContent-Type: application/json\r\n"
                b"Content-Length: %d\r\n\r\n" % big
            )
            status, sent = await asyncio.to_thread(_raw, port, keyless, big)
            assert status.startswith("HTTP/1.1 401"), status
            assert sent < big // 4, sent  # answered long before the body was in
            keyed = keyless.replace(b"Host: x\r\n", f"Host: x\r\nX-API-Key: {API_KEY}\r\n".encode())
            status, sent = await asyncio.to_thread(_raw, port, keyed, big)
            assert status.startswith("HTTP/1.1 413"), status
            assert sent < big // 4, sent
            # Chunked, with the key: counted while it streams and cut off past the limit.
            chunked = (
                (
                    f"POST /subscriptions HTTP/1.1\r\nHost: x\r\nX-API-Key: {API_KEY}\r\n"
                    "Transfer-Encoding: chunked\r\n\r\n"
                ).encode()
                + b"10000\r\n"
                + b"x" * 65536
                + b"\r\n"
                + b"10000\r\n"
                + b"x" * 65536
                + b"\r\n"
            )
            status, _ = await asyncio.to_thread(_raw, port, chunked)
            assert status.startswith("HTTP/1.1 413"), status
            # A legitimate body under the limit still works.
            async with httpx.AsyncClient(base_url=f"http://127.0.0.1:{port}") as http:
                reply = await http.post(
                    "/subscriptions",
                    json={"tokens": [256265], "mode": "ltp"},
                    headers={"X-API-Key": API_KEY},
                )
                assert reply.status_code in (200, 422), reply.text  # 422: token not in the dump
                # The connection cap: beyond max_connections, 503 at once.
                holders = [socket.create_connection(("127.0.0.1", port)) for _ in range(70)]
                try:
                    await asyncio.sleep(0.3)
                    for holder in holders:
                        holder.sendall(b"GET /health HTTP/1.1\r\nHost: x\r\n")  # never finished
                    await asyncio.sleep(0.3)
                    capped = await http.get("/health")
                    assert capped.status_code == 503, capped.status_code
                finally:
                    for holder in holders:
                        holder.close()
