"""The extension's WAL writer thread against the Python one: the same operations give
byte-identical segments, the same watermark and the same counters."""

from __future__ import annotations

import sys
from pathlib import Path

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from alphapanda.pipeline.hotpath import load_native
from alphapanda.wal.segments import read_watermark, segment_name
from alphapanda.wal.writer import (
    Append,
    Delete,
    NativeWalWriter,
    Op,
    Rotate,
    WalWriter,
    WalWriterThread,
    make_writer,
)

native, why = load_native()
pytestmark = pytest.mark.skipif(native is None, reason=f"extension not built: {why}")

COUNTERS = (
    "error",
    "written_frames",
    "written_bytes",
    "discarded_frames",
    "fsyncs",
    "durable_ns",
    "deleted_segments",
    "taken_bytes",
)


def run(writer: WalWriter, ops: list[Op]) -> dict[str, object]:
    writer.start()
    for op in ops:
        writer.submit(op)
    writer.close()
    counts = {name: getattr(writer, name) for name in COUNTERS}
    # Group commit makes the number of fsyncs depend on timing; one at least, if written.
    counts["fsyncs"] = min(1, int(counts["fsyncs"]))
    return counts


def files(directory: Path) -> dict[str, bytes]:
    return {p.name: p.read_bytes() for p in sorted(directory.iterdir())}


# An operation: ("append", shard, frame) | ("rotate",) | ("delete", how many oldest).
operation = st.one_of(
    st.tuples(st.just("append"), st.integers(0, 255), st.binary(min_size=1, max_size=300)),
    st.tuples(st.just("rotate")),
    st.tuples(st.just("delete"), st.integers(0, 2)),
)


def build(directory: Path, script: list[tuple[object, ...]]) -> list[Op]:
    """``script`` as writer operations on ``directory``: receive times increase, the
    first operation opens a segment, a delete names the oldest closed segments."""
    ops: list[Op] = [Rotate(1)]
    segments = [1]
    ns = 1
    for step in script:
        ns += 1
        if step[0] == "append":
            ops.append(Append(ns, int(step[1]), bytes(step[2])))  # type: ignore[call-overload]
        elif step[0] == "rotate":
            ops.append(Rotate(ns))
            segments.append(ns)
        else:
            closed = segments[:-1]
            gone = closed[: int(step[1])]  # type: ignore[call-overload]
            del segments[: len(gone)]
            paths = tuple(directory / segment_name(first) for first in gone)
            ops.append(Delete(paths, ns))
    return ops


@settings(
    max_examples=60, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture]
)
@given(script=st.lists(operation, max_size=30), fsync_ms=st.sampled_from([0, 20]))
def test_same_operations_give_the_same_files_and_counters(
    tmp_path_factory: pytest.TempPathFactory, script: list[tuple[object, ...]], fsync_ms: int
) -> None:
    assert native is not None
    python_dir = tmp_path_factory.mktemp("python")
    native_dir = tmp_path_factory.mktemp("native")
    python = run(WalWriterThread(python_dir, fsync_ms), build(python_dir, script))
    theirs = run(NativeWalWriter(native_dir, fsync_ms, native), build(native_dir, script))
    assert theirs == python
    assert files(native_dir) == files(python_dir)
    assert read_watermark(native_dir) == read_watermark(python_dir)


def test_a_large_frame_is_written_whole_and_durable_after_close(tmp_path: Path) -> None:
    assert native is not None
    frame = bytes(range(256)) * 4096  # 1 MiB, like a few Kite frames at once
    python_dir, native_dir = tmp_path / "python", tmp_path / "native"
    ops: list[Op] = [Rotate(1), *(Append(n, 2, frame) for n in range(2, 6))]
    python = run(WalWriterThread(python_dir, 20), ops)
    theirs = run(NativeWalWriter(native_dir, 20, native), ops)
    assert theirs == python and theirs["durable_ns"] == 5
    assert files(native_dir) == files(python_dir)


def test_appends_after_close_are_counted_as_discarded(tmp_path: Path) -> None:
    assert native is not None
    writer = NativeWalWriter(tmp_path, 0, native)
    writer.start()
    writer.submit(Rotate(1))
    writer.submit(Append(2, 0, b"kept"))
    writer.close()
    writer.submit(Append(3, 0, b"late"))
    writer.submit(Rotate(4))  # not a frame: not counted
    assert writer.written_frames == 1 and writer.discarded_frames == 1


def test_frames_are_not_copied_and_every_reference_is_released(tmp_path: Path) -> None:
    # The thread holds the caller's bytes object until written, then lets go of it
    # without the interpreter lock; the next call into the extension releases it.
    assert native is not None
    frame = bytes(300_000)
    before = sys.getrefcount(frame)
    writer = NativeWalWriter(tmp_path, 20, native)
    writer.start()
    writer.submit(Rotate(1))
    for ns in range(2, 202):
        writer.submit(Append(ns, 0, frame))
    writer.close()
    assert writer.written_frames == 200  # a call into the extension: references released
    assert sys.getrefcount(frame) == before


def test_make_writer_picks_the_extension_when_given(tmp_path: Path) -> None:
    assert isinstance(make_writer(tmp_path, 20, native=native), NativeWalWriter)
    assert isinstance(make_writer(tmp_path, 20), WalWriterThread)
