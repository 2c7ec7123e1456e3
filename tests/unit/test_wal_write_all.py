"""The WAL writer's writev loop: every byte, in order, whatever the kernel takes per call."""

from __future__ import annotations

import os
from pathlib import Path

import pytest
from hypothesis import given
from hypothesis import strategies as st

from alphapanda.wal import writer
from alphapanda.wal.writer import write_all

pytestmark = pytest.mark.unit


@given(
    buffers=st.lists(st.binary(max_size=300), max_size=40),
    per_call=st.integers(1, 700),
    iov_max=st.integers(1, 5),
)
def test_short_writes_resume_where_they_stopped(
    buffers: list[bytes], per_call: int, iov_max: int
) -> None:
    written = bytearray()

    def short_writev(fd: int, views: list[memoryview]) -> int:
        assert len(views) <= iov_max
        data = b"".join(bytes(v) for v in views)[:per_call]
        written.extend(data)
        return len(data)

    with pytest.MonkeyPatch.context() as patch:
        patch.setattr(writer.os, "writev", short_writev)
        patch.setattr(writer, "WRITEV_MAX", iov_max)
        assert write_all(-1, buffers) == sum(map(len, buffers))
    assert bytes(written) == b"".join(buffers)


def test_a_real_file_gets_the_buffers_joined(tmp_path: Path) -> None:
    path = tmp_path / "segment"
    buffers = [b"head", b"", b"x" * 100_000] * 700  # more buffers than one writev takes
    fd = os.open(path, os.O_WRONLY | os.O_CREAT)
    try:
        assert write_all(fd, buffers) == len(b"".join(buffers))
    finally:
        os.close(fd)
    assert path.read_bytes() == b"".join(buffers)
