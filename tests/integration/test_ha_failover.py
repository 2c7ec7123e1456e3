"""Hot standby, for real: two ``alphapanda feed`` processes in one group, the simulator,
the shared broker and PostgreSQL.

Each test reads the tick topic as a read_committed consumer would (the ticks of a hot-
standby group are written in Kafka transactions) and checks the volume ledger across the
change of active: no gap, no duplicate, no reordering.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import os
import signal
import subprocess
import sys
import time
import uuid
from collections.abc import Iterator
from datetime import datetime, timedelta
from pathlib import Path

import httpx
import pytest
from confluent_kafka import Consumer, TopicPartition
from playwright.async_api import async_playwright

from alphapanda.streams.records import ns_to_datetime
from alphapanda.testing import eventually
from tests.integration.test_status_page import CHROMIUM, CHROMIUM_ARGS
from tests.integration.test_wal_crash import FeedProcess
from tests.support.ledger import TickRecord, check_ledger, read_committed
from tests.support.services import ROOT, SHARED_DATABASE, SHARED_KAFKA
from tests.support.sim import SimHandle, running_simulator


def read_events(bootstrap: str, topic: str) -> list[dict[str, object]]:
    consumer = Consumer(
        {
            "bootstrap.servers": bootstrap,
            "group.id": f"ha-events-{uuid.uuid4().hex}",
            "enable.partition.eof": True,
        }
    )
    events: list[dict[str, object]] = []
    try:
        partitions = sorted(consumer.list_topics(topic, timeout=30).topics[topic].partitions)
        consumer.assign([TopicPartition(topic, p, 0) for p in partitions])
        done: set[int] = set()
        deadline = time.monotonic() + 30
        while len(done) < len(partitions) and time.monotonic() < deadline:
            for message in consumer.consume(1000, 0.5):
                if message.error() is not None:
                    done.add(message.partition() or 0)
                    continue
                events.append(json.loads(message.value() or b"{}")["data"])
    finally:
        consumer.close()
    return events


_STARTED: list[HaFeed] = []


@pytest.fixture(autouse=True)
def _reap() -> Iterator[None]:
    """A failed test must not leave feed processes behind (they hold leases, use CPU)."""
    yield
    for feed in _STARTED:
        if feed.proc is not None and feed.proc.returncode is None:
            with contextlib.suppress(ProcessLookupError):
                os.kill(feed.proc.pid, signal.SIGKILL)
    _STARTED.clear()


class HaFeed(FeedProcess):
    def __init__(self, sim: SimHandle, prefix: str, workdir: Path, group: str, **env: str) -> None:
        workdir.mkdir(parents=True, exist_ok=True)
        super().__init__(sim, SHARED_KAFKA, prefix, workdir)
        _STARTED.append(self)
        self.env.update(
            ALPHAPANDA_HA__GROUP=group,
            ALPHAPANDA_DATABASE__URL=SHARED_DATABASE,
            ALPHAPANDA_KAFKA__TOPIC_PARTITIONS="3",
            # Twice the default lease: on a loaded CI machine a member's lease thread
            # can miss a 1.1 s renewal budget, deposing an active the test needs.
            ALPHAPANDA_HA__LEASE_MS="3000",
        )
        self.env.update(env)

    async def active(self) -> bool:
        try:
            return (await self.metrics()).get("ha_active", 0) == 1
        except Exception:
            return False

    def signal(self, sig: int) -> None:
        assert self.proc is not None
        self.proc.send_signal(sig)


async def _pair(sim: SimHandle, tmp_path: Path, prefix: str, group: str, **env: str):  # type: ignore[no-untyped-def]
    a = HaFeed(sim, prefix, tmp_path / "a", group, **env)
    b = HaFeed(sim, prefix, tmp_path / "b", group, **env)
    await a.start()
    await a.wait_for(
        lambda m: m.get("ha_active") == 1 and m.get("ticks_published_total", 0) > 500,
        90,
        "A active and publishing",
    )
    await b.start()
    await b.wait_for(
        lambda m: m.get("ha_standby_ready") == 1 and m.get("ha_standby_received_total", 0) > 500,
        90,
        "B a warm standby",
    )
    return a, b


async def _finish(sim: SimHandle, survivor: HaFeed, prefix: str) -> list[TickRecord]:
    await asyncio.sleep(1.5)
    await sim.set_rate(0)
    await survivor.wait_for(lambda m: m.get("ticks_in_flight", 1) == 0, 60, "drained")
    await survivor.sigterm()
    return await asyncio.to_thread(read_committed, SHARED_KAFKA, f"{prefix}market.ticks")


def _assert_no_gap_no_duplicate(records: list[TickRecord]) -> None:
    report = check_ledger(records)
    assert not report.problems, report.problems
    assert len(records) > 2000


async def test_sigkill_of_the_warm_active_loses_and_duplicates_nothing(
    tmp_path: Path, unique: str
) -> None:
    prefix = f"test.{unique}."
    async with running_simulator(ticks_per_second=1500) as sim:
        a, b = await _pair(sim, tmp_path, prefix, f"t-{unique}")
        await asyncio.sleep(1.0)
        a.sigkill()
        # How fast (goal: within 3 s) is measured by ``alphapanda bench chaos --fault
        # failover``, not asserted here: this machine is shared and its timing noisy.
        await eventually(b.active, timeout=10, interval=0.05, what="B to take over")
        await a.wait()
        figures = await b.wait_for(lambda m: m.get("ha_epoch", 0) >= 1, 5, "epoch")
        assert figures["ha_takeover_seconds"] > 0
        records = await _finish(sim, b, prefix)
    _assert_no_gap_no_duplicate(records)
    assert "replayed" in b.tail()
    events = await asyncio.to_thread(read_events, SHARED_KAFKA, f"{prefix}market.feed.events")
    actives = [e for e in events if e["kind"] == "ha_active"]
    assert len(actives) == 2 and actives[-1]["epoch"] == actives[0]["epoch"] + 1  # type: ignore[operator]


async def test_a_paused_active_is_fenced_when_it_wakes_up(tmp_path: Path, unique: str) -> None:
    prefix = f"test.{unique}."
    async with running_simulator(ticks_per_second=1500) as sim:
        a, b = await _pair(sim, tmp_path, prefix, f"t-{unique}")
        a.signal(signal.SIGSTOP)
        try:
            await eventually(
                b.active, timeout=15, interval=0.05, what="B to take over from the paused A"
            )
            await asyncio.sleep(1.0)  # B publishes a while, A's open transaction pending
        finally:
            a.signal(signal.SIGCONT)
        # The zombie notices (lease lost / fenced) and exits without publishing more.
        assert await a.wait() == 75, a.tail()
        assert "deposed" in a.tail()
        records = await _finish(sim, b, prefix)
    _assert_no_gap_no_duplicate(records)


async def _api_and_page_say_who_is_active(active: HaFeed, standby: HaFeed, group: str) -> None:
    async with httpx.AsyncClient(timeout=10) as http:
        ready = await http.get(f"http://127.0.0.1:{active.api_port}/ready")
        assert ready.status_code == 200 and "standby_ready" not in ready.json()
        ready = await http.get(f"http://127.0.0.1:{standby.api_port}/ready")
        assert ready.status_code == 503
        assert ready.json()["standby_ready"] is True, ready.json()
        views = [
            (await http.get(f"http://127.0.0.1:{feed.api_port}/status")).json()["ha"]
            for feed in (active, standby)
        ]
    assert [(v["group"], v["role"], v["standby_mode"]) for v in views] == [
        (group, "active", "warm"),
        (group, "standby", "warm"),
    ]
    assert views[0]["active_since"] > 0 and views[0]["epoch"] >= 1
    async with async_playwright() as p:
        browser = await p.chromium.launch(executable_path=str(CHROMIUM), args=CHROMIUM_ARGS)
        try:
            page = await browser.new_page()
            for feed, expected in (
                (active, f"active in {group} since "),
                (standby, f"warm standby in {group} · ready to take over"),
            ):
                await page.goto(f"http://127.0.0.1:{feed.api_port}/")
                badge = page.locator("#ha")
                await badge.wait_for(state="visible", timeout=15_000)
                assert (await badge.inner_text()).startswith(expected)
        finally:
            await browser.close()


async def test_deliberate_handover_has_no_gap(tmp_path: Path, unique: str) -> None:
    prefix = f"test.{unique}."
    group = f"t-{unique}"
    async with running_simulator(ticks_per_second=1500) as sim:
        a, b = await _pair(sim, tmp_path, prefix, group)
        env = dict(a.env)
        done = await asyncio.to_thread(
            subprocess.run,
            [sys.executable, "-m", "alphapanda", "ha", "status", "--json"],
            cwd=ROOT,
            env=env,
            capture_output=True,
            text=True,
            timeout=60,
        )
        status = json.loads(done.stdout)
        assert [m["role"] for m in status["members"]] == ["active", "standby"], status
        assert status["members"][1]["lag_seconds"] is not None
        await _api_and_page_say_who_is_active(a, b, group)
        done = await asyncio.to_thread(
            subprocess.run,
            [sys.executable, "-m", "alphapanda", "ha", "handover"],
            cwd=ROOT,
            env=env,
            capture_output=True,
            text=True,
            timeout=60,
        )
        assert done.returncode == 0, done.stderr
        assert await a.wait() == 0, a.tail()
        await eventually(b.active, timeout=10, interval=0.05, what="B to take over")
        records = await _finish(sim, b, prefix)
    _assert_no_gap_no_duplicate(records)


async def test_cold_standby_publishes_the_takeover_interval_as_a_gap(
    tmp_path: Path, unique: str
) -> None:
    prefix = f"test.{unique}."
    async with running_simulator(ticks_per_second=1500) as sim:
        a = HaFeed(sim, prefix, tmp_path / "a", f"t-{unique}", ALPHAPANDA_HA__STANDBY="cold")
        b = HaFeed(sim, prefix, tmp_path / "b", f"t-{unique}", ALPHAPANDA_HA__STANDBY="cold")
        await a.start()
        await a.wait_for(
            lambda m: m.get("ha_active") == 1 and m.get("ticks_published_total", 0) > 500,
            90,
            "A active and publishing",
        )
        await b.start()
        figures = await b.wait_for(lambda m: m.get("ha_standby_ready") == 1, 90, "B ready")
        assert figures["kite_streaming"] == 0  # cold: no connection of its own
        await asyncio.sleep(1.0)
        a.sigkill()
        await a.wait()
        await eventually(b.active, timeout=15, interval=0.05, what="B to take over")
        records = await _finish(sim, b, prefix)
    events = await asyncio.to_thread(read_events, SHARED_KAFKA, f"{prefix}market.feed.events")
    gaps = [e for e in events if e["kind"] == "gap" and e.get("reason") == "cold standby takeover"]
    assert len(gaps) == 1, events
    gap = gaps[0]
    # The interval runs from the old active's last published tick to the new active's
    # connection streaming: every record is outside it, on the right side.
    start = datetime.fromisoformat(str(gap["start"]))
    end = datetime.fromisoformat(str(gap["end"]))
    before = [r for r in records if ns_to_datetime(r.received_at_ns) <= start]
    after = [r for r in records if ns_to_datetime(r.received_at_ns) > start]
    assert before and after
    assert max(r.received_at_ns for r in before) == max(
        r.received_at_ns for r in records if ns_to_datetime(r.received_at_ns) <= start
    )
    assert ns_to_datetime(max(r.received_at_ns for r in before)) == start
    assert all(ns_to_datetime(r.received_at_ns) >= end - timedelta(seconds=1) for r in after)
    report = check_ledger(records)
    assert not report.duplicate_volumes and not report.reordered
