"""The WAL: segments, group-committed writes, damage on read, retention, pausing.

Every test runs with both writer threads: the Python one and the extension's."""

from __future__ import annotations

import itertools
import os
import time
from collections.abc import Iterator
from pathlib import Path

import pytest

from alphapanda.pipeline.hotpath import load_native
from alphapanda.wal.log import WriteAheadLog
from alphapanda.wal.segments import (
    ReadReport,
    list_segments,
    read_wal,
    read_watermark,
    segment_name,
)


class Clock:
    def __init__(self, start: int = 1_000) -> None:
        self.ns = start
        self.mono = 0.0

    def wall_ns(self) -> int:
        return self.ns

    def monotonic(self) -> float:
        return self.mono


NATIVE, NATIVE_MISSING = load_native()
_writer: dict[str, object] = {"native": None}


@pytest.fixture(
    autouse=True,
    params=[
        "python",
        pytest.param(
            "native",
            marks=pytest.mark.skipif(NATIVE is None, reason=f"extension: {NATIVE_MISSING}"),
        ),
    ],
)
def writer(request: pytest.FixtureRequest) -> Iterator[str]:
    """Which writer thread ``make_wal`` builds the WAL with."""
    _writer["native"] = NATIVE if request.param == "native" else None
    yield request.param
    _writer["native"] = None


def make_wal(directory: Path, clock: Clock, **kwargs: object) -> WriteAheadLog:
    return WriteAheadLog(
        directory,
        clock=clock,
        native=_writer["native"],  # type: ignore[arg-type]
        **kwargs,  # type: ignore[arg-type]
    )


def frames(n: int, size: int = 100) -> list[bytes]:
    return [bytes([i % 251]) * size for i in range(n)]


def read_all(directory: Path, after_ns: int = 0) -> tuple[list[tuple[int, int, bytes]], ReadReport]:
    report = ReadReport()
    got = [(f.received_at_ns, f.shard, f.frame) for f in read_wal(directory, report, after_ns)]
    return got, report


def test_frames_read_back_in_order_with_strictly_increasing_receive_times(tmp_path: Path) -> None:
    clock = Clock()
    wal = make_wal(tmp_path, clock, fsync_ms=0)
    wal.open()
    stamps = [wal.append(i % 3, f) for i, f in enumerate(frames(50))]  # clock never moves
    wal.close()
    assert stamps == sorted(set(stamps)) and stamps[0] == 1_000
    got, report = read_all(tmp_path)
    assert got == [(ns, i % 3, f) for i, (ns, f) in enumerate(zip(stamps, frames(50), strict=True))]
    assert report.torn == 0 and report.corrupt == []


def test_segments_rotate_and_are_named_by_their_first_receive_time(tmp_path: Path) -> None:
    clock = Clock()
    wal = make_wal(tmp_path, clock, segment_bytes=1_000)
    wal.open()
    stamps = [wal.append(0, f) for f in frames(30)]
    wal.close()
    names = [p.name for _, p in list_segments(tmp_path)]
    assert len(names) > 1
    assert names[0] == segment_name(stamps[0])
    assert all(n in {segment_name(s) for s in stamps} for n in names)
    assert [ns for ns, _, _ in read_all(tmp_path)[0]] == stamps


def test_retention_deletes_only_resolved_segments_and_keeps_the_watermark(tmp_path: Path) -> None:
    clock = Clock()
    wal = make_wal(tmp_path, clock, segment_bytes=1_000)
    wal.open()
    stamps = []
    for f in frames(30):
        ns = wal.append(0, f)
        wal.decoded(ns, 2)  # two ticks per frame
        stamps.append(ns)
    first_segments = wal.segments()
    assert wal.collect() == 0  # nothing acked yet
    # Ack every tick of the first 20 frames (each tick once), out of order.
    acks = [ns for ns in stamps[:20] for _ in range(2)]
    wal.resolved(list(reversed(acks)))
    deleted = wal.collect()
    assert deleted >= 1
    wal.close()
    remaining = [p for _, p in list_segments(tmp_path)]
    assert remaining == first_segments[deleted:]
    watermark = read_watermark(tmp_path)
    assert watermark == wal.watermark_ns
    # Every frame left unresolved is still readable past the watermark.
    got, _ = read_all(tmp_path, watermark)
    assert [ns for ns, _, _ in got][-10:] == stamps[20:]
    assert all(ns > watermark for ns, _, _ in got)
    # The watermark survives a restart.
    again = make_wal(tmp_path, Clock(10**9))
    again.open()
    assert again.watermark_ns == watermark
    assert again.segments() == remaining
    again.close()


def test_resolve_all_frees_segments_whose_ticks_left_by_drop_or_spool(tmp_path: Path) -> None:
    clock = Clock()
    wal = make_wal(tmp_path, clock, segment_bytes=500)
    wal.open()
    for f in frames(20):
        wal.decoded(wal.append(0, f), 1)
    n = len(wal.segments())
    wal.resolve_all()
    assert wal.collect() == n - 1  # never the segment being written
    wal.close()


def test_a_torn_last_record_is_silent(tmp_path: Path) -> None:
    wal = make_wal(tmp_path, Clock())
    wal.open()
    for f in frames(5):
        wal.append(1, f)
    wal.close()
    (_, path) = list_segments(tmp_path)[0]
    os.truncate(path, path.stat().st_size - 7)
    got, report = read_all(tmp_path)
    assert len(got) == 4
    assert report.torn == 1 and report.corrupt == []


def test_a_corrupt_record_mid_segment_is_skipped_and_reported(tmp_path: Path) -> None:
    wal = make_wal(tmp_path, Clock())
    wal.open()
    for f in frames(5):
        wal.append(1, f)
    wal.close()
    (_, path) = list_segments(tmp_path)[0]
    data = bytearray(path.read_bytes())
    record = len(data) // 5
    data[2 * record + 40] ^= 0xFF  # inside the third frame
    path.write_bytes(bytes(data))
    got, report = read_all(tmp_path)
    assert [f for _, _, f in got] == [f for i, f in enumerate(frames(5)) if i != 2]
    assert report.torn == 0
    [damage] = report.corrupt
    assert damage.segment == path.name and damage.offset == 2 * record and damage.records == 1


def test_size_limit_pauses_the_wal_and_it_resumes_when_retention_frees_room(
    tmp_path: Path,
) -> None:
    clock = Clock()
    wal = make_wal(tmp_path, clock, segment_bytes=600, max_bytes=2_000, min_free_bytes=0)
    wal.open()
    stamps = [wal.append(0, f) for f in frames(30)]
    assert wal.paused and "size limit" in (wal.paused_reason or "")
    assert wal.unlogged_frames > 0
    # Everything resolved: retention frees the old segments; the WAL resumes on a later
    # frame once the resume check is due, in a fresh segment.
    for ns in stamps:
        wal.decoded(ns, 1)
    wal.resolved(stamps)
    wal.collect()
    clock.mono += 5
    clock.ns = 10**9
    resumed_at = wal.append(0, b"x" * 100)
    assert not wal.paused
    wal.close()
    assert list_segments(tmp_path)[-1][0] == resumed_at
    assert read_all(tmp_path)[0][-1] == (resumed_at, 0, b"x" * 100)


def test_a_full_disk_pauses_the_wal_without_blocking_appends(tmp_path: Path) -> None:
    # A segment file that is /dev/full: every write fails with ENOSPC, for real.
    clock = Clock(5_000)
    (tmp_path / segment_name(5_000)).symlink_to("/dev/full")
    free = itertools.count()
    wal = make_wal(tmp_path, clock, fsync_ms=0, min_free_bytes=10, disk_free=lambda _p: next(free))
    wal.open()
    wal.append(0, b"a" * 100)
    # Wait for the writer thread to meet the error.
    for _ in range(1000):
        if wal._thread.error is not None:
            break
        time.sleep(0.001)
    assert wal._thread.error is not None and "No space" in wal._thread.error
    clock.ns = 6_000
    wal.append(0, b"b" * 100)
    assert wal.paused and "disk failed" in (wal.paused_reason or "")
    # Room returns (the fake free-space probe grows); the next due check resumes.
    clock.mono += 20
    clock.ns = 7_000
    for _ in range(20):
        clock.mono += 1.5
        clock.ns += 1
        wal.append(0, b"c" * 100)
        if not wal.paused:
            break
    assert not wal.paused
    wal.close()
    got, _ = read_all(tmp_path)
    assert got and all(f == b"c" * 100 for _, _, f in got)


@pytest.mark.parametrize("fsync_ms", [0, 20])
def test_everything_appended_is_durable_after_close(tmp_path: Path, fsync_ms: int) -> None:
    clock = Clock()
    wal = make_wal(tmp_path, clock, fsync_ms=fsync_ms)
    wal.open()
    last = 0
    for f in frames(200):
        last = wal.append(0, f)
    wal.close()
    assert wal.durable_ns == last
    assert len(read_all(tmp_path)[0]) == 200


def test_status_says_crash_protection_is_off_while_the_wal_is_paused(tmp_path: Path) -> None:
    from alphapanda.api.status import status_from_samples

    clock = Clock()
    wal = make_wal(tmp_path, clock, segment_bytes=600, max_bytes=1_000, min_free_bytes=0)
    wal.open()

    def view() -> object:
        return status_from_samples(
            list(wal.samples()), [], {}, True, 10, "block", None, "now", 0.0
        ).wal

    assert view().crash_protection == "on"  # type: ignore[attr-defined]
    for f in frames(30):
        wal.append(0, f)
    paused = view()
    assert paused.paused is True  # type: ignore[attr-defined]
    assert paused.crash_protection.startswith("OFF")  # type: ignore[attr-defined]
    wal.close()


def test_inspect_describes_segments_and_damage(tmp_path: Path) -> None:
    from alphapanda.kite.protocol import encode_message, encode_tick
    from alphapanda.kite.protocol.ticks import MODE_LTP, Tick
    from alphapanda.wal.inspect import describe

    wal = make_wal(tmp_path, Clock(1_700_000_000_000_000_000))
    wal.open()
    tick = encode_tick(Tick(instrument_token=5, mode=MODE_LTP, tradable=True, last_price=1.0))
    for _ in range(3):
        wal.append(0, encode_message([tick, tick]))
    wal.close()
    (_, path) = list_segments(tmp_path)[0]
    data = bytearray(path.read_bytes())
    data[len(data) // 3 + 20] ^= 0xFF
    path.write_bytes(bytes(data))
    lines = describe(tmp_path)
    assert "2 frames, 4 ticks" in lines[1]
    assert lines[2].strip().startswith("corrupt at offset")


def test_acks_of_the_segment_being_written_settle_in_one_step_like_one_by_one(
    tmp_path: Path,
) -> None:
    # One frame per segment. Acks all from the segment being written take the bulk
    # path, others the per-tick one; both count each ack once and never below zero.
    clock = Clock()
    bulk, single = (make_wal(tmp_path / name, clock, segment_bytes=150) for name in "ab")
    for wal in (bulk, single):
        wal.open()
    stamps = [(bulk.append(0, f), single.append(0, f)) for f in frames(3)]
    for ours, theirs in stamps:
        bulk.decoded(ours, 4)
        single.decoded(theirs, 4)
    calls = [[0, 0, 0], [2] * 9, [1, 2]]  # an old segment; the current one, too many; both
    for frames_acked in calls:
        bulk.resolved([stamps[i][0] for i in frames_acked])
        for i in frames_acked:
            single.resolved([stamps[i][1]])
    assert [s.unresolved for s in bulk._segments] == [1, 3, 0]
    assert [s.unresolved for s in single._segments] == [1, 3, 0]
    for wal in (bulk, single):
        wal.close()
