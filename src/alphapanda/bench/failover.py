"""The ``failover`` chaos faults: the active feed of a hot-standby group dies.

Two ``alphapanda feed`` processes in one group (warm standby) stream from the simulator
into the broker of the settings (a topic prefix of their own). ``kills`` times, the
active one is hit at a random moment; the benchmark measures how long the other takes
to publish (from the fault to its first published tick, read from its /metrics every
20 ms, so the figure is exact to that), then restarts the hit one as the new standby.
The volume ledger follows the topic (read_committed) throughout: gaps are ticks missing
across takeovers, duplicates or reordering would be the fencing failing.

``failover`` SIGKILLs the active: the operating system closes its database session at
once, which frees the lease. ``failover-pause`` SIGSTOPs it instead: its sockets stay
open and nothing answers on them, which is what the database, the broker and Kite see of
a host cut off from the network, so the lease is freed only when the database ends the
idle session (``ALPHAPANDA_HA__LEASE_MS`` after the last renewal). After the takeover the
paused one is resumed and must exit by itself, deposed (exit code 75), without a record
a read_committed consumer sees; then it is restarted as the standby.
"""

from __future__ import annotations

import asyncio
import os
import random
import shutil
import tempfile
import time
import uuid
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path

from alphapanda.bench.feedkill import _Feed
from alphapanda.bench.harness import LedgerFigures, SimProcess, StreamLedger
from alphapanda.bench.universe import simulator_csv
from alphapanda.ha.controller import EXIT_DEPOSED
from alphapanda.settings import Settings

#: The faults: SIGKILL of the active, or SIGSTOP (resumed after the takeover).
KILL = "failover"
PAUSE = "failover-pause"


@dataclass
class Takeover:
    """One fault of the active and what it cost."""

    killed: str
    to_active_seconds: float  # fault -> the standby reports itself active
    to_publish_seconds: float  # fault -> the standby's first published tick
    gaps: int  # ledger gaps that appeared around this takeover
    # failover-pause: the paused active's exit code once resumed (75: deposed; None:
    # it did not exit within a minute and was killed).
    resumed_exit: int | None = None


@dataclass
class FailoverResult:
    fault: str
    lease_ms: int
    takeovers: list[Takeover]
    ledger: LedgerFigures
    sent: int
    # Instruments whose consumed count differs from what the simulator sent: token ->
    # (sent, consumed). Catches what the volume ledger cannot see: indices carry no
    # volume, so a lost or repeated index tick makes no gap.
    miscounted: dict[int, tuple[int, int]] = field(default_factory=dict)
    notes: list[str] = field(default_factory=list)

    @property
    def passed(self) -> bool:
        return (
            not self.miscounted
            and self.ledger.duplicates_or_reordered == 0
            and self.ledger.undecodable == 0
            and self.ledger.gaps == 0
            and all(t.to_publish_seconds <= 3.0 for t in self.takeovers)
            and all(t.resumed_exit == EXIT_DEPOSED for t in self.takeovers if self.fault == PAUSE)
        )


def _group_env(
    base: Settings, sim: SimProcess, prefix: str, group: str, namespace: str
) -> dict[str, str]:
    """The environment of a feed process in hot-standby ``group`` streaming from ``sim``."""
    env = {k: v for k, v in os.environ.items() if not k.startswith("ALPHAPANDA_")}
    env.update(
        ALPHAPANDA_KITE__WS_URL=sim.ws_url,
        ALPHAPANDA_KITE__API_KEY=sim.api_key,
        ALPHAPANDA_KITE__ACCESS_TOKEN=sim.access_token,
        ALPHAPANDA_KAFKA__BOOTSTRAP_SERVERS=base.kafka.bootstrap_servers,
        ALPHAPANDA_KAFKA__TOPIC_PREFIX=prefix,
        ALPHAPANDA_KAFKA__TOPIC_PARTITIONS="3",
        ALPHAPANDA_FEED__INSTRUMENTS_CSV=str(simulator_csv(base)),
        ALPHAPANDA_FEED__MODE=base.feed.mode,
        ALPHAPANDA_REDIS__URL=base.redis.url.get_secret_value(),
        ALPHAPANDA_DATABASE__URL=base.database.url.get_secret_value(),
        ALPHAPANDA_METRICS__NAMESPACE=namespace,
        ALPHAPANDA_HA__GROUP=group,
        # The lease and the standby's poll as the bench was told (they set the
        # takeover time after a pause).
        ALPHAPANDA_HA__LEASE_MS=str(base.ha.lease_ms),
        ALPHAPANDA_HA__POLL_MS=str(base.ha.poll_ms),
    )
    return env


async def _figure(feed: _Feed, name: str) -> float:
    try:
        return (await feed.metrics()).get(name, 0.0)
    except Exception:
        return 0.0


async def run_failover(
    base: Settings,
    *,
    kills: int = 10,
    rate: float = 5000.0,
    seed: int | None = None,
    fault: str = KILL,
    on_takeover: Callable[[Takeover], None] | None = None,
) -> FailoverResult:
    if fault not in (KILL, PAUSE):
        raise ValueError(f"unknown failover fault {fault!r}")
    rng = random.Random(seed)
    workdir = Path(tempfile.mkdtemp(prefix="alphapanda-failover-"))
    run = uuid.uuid4().hex[:8]
    prefix = f"failover.{run}."
    topic = f"{prefix}market.ticks"
    bootstrap = base.kafka.bootstrap_servers
    feeds: dict[str, _Feed] = {}
    try:
        async with SimProcess(ticks_per_second=rate) as sim:
            env = _group_env(base, sim, prefix, f"failover-{run}", f"failover{run}")
            env["ALPHAPANDA_HA__STANDBY"] = "warm"
            for name in ("a", "b"):
                (workdir / name).mkdir()
                feeds[name] = _Feed(
                    dict(
                        env,
                        ALPHAPANDA_FEED__SPOOL_DIR=str(workdir / name / "spool"),
                        ALPHAPANDA_FEED__WAL_DIR=str(workdir / name / "wal"),
                    ),
                    workdir / name / "feed.log",
                )
            await feeds["a"].start()
            await feeds["a"].until(
                lambda m: m.get("ha_active") == 1 and m.get("ticks_published_total", 0) > 0,
                "a to publish",
            )
            await feeds["b"].start()
            await feeds["b"].until(
                lambda m: (
                    m.get("ha_standby_ready") == 1 and m.get("ha_standby_received_total", 0) > 0
                ),
                "b to be a warm standby",
            )
            ledger = StreamLedger(bootstrap, topic)
            ledger.start()
            takeovers: list[Takeover] = []
            active, standby = "a", "b"
            for _ in range(kills):
                await asyncio.sleep(rng.uniform(2.0, 4.0))
                gaps_before = ledger.figures().gaps
                published_before = await _figure(feeds[standby], "ticks_published_total")
                killed_at = time.monotonic()
                if fault == PAUSE:
                    feeds[active].pause()
                else:
                    await feeds[active].kill()
                to_active = to_publish = 0.0
                while True:
                    figures = {}
                    try:
                        figures = await feeds[standby].metrics()
                    except Exception:
                        figures = {}
                    now = time.monotonic() - killed_at
                    if not to_active and figures.get("ha_active") == 1:
                        to_active = now
                    if figures.get("ticks_published_total", 0) > published_before:
                        to_publish = now
                        break
                    if now > 60:
                        raise TimeoutError("no takeover within 60 s")
                    await asyncio.sleep(0.02)
                resumed_exit = None
                if fault == PAUSE:
                    # Awake again, it must find itself deposed and exit, fenced.
                    resumed_exit = await feeds[active].resume_until_exit()
                await feeds[active].start()
                await feeds[active].until(
                    lambda m: (
                        m.get("ha_standby_ready") == 1 and m.get("ha_standby_received_total", 0) > 0
                    ),
                    "the restarted feed to be a warm standby",
                )
                await asyncio.sleep(1.0)  # the ledger catches up
                takeover = Takeover(
                    active,
                    to_active,
                    to_publish,
                    ledger.figures().gaps - gaps_before,
                    resumed_exit,
                )
                takeovers.append(takeover)
                if on_takeover is not None:
                    on_takeover(takeover)
                active, standby = standby, active
            await sim.set_rate(0)
            await feeds[active].until(lambda m: m.get("ticks_in_flight", 1) == 0, "drain")
            await feeds[active].stop()
            await feeds[standby].stop()
            stats = await sim.stats()
            deadline = time.monotonic() + 60
            consumed, still_since = -1, time.monotonic()
            while time.monotonic() < deadline and time.monotonic() - still_since < 3.0:
                now_consumed = ledger.figures().consumed
                if now_consumed != consumed:
                    consumed, still_since = now_consumed, time.monotonic()
                await asyncio.sleep(0.2)
            ledger.stop()
            return FailoverResult(
                fault,
                base.ha.lease_ms,
                takeovers,
                ledger.figures(),
                int(stats["total_ticks_sent"]),
                ledger.missing_against(stats["ticks_sent"]),
            )
    finally:
        # An interrupted run must not leave feeds behind (they would hold the lease).
        for feed in feeds.values():
            if feed.proc is not None and feed.proc.returncode is None:
                feed.proc.kill()
                await feed.proc.wait()
        shutil.rmtree(workdir, ignore_errors=True)


def summary_lines(result: FailoverResult) -> list[str]:
    times = sorted(t.to_publish_seconds for t in result.takeovers)
    what = "SIGSTOPs (paused, resumed after)" if result.fault == PAUSE else "SIGKILLs"
    lines = [
        f"{result.fault}: {len(result.takeovers)} {what} of the active, lease "
        f"{result.lease_ms} ms; simulator sent {result.sent:,}, consumed "
        f"{result.ledger.consumed:,} (read_committed)",
        f"  {'pause' if result.fault == PAUSE else 'kill'} -> publishing: "
        + (
            f"min {times[0]:.2f} s, median {times[len(times) // 2]:.2f} s, max {times[-1]:.2f} s"
            if times
            else "no takeover"
        ),
        f"  ledger: gaps {result.ledger.gaps}, duplicates or reordered "
        f"{result.ledger.duplicates_or_reordered}, undecodable {result.ledger.undecodable}",
        f"  per instrument, sent != consumed: {len(result.miscounted)} instruments, "
        f"{sum(s - c for s, c in result.miscounted.values()):+,} ticks missing"
        + (
            " (e.g. "
            + ", ".join(
                f"{token}: sent {s}, consumed {c}"
                for token, (s, c) in sorted(result.miscounted.items())[:5]
            )
            + ")"
            if result.miscounted
            else ""
        ),
        *(
            [
                "  resumed after the takeover, the paused active exited with: "
                + ", ".join(str(t.resumed_exit) for t in result.takeovers)
                + f" ({EXIT_DEPOSED} = deposed)"
            ]
            if result.fault == PAUSE
            else []
        ),
        *result.notes,
        "PASS" if result.passed else "FAIL",
    ]
    return lines


# Seconds of each fencing phase not measured (the consumer catching up at its start).
WARM_UP = 5.0


@dataclass
class FencingPhase:
    """One steady run of a lone group member with one fencing mode."""

    fencing: str
    consumed: int  # the whole phase, warm-up included
    delay_p50_ms: float  # frame receipt -> a read_committed consumer has the tick
    delay_p99_ms: float
    commit_p50_ms: float  # the active's transaction commits (0 with fencing=lease)
    commit_p99_ms: float


async def run_fencing_cost(
    base: Settings, *, rate: float = 2000.0, seconds: float = 20.0, rounds: int = 2
) -> list[FencingPhase]:
    """What ``fencing=transactions`` costs a read_committed consumer, against
    ``fencing=lease``: phases alternate lease/transactions ``rounds`` times against one
    simulator and broker, each a lone group member (the active) streaming ``seconds``."""
    run = uuid.uuid4().hex[:8]
    workdir = Path(tempfile.mkdtemp(prefix="alphapanda-fencing-"))
    phases: list[FencingPhase] = []
    feed: _Feed | None = None
    try:
        async with SimProcess(ticks_per_second=rate) as sim:
            for index, fencing in enumerate(["lease", "transactions"] * rounds):
                prefix = f"fencing.{run}.{index}."
                env = _group_env(base, sim, prefix, f"fencing-{run}-{index}", f"fencing{run}")
                env.update(
                    ALPHAPANDA_HA__FENCING=fencing,
                    ALPHAPANDA_FEED__SPOOL_DIR=str(workdir / str(index) / "spool"),
                )
                feed = _Feed(env, workdir / f"feed-{index}.log")
                await feed.start()
                await feed.until(
                    lambda m: m.get("ha_active") == 1 and m.get("ticks_published_total", 0) > 0,
                    f"the {fencing} member to publish",
                )
                ledger = StreamLedger(
                    base.kafka.bootstrap_servers, f"{prefix}market.ticks", keep_delays=True
                )
                ledger.start()
                # The consumer first catches up with what was published before it
                # started: those ticks waited for it, not for a commit.
                await asyncio.sleep(WARM_UP)
                since_ns = time.time_ns()
                await asyncio.sleep(seconds)
                figures = await feed.metrics()
                consumed = ledger.figures().consumed
                ledger.stop()
                await feed.stop()
                feed = None
                p50, p99 = ledger.delay_percentiles_ms(0.5, 0.99, since_ns=since_ns)
                phases.append(
                    FencingPhase(
                        fencing,
                        consumed,
                        p50,
                        p99,
                        figures.get("ha_commit_p50_seconds", 0.0) * 1000,
                        figures.get("ha_commit_p99_seconds", 0.0) * 1000,
                    )
                )
    finally:
        if feed is not None and feed.proc is not None and feed.proc.returncode is None:
            feed.proc.kill()
            await feed.proc.wait()
        shutil.rmtree(workdir, ignore_errors=True)
    return phases


def fencing_lines(phases: list[FencingPhase]) -> list[str]:
    """One line per phase, then the median p50/p99 of each mode and their ratio."""
    lines = [
        f"{p.fencing:>12}: consumed {p.consumed:,}, receipt -> read_committed consumer "
        f"p50 {p.delay_p50_ms:.1f} ms, p99 {p.delay_p99_ms:.1f} ms; commits p50 "
        f"{p.commit_p50_ms:.1f} ms, p99 {p.commit_p99_ms:.1f} ms"
        for p in phases
    ]

    def median(values: list[float]) -> float:
        ordered = sorted(values)
        return ordered[len(ordered) // 2] if ordered else 0.0

    by_mode = {
        mode: (
            median([p.delay_p50_ms for p in phases if p.fencing == mode]),
            median([p.delay_p99_ms for p in phases if p.fencing == mode]),
        )
        for mode in ("lease", "transactions")
    }
    (lease50, lease99), (txn50, txn99) = by_mode["lease"], by_mode["transactions"]
    if lease50 and lease99:
        lines.append(
            f"transactions / lease: p50 {txn50 / lease50:.1f}x ({txn50 - lease50:+.1f} ms), "
            f"p99 {txn99 / lease99:.1f}x ({txn99 - lease99:+.1f} ms)"
        )
    return lines
