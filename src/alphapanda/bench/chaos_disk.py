"""Chaos faults of the feed's own disk and process (see ``alphapanda.bench.chaos``).

=================  ======================================================================
``diskfull``       the spool's filesystem (a small tmpfs the run mounts, as root) fills
                   while the broker is away; ticks back up (``block``); space returns,
                   the broker returns, everything is replayed
``spoolcorrupt``   the broker is away, the feed spools, stops; bytes are flipped inside
                   a spool segment; a new feed replays the rest and counts what was lost
                   as ``spool_corrupt``
``twoprocs``       a second process (``alphapanda replay --to kafka``) is started on the
                   live feed's spool directory while it spools: it must exit 2 naming the
                   directory and the owner's pid, and take nothing
``flap``           the broker is SIGSTOPped beyond ``message.timeout.ms`` and resumed,
                   several times (per-instrument order is checked by the ledger)
``fatal``          a fatal producer error is injected at the producer boundary: /health
                   503, everything spooled, the feed exits with a failure; a new feed
                   replays the spool
=================  ======================================================================
"""

from __future__ import annotations

import asyncio
import os
import subprocess
import sys
from pathlib import Path
from typing import TYPE_CHECKING, Any, Final

from confluent_kafka import KafkaError

from alphapanda.recording import encode_header

if TYPE_CHECKING:
    from alphapanda.bench.chaos import _Run

# The tmpfs the spool lives on when ``diskfull`` is among the faults.
SPOOL_FS_BYTES: Final = 128 << 20
# The spool's own bound in a chaos run: well inside that tmpfs.
SPOOL_MAX_BYTES: Final = 48 << 20
# message.timeout.ms of a chaos run: short, so ``flap`` outlasts it.
MESSAGE_TIMEOUT_MS: Final = 3000


def mount_spool_fs(path: Path) -> bool:
    """Mount a small tmpfs at ``path`` (root only); ``False`` if it cannot."""
    path.mkdir(parents=True, exist_ok=True)
    if os.geteuid() != 0:
        return False
    done = subprocess.run(
        ["mount", "-t", "tmpfs", "-o", f"size={SPOOL_FS_BYTES}", "tmpfs", str(path)],
        capture_output=True,
        check=False,
    )
    return done.returncode == 0


def unmount_spool_fs(path: Path) -> None:
    subprocess.run(["umount", "-l", str(path)], capture_output=True, check=False)


def _fill(directory: Path, leave_bytes: int) -> Path:
    ballast = directory / "ballast"
    stat = os.statvfs(directory)
    free = stat.f_bavail * stat.f_frsize
    with ballast.open("ab") as f:
        try:
            f.write(b"\0" * max(0, free - leave_bytes))
        except OSError:
            pass
    return ballast


async def diskfull(run: _Run, options: dict[str, Any]) -> str:
    spool_dir = run.settings.feed.spool_dir
    if not run.spool_fs_mounted:
        raise RuntimeError("diskfull needs the spool on a small tmpfs (run as root)")
    feed = run.feed
    errors_before = feed.spool.write_errors + feed.spool.refused
    ballast = await asyncio.to_thread(_fill, spool_dir, 256 * 1024)
    await asyncio.to_thread(run.broker.kill)
    try:
        await run.until(
            lambda: feed.spool.write_errors + feed.spool.refused > errors_before + 3,
            "the spool to run out of space",
            60,
        )
        await run.until(
            lambda: feed.publisher.core.spool_problem is not None, "spool unavailable", 30
        )
        reasons = feed.readiness()[1]
        await asyncio.sleep(2)  # the feed holds on (block) while the disk is full
        backed_up = feed.accounting.buffered
    finally:
        await asyncio.to_thread(ballast.unlink)
    await run.until(lambda: feed.publisher.core.spool_problem is None, "the spool to recover", 60)
    await asyncio.to_thread(run.broker.start)
    await run.until(lambda: not feed.publisher.spooling, "spool replayed", 180)
    why = next((r for r in reasons if "disk spool" in r), "?")
    return f"disk full ({why[:60]}); {backed_up} ticks held in the buffer; recovered"


async def spoolcorrupt(run: _Run, options: dict[str, Any]) -> str:
    acct = run.feed.accounting
    before = acct.spool_written
    await asyncio.to_thread(run.broker.kill)
    await run.until(lambda: acct.spool_written > before + 3000, "ticks spooled", 60)
    await run.stop_feed()
    spool_dir = run.settings.feed.spool_dir
    segments = list(spool_dir.glob("segment-*.log"))
    if not segments:
        raise RuntimeError("no spool segment to corrupt")
    # The biggest: what failed at the stop sits in a small segment ahead of it.
    segment = max(segments, key=lambda p: p.stat().st_size)
    data = bytearray(segment.read_bytes())
    flipped = []
    for fraction in (0.25, 0.5, 0.75):
        position = int(len(data) * fraction)
        data[position] ^= 0xFF
        flipped.append(position)
    segment.write_bytes(bytes(data))
    await asyncio.to_thread(run.broker.start)
    feed = await run.start_feed()
    lost = feed.spool.lost_at_open
    await run.until(lambda: not feed.publisher.spooling, "spool replayed", 180)
    return (
        f"{len(flipped)} bytes flipped in {segment.name}; {lost} records lost and "
        f"counted as spool_corrupt, the rest replayed"
    )


async def twoprocs(run: _Run, options: dict[str, Any]) -> str:
    feed = run.feed
    acct = feed.accounting
    before = acct.spool_written
    await asyncio.to_thread(run.broker.kill)
    try:
        await run.until(lambda: acct.spool_written > before + 500, "ticks spooled", 60)
        pending = feed.spool.pending
        recording = run.workdir / "empty.aprec"
        recording.write_bytes(encode_header({"mode": "full"}))
        env = dict(os.environ)
        env["ALPHAPANDA_FEED__SPOOL_DIR"] = str(run.settings.feed.spool_dir)
        env["ALPHAPANDA_KAFKA__BOOTSTRAP_SERVERS"] = run.settings.kafka.bootstrap_servers
        second = await asyncio.to_thread(
            subprocess.run,
            [sys.executable, "-m", "alphapanda", "replay", str(recording), "--to", "kafka"],
            capture_output=True,
            env=env,
            timeout=120,
            check=False,
        )
        message = second.stderr.decode(errors="replace")
        if second.returncode != 2 or f"pid {os.getpid()}" not in message:
            raise RuntimeError(
                f"second process exited {second.returncode}, expected 2 naming pid "
                f"{os.getpid()}: {message[-300:]}"
            )
        if feed.spool.pending < pending:
            raise RuntimeError("the second process took records from the live spool")
    finally:
        await asyncio.to_thread(run.broker.start)
    await run.until(lambda: not feed.publisher.spooling, "spool replayed", 180)
    return f"second process refused (exit 2, names pid {os.getpid()}); live spool untouched"


async def flap(run: _Run, options: dict[str, Any]) -> str:
    hold = 1.5 * run.settings.kafka.message_timeout_ms / 1000
    for _ in range(3):
        await asyncio.to_thread(run.broker.pause)
        try:
            await asyncio.sleep(hold)
        finally:
            await asyncio.to_thread(run.broker.resume)
        await asyncio.sleep(1.0)
    await run.until(lambda: not run.feed.publisher.spooling, "spool replayed", 180)
    return f"3 x {hold:.1f} s SIGSTOP (message.timeout.ms {run.settings.kafka.message_timeout_ms})"


async def fatal(run: _Run, options: dict[str, Any]) -> str:
    feed = run.feed
    producer = feed.producer
    # What librdkafka's error callback reports when the idempotent producer is fenced.
    producer._error(KafkaError(KafkaError._FATAL, "injected fatal error (chaos)", fatal=True))
    await run.until(lambda: feed.lifecycle.unhealthy is not None, "unhealthy", 10)
    failure = await run.stop_feed(expect_failure=True)
    if failure is None:
        raise RuntimeError("the feed did not fail after a fatal producer error")
    spooled = feed.accounting.spooled
    replacement = await run.start_feed()
    await run.until(lambda: not replacement.publisher.spooling, "spool replayed", 180)
    return f"/health 503, exit with failure, {spooled} ticks spooled and replayed by a new feed"
