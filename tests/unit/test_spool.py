"""Disk spool: order, durability across reopen, torn tails, size bound, cleanup."""

from __future__ import annotations

from pathlib import Path

import pytest

from alphapanda.pipeline import spool as spool_module
from alphapanda.pipeline.producer import EncodedMessage
from alphapanda.pipeline.spool import Spool


def msg(i: int) -> EncodedMessage:
    return EncodedMessage(
        key=str(i % 7).encode(),
        value=b"v" * 50 + str(i).encode(),
        headers=[("schema_version", b"1"), ("source", b"kite")],
        received_at_ns=1_700_000_000_000_000_000 + i,
    )


def tear_last_record(directory: Path) -> None:
    (path,) = directory.glob("segment-*.log")
    path.write_bytes(path.read_bytes()[:-7])  # as a crash mid-write would leave it


def corrupt_last_record(directory: Path) -> None:
    (path,) = directory.glob("segment-*.log")
    data = bytearray(path.read_bytes())
    data[-3] ^= 0xFF  # flip bits inside the last payload: CRC no longer matches
    path.write_bytes(bytes(data))


def segments(directory: Path) -> list[str]:
    return sorted(p.name for p in directory.glob("segment-*.log"))


async def test_replays_in_write_order_across_segments(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(spool_module, "SEGMENT_MAX_BYTES", 1000)
    spool = Spool(tmp_path, 1 << 20)
    assert spool.open() == 0
    assert spool.extend(msg(i) for i in range(100)) == 100
    await spool.sync()
    assert len(segments(tmp_path)) > 3
    seen: list[EncodedMessage] = []
    while spool.pending:
        window = spool.read_window(13)
        assert window
        seen += window
        spool.commit_window()
    assert seen == [msg(i) for i in range(100)]
    assert segments(tmp_path) == []
    spool.close()


async def test_uncommitted_window_is_read_again(tmp_path: Path) -> None:
    spool = Spool(tmp_path, 1 << 20)
    spool.open()
    spool.extend(msg(i) for i in range(10))
    assert spool.read_window(4) == [msg(i) for i in range(4)]
    assert spool.read_window(4) == [msg(i) for i in range(4)]
    spool.commit_window()
    assert spool.read_window(100) == [msg(i) for i in range(4, 10)]
    assert spool.pending == 10 - 4
    spool.close()


async def test_reopen_resumes_after_committed_cursor(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(spool_module, "SEGMENT_MAX_BYTES", 700)
    first = Spool(tmp_path, 1 << 20)
    first.open()
    first.extend(msg(i) for i in range(40))
    first.read_window(15)
    first.commit_window()
    first.read_window(5)  # read but never acked: must come back after a restart
    await first.sync()
    first.close()

    second = Spool(tmp_path, 1 << 20)
    assert second.open() == 25
    assert second.read_window(100) == [msg(i) for i in range(15, 40)]
    second.commit_window()
    second.append(msg(99))
    assert second.read_window(10) == [msg(99)]
    second.close()


async def test_torn_tail_is_cut_off_and_counted(tmp_path: Path) -> None:
    spool = Spool(tmp_path, 1 << 20)
    spool.open()
    spool.extend(msg(i) for i in range(5))
    await spool.sync()
    spool.close()
    tear_last_record(tmp_path)

    reopened = Spool(tmp_path, 1 << 20)
    assert reopened.open() == 4
    assert reopened.corrupt_tails == 1
    reopened.append(msg(5))
    assert reopened.read_window(10) == [msg(0), msg(1), msg(2), msg(3), msg(5)]
    reopened.close()


async def test_corrupt_record_is_not_replayed(tmp_path: Path) -> None:
    spool = Spool(tmp_path, 1 << 20)
    spool.open()
    spool.extend(msg(i) for i in range(3))
    spool.close()
    corrupt_last_record(tmp_path)
    reopened = Spool(tmp_path, 1 << 20)
    assert reopened.open() == 2
    assert reopened.read_window(10) == [msg(0), msg(1)]
    reopened.close()


def test_full_spool_refuses_unless_forced(tmp_path: Path) -> None:
    spool = Spool(tmp_path, 1000)
    spool.open()
    written = spool.extend(msg(i) for i in range(100))
    assert 0 < written < 100
    assert spool.refused == 1
    assert not spool.append(msg(100))
    assert spool.append(msg(101), force=True)
    window = spool.read_window(1000)
    assert window == [msg(i) for i in range(written)] + [msg(101)]
    spool.close()


async def test_partial_commit_keeps_the_rest_for_the_next_run(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(spool_module, "SEGMENT_MAX_BYTES", 500)
    spool = Spool(tmp_path, 1 << 20)
    spool.open()
    spool.extend(msg(i) for i in range(30))
    assert len(spool.read_window(20)) == 20
    spool.commit_window(12)
    assert spool.pending == 18
    await spool.sync()
    spool.close()
    again = Spool(tmp_path, 1 << 20)
    assert again.open() == 18
    assert again.read_window(100) == [msg(i) for i in range(12, 30)]
    again.commit_window()
    assert again.pending == 0 and segments(tmp_path) == []
    again.close()
