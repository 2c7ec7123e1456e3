#!/usr/bin/env python3
"""What the write-ahead log costs a tick's path, part by part, at Kite's cadence.

A tick's latency can only grow by what the WAL does on the event loop's thread (log
the frame, count its ticks, settle their acks, delete resolved segments) plus the time
the WAL's writer thread holds the interpreter lock while the loop wants it. This runs
the feed's ``WriteAheadLog`` with its real writer thread on a real directory and times
both, per frame of N full-mode packets (~550 KB at 3,000):

- loop thread, per frame: ``append`` + ``decoded``, then ``resolved`` for its acks in
  the batches the producer settles them in, then ``collect``;
- writer thread, per wake-up: thread CPU time of writing (framing, CRC, ``write``) and of
  each ``fsync``. Thread CPU includes work done without the lock (the CRC of a large
  frame and the system calls release it), so it is an upper bound on how long the loop
  can wait for the writer.

Between frames the loop thread spins in Python, as a busy event loop would, and notes
every stall longer than 50 µs: the writer taking the interpreter lock shows up there
(and so does the operating system giving the core to another process, which is why
``--no-wal`` runs the same spin without the WAL, for comparison side by side).

End-to-end p99s on a shared machine move by tens of milliseconds between two runs of
one configuration; these figures are per frame and per stall.

``--writer python`` runs the Python writer thread (the fallback), ``--writer native``
the extension's (what the native hot path uses; it never takes the interpreter lock, so
the per-write timings are not available and only its total CPU, read from
``/proc/self/task``, is printed).

Usage: ``python scripts/profile_wal_path.py [--instruments N] [--frames-per-second F]
[--seconds S] [--dir PATH] [--writer {native,python}] [--no-wal]``. A diagnostic: run
it side by side with ``--no-wal``.
"""

from __future__ import annotations

import argparse
import os
import statistics
import tempfile
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

from alphapanda.bench.decode import build_full_frames
from alphapanda.pipeline.hotpath import load_native
from alphapanda.wal.log import WriteAheadLog
from alphapanda.wal.writer import WalWriterThread

ACK_BATCH = 256  # acks settled per producer poll, about what a large frame gives


def _timed_thread_cpu(samples: list[float], method: Callable[..., Any]) -> Callable[..., Any]:
    def wrapper(*args: Any, **kwargs: Any) -> Any:
        start = time.thread_time()
        try:
            return method(*args, **kwargs)
        finally:
            samples.append(time.thread_time() - start)

    return wrapper


def _quantiles(values: list[float], scale: float) -> str:
    if not values:
        return "none"
    ordered = sorted(values)
    p99 = ordered[min(len(ordered) - 1, int(len(ordered) * 0.99))]
    return (
        f"p50 {statistics.median(ordered) * scale:,.1f}  p99 {p99 * scale:,.1f}  "
        f"max {ordered[-1] * scale:,.1f}"
    )


def _spin_until(deadline: float, stalls: list[float]) -> None:
    """Busy Python until ``deadline`` (perf_counter), noting every gap over 50 µs."""
    clock = time.perf_counter
    last = clock()
    while last < deadline:
        now = clock()
        if now - last > 50e-6:
            stalls.append(now - last)
        last = now


def _writer_thread_cpu() -> float:
    """CPU seconds (user + system) of this process's ``wal-writer`` thread so far."""
    ticks = os.sysconf("SC_CLK_TCK")
    for task in Path("/proc/self/task").iterdir():
        if (task / "comm").read_text().strip() == "wal-writer":
            fields = (task / "stat").read_text().rsplit(")", 1)[1].split()
            return (int(fields[11]) + int(fields[12])) / ticks
    return 0.0


def run(
    directory: Path,
    instruments: int,
    frames_per_second: float,
    seconds: float,
    wal_on: bool,
    writer_impl: str,
) -> None:
    frames = build_full_frames(instruments * 4, instruments)
    native = None
    if writer_impl == "native":
        native, why = load_native()
        if native is None:
            raise SystemExit(f"--writer native: the extension cannot be used ({why})")
    wal = WriteAheadLog(directory, fsync_ms=20, native=native)
    writes: list[float] = []
    syncs: list[float] = []
    writer = wal._thread
    if isinstance(writer, WalWriterThread):
        writer._execute = _timed_thread_cpu(writes, writer._execute)  # type: ignore[method-assign]
        writer._sync = _timed_thread_cpu(syncs, writer._sync)  # type: ignore[method-assign]
    wal.open()
    loop_log: list[float] = []
    loop_acks: list[float] = []
    loop_collect: list[float] = []
    stalls: list[float] = []
    interval = 1 / frames_per_second
    count = int(seconds * frames_per_second)
    wall0 = time.perf_counter()
    for i in range(count):
        if not wal_on:
            _spin_until(wall0 + (i + 1) * interval, stalls)
            continue
        frame = frames[i % len(frames)]
        start = time.perf_counter()
        received = wal.append(0, frame)
        wal.decoded(received, instruments)
        loop_log.append(time.perf_counter() - start)
        # The frame's acks, in the producer's batches (one list per poll).
        start = time.perf_counter()
        for first in range(0, instruments, ACK_BATCH):
            wal.resolved([received] * min(ACK_BATCH, instruments - first))
        loop_acks.append(time.perf_counter() - start)
        start = time.perf_counter()
        wal.collect()
        loop_collect.append(time.perf_counter() - start)
        _spin_until(wall0 + (i + 1) * interval, stalls)
    wall = time.perf_counter() - wall0
    # The native thread is named for the OS; the Python one is timed around its work.
    writer_cpu = _writer_thread_cpu() if writer_impl == "native" else sum(writes) + sum(syncs)
    wal.close()
    spun = f"loop thread stalls over 50 µs while spinning (µs): {_quantiles(stalls, 1e6)}"
    over_ms = sum(1 for s in stalls if s > 1e-3)
    if not wal_on:
        print(f"no WAL: {wall:.1f} s of spinning")
        print(f"{spun}; {len(stalls)} stalls, {over_ms} over 1 ms")
        return
    print(
        f"WAL path: {count} frames of {instruments:,} full packets "
        f"({len(frames[0]) / 1e3:,.0f} KB), {frames_per_second:g} frames/s for {wall:.1f} s, "
        f"fsync every 20 ms, in {directory}, {writer_impl} writer thread"
    )
    print(f"loop thread, append + decoded per frame (µs):  {_quantiles(loop_log, 1e6)}")
    print(f"loop thread, acks settled per frame (µs):      {_quantiles(loop_acks, 1e6)}")
    print(f"loop thread, collect per frame (µs):           {_quantiles(loop_collect, 1e6)}")
    if writer_impl == "python":
        print(f"writer thread CPU per write (µs):              {_quantiles(writes, 1e6)}")
        print(f"writer thread CPU per fsync (µs):              {_quantiles(syncs, 1e6)}")
    print(f"{spun}; {len(stalls)} stalls, {over_ms} over 1 ms")
    per_frame = (sum(loop_log) + sum(loop_acks) + sum(loop_collect)) / count
    print(
        f"loop thread {per_frame * 1e6 / instruments:.2f} µs per tick of the WAL's own work; "
        f"writer thread {writer_cpu / wall * 100:.1f} % of a core"
    )


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--instruments", type=int, default=3000)
    parser.add_argument("--frames-per-second", type=float, default=10.0)
    parser.add_argument("--seconds", type=float, default=20.0)
    parser.add_argument("--dir", type=Path, default=None, help="default: a temporary directory")
    parser.add_argument("--no-wal", action="store_true", help="only spin (the control run)")
    parser.add_argument(
        "--writer",
        choices=("native", "python"),
        default="native" if load_native()[0] is not None else "python",
        help="which WAL writer thread (default: native when the extension is built)",
    )
    args = parser.parse_args()
    options = (
        args.instruments,
        args.frames_per_second,
        args.seconds,
        not args.no_wal,
        args.writer,
    )
    if args.dir is not None:
        args.dir.mkdir(parents=True, exist_ok=True)
        run(args.dir, *options)
        return
    with tempfile.TemporaryDirectory(prefix="alphapanda-wal-", dir=".") as tmp:
        run(Path(tmp), *options)


if __name__ == "__main__":
    main()
