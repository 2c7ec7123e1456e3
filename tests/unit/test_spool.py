"""Disk spool: order, durability, damage costs only damaged records, bounds, lock, errors."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pytest

from alphapanda.pipeline import spool as spool_module
from alphapanda.pipeline.producer import EncodedMessage
from alphapanda.pipeline.spool import FULL, LOW_DISK, Spool, SpoolLocked
from tests.support.smallfs import fill, small_filesystem


def msg(i: int) -> EncodedMessage:
    return EncodedMessage(
        key=str(i % 7).encode(),
        value=b"v" * 50 + str(i).encode(),
        headers=[("schema_version", b"1"), ("source", b"kite")],
        received_at_ns=1_700_000_000_000_000_000 + i,
    )


def segments(directory: Path) -> list[str]:
    return sorted(p.name for p in directory.glob("segment-*.log"))


def opened(directory: Path, max_bytes: int = 1 << 20) -> Spool:
    spool = Spool(directory, max_bytes)
    spool.open()
    return spool


def test_replays_in_write_order_across_segments(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(spool_module, "SEGMENT_MAX_BYTES", 1000)
    spool = opened(tmp_path)
    assert spool.extend(msg(i) for i in range(100)) == 100
    assert len(segments(tmp_path)) > 3
    got = []
    while spool.pending:
        window = spool.read_window(13)
        assert window.lost == 0
        got.extend(window.messages)
        assert spool.commit_window() is None
    assert got == [msg(i) for i in range(100)]
    assert segments(tmp_path) == []
    spool.close()


def test_window_is_read_again_until_committed(tmp_path: Path) -> None:
    spool = opened(tmp_path)
    spool.extend(msg(i) for i in range(10))
    assert spool.read_window(4).messages == [msg(i) for i in range(4)]
    assert spool.read_window(4).messages == [msg(i) for i in range(4)]
    spool.commit_window()
    assert spool.read_window(100).messages == [msg(i) for i in range(4, 10)]
    assert spool.pending == 10 - 4
    spool.close()


def test_written_records_survive_a_reopen(tmp_path: Path) -> None:
    spool = opened(tmp_path)
    spool.extend(msg(i) for i in range(5))
    spool.close()
    again = Spool(tmp_path, 1 << 20)
    assert again.open() == 5
    assert again.read_window(10).messages == [msg(i) for i in range(5)]
    again.close()


def test_discarded_records_are_not_replayed_also_after_a_reopen(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(spool_module, "SEGMENT_MAX_BYTES", 1000)
    spool = opened(tmp_path, 1 << 30)
    assert spool.extend(msg(i) for i in range(25_000)) == 25_000  # several read windows
    spool.discard_pending()
    assert spool.pending == 0 and segments(tmp_path) == []
    spool.extend([msg(-1)])  # what comes after is kept
    spool.close()
    again = Spool(tmp_path, 1 << 30)
    assert again.open() == 1
    assert again.read_window(10).messages == [msg(-1)]
    again.close()


def test_torn_tail_is_counted_as_lost_and_not_truncated(tmp_path: Path) -> None:
    spool = opened(tmp_path)
    spool.extend(msg(i) for i in range(3))
    spool.close()
    (path,) = tmp_path.glob("segment-*.log")
    path.write_bytes(path.read_bytes()[:-7])  # as a power loss mid-write could leave it
    again = Spool(tmp_path, 1 << 20)
    assert again.open() == 2 and again.lost_at_open == 1
    assert again.read_window(10).messages == [msg(0), msg(1)]
    again.close()


def test_one_flipped_byte_loses_one_record_of_a_thousand(tmp_path: Path) -> None:
    # Defect 2: a corrupt record used to truncate the rest of its segment.
    spool = opened(tmp_path, 1 << 24)
    spool.extend(msg(i) for i in range(1000))
    spool.close()
    (path,) = tmp_path.glob("segment-*.log")
    data = bytearray(path.read_bytes())
    record = len(data) // 1000  # records of msg(0..999) are 10 bytes apart at most
    data[record * 10 + 30] ^= 0x01
    path.write_bytes(bytes(data))
    size = path.stat().st_size
    again = Spool(tmp_path, 1 << 24)
    assert again.open() == 999
    assert again.lost_at_open == 1 and again.corrupt_records == 1
    assert path.stat().st_size == size  # nothing cut off
    got = []
    while again.pending:
        window = again.read_window(300)
        assert window.lost == 0  # reported once, at open
        got.extend(window.messages)
        again.commit_window()
    assert len(got) == 999 and got[-1] == msg(999)
    again.close()


def test_damage_after_start_is_reported_once_by_the_reader(tmp_path: Path) -> None:
    spool = opened(tmp_path)
    spool.extend(msg(i) for i in range(20))
    (path,) = tmp_path.glob("segment-*.log")
    data = bytearray(path.read_bytes())
    data[len(data) // 2] ^= 0xFF
    path.write_bytes(bytes(data))
    first = spool.read_window(100)
    assert first.lost == 1 and len(first.messages) == 19
    again = spool.read_window(100)
    assert again.lost == 0 and again.messages == first.messages
    spool.commit_window()
    assert spool.pending == 0
    spool.close()


def test_a_deleted_segment_is_lost_and_counted_not_fatal(tmp_path: Path) -> None:
    spool = opened(tmp_path)
    spool.extend(msg(i) for i in range(10))
    (path,) = tmp_path.glob("segment-*.log")
    path.unlink()
    window = spool.read_window(100)
    assert window.messages == [] and window.lost == 10
    assert spool.pending == 0
    spool.commit_window()
    # It keeps working afterwards.
    assert spool.extend(msg(i) for i in range(3)) == 3
    assert spool.read_window(10).messages == [msg(0), msg(1), msg(2)]
    spool.close()


def test_size_bound_refuses_but_failed_deliveries_are_forced_in(tmp_path: Path) -> None:
    spool = opened(tmp_path, 1000)
    result = spool.append_many([msg(i) for i in range(100)])
    assert 0 < result.written < 100 and result.error == FULL
    assert spool.refused == 1
    assert not spool.append(msg(100))
    assert spool.append(msg(101), force=True)
    window = spool.read_window(1000).messages
    assert window == [msg(i) for i in range(result.written)] + [msg(101)]
    spool.close()


def test_partial_commit_keeps_the_rest_for_the_next_run(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(spool_module, "SEGMENT_MAX_BYTES", 500)
    spool = opened(tmp_path)
    spool.extend(msg(i) for i in range(30))
    assert len(spool.read_window(20).messages) == 20
    spool.commit_window(12)
    assert spool.pending == 18
    spool.close()
    assert not (tmp_path / "cursor.tmp").exists()
    again = Spool(tmp_path, 1 << 20)
    assert again.open() == 18
    assert again.read_window(100).messages == [msg(i) for i in range(12, 30)]
    again.commit_window()
    assert again.pending == 0 and segments(tmp_path) == []
    again.close()


def test_prepended_records_are_replayed_first_also_after_a_reopen(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(spool_module, "SEGMENT_MAX_BYTES", 500)
    spool = opened(tmp_path)
    spool.extend(msg(i) for i in range(100, 130))
    spool.read_window(5)
    spool.commit_window()  # the cursor is in the middle of its segment now
    spool.read_window(4)  # an open window is dropped by the prepend
    assert spool.prepend_many([msg(i) for i in range(3)]) == (3, None)
    assert spool.pending == 28
    expected = [msg(i) for i in range(3)] + [msg(i) for i in range(105, 130)]
    assert spool.read_window(100).messages == expected
    spool.close()
    again = opened(tmp_path)
    assert again.pending == 28
    assert again.read_window(4).messages == expected[:4]
    again.commit_window()  # past the prepended segment, into the old cursor's
    assert again.read_window(100).messages == expected[4:]
    again.commit_window()
    assert again.pending == 0 and segments(tmp_path) == []
    again.close()


def test_a_crash_between_the_cursor_and_the_rename_of_a_prepend_replays_nothing_twice(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    spool = opened(tmp_path)
    spool.extend(msg(i) for i in range(10))
    spool.read_window(4)
    spool.commit_window()

    class Crash(BaseException):
        pass

    def crash(*args: object, **kwargs: object) -> None:
        raise Crash

    real_replace = os.replace
    monkeypatch.setattr(
        spool_module.os,
        "replace",
        lambda a, b: crash() if str(a).endswith("prepend.tmp") else real_replace(a, b),
    )
    with pytest.raises(Crash):
        spool.prepend_many([msg(-1)])
    assert spool._lock_fd is not None
    os.close(spool._lock_fd)  # the process is gone: so is its lock
    monkeypatch.undo()
    again = opened(tmp_path)
    # The prepended record is lost (the caller still holds it); nothing is replayed twice.
    assert again.read_window(100).messages == [msg(i) for i in range(4, 10)]
    assert not (tmp_path / "prepend.tmp").exists()
    again.close()


def test_prepend_to_an_empty_spool_or_below_segment_one_appends(tmp_path: Path) -> None:
    spool = opened(tmp_path / "empty")
    assert spool.prepend_many([msg(1)]) == (1, None)
    assert spool.read_window(10).messages == [msg(1)]
    spool.close()
    # A spool written before prepends existed numbers its segments from 1.
    legacy = tmp_path / "legacy"
    old = opened(legacy)
    old.extend(msg(i) for i in range(5))
    old.close()
    (legacy / segments(legacy)[0]).rename(legacy / "segment-000000000001.log")
    (legacy / "cursor").write_text("1 0\n")
    spool = opened(legacy)
    assert spool.prepend_many([msg(-1)]) == (1, None)  # behind, not lost
    assert spool.read_window(10).messages == [msg(i) for i in range(5)] + [msg(-1)]
    spool.close()


def test_second_owner_is_refused_with_the_holders_pid(tmp_path: Path) -> None:
    spool = opened(tmp_path)
    code = (
        "import sys; from pathlib import Path; from alphapanda.pipeline.spool import Spool;"
        f"Spool(Path({str(tmp_path)!r}), 1 << 20).open()"
    )
    proc = subprocess.run([sys.executable, "-c", code], capture_output=True, check=False)
    assert proc.returncode != 0
    err = proc.stderr.decode()
    assert "SpoolLocked" in err and str(tmp_path) in err and f"pid {os.getpid()}" in err
    spool.close()
    # Released with its owner: the next one gets it.
    assert subprocess.run([sys.executable, "-c", code], check=False).returncode == 0


def test_stale_lock_of_a_dead_process_is_taken_over(tmp_path: Path) -> None:
    (tmp_path / "lock").write_text("999999\n")  # a pid that holds no flock
    spool = opened(tmp_path)
    assert (tmp_path / "lock").read_text().strip() == str(os.getpid())
    with pytest.raises(SpoolLocked, match=f"pid {os.getpid()}"):
        Spool(tmp_path, 1 << 20).open()  # another open file description: refused too
    spool.close()


def test_disk_full_writes_whole_records_only_and_recovers(tmp_path: Path) -> None:
    with small_filesystem(tmp_path / "fs", 256 * 1024) as fs:
        spool = opened(fs / "spool", 1 << 30)
        ballast = fill(fs, leave_bytes=8 * 1024)
        written = 0
        errors = []
        for batch in range(50):
            # Forced: past the free-space check, into the real ENOSPC of write().
            result = spool.append_many([msg(batch * 100 + i) for i in range(100)], force=True)
            written += result.written
            if result.error:
                errors.append(result.error)
        assert errors and spool.write_errors > 0 and "No space left" in errors[0]
        assert written == spool.pending > 0
        # Every record it said it wrote is readable, nothing torn.
        window = spool.read_window(100_000)
        assert window.lost == 0 and len(window.messages) == written
        spool.commit_window()
        ballast.unlink()  # space returns
        assert spool.append_many([msg(i) for i in range(100)]) == (100, None)
        spool.close()


def test_free_space_floor_refuses_before_the_disk_is_full(tmp_path: Path) -> None:
    with small_filesystem(tmp_path / "fs", 1 << 20) as fs:
        spool = Spool(fs / "spool", 1 << 30, min_free_bytes=900 * 1024)
        spool.open()
        fill(fs, leave_bytes=950 * 1024)
        result = spool.append_many([msg(i) for i in range(2000)])
        assert result.error == LOW_DISK and result.written < 2000
        assert spool.write_errors == 0
        spool.close()
