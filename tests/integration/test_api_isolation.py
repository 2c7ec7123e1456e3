"""An abusive API client must not be able to slow the tick path.

The feed (in this process) streams from a simulator in another process; an abusive
client in a third process sends 50 MB bodies without a key, chunked bodies, slow-drip
connections and ~1,000 keyless requests per second. The abusive test runs twice, with the
API in its own process (the default) and on a thread of the feed, and alternates healthy
and abused windows (the abuser frozen with SIGSTOP between its windows) so that load from
elsewhere on the machine hits both alike. Per window: ticks the simulator sent against
ticks the feed received ("delivered"), the feed loop's scheduling lag (how late a 10 ms
sleep wakes up: the delay every frame read would see), the age of the last frame per
connection, and reconnects (a tripped liveness watchdog would show as one). The
tolerances are generous: this compares windows side by side, it does not time absolute
speed.

Plus the limits themselves against the real server: 413 before the body is read, 401
before the body is read, and the connection cap; and the API process's supervision.
"""

from __future__ import annotations

import asyncio
import json
import os
import signal
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

from alphapanda.api.process import ApiProcess
from alphapanda.api.server import ApiServer, ApiStartupError
from alphapanda.parts import FeedParts
from alphapanda.service import ServiceFailed
from alphapanda.settings import Settings
from alphapanda.testing import eventually
from tests.support.feed import new_feed
from tests.support.services import free_port, port_open, process_alive
from tests.support.sim import INSTRUMENTS_CSV, SimHandle, simulator_process

# Measures speed or timing: runs alone, after the parallel part of the suite.
pytestmark = pytest.mark.serial

ROOT = Path(__file__).resolve().parents[2]
API_KEY = "isolation-key-0123456789"
SettingsFor = Callable[..., Settings]
# Healthy/abused pairs of windows, and each window's length in seconds.
PAIRS = 6
WINDOW = 2.0


@dataclass
class Figures:
    sent: int = 0
    received: int = 0
    seconds: float = 0.0
    lags: list[float] = field(default_factory=list)
    max_frame_age: float = 0.0
    reconnects: int = 0

    @property
    def ticks_per_second(self) -> float:
        return self.received / self.seconds

    @property
    def delivered(self) -> float:
        """Ticks received per tick the simulator sent in the same window: CPU taken
        from the simulator lowers both, only a slower feed lowers the ratio."""
        return self.received / max(self.sent, 1)

    @property
    def lag_p99(self) -> float:
        return statistics.quantiles(self.lags, n=100, method="inclusive")[98]

    def line(self) -> str:
        return (
            f"sent {self.sent / self.seconds:,.0f}/s, received {self.ticks_per_second:,.0f}/s "
            f"(delivered {self.delivered:.3f}), loop lag p50 "
            f"{statistics.median(self.lags) * 1e3:.1f} ms p99 {self.lag_p99 * 1e3:.1f} ms "
            f"max {max(self.lags) * 1e3:.1f} ms, frame age max {self.max_frame_age:.3f} s"
        )


def _feed_settings(
    settings_for: SettingsFor, unique: str, sim: SimHandle, isolation: str = "process"
) -> Settings:
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
            "isolation": isolation,
        },
    )


def api_server_of(feed: FeedParts) -> ApiServer:
    [api] = [service for service in feed.services if isinstance(service, ApiServer)]
    return api


@asynccontextmanager
async def feed_with_api(settings: Settings) -> AsyncIterator[FeedParts]:
    feed, service = new_feed(settings, api=True)
    async with asyncio.TaskGroup() as tg:
        tg.create_task(service.run())
        try:
            deadline = time.monotonic() + 30
            while not (service.readiness()[0] and port_open(settings.api.port)):
                assert time.monotonic() < deadline, "feed never became ready"
                await asyncio.sleep(0.1)
            yield feed
        finally:
            service.request_stop()


async def _counts(feed: FeedParts, sim: SimHandle) -> tuple[int, float]:
    """(ticks the simulator has sent, ticks the feed had received at that moment). The
    simulator answers from some instant while its stats request is in flight, so the
    feed's count is the mean of before and after: the error is half of what arrives
    meanwhile, not all of it."""
    before = feed.accounting.received_socket
    sent = int((await sim.stats())["total_ticks_sent"])
    after = feed.accounting.received_socket
    return sent, (before + after) / 2


async def measure(feed: FeedParts, sim: SimHandle, seconds: float) -> Figures:
    """Over ``seconds``: ticks the simulator sent and the feed received, the feed loop's
    wake-up lag samples, the worst last-frame age and reconnects."""
    figures = Figures()
    start_sent, start_received = await _counts(feed, sim)
    start_reconnects = sum(s.reconnect_count for s in feed.client.statuses())
    started = time.monotonic()
    while (now := time.monotonic()) - started < seconds:
        await asyncio.sleep(0.01)
        figures.lags.append(time.monotonic() - now - 0.01)
        for status in feed.client.statuses():
            age = status.last_frame_age
            if age is not None:
                figures.max_frame_age = max(figures.max_frame_age, age)
    end_sent, end_received = await _counts(feed, sim)
    figures.seconds = time.monotonic() - started
    figures.received = round(end_received - start_received)
    figures.sent = end_sent - start_sent
    figures.reconnects = sum(s.reconnect_count for s in feed.client.statuses()) - start_reconnects
    return figures


def _start_abuser(port: int, seconds: float) -> subprocess.Popen[str]:
    return subprocess.Popen(
        [sys.executable, "-m", "tests.support.abuse", "127.0.0.1", str(port), str(seconds)],
        stdout=subprocess.PIPE,
        text=True,
        env={**os.environ, "PYTHONPATH": str(ROOT)},
    )


async def _alternate(
    feed: FeedParts, sim: SimHandle, abuser: subprocess.Popen[str]
) -> tuple[list[Figures], list[Figures]]:
    """``PAIRS`` healthy windows (abuser frozen) and abused ones, alternating."""
    healthy: list[Figures] = []
    abused: list[Figures] = []
    for _ in range(PAIRS):
        abuser.send_signal(signal.SIGSTOP)
        await asyncio.sleep(0.5)  # its requests in flight settle
        healthy.append(await measure(feed, sim, WINDOW))
        abuser.send_signal(signal.SIGCONT)
        await asyncio.sleep(0.5)  # back to full pressure
        abused.append(await measure(feed, sim, WINDOW))
    return healthy, abused


def _delivered(windows: list[Figures]) -> float:
    # Over all windows of a kind: a stall in one window is caught up in the next
    # (nothing is lost on TCP), so per-window ratios swing both ways.
    return sum(f.received for f in windows) / max(sum(f.sent for f in windows), 1)


def _median_ratio(
    healthy: list[Figures], abused: list[Figures], figure: Callable[[Figures], float]
) -> float:
    return statistics.median(
        figure(a) / max(figure(h), 1e-9) for h, a in zip(healthy, abused, strict=True)
    )


@pytest.mark.parametrize("isolation", ["process", "thread"])
async def test_an_abusive_client_leaves_the_tick_path_unchanged(
    settings_for: SettingsFor, unique: str, isolation: str
) -> None:
    with simulator_process(ticks_per_second=2000) as sim:
        settings = _feed_settings(settings_for, unique, sim, isolation)
        async with feed_with_api(settings) as feed:
            child = api_server_of(feed).process
            assert (child is not None) == (isolation == "process")
            await measure(feed, sim, 1.0)  # warm-up
            calls_before = sum(child.calls.values()) if child else 0
            # Its clock runs while it is frozen: it must outlast every pair.
            abuser = _start_abuser(settings.api.port, PAIRS * (2 * WINDOW + 3) + 5)
            try:
                healthy, abused = await _alternate(feed, sim, abuser)
                out, _ = await asyncio.to_thread(abuser.communicate, timeout=60)
            finally:
                if abuser.poll() is None:
                    abuser.kill()
                    abuser.wait()
            report = json.loads(out.strip().splitlines()[-1])["responses"]
            feed_calls = sum(child.calls.values()) - calls_before if child else None
            async with httpx.AsyncClient(base_url=f"http://127.0.0.1:{settings.api.port}") as http:
                assert (await http.get("/health")).status_code == 200
                ok = await http.get("/subscriptions", headers={"X-API-Key": API_KEY})
                assert ok.status_code == 200
            statuses = [s.state for s in feed.client.statuses()]

    delivered = _delivered(abused) / _delivered(healthy)
    rate_ratio = _median_ratio(healthy, abused, lambda f: f.ticks_per_second)
    lag_ratio = _median_ratio(healthy, abused, lambda f: f.lag_p99)
    print(f"\nAPI isolation: {isolation}")
    for n, (h, a) in enumerate(zip(healthy, abused, strict=True), 1):
        print(f"pair {n} healthy: {h.line()}\npair {n} abused:  {a.line()}")
    print(
        f"abused/healthy: delivered {delivered:.3f}x (all windows), ticks/s {rate_ratio:.3f}x "
        f"and loop lag p99 {lag_ratio:.2f}x (medians of the pairs)\nabuser got: {report}; "
        f"control calls it cost the feed: {'n/a (same process)' if child is None else feed_calls}"
    )
    # The abuse really reached the server: refusals, every drip connection.
    assert report.get("401", 0) + report.get("413", 0) >= 50, report
    assert report.get("drip", 0) == 20, report
    # Side by side, generous tolerances (this 2-core machine is shared): the feed keeps
    # reading what the simulator sends, and no watchdog tripped (no reconnect, frames
    # kept coming).
    assert delivered >= 0.9, (healthy, abused)
    assert max(a.max_frame_age for a in abused) < settings.kite.liveness_timeout / 2, abused
    assert all(f.reconnects == 0 for f in healthy + abused)
    assert statuses and all(state == "connected" for state in statuses), statuses
    lag_rise = statistics.median(
        a.lag_p99 - h.lag_p99 for h, a in zip(healthy, abused, strict=True)
    )
    assert lag_rise <= 0.5, lag_rise
    if child is not None:
        # Not one abusive request reached the feed: all were refused in the API process.
        assert feed_calls == 0, feed_calls


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


async def test_the_api_process_is_restarted_and_stopped_with_the_feed(
    settings_for: SettingsFor, unique: str
) -> None:
    """Killed, it is started again and serves again, the feed streaming throughout;
    stopping the feed stops it."""
    with simulator_process(ticks_per_second=200) as sim:
        settings = _feed_settings(settings_for, unique, sim)
        base_url = f"http://127.0.0.1:{settings.api.port}"
        async with feed_with_api(settings) as feed:
            child = api_server_of(feed).process
            assert isinstance(child, ApiProcess)
            # The child may answer HTTP a moment before the feed has read its "ready".
            await eventually(lambda: child.up, timeout=30.0, what="the API process up")
            assert child.pid is not None
            first = child.pid
            assert first != os.getpid() and process_alive(first)
            async with httpx.AsyncClient(base_url=base_url) as http:
                assert (await http.get("/health")).json() == {"status": "ok", "role": "feed"}
                os.kill(first, signal.SIGKILL)
                await eventually(lambda: child.up and child.pid != first, timeout=30.0)
                assert child.restarts == 1
                reply = await http.get("/subscriptions", headers={"X-API-Key": API_KEY})
                assert reply.status_code == 200 and reply.json()["total"] > 0, reply.text
                assert child.calls["subscriptions"] >= 1, child.calls
                metrics = (await http.get("/metrics")).text
            assert "alphapanda_ticks_received_total" in metrics
            assert "alphapanda_api_process_restarts_total 1.0" in metrics
            # The process figures are the feed's, not the API process's.
            assert "process_resident_memory_bytes" in metrics
            assert [s.reconnect_count for s in feed.client.statuses()] == [0]
            second = child.pid
        assert second is not None and not process_alive(second)
        assert not port_open(settings.api.port)


async def test_a_taken_port_fails_the_feed_start(
    settings_for: SettingsFor, unique: str, caplog: pytest.LogCaptureFixture
) -> None:
    """The child cannot listen: the feed does not run on without its API, and says why."""
    with simulator_process(ticks_per_second=100) as sim, socket.socket() as taken:
        taken.bind(("127.0.0.1", 0))
        taken.listen()
        settings = _feed_settings(settings_for, unique, sim)
        port = taken.getsockname()[1]
        settings = settings.model_copy(
            update={"api": settings.api.model_copy(update={"port": port})}
        )
        _, service = new_feed(settings, api=True)
        with pytest.raises(ServiceFailed, match="ApiServer"):
            async with asyncio.timeout(60):
                await service.run()
    startup_errors = [
        r.exc_info[1] for r in caplog.records if r.exc_info and r.exc_info[1] is not None
    ]
    assert any(
        isinstance(e, ApiStartupError) and f"127.0.0.1:{port}" in str(e) for e in startup_errors
    ), startup_errors
