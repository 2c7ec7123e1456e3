"""The ``feedkill`` chaos fault: SIGKILL of the feed process at random moments.

Unlike the other faults (which run the feed inside the benchmark's process), this one
needs the feed to be a process of its own: ``alphapanda feed`` is started as a child,
against a private broker and the simulator, and killed with SIGKILL ``kills`` times at
a random moment of its streaming (1.5-6 s after it starts receiving), then started
again at once. Every restart recovers from the WAL. After the last kill the feed runs
once more, the load stops, and the run checks two independent things:

- **against the WAL**: right after each kill, the WAL the killed process left is read
  and decoded (it holds every frame the feed read whose ticks were not all resolved);
  every one of those ticks must be in the topic, exactly once;
- **the volume ledger** (``StreamLedger``, following the topic throughout): no
  duplicate, no reordering per instrument; gaps only where a kill cut a socket (at
  most one per instrument and kill). What the simulator wrote that no feed read is
  ``sent - consumed``: frames still in the socket buffers at each kill instant.
"""

from __future__ import annotations

import asyncio
import os
import random
import re
import shutil
import signal
import sys
import tempfile
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Final

import httpx
import msgspec
from confluent_kafka import Consumer, KafkaError, TopicPartition

from alphapanda.bench.harness import LedgerFigures, SimProcess, StreamLedger
from alphapanda.bench.universe import simulator_csv
from alphapanda.kite.protocol import decode_message
from alphapanda.metrics import catalog
from alphapanda.ops.devstack import DevstackService, free_port
from alphapanda.settings import Settings
from alphapanda.wal.segments import ReadReport, read_wal

TOPIC_PREFIX: Final = "feedkill."
_SAMPLE = re.compile(r"^alphapanda_([a-z0-9_]+)(?:\{[^}]*\})? ([0-9.e+-]+)$", re.M)


@dataclass
class KillRecord:
    """One kill: when, how much the feed had received, what its WAL held."""

    at_seconds: float
    received: int
    wal_frames: int
    wal_ticks: int


@dataclass
class FeedkillResult:
    kills: list[KillRecord]
    sent: int
    consumed: int
    ledger: LedgerFigures
    wal_ticks: int  # distinct ticks found in the WAL across all kills
    missing_from_topic: int  # of those, not in the topic
    duplicates_in_topic: int
    recovered: int  # wal_recovered_total summed over the restarts
    already_published: int
    gaps_over_limit: int  # instruments with more gaps than kills
    notes: list[str] = field(default_factory=list)

    @property
    def passed(self) -> bool:
        return (
            self.missing_from_topic == 0
            and self.duplicates_in_topic == 0
            and self.ledger.duplicates_or_reordered == 0
            and self.ledger.undecodable == 0
            and self.gaps_over_limit == 0
            and self.consumed <= self.sent
        )


class _Feed:
    """``alphapanda feed`` as a child process, its figures read from its /metrics."""

    def __init__(self, env: dict[str, str], log: Path) -> None:
        self._env = env
        self._log = log
        self.proc: asyncio.subprocess.Process | None = None
        self.port = 0

    async def start(self) -> None:
        self.port = free_port()
        env = dict(self._env, ALPHAPANDA_API__PORT=str(self.port))
        with open(self._log, "ab") as log:  # noqa: ASYNC230 - once per start
            self.proc = await asyncio.create_subprocess_exec(
                sys.executable,
                "-m",
                "alphapanda",
                "feed",
                env=env,
                stdout=asyncio.subprocess.DEVNULL,
                stderr=log,
            )

    async def metrics(self) -> dict[str, float]:
        async with httpx.AsyncClient(timeout=2) as client:
            response = await client.get(f"http://127.0.0.1:{self.port}/metrics")
        figures: dict[str, float] = {}
        for name, value in _SAMPLE.findall(response.text):
            figures[name] = figures.get(name, 0.0) + float(value)
        return figures

    async def until(
        self, condition: Callable[[dict[str, float]], bool], what: str, within: float = 120
    ) -> dict[str, float]:
        deadline = time.monotonic() + within
        figures: dict[str, float] = {}
        while time.monotonic() < deadline:
            if self.proc is not None and self.proc.returncode is not None:
                raise RuntimeError(f"the feed exited ({self.proc.returncode}) waiting for {what}")
            try:
                figures = await self.metrics()
            except httpx.HTTPError:
                figures = {}
            if figures and condition(figures):
                return figures
            await asyncio.sleep(0.1)
        raise TimeoutError(f"feedkill: timed out waiting for {what}: {figures}")

    async def kill(self) -> None:
        assert self.proc is not None
        self.proc.send_signal(signal.SIGKILL)
        await self.proc.wait()

    def pause(self) -> None:
        """SIGSTOP: the process holds its sockets but answers nothing (to the database,
        the broker and Kite, like a host cut off from the network)."""
        assert self.proc is not None
        self.proc.send_signal(signal.SIGSTOP)

    async def resume_until_exit(self, within: float = 60) -> int | None:
        """SIGCONT, then its exit code once it exits by itself (None: it did not, and
        was killed)."""
        assert self.proc is not None
        self.proc.send_signal(signal.SIGCONT)
        try:
            async with asyncio.timeout(within):
                return await self.proc.wait()
        except TimeoutError:
            await self.kill()
            return None

    async def stop(self) -> int:
        assert self.proc is not None
        if self.proc.returncode is None:
            self.proc.send_signal(signal.SIGTERM)
            try:
                async with asyncio.timeout(60):
                    await self.proc.wait()
            except TimeoutError:
                self.proc.kill()
                await self.proc.wait()
        return self.proc.returncode or 0


def wal_contents(wal_dir: Path) -> tuple[int, set[tuple[int, int]]]:
    """(frames, {(instrument, volume)}) of the WAL as a killed feed left it."""
    frames = 0
    ticks: set[tuple[int, int]] = set()
    for frame in read_wal(wal_dir, ReadReport()):
        frames += 1
        for tick in decode_message(frame.frame, frame.received_at_ns).ticks:
            if tick.volume_traded is not None:
                ticks.add((tick.instrument_token, tick.volume_traded))
    return frames, ticks


class _Data(msgspec.Struct):
    instrument_token: int
    volume_traded: int | None = None
    last_traded_quantity: int | None = None


class _Event(msgspec.Struct):
    data: _Data


def topic_ticks(bootstrap: str, topic: str) -> tuple[set[tuple[int, int]], int, dict[int, int]]:
    """Distinct (instrument, volume) in ``topic``, how many records repeated one, and
    the volume gaps per instrument (in partition order)."""
    consumer = Consumer(
        {"bootstrap.servers": bootstrap, "group.id": "feedkill-check", "log_level": 2}
    )
    seen: set[tuple[int, int]] = set()
    repeats = 0
    last: dict[int, int] = {}
    gaps: dict[int, int] = {}
    decode = msgspec.json.Decoder(_Event).decode
    try:
        metadata = consumer.list_topics(topic, timeout=30).topics[topic]
        for partition in metadata.partitions:
            low, high = consumer.get_watermark_offsets(TopicPartition(topic, partition), 30)
            if high <= low:
                continue
            consumer.assign([TopicPartition(topic, partition, low)])
            done = False
            while not done:
                for message in consumer.consume(5000, 1.0):
                    error = message.error()
                    if error is not None:
                        if error.code() == KafkaError._PARTITION_EOF:
                            continue
                        raise RuntimeError(str(error))
                    data = decode(message.value() or b"").data
                    token, volume = data.instrument_token, data.volume_traded
                    if volume is not None:
                        repeats += (token, volume) in seen
                        seen.add((token, volume))
                        previous = last.get(token)
                        quantity = data.last_traded_quantity or 0
                        if previous is not None and volume > previous + quantity:
                            gaps[token] = gaps.get(token, 0) + 1
                        last[token] = volume
                    if (message.offset() or 0) >= high - 1:
                        done = True
            consumer.unassign()
    finally:
        consumer.close()
    return seen, repeats, gaps


async def run_feedkill(
    base: Settings,
    *,
    kills: int = 10,
    rate: float = 5000.0,
    seed: int | None = None,
    on_kill: Callable[[KillRecord], None] | None = None,
) -> FeedkillResult:
    """Start a private broker and the simulator, kill the feed ``kills`` times, check."""
    rng = random.Random(seed)
    workdir = Path(tempfile.mkdtemp(prefix="alphapanda-feedkill-"))
    broker = DevstackService("kafka", workdir / "kafka")
    topic = f"{TOPIC_PREFIX}market.ticks"
    feed: _Feed | None = None
    try:
        # Inside the try: a broker that starts too slowly is still stopped below.
        await asyncio.to_thread(broker.start)
        # The simulator's universe unless a CSV is configured.
        instruments_csv = simulator_csv(base)
        async with SimProcess(ticks_per_second=rate) as sim:
            env = {k: v for k, v in os.environ.items() if not k.startswith("ALPHAPANDA_")}
            env.update(
                ALPHAPANDA_KITE__WS_URL=sim.ws_url,
                ALPHAPANDA_KITE__API_KEY=sim.api_key,
                ALPHAPANDA_KITE__ACCESS_TOKEN=sim.access_token,
                ALPHAPANDA_KAFKA__BOOTSTRAP_SERVERS=broker.bootstrap,
                ALPHAPANDA_KAFKA__TOPIC_PREFIX=TOPIC_PREFIX,
                ALPHAPANDA_KAFKA__TOPIC_PARTITIONS="3",
                ALPHAPANDA_FEED__INSTRUMENTS_CSV=str(instruments_csv),
                ALPHAPANDA_FEED__MODE=base.feed.mode,
                ALPHAPANDA_FEED__SPOOL_DIR=str(workdir / "spool"),
                ALPHAPANDA_FEED__WAL_DIR=str(workdir / "wal"),
                ALPHAPANDA_FEED__WAL_FSYNC_MS=str(base.feed.wal_fsync_ms),
                ALPHAPANDA_REDIS__URL=base.redis.url.get_secret_value(),
                ALPHAPANDA_DATABASE__URL=base.database.url.get_secret_value(),
                ALPHAPANDA_METRICS__NAMESPACE="feedkill",
            )
            feed = _Feed(env, workdir / "feed.log")
            ledger = StreamLedger(broker.bootstrap, topic)
            records: list[KillRecord] = []
            in_wal: set[tuple[int, int]] = set()
            recovered = already = 0
            started = time.monotonic()
            ledger_started = False
            for _ in range(kills):
                await feed.start()
                figures = await feed.until(
                    lambda m: m.get(catalog.TICKS_RECEIVED.name, 0) > 0, "ticks to flow"
                )
                if not ledger_started:
                    ledger.start()
                    ledger_started = True
                await asyncio.sleep(rng.uniform(1.5, 6.0))
                figures = await feed.metrics()
                recovered += int(figures.get(catalog.WAL_RECOVERED.name, 0))
                already += int(figures.get(catalog.WAL_ALREADY_PUBLISHED.name, 0))
                await feed.kill()
                frames, ticks = await asyncio.to_thread(wal_contents, workdir / "wal")
                in_wal |= ticks
                record = KillRecord(
                    time.monotonic() - started,
                    int(figures.get(catalog.TICKS_RECEIVED.name, 0)),
                    frames,
                    len(ticks),
                )
                records.append(record)
                if on_kill is not None:
                    on_kill(record)
            # The last run: recover, stream a little, stop the load, drain, stop.
            await feed.start()
            figures = await feed.until(
                lambda m: m.get(catalog.TICKS_RECEIVED.name, 0) > 0, "ticks after the last kill"
            )
            await asyncio.sleep(2.0)
            await sim.set_rate(0)
            figures = await feed.until(
                lambda m: (
                    m.get(catalog.TICKS_IN_FLIGHT.name, 1) == 0
                    and m.get(catalog.TICKS_SPOOLED.name, 1) == 0
                ),
                "the feed to drain",
            )
            recovered += int(figures.get(catalog.WAL_RECOVERED.name, 0))
            already += int(figures.get(catalog.WAL_ALREADY_PUBLISHED.name, 0))
            exit_code = await feed.stop()
            stats = await sim.stats()
            sent = int(stats["total_ticks_sent"])
            # The ledger has caught up once its count stops moving (at most a minute).
            deadline = time.monotonic() + 60
            consumed, still_since = -1, time.monotonic()
            while time.monotonic() < deadline and time.monotonic() - still_since < 3.0:
                now_consumed = ledger.figures().consumed
                if now_consumed != consumed:
                    consumed, still_since = now_consumed, time.monotonic()
                await asyncio.sleep(0.2)
            ledger.stop()
            figures_ledger = ledger.figures()
            in_topic, repeats, gaps_per_instrument = await asyncio.to_thread(
                topic_ticks, broker.bootstrap, topic
            )
            result = FeedkillResult(
                kills=records,
                sent=sent,
                consumed=figures_ledger.consumed,
                ledger=figures_ledger,
                wal_ticks=len(in_wal),
                missing_from_topic=len(in_wal - in_topic),
                duplicates_in_topic=repeats,
                recovered=recovered,
                already_published=already,
                gaps_over_limit=sum(1 for n in gaps_per_instrument.values() if n > kills),
            )
            if exit_code != 0:
                result.notes.append(f"the last feed exited with {exit_code}")
            return result
    finally:
        if feed is not None and feed.proc is not None and feed.proc.returncode is None:
            feed.proc.kill()
            await feed.proc.wait()
        try:
            await asyncio.to_thread(broker.stop)
        finally:
            shutil.rmtree(workdir, ignore_errors=True)


def summary_lines(result: FeedkillResult) -> list[str]:
    lines = [
        f"feedkill: {len(result.kills)} kills; simulator sent {result.sent:,}, "
        f"consumed {result.consumed:,} ({result.sent - result.consumed:,} written to sockets "
        "after the feed's last read at a kill)",
        f"  against the WAL: {result.wal_ticks:,} ticks in the killed feeds' WALs, "
        f"{result.missing_from_topic} missing from the topic, "
        f"{result.duplicates_in_topic} duplicated in the topic",
        f"  recovery: wal_recovered={result.recovered:,} "
        f"wal_already_published={result.already_published:,}",
        f"  ledger: gaps {result.ledger.gaps} (instruments over {len(result.kills)} gaps: "
        f"{result.gaps_over_limit}), duplicates or reordered "
        f"{result.ledger.duplicates_or_reordered}, undecodable {result.ledger.undecodable}",
        *result.notes,
        "PASS" if result.passed else "FAIL",
    ]
    return lines
