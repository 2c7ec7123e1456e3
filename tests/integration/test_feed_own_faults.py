"""Faults of the feed's own disk and process, against the real broker and simulator:
a full disk while spooling, a corrupt spool record, a second process on the spool, a
fatal producer error, a flapping broker, spool I/O kept off the event loop, and a full
disk under the write-ahead log."""

from __future__ import annotations

import asyncio
import logging
import os
import subprocess
import sys
import threading
from pathlib import Path
from typing import Any

import pytest
from confluent_kafka import KafkaError

from alphapanda.pipeline import spool as spool_module
from alphapanda.recording import encode_header
from alphapanda.service import ServiceFailed
from alphapanda.settings import Settings
from alphapanda.testing import eventually
from tests.support.feed import (
    assert_books_balance,
    feed_settings,
    new_feed,
    quiesce,
    settled_sent,
)
from tests.support.ledger import check_ledger, read_topic
from tests.support.services import ROOT, PrivateService, free_port
from tests.support.sim import SimHandle, running_simulator
from tests.support.smallfs import fill, small_filesystem

pytestmark = pytest.mark.slow


def offline(settings_for: Any, sim: SimHandle, spool_dir: Path, **feed: Any) -> Settings:
    """A feed whose broker never answers: every tick goes to the spool."""
    return feed_settings(
        settings_for,
        sim,
        kafka={"bootstrap_servers": f"127.0.0.1:{free_port()}", "message_timeout_ms": 1000},
        spool_dir=spool_dir,
        shutdown_deadline=2.0,
        **feed,
    )


async def test_disk_full_while_spooling_keeps_the_publisher_alive_and_counts_everything(
    settings_for: Any, tmp_path: Path
) -> None:
    # Defect 1: ENOSPC used to kill the publisher and lose the buffer uncounted.
    with small_filesystem(tmp_path / "fs", 2 << 20) as fs:
        spool_dir = fs / "spool"
        async with running_simulator(ticks_per_second=1500) as sim:
            settings = offline(
                settings_for, sim, spool_dir, spool_min_free_bytes=0, buffer_capacity=2000
            )
            first, first_service = new_feed(settings)
            async with asyncio.TaskGroup() as tg:
                task = tg.create_task(first_service.run())
                await eventually(
                    lambda: first.publisher.core.spool_problem is not None,
                    timeout=60,
                    what="disk full",
                )
                reasons = first.readiness()[1]
                assert any("disk spool cannot take ticks" in r for r in reasons), reasons
                # Under block the publisher stops taking ticks: the buffer fills and the
                # sockets are pushed back on; the publisher keeps running.
                await eventually(
                    lambda: len(first.buffer) == first.buffer.capacity,
                    timeout=30.0,
                    what="backpressure",
                )
                assert not task.done()
                assert first.accounting.imbalance() == 0
                first_service.request_stop()
            acct1 = first.accounting
            assert acct1.imbalance() == 0 and acct1.in_flight == 0, acct1.snapshot()
            assert acct1.spooled == first.spool.pending > 0
            # What the full disk (and a blocked socket reader) could not hand over by
            # the shutdown deadline is counted, by reason.
            assert set(acct1.dropped) <= {"spool_unavailable", "shutdown"}
            # Under block the first feed stopped reading its sockets: what the simulator
            # had written into them by then was never received (like Kite, it never
            # sends a tick twice). Counted from its side once it saw the feed go.
            sent_to_first = await settled_sent(sim)
            never_read = sent_to_first - acct1.received_socket
            assert never_read >= 0

            # The broker is back (and the disk gets room as the spool is replayed).
            online = feed_settings(settings_for, sim, spool_dir=spool_dir, spool_min_free_bytes=0)
            second, second_service = new_feed(online)
            async with asyncio.TaskGroup() as tg:
                tg.create_task(second_service.run())
                await eventually(
                    lambda: second.accounting.published >= acct1.spooled, timeout=60, what="replay"
                )
                stats = await quiesce(sim, second, earlier_runs=sent_to_first)
                second_service.request_stop()
        assert_books_balance(second)
        records = await asyncio.to_thread(read_topic, online.kafka.bootstrap_servers, second.topic)
        # Everything either feed received is in the topic, or counted as dropped.
        received = acct1.received_socket + second.accounting.received_socket
        assert len(records) == received - acct1.dropped_total
        assert stats["total_ticks_sent"] == received + never_read
        assert not check_ledger(records).reordered


async def test_one_corrupt_record_costs_only_itself(settings_for: Any, tmp_path: Path) -> None:
    # Defect 2: the scan used to truncate everything after the first bad record.
    spool_dir = tmp_path / "spool"
    async with running_simulator(ticks_per_second=1500) as sim:
        first, first_service = new_feed(offline(settings_for, sim, spool_dir))
        async with asyncio.TaskGroup() as tg:
            tg.create_task(first_service.run())
            await eventually(lambda: first.accounting.spooled >= 1000, timeout=30.0, what="spooled")
            first_service.request_stop()
        spooled = first.accounting.spooled
        # The biggest segment: what failed at the stop went into a small one ahead of it.
        segment = max(spool_dir.glob("segment-*.log"), key=lambda p: p.stat().st_size)
        data = bytearray(segment.read_bytes())
        data[len(data) // 100] ^= 0x01  # inside one of the first records
        segment.write_bytes(bytes(data))

        online = feed_settings(settings_for, sim, spool_dir=spool_dir)
        second, second_service = new_feed(online)
        async with asyncio.TaskGroup() as tg:
            tg.create_task(second_service.run())
            await eventually(
                lambda: second.accounting.recovered == spooled, timeout=30.0, what="recovery"
            )
            stats = await quiesce(sim, second, earlier_runs=first.accounting.received_socket)
            second_service.request_stop()
    acct = second.accounting
    assert_books_balance(second)
    assert acct.dropped == {"spool_corrupt": 1}
    assert second.spool.lost_at_open == 1
    records = await asyncio.to_thread(read_topic, online.kafka.bootstrap_servers, second.topic)
    assert len(records) == stats["total_ticks_sent"] - 1


async def test_a_second_process_on_the_spool_exits_2_and_takes_nothing(
    settings_for: Any, tmp_path: Path
) -> None:
    # Defect 3: a second process used to steal (and delete) the live feed's spool.
    spool_dir = tmp_path / "spool"
    recording = tmp_path / "empty.aprec"
    recording.write_bytes(encode_header({"mode": "full"}))
    async with running_simulator(ticks_per_second=1500) as sim:
        live, live_service = new_feed(offline(settings_for, sim, spool_dir))
        async with asyncio.TaskGroup() as tg:
            tg.create_task(live_service.run())
            await eventually(lambda: live.spool.pending >= 300, timeout=30.0, what="spooled")
            pending = live.spool.pending
            env = dict(os.environ, ALPHAPANDA_FEED__SPOOL_DIR=str(spool_dir))
            second = await asyncio.to_thread(
                subprocess.run,
                [sys.executable, "-m", "alphapanda", "replay", str(recording), "--to", "kafka"],
                cwd=ROOT,
                env=env,
                capture_output=True,
                timeout=120,
                check=False,
            )
            err = second.stderr.decode()
            assert second.returncode == 2, err[-2000:]
            assert str(spool_dir) in err and f"pid {os.getpid()}" in err
            assert live.spool.pending >= pending  # nothing taken
            await eventually(
                lambda: live.spool.pending > pending + 100, timeout=30.0, what="still spooling"
            )
            live_service.request_stop()
    assert live.accounting.imbalance() == 0
    assert live.accounting.spooled == live.spool.pending


async def test_fatal_producer_error_fails_health_spools_and_exits_then_replays(
    settings_for: Any, tmp_path: Path
) -> None:
    # Defect 4: a fatal producer error used to stall forever with /health 200.
    spool_dir = tmp_path / "spool"
    async with running_simulator(ticks_per_second=1500) as sim:
        settings = feed_settings(settings_for, sim, spool_dir=spool_dir, shutdown_deadline=3.0)
        seen: dict[str, object] = {}

        def inject_with_a_frame(data: bytes, received_at_ns: int) -> None:
            # Injected as a frame with ticks arrives, before they reach the buffer: at
            # least those ticks come after the fatal error and must end in the spool.
            if "injected" not in seen and len(data) > 1 and first.accounting.published >= 1000:
                seen["injected"] = True
                error = KafkaError(KafkaError._FATAL, "injected fatal error", fatal=True)
                first.producer._error(error)

        first, first_service = new_feed(settings, frame_listener=inject_with_a_frame)

        async def inject() -> None:
            await eventually(lambda: "injected" in seen, timeout=30.0, what="fatal error injected")
            await eventually(
                lambda: first_service.unhealthy is not None, timeout=30.0, what="unhealthy"
            )
            seen["unhealthy"] = first_service.unhealthy
            seen["ready"] = first.readiness()[0]

        failure: ServiceFailed | None = None
        async with asyncio.TaskGroup() as tg:
            tg.create_task(inject())
            try:
                await first_service.run()
            except ServiceFailed as exc:
                failure = exc
        assert failure is not None and "kafka producer" in str(failure)
        assert "fatal" in str(seen["unhealthy"]) and seen["ready"] is False
        acct1 = first.accounting
        assert acct1.imbalance() == 0 and acct1.dropped_total == 0, acct1.snapshot()
        assert acct1.spooled == first.spool.pending > 0

        second, second_service = new_feed(settings)
        async with asyncio.TaskGroup() as tg:
            tg.create_task(second_service.run())
            await eventually(
                lambda: second.accounting.recovered == acct1.spooled, timeout=30.0, what="rec"
            )
            stats = await quiesce(sim, second, earlier_runs=acct1.received_socket)
            second_service.request_stop()
    assert_books_balance(second)
    records = await asyncio.to_thread(read_topic, settings.kafka.bootstrap_servers, second.topic)
    assert len(records) == stats["total_ticks_sent"]
    report = check_ledger(records)
    assert not report.reordered and not report.duplicate_ids


async def test_broker_flapping_beyond_message_timeout_keeps_per_instrument_order(
    settings_for: Any, private_kafka: PrivateService, tmp_path: Path
) -> None:
    # Defect 5: replayed ticks could land after newer live ones of the same instrument.
    async with running_simulator(ticks_per_second=1500) as sim:
        settings = feed_settings(
            settings_for,
            sim,
            kafka={
                "bootstrap_servers": private_kafka.bootstrap,
                "queue_max_messages": 10000,
                "request_timeout_ms": 1000,
                "message_timeout_ms": 1500,
                "topic_partitions": 3,
            },
            spool_dir=tmp_path / "spool",
        )
        feed, service = new_feed(settings)
        async with asyncio.TaskGroup() as tg:
            tg.create_task(service.run())
            await eventually(lambda: feed.accounting.published >= 1000, timeout=30.0, what="acks")
            for _ in range(3):
                private_kafka.pause()
                try:
                    await asyncio.sleep(2.5)
                finally:
                    private_kafka.resume()
                await asyncio.sleep(1.0)
            await eventually(lambda: not feed.publisher.spooling, timeout=120, what="replay")
            stats = await quiesce(sim, feed, within=120)
            service.request_stop()
    assert_books_balance(feed)
    assert feed.publisher.spill_events >= 1
    records = await asyncio.to_thread(read_topic, private_kafka.bootstrap, feed.topic)
    report = check_ledger(records)
    core = feed.publisher.core
    figures = {
        "books": feed.accounting.snapshot(),
        "dropped": dict(feed.accounting.dropped),
        "already_published": core.already_published,
        "publish_checks": core.publish_checks,
        "records": len(records),
        "distinct": len({r.event_id for r in records}),
        "sent": stats["total_ticks_sent"],
        "reordered": report.reordered[:5],
    }
    assert not report.wrong_partition and not report.gaps, (figures, report.gaps[:5])
    # A message that timed out while on the wire may have been written anyway: the
    # publisher asks the topic before sending it again, so there are no duplicates.
    assert len(records) == len({r.event_id for r in records})
    # Order: no tick lands after a newer tick of its instrument.
    first_seen: set[str] = set()
    newest: dict[int, int] = {}
    out_of_order = []
    for record in records:
        if record.event_id in first_seen or record.volume_traded is None:
            continue
        first_seen.add(record.event_id)
        token, volume = record.instrument_token, record.volume_traded
        if volume < newest.get(token, -1):
            out_of_order.append((token, newest[token], volume))
        newest[token] = max(volume, newest.get(token, -1))
    assert out_of_order == []
    assert len({r.event_id for r in records}) == stats["total_ticks_sent"]  # none lost
    assert stats["total_ticks_sent"] == feed.accounting.received_socket


async def test_spool_file_io_never_runs_on_the_event_loop(
    settings_for: Any, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    # Defect 7: appends, window reads and commits used to run on the loop thread.
    on_loop: list[str] = []
    calls: list[str] = []
    loop_thread = threading.get_ident()
    names = ("open", "append_many", "prepend_many", "read_window", "commit_window", "close")
    for name in names:
        original = getattr(spool_module.Spool, name)

        def wrapped(
            self: Any, *args: Any, _name: str = name, _original: Any = original, **kw: Any
        ) -> Any:
            calls.append(_name)
            if threading.get_ident() == loop_thread:
                on_loop.append(_name)
            return _original(self, *args, **kw)

        monkeypatch.setattr(spool_module.Spool, name, wrapped)
    spool_dir = tmp_path / "spool"
    async with running_simulator(ticks_per_second=1500) as sim:
        first, first_service = new_feed(offline(settings_for, sim, spool_dir))
        async with asyncio.TaskGroup() as tg:
            tg.create_task(first_service.run())
            await eventually(lambda: first.accounting.spooled >= 500, timeout=30.0, what="spooled")
            first_service.request_stop()
        second, second_service = new_feed(feed_settings(settings_for, sim, spool_dir=spool_dir))
        async with asyncio.TaskGroup() as tg:
            tg.create_task(second_service.run())
            await eventually(
                lambda: (
                    second.spool.pending == 0
                    and second.accounting.spooled == 0
                    and second.accounting.in_flight == 0
                ),
                timeout=60,
                what="replayed and acked",
            )
            second_service.request_stop()
    assert set(names) <= set(calls)
    assert on_loop == []


@pytest.mark.parametrize("hot_path", ["native", "python"])
async def test_a_full_wal_disk_pauses_crash_protection_and_never_the_ticks(
    settings_for: Any, tmp_path: Path, hot_path: str, caplog: pytest.LogCaptureFixture
) -> None:
    # The WAL on a real filesystem that fills up: its writer thread (the extension's on
    # the native path, Python's on the other) meets ENOSPC. The ticks keep flowing, the
    # feed stays ready, and the status says crash protection is off until there is
    # room again; then the WAL resumes by itself.
    caplog.set_level(logging.WARNING, logger="alphapanda.wal")
    # Above the WAL's 64 MiB minimum of free space to resume.
    with small_filesystem(tmp_path / "fs", 80 << 20) as fs:
        async with running_simulator(ticks_per_second=1500) as sim:
            settings = feed_settings(
                settings_for, sim, hot_path=hot_path, wal_dir=fs / "wal", shutdown_deadline=5.0
            )
            feed, service = new_feed(settings)
            assert feed.wal is not None and feed.hot_path.impl == hot_path
            wal = feed.wal.wal
            async with asyncio.TaskGroup() as tg:
                tg.create_task(service.run())
                await eventually(
                    lambda: feed.accounting.published > 1000 and wal.appended_frames > 10,
                    timeout=60,
                    what="ticks published with the WAL writing",
                )
                assert not wal.paused
                ballast = fill(fs, leave_bytes=64 << 10)
                await eventually(lambda: wal.paused, timeout=30, what="the WAL to pause")
                assert "No space left on device" in (wal.paused_reason or "")
                status = feed.status()["wal"]
                assert status["paused"] is True and status["crash_protection"] is False
                assert [s.value for s in wal.samples() if s.name == "wal_paused"] == [1]
                # Ticks keep flowing to the broker, and the feed stays ready.
                published = feed.accounting.published
                await eventually(
                    lambda: feed.accounting.published > published + 1500,
                    timeout=30,
                    what="ticks published while the WAL is paused",
                )
                assert feed.readiness() == (True, [])
                assert wal.unlogged_frames > 0
                # Room again: the WAL resumes in a fresh segment.
                ballast.unlink()
                await eventually(lambda: not wal.paused, timeout=30, what="the WAL to resume")
                logged = wal.appended_frames
                await eventually(
                    lambda: wal.appended_frames > logged + 5, timeout=30, what="frames logged again"
                )
                stats = await quiesce(sim, feed)
                service.request_stop()
        assert_books_balance(feed)
        records = await asyncio.to_thread(read_topic, settings.kafka.bootstrap_servers, feed.topic)
        assert len(records) == feed.accounting.received_socket == stats["total_ticks_sent"]
        assert not check_ledger(records).reordered
    messages = [r.getMessage() for r in caplog.records]
    assert any(
        r.levelno == logging.ERROR and "Crash protection is OFF" in r.getMessage()
        for r in caplog.records
    ), messages
    assert any("WAL resumed" in m for m in messages), messages
