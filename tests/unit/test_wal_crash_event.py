"""The ``crash_recovery`` feed event: what WAL recovery at start tells the strategies.

The figures come from the recovery's counts (pure); ``WalIngest`` hands the event to
its ``emit`` once recovery is done, only when the log held something past its
watermark, and with ``reason`` ``abandoned`` when the feed stops before the broker
answers. Here the log is real segment files, the topic's tails a fake.
"""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import AsyncIterator, Callable
from pathlib import Path
from typing import Any

import pytest

from alphapanda.consumer.gaps import GapTracker
from alphapanda.pipeline.accounting import Accounting
from alphapanda.pipeline.buffer import TickBuffer
from alphapanda.pipeline.wire import WireEncoder
from alphapanda.settings import Settings
from alphapanda.streams.records import CRASH_RECOVERY, GAP, FeedEvent, ns_to_datetime
from alphapanda.testing import VirtualClock, eventually
from alphapanda.wal.ingest import WalIngest
from alphapanda.wal.recovery import (
    RECOVERY_ABANDONED,
    RECOVERY_COMPLETED,
    RecoveryCounts,
    RecoveryFilter,
    crash_recovery_event,
)
from alphapanda.wal.segments import encode_frame, segment_name, write_watermark
from alphapanda.wal.tails import Position, TailReport
from tests.unit.test_wal_recovery import WAL, A, B

NOW_NS = 1_767_225_600_000_000_000  # 2026-01-01 00:00 UTC


def _counts(newest: dict[int, Position]) -> RecoveryCounts:
    counts = RecoveryCounts()
    selector = RecoveryFilter(newest, counts)
    for frame in WAL:
        selector.select(frame.received_at_ns, frame.frame)
    return counts


def test_the_event_carries_the_figures_and_the_span_of_the_frames_published_again() -> None:
    # The topic holds A up to its first packet of frame 200 and B up to frame 100: A's
    # second packet of 200 and everything of 300 is published again, B's 200 and 300.
    counts = _counts({A: (200, 0), B: (100, 0)})
    counts.wal_corrupt, counts.wal_torn = 2, 1
    at = ns_to_datetime(NOW_NS)
    event = crash_recovery_event(counts, at)
    assert event.kind == CRASH_RECOVERY and event.key == b"feed"
    assert event.at == at and event.reason == RECOVERY_COMPLETED
    assert event.recovery == {
        "frames": 3,
        "wal_recovered": 4,
        "wal_already_published": 3,
        "wal_corrupt": 2,
        "wal_torn": 1,
    }
    assert (event.start, event.end) == (ns_to_datetime(200), ns_to_datetime(300))


def test_nothing_published_again_means_no_span() -> None:
    counts = _counts({A: (300, 0), B: (300, 0)})
    event = crash_recovery_event(counts, ns_to_datetime(NOW_NS))
    assert event.recovery is not None and event.recovery["wal_recovered"] == 0
    assert event.recovery["wal_already_published"] == 7
    assert event.start is None and event.end is None
    assert counts.found_anything  # frames were read: a crash left them


def test_only_frames_or_corruption_past_the_watermark_are_worth_an_event() -> None:
    assert not RecoveryCounts().found_anything
    assert not RecoveryCounts(wal_torn=1).found_anything
    assert RecoveryCounts(frames=1).found_anything
    assert RecoveryCounts(wal_corrupt=3).found_anything


# -- WalIngest ---------------------------------------------------------------------------


def _write_segment(wal_dir: Path, *, torn: bool = False) -> None:
    wal_dir.mkdir(parents=True, exist_ok=True)
    data = b"".join(encode_frame(f.received_at_ns, f.shard, f.frame) for f in WAL)
    if torn:  # a record cut off by the crash
        data += encode_frame(400, 0, WAL[0].frame)[:-5]
    (wal_dir / segment_name(WAL[0].received_at_ns)).write_bytes(data)


def _resolved_log(wal_dir: Path) -> None:
    # Segments left (a crash), but the watermark says every frame was resolved.
    _write_segment(wal_dir)
    write_watermark(wal_dir, WAL[-1].received_at_ns)


def _tails(positions: dict[int, Position]) -> Callable[..., TailReport]:
    def read(config: dict[str, Any], topic: str, **_: object) -> TailReport:
        return TailReport(positions=dict(positions), records=len(positions))

    return read


def _refuse(config: dict[str, Any], topic: str, **_: object) -> TailReport:
    raise TimeoutError("broker not answering")


class Started:
    def __init__(self, ingest: WalIngest, task: asyncio.Task[None]) -> None:
        self.ingest, self.task = ingest, task


@pytest.fixture
async def running(tmp_path: Path) -> AsyncIterator[Callable[..., Any]]:
    started: list[Started] = []

    async def start(
        tail_reader: Callable[..., TailReport],
        emitted: list[FeedEvent] | None,
        *,
        stopping: asyncio.Event | None = None,
    ) -> Started:
        settings = Settings(  # type: ignore[call-arg]
            _env_file=None,
            feed={"wal_dir": tmp_path / "wal", "spool_dir": tmp_path / "spool"},
            kafka={"bootstrap_servers": "127.0.0.1:9"},
        )
        accounting = Accounting()
        ingest = WalIngest(
            settings,
            "test.market.ticks",
            TickBuffer(10_000, "block", accounting),
            accounting,
            WireEncoder(),
            tail_reader=tail_reader,
            emit=emitted.append if emitted is not None else None,
            clock=VirtualClock(wall_ns=NOW_NS),
        )
        ingest.open()
        task = asyncio.create_task(ingest.run(stopping or asyncio.Event()))
        started.append(handle := Started(ingest, task))
        return handle

    yield start
    for handle in started:
        handle.task.cancel()
        with contextlib.suppress(asyncio.CancelledError):
            await handle.task
        handle.ingest.wal.close()


async def test_recovery_of_a_crashed_run_emits_one_event_with_its_counts(
    tmp_path: Path, running: Callable[..., Any]
) -> None:
    _write_segment(tmp_path / "wal", torn=True)
    emitted: list[FeedEvent] = []
    handle = await running(_tails({A: (200, 0), B: (100, 0)}), emitted)
    await eventually(handle.ingest.recovered.is_set, what="recovery done")
    (event,) = emitted
    counts = handle.ingest.counts
    assert event.kind == CRASH_RECOVERY and event.reason == RECOVERY_COMPLETED
    assert event.at == ns_to_datetime(NOW_NS)
    assert event.recovery == {
        "frames": 3,
        "wal_recovered": counts.wal_recovered,
        "wal_already_published": counts.wal_already_published,
        "wal_corrupt": 0,
        "wal_torn": 1,
    }
    assert counts.wal_recovered == 4 and counts.wal_already_published == 3
    assert (event.start, event.end) == (ns_to_datetime(200), ns_to_datetime(300))


async def test_an_empty_log_emits_nothing(tmp_path: Path, running: Callable[..., Any]) -> None:
    emitted: list[FeedEvent] = []
    handle = await running(_tails({}), emitted)
    await eventually(handle.ingest.recovered.is_set, what="recovery done")
    assert handle.ingest.recovery_state == "nothing to recover"
    assert emitted == []


async def test_a_log_resolved_up_to_its_last_frame_emits_nothing(
    tmp_path: Path, running: Callable[..., Any]
) -> None:
    _resolved_log(tmp_path / "wal")
    emitted: list[FeedEvent] = []
    handle = await running(_tails({}), emitted)
    await eventually(handle.ingest.recovered.is_set, what="recovery done")
    assert handle.ingest.recovery_state == "done" and handle.ingest.counts.frames == 0
    assert emitted == []


async def test_a_recovery_abandoned_at_stop_says_so(
    tmp_path: Path, running: Callable[..., Any]
) -> None:
    _write_segment(tmp_path / "wal")
    emitted: list[FeedEvent] = []
    stopping = asyncio.Event()
    stopping.set()  # the feed stops while the broker does not answer
    handle = await running(_refuse, emitted, stopping=stopping)
    await asyncio.wait_for(handle.task, 10)
    assert not handle.ingest.recovered.is_set()
    (event,) = emitted
    assert event.kind == CRASH_RECOVERY and event.reason == RECOVERY_ABANDONED
    assert event.recovery is None and event.start is None


async def test_without_derived_streams_nothing_is_emitted(
    tmp_path: Path, running: Callable[..., Any]
) -> None:
    _write_segment(tmp_path / "wal")
    handle = await running(_tails({}), None)
    await eventually(handle.ingest.recovered.is_set, what="recovery done")
    assert handle.ingest.counts.wal_recovered == 7


# -- the restart gap ---------------------------------------------------------------------


def _gaps(emitted: list[FeedEvent]) -> list[FeedEvent]:
    return [event for event in emitted if event.kind == GAP]


async def test_the_first_frame_after_a_crash_closes_a_gap_from_the_last_frame_logged(
    tmp_path: Path, running: Callable[..., Any]
) -> None:
    _write_segment(tmp_path / "wal", torn=True)
    emitted: list[FeedEvent] = []
    handle = await running(_tails({A: (300, 0), B: (300, 0)}), emitted)
    handle.ingest.instruments = lambda: {B: "full", A: "ltp"}
    await eventually(handle.ingest.recovered.is_set, what="recovery done")
    assert _gaps(emitted) == []  # this run has not received anything yet
    first = handle.ingest.append(0, WAL[0].frame)
    handle.ingest.append(0, WAL[1].frame)
    (gap,) = _gaps(emitted)
    # From the crashed run's last frame (300; the torn record after it never counted)
    # to this run's first: no subscribed instrument could have been received in between.
    assert (gap.start, gap.end) == (ns_to_datetime(300), ns_to_datetime(first))
    assert gap.instruments == [A, B] and gap.key == b"feed"
    assert gap.reason == "feed restarted after a crash"


async def test_a_frame_received_while_recovery_runs_closes_the_gap_when_it_ends(
    tmp_path: Path, running: Callable[..., Any]
) -> None:
    # Everything was resolved before the crash: the watermark dates the last frame.
    _resolved_log(tmp_path / "wal")
    emitted: list[FeedEvent] = []
    handle = await running(_tails({}), emitted)
    first = handle.ingest.append(0, WAL[0].frame)  # before the recovery task ran
    await eventually(handle.ingest.recovered.is_set, what="recovery done")
    (gap,) = emitted  # and no crash_recovery: nothing to recover
    assert gap.kind == GAP and gap.start == ns_to_datetime(WAL[-1].received_at_ns)
    assert gap.end == ns_to_datetime(first) and gap.instruments == []


async def test_after_a_clean_stop_there_is_no_restart_gap(
    tmp_path: Path, running: Callable[..., Any]
) -> None:
    # A clean stop leaves an empty log: the feed_stopped event told the strategies.
    emitted: list[FeedEvent] = []
    handle = await running(_tails({}), emitted)
    await eventually(handle.ingest.recovered.is_set, what="recovery done")
    handle.ingest.append(0, WAL[0].frame)
    assert emitted == []


def test_the_sdk_s_gap_tracker_records_the_restart_gap() -> None:
    tracker = GapTracker()
    start, end = ns_to_datetime(NOW_NS - 5 * 10**9), ns_to_datetime(NOW_NS)
    tracker.observe(
        FeedEvent(
            GAP, end, reason="feed restarted after a crash", instruments=[A], start=start, end=end
        )
    )
    assert tracker.gaps(A) == [(start, end)] and tracker.gaps(B) == []
    # A one-minute candle that started before the crash overlaps the hole.
    assert tracker.overlaps(A, ns_to_datetime(NOW_NS - 60 * 10**9), ns_to_datetime(NOW_NS))
