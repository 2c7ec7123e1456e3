"""Crash-proof ingest, for real: ``alphapanda feed`` SIGKILLed and restarted.

Every tick of every frame the feed had read before the kill must be in the topic
exactly once, in order per instrument. Checked two ways: against the WAL as the killed
process left it (each of its ticks is in the topic, once) and by the volume ledger (no
duplicate, no reordering; a gap only where the kill cut a socket, at most one per
instrument and kill). And the restart says so on ``market.feed.events``: one
``crash_recovery`` event with recovery's figures; a clean restart has none.
"""

from __future__ import annotations

import asyncio
import json
import os
import re
import shutil
import signal
import sys
from collections.abc import AsyncIterator, Callable
from datetime import datetime
from pathlib import Path

import httpx
import pytest

from alphapanda.kite.protocol import decode_message
from alphapanda.streams.records import ns_to_datetime
from alphapanda.testing import eventually
from alphapanda.topics import TopicNames
from alphapanda.wal.segments import ReadReport, read_wal
from tests.support.derived import read_raw
from tests.support.ledger import TickRecord, check_ledger, read_topic
from tests.support.services import ROOT, SHARED_KAFKA, PrivateService, free_port
from tests.support.sim import INSTRUMENTS_CSV, SimHandle, running_simulator

LIFECYCLE = {"feed_started", "feed_stopped", "crash_recovery"}
_SAMPLE = re.compile(r"^([a-z0-9_]+)(?:\{[^}]*\})? ([0-9.e+-]+)$", re.M)


class FeedProcess:
    """One ``alphapanda feed`` process with its WAL and spool in ``workdir``."""

    def __init__(self, sim: SimHandle, bootstrap: str, prefix: str, workdir: Path) -> None:
        self.api_port = free_port()
        self.workdir = workdir
        self.log = workdir / "feed.log"
        self.env = {k: v for k, v in os.environ.items() if not k.startswith("ALPHAPANDA_")}
        self.env.update(
            ALPHAPANDA_KITE__WS_URL=sim.ws_url,
            ALPHAPANDA_KITE__API_KEY=sim.api_key,
            ALPHAPANDA_KITE__ACCESS_TOKEN=sim.access_token,
            ALPHAPANDA_KAFKA__BOOTSTRAP_SERVERS=bootstrap,
            ALPHAPANDA_KAFKA__TOPIC_PREFIX=prefix,
            ALPHAPANDA_FEED__INSTRUMENTS_CSV=str(INSTRUMENTS_CSV),
            ALPHAPANDA_FEED__MODE="full",
            ALPHAPANDA_FEED__SPOOL_DIR=str(workdir / "spool"),
            ALPHAPANDA_FEED__WAL_DIR=str(workdir / "wal"),
            ALPHAPANDA_METRICS__NAMESPACE=f"test{prefix.replace('.', '')}",
            ALPHAPANDA_API__PORT=str(self.api_port),
        )
        self.proc: asyncio.subprocess.Process | None = None

    async def start(self) -> None:
        self.api_port = free_port()
        self.env["ALPHAPANDA_API__PORT"] = str(self.api_port)
        log = open(self.log, "ab")  # noqa: ASYNC230, SIM115 - handed to the child
        self.proc = await asyncio.create_subprocess_exec(
            sys.executable,
            "-m",
            "alphapanda",
            "feed",
            cwd=ROOT,
            env=self.env,
            stdout=asyncio.subprocess.DEVNULL,
            stderr=log,
        )
        log.close()

    async def metrics(self) -> dict[str, float]:
        async with httpx.AsyncClient() as client:
            response = await client.get(f"http://127.0.0.1:{self.api_port}/metrics", timeout=2)
        figures: dict[str, float] = {}
        for name, value in _SAMPLE.findall(response.text):
            name = name.removeprefix("alphapanda_")
            figures[name] = figures.get(name, 0.0) + float(value)
        return figures

    async def wait_for(
        self, condition: Callable[[dict[str, float]], bool], within: float, what: str
    ) -> dict[str, float]:
        async def met() -> dict[str, float]:
            figures = await self.metrics()
            if not condition(figures):
                raise AssertionError(f"figures: {figures}")
            return figures

        try:
            return await eventually(
                met,
                timeout=within,
                interval=0.1,
                what=what,
                retry_on=(AssertionError, httpx.HTTPError),
            )
        except AssertionError as exc:
            raise AssertionError(f"{exc}\n{self.tail()}") from exc

    def sigkill(self) -> None:
        assert self.proc is not None
        self.proc.send_signal(signal.SIGKILL)

    async def wait(self) -> int:
        assert self.proc is not None
        async with asyncio.timeout(60):
            return await self.proc.wait()

    async def sigterm(self) -> None:
        assert self.proc is not None
        self.proc.send_signal(signal.SIGTERM)
        assert await self.wait() == 0, self.tail()

    def tail(self) -> str:
        return self.log.read_text(errors="replace")[-4000:] if self.log.exists() else ""


@pytest.fixture
async def reaper() -> AsyncIterator[list[FeedProcess]]:
    """Feed processes a test started: none may outlive it, whatever happened (killed
    and reaped on the test's own event loop)."""
    feeds: list[FeedProcess] = []
    yield feeds
    for feed in feeds:
        if feed.proc is not None and feed.proc.returncode is None:
            feed.proc.kill()
            await feed.proc.wait()


def wal_ticks(wal_dir: Path) -> set[tuple[int, int]]:
    """(instrument, volume) of every tick of every frame in the WAL (as the kill left it)."""
    ticks = set()
    for frame in read_wal(wal_dir, ReadReport()):
        for tick in decode_message(frame.frame, frame.received_at_ns).ticks:
            if tick.volume_traded is not None:
                ticks.add((tick.instrument_token, tick.volume_traded))
    return ticks


def wal_span(wal_dir: Path) -> tuple[datetime, datetime]:
    """Receive times of the first and last frame in the WAL (at the microsecond, as
    feed events carry them)."""
    stamps = [frame.received_at_ns for frame in read_wal(wal_dir, ReadReport())]
    return ns_to_datetime(min(stamps)), ns_to_datetime(max(stamps))


async def feed_lifecycle_events(
    bootstrap: str, prefix: str, until: Callable[[list[str]], bool]
) -> list[dict[str, object]]:
    """The ``data`` of the feed's start, stop and crash recovery events on
    ``market.feed.events`` (key ``feed``: one partition, in order), once their kinds
    satisfy ``until``."""
    topic = TopicNames.market_feed_events(prefix)

    def read() -> list[dict[str, object]]:
        records = sorted(read_raw(bootstrap, topic), key=lambda r: (r.partition, r.offset))
        data = [json.loads(r.value)["data"] for r in records if r.key == b"feed"]
        events = [e for e in data if e["kind"] in LIFECYCLE]
        kinds = [str(e["kind"]) for e in events]
        assert until(kinds), kinds
        return events

    async def check() -> list[dict[str, object]]:
        return await asyncio.to_thread(read)

    return await eventually(check, timeout=60, interval=0.5, what=f"feed events on {topic}")


def assert_exactly_once(
    records: list[TickRecord],
    in_wal: set[tuple[int, int]],
    sent: int,
    kills: int,
    *,
    ordered: bool = True,
) -> None:
    report = check_ledger(records)
    problems = report.problems
    gaps = problems.pop("gaps", [])
    if not ordered:
        problems.pop("reordered", None)
        problems.pop("bad_start", None)
    assert not problems, f"ledger problems: {problems}"
    in_topic = {(r.instrument_token, r.volume_traded) for r in records}
    missing = in_wal - in_topic
    assert not missing, f"{len(missing)} ticks the feed had read are not in the topic"
    # Gaps only at kill instants: ticks the simulator wrote that no feed read.
    per_instrument: dict[int, int] = {}
    for token, _, _ in report.gaps:
        per_instrument[token] = per_instrument.get(token, 0) + 1
    assert all(n <= kills for n in per_instrument.values()), gaps
    assert len(records) <= sent


async def test_recovery_publishes_nothing_twice_after_everything_was_acked(
    tmp_path: Path, unique: str, reaper: list[FeedProcess]
) -> None:
    prefix = f"test.{unique}."
    async with running_simulator(ticks_per_second=1500) as sim:
        feed = FeedProcess(sim, SHARED_KAFKA, prefix, tmp_path)
        reaper.append(feed)
        await feed.start()
        await feed.wait_for(lambda m: m.get("ticks_received_total", 0) >= 2000, 60, "2,000 ticks")
        await sim.set_rate(0)
        # Everything read is acked: nothing buffered, encoding or awaiting an ack.
        await feed.wait_for(
            lambda m: (
                m.get("ticks_in_flight", 1) == 0
                and m["ticks_published_total"] == m["ticks_received_total"]
            ),
            60,
            "all acked",
        )
        feed.sigkill()
        await feed.wait()
        in_wal = wal_ticks(tmp_path / "wal")
        assert in_wal, "the killed feed left no WAL to recover from"
        await feed.start()
        figures = await feed.wait_for(lambda m: m.get("wal_recovery_done", 0) == 1, 60, "recovery")
        assert figures["wal_recovered_total"] == 0
        assert figures["wal_already_published_total"] >= len(in_wal)
        await feed.sigterm()
        stats = await sim.stats()
        # A clean restart: the stop above left nothing to recover.
        await feed.start()
        await feed.wait_for(lambda m: m.get("wal_recovery_done", 0) == 1, 60, "clean restart")
        await feed.sigterm()
    records = await asyncio.to_thread(read_topic, SHARED_KAFKA, f"{prefix}market.ticks")
    assert len(records) == stats["total_ticks_sent"]
    assert_exactly_once(records, in_wal, stats["total_ticks_sent"], kills=1)
    assert "wal_recovered=0" in feed.log.read_text(errors="replace"), feed.tail()
    # Run 1 (killed: no feed_stopped), run 2 (recovered, stopped), run 3 (clean).
    events = await feed_lifecycle_events(
        SHARED_KAFKA, prefix, lambda kinds: kinds.count("feed_stopped") == 2
    )
    assert [e["kind"] for e in events] == [
        "feed_started",
        "feed_started",
        "crash_recovery",
        "feed_stopped",
        "feed_started",
        "feed_stopped",
    ]
    crash = events[2]
    assert crash["reason"] == "completed"
    recovery = crash["recovery"]
    assert isinstance(recovery, dict)
    assert recovery["frames"] > 0
    assert recovery["wal_recovered"] == 0
    assert recovery["wal_already_published"] == figures["wal_already_published_total"]
    assert recovery["wal_corrupt"] == 0
    # Nothing was published again: no span.
    assert "start" not in crash and "end" not in crash


async def test_sigkill_while_the_broker_is_paused_then_restart_both_broker_last(
    tmp_path: Path, unique: str, private_kafka: PrivateService, reaper: list[FeedProcess]
) -> None:
    prefix = f"test.{unique}."
    async with running_simulator(ticks_per_second=1500) as sim:
        feed = FeedProcess(sim, private_kafka.bootstrap, prefix, tmp_path)
        reaper.append(feed)
        await feed.start()
        await feed.wait_for(
            lambda m: m.get("ticks_published_total", 0) >= 1500, 90, "1,500 ticks acked"
        )
        private_kafka.pause()
        try:
            # Ticks pile up in the buffer and librdkafka's queue, unacked.
            before = await feed.metrics()
            await feed.wait_for(
                lambda m: m["ticks_received_total"] >= before["ticks_received_total"] + 3000,
                60,
                "3,000 more ticks while the broker is paused",
            )
            paused = await feed.metrics()
            assert paused["ticks_published_total"] < paused["ticks_received_total"] - 2000
            feed.sigkill()
            await feed.wait()
        finally:
            private_kafka.resume()
        in_wal = wal_ticks(tmp_path / "wal")
        shutil.copytree(tmp_path / "wal", tmp_path / "wal-at-kill")
        # The broker crashes too and is still down when the feed restarts: recovery
        # cannot read the tails, so the feed connects anyway and holds what it reads.
        await asyncio.to_thread(private_kafka.kill)
        await feed.start()
        await feed.wait_for(
            lambda m: m.get("wal_held_frames", 0) > 0, 120, "frames held while the broker is down"
        )
        await asyncio.to_thread(private_kafka.start)
        figures = await feed.wait_for(
            lambda m: m.get("wal_recovered_total", 0) > 0 and m.get("wal_held_frames", 1) == 0,
            120,
            "recovery, then the held frames",
        )
        assert figures["ticks_wal_recovered_total"] == figures["wal_recovered_total"]
        await asyncio.sleep(2)
        await sim.set_rate(0)
        await feed.wait_for(
            lambda m: m.get("ticks_in_flight", 1) == 0 and m.get("ticks_spooled", 1) == 0,
            120,
            "all acked",
        )
        await feed.sigterm()
        stats = await sim.stats()
    records = await asyncio.to_thread(read_topic, private_kafka.bootstrap, f"{prefix}market.ticks")
    assert_exactly_once(records, in_wal, stats["total_ticks_sent"], kills=1)
    assert figures["wal_recovered_total"] >= 2000


async def test_sigkill_while_spooling_then_restart_spool_and_wal_give_exactly_once(
    tmp_path: Path, unique: str, reaper: list[FeedProcess]
) -> None:
    prefix = f"test.{unique}."
    async with running_simulator(ticks_per_second=1500) as sim:
        # Run 1: no broker at all; a small producer queue sends ticks to the spool fast.
        offline = FeedProcess(sim, f"127.0.0.1:{free_port()}", prefix, tmp_path)
        reaper.append(offline)
        offline.env.update(
            ALPHAPANDA_KAFKA__MESSAGE_TIMEOUT_MS="1000",
            ALPHAPANDA_KAFKA__QUEUE_MAX_MESSAGES="1000",
        )
        await offline.start()
        await offline.wait_for(lambda m: m.get("ticks_spooled", 0) >= 2000, 90, "spooling")
        offline.sigkill()
        await offline.wait()
        in_wal = wal_ticks(tmp_path / "wal")
        wal_span_at_kill = wal_span(tmp_path / "wal")
        # Run 2: the broker is there. The spool replays what it holds, the WAL adds
        # exactly what is in neither the topic nor the spool.
        online = FeedProcess(sim, SHARED_KAFKA, prefix, tmp_path)
        reaper.append(online)
        await online.start()
        figures = await online.wait_for(
            lambda m: m.get("wal_recovery_done", 0) == 1, 90, "recovery"
        )
        await asyncio.sleep(1)
        await sim.set_rate(0)
        await online.wait_for(
            lambda m: m.get("ticks_in_flight", 1) == 0 and m.get("ticks_spooled", 1) == 0,
            90,
            "all acked",
        )
        await online.sigterm()
        stats = await sim.stats()
    records = await asyncio.to_thread(read_topic, SHARED_KAFKA, f"{prefix}market.ticks")
    # Exactly once and in order per instrument: the ticks that were in librdkafka's
    # queue at the kill are older than the ones spooled after them, so recovery
    # publishes them before the spool's replay; those that were in the buffer (newer
    # than the spool) after it.
    assert_exactly_once(records, in_wal, stats["total_ticks_sent"], kills=1)
    assert figures["wal_already_published_total"] >= 2000  # the spooled ones
    assert figures["wal_recovered_total"] > 0  # what librdkafka's queue held at the kill
    # Run 1 had no broker: only run 2's events reach the topic.
    events = await feed_lifecycle_events(
        SHARED_KAFKA, prefix, lambda kinds: kinds.count("feed_stopped") == 1
    )
    assert [e["kind"] for e in events] == ["feed_started", "crash_recovery", "feed_stopped"]
    crash = events[1]
    assert crash["reason"] == "completed"
    recovery = crash["recovery"]
    assert isinstance(recovery, dict)
    assert recovery["wal_recovered"] == figures["wal_recovered_total"]
    assert recovery["wal_already_published"] == figures["wal_already_published_total"]
    assert recovery["wal_corrupt"] == figures["wal_corrupt_total"] == 0
    assert recovery["frames"] > 0
    # The ticks published again came from frames the killed run had logged.
    first, last = wal_span_at_kill
    start = datetime.fromisoformat(str(crash["start"]))
    end = datetime.fromisoformat(str(crash["end"]))
    assert first <= start <= end <= last
    # The restart's hole: from the killed run's last frame to run 2's first one.
    topic = TopicNames.market_feed_events(prefix)
    raw = await asyncio.to_thread(read_raw, SHARED_KAFKA, topic)
    gaps = [
        data
        for data in (json.loads(r.value)["data"] for r in raw if r.key == b"feed")
        if data["kind"] == "gap"
    ]
    (gap,) = gaps
    assert gap["reason"] == "feed restarted after a crash"
    assert datetime.fromisoformat(str(gap["start"])) == last
    assert datetime.fromisoformat(str(gap["end"])) > last
    assert gap["instruments"] and set(gap["instruments"]) <= {r.instrument_token for r in records}
