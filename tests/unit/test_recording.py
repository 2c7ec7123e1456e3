"""The recording file format: round trip, partial tails, corruption, writer bounds."""

from __future__ import annotations

import asyncio
import io
import json
from pathlib import Path

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from alphapanda.kite.protocol import decode_message
from alphapanda.recording import (
    MAGIC,
    MAGIC_V1,
    RECORD_HEADER,
    FrameRecord,
    RecordingError,
    RecordingReader,
    RecordingWriter,
    encode_header,
    encode_record,
    encode_record_v1,
    parse_header,
    parse_record,
    read_records,
)
from alphapanda.replay import replay_to_stdout
from alphapanda.settings import Settings

FRAMES = [
    (1_700_000_000_000_000_000 + i * 1_000_000, bytes([i % 256]) * (i * 7 + 1)) for i in range(50)
]


def _write_file(path: Path, frames: list[tuple[int, bytes]], meta: dict[str, object]) -> bytes:
    data = encode_header(meta) + b"".join(encode_record(ts, frame) for ts, frame in frames)
    path.write_bytes(data)
    return data


def test_round_trip_keeps_every_frame_and_time(tmp_path: Path) -> None:
    path = tmp_path / "r.aprec"
    _write_file(path, FRAMES, {"mode": "full", "instruments": 3})
    reader = RecordingReader(path)
    records = list(reader)
    assert reader.meta == {"mode": "full", "instruments": 3}
    assert records == [FrameRecord(ts, frame) for ts, frame in FRAMES]
    assert reader.tail == "clean"
    assert reader.records == len(FRAMES)
    assert reader.offset == path.stat().st_size


@pytest.mark.parametrize("cut", [1, 5, RECORD_HEADER.size, RECORD_HEADER.size + 3])
def test_reader_stops_cleanly_at_a_partial_tail(tmp_path: Path, cut: int) -> None:
    path = tmp_path / "r.aprec"
    whole = _write_file(path, FRAMES, {})
    last = encode_record(*FRAMES[-1])
    path.write_bytes(whole[: len(whole) - len(last) + cut])
    reader = RecordingReader(path)
    records = list(reader)
    assert records == [FrameRecord(ts, frame) for ts, frame in FRAMES[:-1]]
    assert reader.tail == "partial"


def test_reader_continues_after_the_file_grows(tmp_path: Path) -> None:
    # A file read while being written: the first pass stops at the partial record,
    # the next pass picks up from there once the rest has arrived.
    path = tmp_path / "r.aprec"
    whole = _write_file(path, FRAMES, {})
    path.write_bytes(whole[:-10])
    reader = RecordingReader(path)
    first = list(reader)
    assert reader.tail == "partial" and len(first) == len(FRAMES) - 1
    path.write_bytes(whole)
    rest = list(reader)
    assert rest == [FrameRecord(*FRAMES[-1])]
    assert reader.tail == "clean"


def test_corrupt_byte_in_the_middle_skips_only_that_record(tmp_path: Path) -> None:
    path = tmp_path / "r.aprec"
    header = encode_header({})
    records = [encode_record(ts, frame) for ts, frame in FRAMES]
    victim = 25
    start = len(header) + sum(len(r) for r in records[:victim])
    whole = bytearray(header + b"".join(records))
    whole[start + RECORD_HEADER.size + 2] ^= 0xFF  # inside record 25's frame
    path.write_bytes(bytes(whole))
    reader = RecordingReader(path)
    got = list(reader)
    assert got == [FrameRecord(ts, frame) for ts, frame in FRAMES[:victim] + FRAMES[victim + 1 :]]
    assert reader.tail == "clean"
    assert [(d.offset, d.length, d.records) for d in reader.damage] == [
        (start, len(records[victim]), 1)
    ]


def test_version_1_corruption_still_raises_with_its_offset(tmp_path: Path) -> None:
    path = tmp_path / "r.aprec"
    data = encode_header({}, magic=MAGIC_V1) + b"".join(
        encode_record_v1(ts, frame) for ts, frame in FRAMES
    )
    path.write_bytes(data)
    assert [(r.received_at_ns, r.frame) for r in RecordingReader(path)] == FRAMES
    whole = bytearray(data)
    whole[len(whole) // 2] ^= 0xFF
    path.write_bytes(bytes(whole))
    with pytest.raises(RecordingError, match="offset"):
        list(RecordingReader(path))


def test_not_a_recording_is_rejected(tmp_path: Path) -> None:
    path = tmp_path / "x.bin"
    path.write_bytes(b"PK\x03\x04 something else entirely")
    with pytest.raises(RecordingError, match="magic"):
        RecordingReader(path)
    assert parse_header(MAGIC[:3]) is None  # too short to tell: wait for more
    with pytest.raises(RecordingError):
        parse_header(b"XY")


def test_torn_length_field_is_caught_by_the_crc() -> None:
    record = bytearray(encode_record(123, b"abcdef"))
    record[7] ^= 0x01  # the length now says 7: checksum covers the header too
    with pytest.raises(RecordingError, match="checksum"):
        parse_record(bytes(record) + b"z", 0)


@settings(max_examples=200, deadline=None)
@given(
    frames=st.lists(st.tuples(st.integers(0, 2**64 - 1), st.binary(max_size=300)), max_size=20),
    cut=st.integers(0, 10_000),
)
def test_any_prefix_parses_to_a_prefix_of_the_records(
    frames: list[tuple[int, bytes]], cut: int
) -> None:
    body = b"".join(encode_record(ts, frame) for ts, frame in frames)
    data = body[: min(cut, len(body))]
    offset, got = 0, []
    while (parsed := parse_record(data, offset)) is not None:
        record, offset = parsed
        got.append((record.received_at_ns, record.frame))
    assert got == frames[: len(got)]
    # Everything before the stop point is whole records; what follows is one partial one.
    assert data[:offset] == b"".join(encode_record(ts, frame) for ts, frame in got)
    if len(got) < len(frames):
        assert len(data) - offset < len(encode_record(*frames[len(got)]))


async def test_writer_writes_a_readable_file_and_refuses_to_overwrite(tmp_path: Path) -> None:
    path = tmp_path / "w.aprec"
    writer = RecordingWriter(path, {"mode": "quote"}, flush_interval=0.01)
    async with asyncio.TaskGroup() as tg:
        tg.create_task(writer.run())
        for ts, frame in FRAMES[:20]:
            writer.on_frame(frame, ts)
        # Readable while still open: poll until the flusher has written the frames.
        deadline = asyncio.get_running_loop().time() + 5
        while True:
            if path.exists() and len(read_records(path)) == 20:
                break
            assert asyncio.get_running_loop().time() < deadline, "writer never flushed"
            await asyncio.sleep(0.01)
        for ts, frame in FRAMES[20:]:
            writer.on_frame(frame, ts)
        writer.stop()
    assert read_records(path) == [FrameRecord(ts, frame) for ts, frame in FRAMES]
    assert writer.frames == len(FRAMES) and writer.dropped_frames == 0
    assert writer.bytes_written == path.stat().st_size
    with pytest.raises(FileExistsError):
        RecordingWriter(path).open()


async def test_writer_bounds_its_memory_and_counts_what_it_left_out(tmp_path: Path) -> None:
    writer = RecordingWriter(tmp_path / "b.aprec", max_pending_bytes=1000)
    writer.open()
    for i in range(10):
        writer.on_frame(b"x" * 300, i)  # nothing flushes: no run() task
    assert writer.frames == 3  # 3 records of 316 B fit under 1000, the 4th does not
    assert writer.dropped_frames == 7
    figures = {s.name: s.value for s in writer.samples()}
    assert figures["recorder_dropped_frames_total"] == 7
    writer.stop()
    await writer.run()
    assert len(read_records(tmp_path / "b.aprec")) == 3


SAMPLE = Path(__file__).resolve().parents[1] / "data" / "sample_full.aprec"


def test_committed_sample_stays_readable_and_is_a_complete_ledger() -> None:
    # tests/data/sample_full.aprec was made by `alphapanda record` from the simulator
    # (11 instruments, full mode): format version 1 must stay readable as is.
    reader = RecordingReader(SAMPLE)
    records = list(reader)
    assert reader.tail == "clean" and reader.meta["mode"] == "full"
    assert "access_token" not in SAMPLE.read_bytes().decode("latin-1")
    ticks = [t for r in records for t in decode_message(r.frame, r.received_at_ns).ticks]
    assert len(ticks) == 150 and {t.mode for t in ticks} == {"full"}
    assert all(
        t.received_at_ns == r.received_at_ns
        for r in records
        for t in decode_message(r.frame, r.received_at_ns).ticks
    )
    volume: dict[int, int] = {}
    for tick in ticks:
        if tick.volume_traded is None or tick.last_traded_quantity is None:
            continue  # the index carries no volume
        previous = volume.get(tick.instrument_token, 0)
        assert tick.volume_traded == previous + tick.last_traded_quantity
        volume[tick.instrument_token] = tick.volume_traded


async def test_replay_to_stdout_prints_one_event_per_tick() -> None:
    out = io.BytesIO()
    source, sink = await replay_to_stdout(SAMPLE, Settings(_env_file=None), out)  # type: ignore[call-arg]
    lines = out.getvalue().splitlines()
    assert len(lines) == sink.lines == source.stats.ticks == 150
    assert source.stats.frames == len(read_records(SAMPLE))
    events = [json.loads(line) for line in lines]
    assert {e["event_type"] for e in events} == {"market_tick"}
    assert len({e["id"] for e in events}) == 150
