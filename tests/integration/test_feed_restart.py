"""Stopping and starting the feed loses nothing: SIGTERM of the real
``alphapanda feed`` process mid-stream, and a spool left by a run whose broker was
unreachable, replayed first by the next run. A feed killed outright leaves no API
process behind."""

from __future__ import annotations

import asyncio
import os
import re
import signal
import sys
from pathlib import Path

from alphapanda.testing import eventually
from tests.support.feed import (
    assert_books_balance,
    feed_settings,
    new_feed,
    quiesce,
    settled_sent,
)
from tests.support.ledger import check_ledger, read_topic
from tests.support.services import (
    ROOT,
    SHARED_KAFKA,
    children_of,
    free_port,
    port_open,
    process_alive,
)
from tests.support.sim import INSTRUMENTS_CSV, SimHandle, running_simulator

_FINAL = re.compile(
    r"stopped: received=(\d+) published=(\d+) dropped=(\d+) spooled=(\d+) in_flight=(\d+)"
)


def feed_env(sim: SimHandle, prefix: str, spool_dir: Path, unique: str) -> dict[str, str]:
    env = {k: v for k, v in os.environ.items() if not k.startswith("ALPHAPANDA_")}
    env.update(
        ALPHAPANDA_KITE__WS_URL=sim.ws_url,
        ALPHAPANDA_KITE__API_KEY=sim.api_key,
        ALPHAPANDA_KITE__ACCESS_TOKEN=sim.access_token,
        ALPHAPANDA_KAFKA__BOOTSTRAP_SERVERS=SHARED_KAFKA,
        ALPHAPANDA_KAFKA__TOPIC_PREFIX=prefix,
        ALPHAPANDA_FEED__INSTRUMENTS_CSV=str(INSTRUMENTS_CSV),
        ALPHAPANDA_FEED__MODE="full",
        ALPHAPANDA_FEED__SPOOL_DIR=str(spool_dir),
        ALPHAPANDA_FEED__WAL_DIR=str(spool_dir.parent / "wal"),
        ALPHAPANDA_FEED__WAL_ENABLED=os.environ.get("TEST_WAL", "true"),
        ALPHAPANDA_METRICS__NAMESPACE=f"test{unique}",
        # The control API runs in the feed process too, on a port of its own.
        ALPHAPANDA_API__PORT=str(free_port()),
    )
    return env


async def start_feed(env: dict[str, str], stderr: int) -> asyncio.subprocess.Process:
    """``alphapanda feed`` in a process of its own, with ``env``."""
    return await asyncio.create_subprocess_exec(
        sys.executable,
        "-m",
        "alphapanda",
        "feed",
        cwd=ROOT,
        env=env,
        stdout=asyncio.subprocess.DEVNULL,
        stderr=stderr,
    )


async def run_until_sigterm(sim: SimHandle, env: dict[str, str], more_ticks: int) -> list[int]:
    """Start ``alphapanda feed``, let the simulator send ``more_ticks`` more, SIGTERM it;
    returns the final figures it logged (received, published, dropped, spooled, in_flight)."""
    start = (await sim.stats())["total_ticks_sent"]
    proc = await start_feed(env, asyncio.subprocess.PIPE)
    try:
        await sim.wait_for(lambda s: s["total_ticks_sent"] >= start + more_ticks, within=60)
        proc.send_signal(signal.SIGTERM)
        async with asyncio.timeout(60):
            _, stderr = await proc.communicate()
    finally:
        if proc.returncode is None:
            proc.kill()
            await proc.wait()
    log = stderr.decode()
    assert proc.returncode == 0, log[-3000:]
    match = _FINAL.search(log)
    assert match, log[-3000:]
    return [int(x) for x in match.groups()]


async def test_sigterm_mid_stream_then_restart_is_complete(settings_for, unique, tmp_path) -> None:  # type: ignore[no-untyped-def]
    prefix = f"test.{unique}."
    async with running_simulator(ticks_per_second=1500) as sim:
        env = feed_env(sim, prefix, tmp_path / "spool", unique)
        first = await run_until_sigterm(sim, env, 2000)
        second = await run_until_sigterm(sim, env, 2000)
        stats = await sim.stats()
    for received, published, dropped, spooled, in_flight in (first, second):
        assert received == published and dropped == spooled == in_flight == 0
    # Unsubscribe-and-quiesce before closing the sockets: every tick sent was read.
    assert first[0] + second[0] == stats["total_ticks_sent"]
    topic = f"{prefix}market.ticks"
    records = await asyncio.to_thread(read_topic, SHARED_KAFKA, topic)
    assert len(records) == stats["total_ticks_sent"]
    check_ledger(records).assert_complete(sent=stats["ticks_sent"])


async def test_a_killed_feed_leaves_no_api_process_behind(unique, tmp_path) -> None:  # type: ignore[no-untyped-def]
    async with running_simulator(ticks_per_second=200) as sim:
        env = feed_env(sim, f"test.{unique}.", tmp_path / "spool", unique)
        port = int(env["ALPHAPANDA_API__PORT"])
        feed = await start_feed(env, asyncio.subprocess.DEVNULL)
        try:
            # The API is served by the feed's one child process.
            await eventually(lambda: port_open(port), timeout=60.0, what="the API")
            [api] = children_of(feed.pid)
            feed.kill()
            await feed.wait()
            await eventually(lambda: not process_alive(api), timeout=30.0, what="API gone")
        finally:
            if feed.returncode is None:
                feed.kill()
                await feed.wait()
    assert not port_open(port)


async def test_spool_of_a_run_without_broker_is_replayed_first(settings_for) -> None:  # type: ignore[no-untyped-def]
    async with running_simulator(ticks_per_second=1500) as sim:
        # Run 1: the broker is unreachable the whole time; everything ends in the spool.
        offline = feed_settings(
            settings_for,
            sim,
            kafka={"bootstrap_servers": f"127.0.0.1:{free_port()}", "message_timeout_ms": 1000},
            shutdown_deadline=2.0,
        )
        first, first_service = new_feed(offline)
        async with asyncio.TaskGroup() as tg:
            tg.create_task(first_service.run())
            await eventually(
                lambda: first.accounting.received_socket >= 1500, timeout=30.0, what="ticks"
            )
            first_service.request_stop()
        acct1 = first.accounting
        assert acct1.published == 0 and acct1.in_flight == 0 and acct1.dropped_total == 0
        assert acct1.spooled == acct1.received == first.spool.pending > 0
        assert first.publisher.unresolved_at_shutdown == 0
        # A frame the simulator wrote as the first feed closed its socket was never
        # read (like Kite, it never sends a tick twice): counted from its side.
        sent_to_first = await settled_sent(sim)
        never_read = sent_to_first - acct1.received_socket
        assert never_read >= 0

        # Run 2: same spool, the broker is back.
        online = feed_settings(settings_for, sim)
        second, second_service = new_feed(online)
        async with asyncio.TaskGroup() as tg:
            tg.create_task(second_service.run())
            await eventually(
                lambda: second.accounting.recovered == acct1.spooled, timeout=30.0, what="recovery"
            )
            await eventually(
                lambda: second.accounting.published >= acct1.spooled + 1000, timeout=30.0
            )
            stats = await quiesce(sim, second, earlier_runs=sent_to_first)
            second_service.request_stop()
    assert_books_balance(second)
    assert second.spool.pending == 0
    assert not list((online.feed.spool_dir).glob("segment-*.log"))  # replayed → deleted
    records = await asyncio.to_thread(read_topic, online.kafka.bootstrap_servers, second.topic)
    assert len(records) == acct1.received + second.accounting.received_socket
    assert stats["total_ticks_sent"] == len(records) + never_read
    # from_zero: the first run's ticks (replayed) come before the second run's.
    report = check_ledger(records)
    if never_read == 0:
        report.assert_complete(sent=stats["ticks_sent"])
    else:  # the unread frame leaves gaps; order and uniqueness still hold
        assert not (report.reordered or report.duplicate_ids or report.duplicate_volumes)
        assert not report.wrong_partition
