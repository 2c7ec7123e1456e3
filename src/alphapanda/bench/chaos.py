"""The chaos run: every fault the feed must survive, one after another, against a live stack.

``run_chaos()`` starts its own stack — a private Kafka broker and a private Redis via
``scripts/devstack.sh`` (own folder, own free ports: never the shared ones), the
simulator in a child process — and runs the feed in this process (a
``MarketFeedService`` with its ``PipelineMetricsCollector``), so it can read the
feed's books at any moment. A ``StreamLedger`` follows the topic throughout. Then:

=============  ==========================================================================
``kill``       broker SIGKILL, ticks go to the spool, broker restarted, spool replayed
``pause``      broker SIGSTOP for 3 × the request timeout, then SIGCONT (twice)
``drops``      the simulator aborts the feed's sockets N times (default 20)
``malformed``  a malformed frame to every connection (counted and skipped)
``stall``      the simulator goes silent beyond the liveness timeout (watchdog reconnects)
``redis``      Redis stopped for a while and started again (ticks keep flowing)
``token``      the access token expires (``auth_required``), then a new one is issued
=============  ==========================================================================

and the faults of the feed's own disk and process, ``diskfull``, ``spoolcorrupt``,
``twoprocs``, ``flap`` and ``fatal`` (``alphapanda.bench.chaos_disk``). Two of them stop
the feed and start a new one on the same spool; the books of every feed of the run are
added up.

After each fault the run waits until the feed has settled (nothing spooled or in
flight, consumer caught up) and charges the fault with what it cost: the largest
receipt → consumer delay of ticks received during it, ticks dropped by the buffer's
policy, ticks that went through the spool, and ticks lost (ledger gaps). At the end
the load stops and the ledger is checked against the simulator's per-instrument
counts. The run fails if any tick is unaccounted: every tick the simulator sent must be
consumed from the topic or counted as dropped by reason, and every feed's books must
balance (received = published + dropped + spooled + in_flight).
"""

from __future__ import annotations

import asyncio
import shutil
import tempfile
import time
from collections.abc import Awaitable, Callable, Sequence
from dataclasses import dataclass, field
from functools import partial
from pathlib import Path
from typing import Any, Final

from pydantic import SecretStr

from alphapanda.assembly import Overrides, build
from alphapanda.bench import chaos_disk
from alphapanda.bench.harness import LedgerFigures, SimProcess, StreamLedger, until
from alphapanda.bench.universe import simulator_csv
from alphapanda.metrics import catalog
from alphapanda.metrics.collector import PipelineMetricsCollector
from alphapanda.ops.devstack import DevstackService
from alphapanda.parts import FeedParts
from alphapanda.service import MarketFeedService, ServiceFailed
from alphapanda.settings import Settings
from alphapanda.topics import TopicNames

FAULTS: Final = (
    "kill",
    "pause",
    "drops",
    "malformed",
    "stall",
    "redis",
    "token",
    "diskfull",
    "spoolcorrupt",
    "twoprocs",
    "flap",
    "fatal",
)
SETTLE_WITHIN: Final = 180.0


class SwitchableToken:
    """``TokenProvider`` whose token the run replaces, as ``auth set-token`` would."""

    def __init__(self, token: str) -> None:
        self.token = token

    async def get_access_token(self) -> str:
        return self.token


@dataclass
class FaultCost:
    """What one fault cost (see the module doc)."""

    fault: str
    seconds: float = 0.0
    max_delay_ms: float = 0.0
    dropped: int = 0
    spooled: int = 0
    lost: int = 0
    note: str = ""


@dataclass
class ChaosResult:
    costs: list[FaultCost]
    sent: int
    received: int
    published: int
    ledger: LedgerFigures
    missing: dict[int, tuple[int, int]]
    imbalance: int
    errors: list[str] = field(default_factory=list)
    dropped: dict[str, int] = field(default_factory=dict)

    @property
    def lost(self) -> int:
        """Ticks the simulator sent that never reached Kafka and that no feed counted
        as dropped (by any reason): the unaccounted ones."""
        shortfall = sum(max(0, sent - got) for sent, got in self.missing.values())
        return max(0, max(self.ledger.gaps, shortfall) - sum(self.dropped.values()))

    @property
    def passed(self) -> bool:
        return (
            self.lost == 0
            and self.ledger.duplicates_or_reordered == 0
            and self.ledger.undecodable == 0
            and self.imbalance == 0
            and not self.errors
        )


class _Run:
    """One chaos run's moving parts and the helpers the faults share."""

    def __init__(
        self,
        tg: asyncio.TaskGroup,
        sim: SimProcess,
        broker: DevstackService,
        redis: DevstackService,
        ledger: StreamLedger,
        tokens: SwitchableToken,
        settings: Settings,
        workdir: Path,
        spool_fs_mounted: bool,
    ) -> None:
        self._tg = tg
        self.sim = sim
        self.broker = broker
        self.redis = redis
        self.ledger = ledger
        self.tokens = tokens
        self.settings = settings
        self.workdir = workdir
        self.spool_fs_mounted = spool_fs_mounted
        # Every feed of the run (a fault may restart it); the last one is running.
        self.feeds: list[FeedParts] = []
        self._service: MarketFeedService | None = None
        self._feed: asyncio.Task[None] | None = None
        self.feed_failure: BaseException | None = None

    @property
    def feed(self) -> FeedParts:
        return self.feeds[-1]

    @property
    def collector(self) -> PipelineMetricsCollector:
        return self._collector

    async def start_feed(self) -> FeedParts:
        """A new feed (same settings, same spool) in the run's task group."""
        parts = build(self.settings, Overrides(tokens=self.tokens, metrics=True))
        assert parts.collector is not None
        self._collector = parts.collector
        self.feeds.append(parts)
        self._service = service = MarketFeedService(parts)
        self._feed = self._tg.create_task(self._run_feed(service), name="market-feed")
        await self.until(service.ready.is_set, "the feed to start", 60)
        return parts

    async def _run_feed(self, service: MarketFeedService) -> None:
        try:
            await service.run()
        except ServiceFailed as exc:
            self.feed_failure = exc

    async def stop_feed(self, *, expect_failure: bool = False) -> BaseException | None:
        """Stop the current feed gracefully; its failure, if it failed."""
        self.feed_failure = None
        assert self._service is not None
        self._service.request_stop()
        assert self._feed is not None
        await self._feed
        failure = self.feed_failure
        if failure is not None and not expect_failure:
            raise RuntimeError(f"the feed failed: {failure}")
        return failure

    async def until(self, condition: Callable[[], bool], what: str, within: float = 60) -> None:
        await until(condition, within, what)

    def streaming(self) -> bool:
        return self.feed.client.is_streaming()

    def states(self) -> set[str]:
        return {status.state for status in self.feed.client.statuses()}

    def settled(self) -> bool:
        acct = self.feed.accounting
        return (
            self.streaming()
            and not self.feed.publisher.spooling
            and acct.spooled == 0
            and acct.buffered + acct.encoding < 5000
            and self.ledger.figures().consumed >= acct.published - acct.awaiting_ack
        )

    async def ticks_flow(self, n: int = 500, within: float = 60) -> None:
        """Wait until ``n`` more ticks were received by the feed."""
        target = self.feed.accounting.received + n
        await self.until(lambda: self.feed.accounting.received >= target, "ticks", within)

    def reconnects(self) -> int:
        return sum(status.reconnect_count for status in self.feed.client.statuses())

    def flushes_ok(self) -> int:
        return self.collector.flushes - sum(self.collector.flush_failures.values())


# -- the faults -------------------------------------------------------------------------


async def _kill(run: _Run, options: dict[str, Any]) -> str:
    acct = run.feed.accounting
    before = acct.spool_written
    await asyncio.to_thread(run.broker.kill)
    await run.until(lambda: acct.spool_written > before + 500, "ticks spooled", 60)
    await asyncio.to_thread(run.broker.start)
    await run.until(lambda: not run.feed.publisher.spooling, "spool replayed", SETTLE_WITHIN)
    return "broker killed and restarted"


async def _pause(run: _Run, options: dict[str, Any]) -> str:
    hold = 3 * run.settings.kafka.request_timeout_ms / 1000
    for _ in range(2):
        await asyncio.to_thread(run.broker.pause)
        try:
            await asyncio.sleep(hold)
        finally:
            await asyncio.to_thread(run.broker.resume)
        await run.until(lambda: not run.feed.publisher.spooling, "spool replayed", 120)
        await run.ticks_flow()
    return f"2 × {hold:.0f} s SIGSTOP"


async def _drops(run: _Run, options: dict[str, Any]) -> str:
    count = int(options.get("drops", 20))
    before = run.reconnects()
    for _ in range(count):
        await run.until(run.streaming, "streaming before a drop", 60)
        seen = run.reconnects()
        await run.sim.call("POST", "/faults/drop")
        await run.until(partial(_more_reconnects, run, seen), "the drop to be noticed", 30)
    await run.until(run.streaming, "streaming after the drops", 60)
    return f"{count} drops, {run.reconnects() - before} reconnects"


def _more_reconnects(run: _Run, seen: int) -> bool:
    return run.reconnects() > seen


def _skipped_packets(run: _Run) -> float:
    return sum(
        s.value for s in run.feed.client.samples() if s.name == catalog.KITE_SKIPPED_PACKETS.name
    )


async def _malformed(run: _Run, options: dict[str, Any]) -> str:
    sent = 0
    skipped = _skipped_packets(run)
    for _ in range(3):
        sent += int((await run.sim.call("POST", "/faults/malformed"))["sent"])
        await run.ticks_flow(100)
    return (
        f"{sent} malformed frames sent; decoder skipped "
        f"{_skipped_packets(run) - skipped:.0f} packets, kept streaming"
    )


async def _stall(run: _Run, options: dict[str, Any]) -> str:
    before = run.reconnects()
    seconds = run.settings.kite.liveness_timeout + 2
    await run.sim.call("POST", "/faults/stall", params={"seconds": seconds})
    await run.until(lambda: run.reconnects() > before, "the watchdog to reconnect", 60)
    await run.until(run.streaming, "streaming after the stall", 60)
    return f"{seconds:.0f} s silence, watchdog reconnected"


async def _redis(run: _Run, options: dict[str, Any]) -> str:
    await asyncio.to_thread(run.redis.stop)
    received = run.feed.accounting.published
    await asyncio.sleep(5)
    flowed = run.feed.accounting.published - received
    failures = sum(run.collector.flush_failures.values())
    await asyncio.to_thread(run.redis.start)
    ok = run.flushes_ok()
    await run.until(lambda: run.flushes_ok() > ok + 2, "metrics flushed again", 60)
    return f"{flowed} ticks published while Redis was down; {failures} failed flushes so far"


async def _token(run: _Run, options: dict[str, Any]) -> str:
    await run.sim.call("POST", "/faults/expire-token")
    await run.until(lambda: "auth_required" in run.states(), "auth_required", 60)
    attempts = run.reconnects()
    await asyncio.sleep(3)  # a storm would show here as many attempts
    storm = run.reconnects() - attempts
    new_token = f"chaos-{time.time_ns()}"
    await run.sim.call("POST", "/token", json={"access_token": new_token})
    run.tokens.token = new_token
    await run.until(run.streaming, "streaming with the new token", 60)
    return f"auth_required; {storm} attempts in 3 s; resumed with the new token"


_FAULT_FUNCS: Final[dict[str, Callable[[_Run, dict[str, Any]], Awaitable[str]]]] = {
    "kill": _kill,
    "pause": _pause,
    "drops": _drops,
    "malformed": _malformed,
    "stall": _stall,
    "redis": _redis,
    "token": _token,
    "diskfull": chaos_disk.diskfull,
    "spoolcorrupt": chaos_disk.spoolcorrupt,
    "twoprocs": chaos_disk.twoprocs,
    "flap": chaos_disk.flap,
    "fatal": chaos_disk.fatal,
}


# -- the run ----------------------------------------------------------------------------


def chaos_settings(
    base: Settings, sim: SimProcess, broker: DevstackService, redis: DevstackService, spool: Path
) -> Settings:
    """The feed's settings for a chaos run: the private services, a small producer queue
    (so an outage reaches the spool within a second), a short liveness timeout."""
    return base.model_copy(
        update={
            "kite": base.kite.model_copy(
                update={
                    "ws_url": sim.ws_url,
                    "api_key": sim.api_key,
                    "liveness_timeout": 3.0,
                    "reconnect_base_delay": 0.2,
                    "reconnect_max_delay": 2.0,
                    "auth_retry_delay": 2.0,
                }
            ),
            "kafka": base.kafka.model_copy(
                update={
                    "bootstrap_servers": broker.bootstrap,
                    "topic_prefix": "chaos.",
                    "topic_partitions": 3,
                    "queue_max_messages": 1000,
                    "request_timeout_ms": 1000,
                    "message_timeout_ms": chaos_disk.MESSAGE_TIMEOUT_MS,
                }
            ),
            "redis": base.redis.model_copy(update={"url": SecretStr(redis.redis_url)}),
            # No free-space floor: on the small tmpfs of ``diskfull`` the real ENOSPC
            # path of the spool is what is exercised.
            "feed": base.feed.model_copy(
                update={
                    "spool_dir": spool,
                    # The simulator's universe unless a CSV is configured.
                    "instruments_csv": simulator_csv(base),
                    "spool_min_free_bytes": 0,
                    "spool_max_bytes": chaos_disk.SPOOL_MAX_BYTES,
                }
            ),
        }
    )


async def run_chaos(
    base: Settings,
    *,
    faults: Sequence[str] = FAULTS,
    rate: float = 2000.0,
    drops: int = 20,
    workdir: Path | None = None,
    on_fault: Callable[[FaultCost], None] | None = None,
) -> ChaosResult:
    """Start the private stack, run ``faults`` in order, check the ledger; see the doc."""
    unknown = set(faults) - set(FAULTS)
    if unknown:
        raise ValueError(f"unknown faults {sorted(unknown)}; choose from {', '.join(FAULTS)}")
    own_dir = workdir is None
    root = Path(tempfile.mkdtemp(prefix="alphapanda-chaos-")) if workdir is None else workdir
    broker = DevstackService("kafka", root / "kafka")
    redis = DevstackService("redis", root / "redis")
    costs: list[FaultCost] = []
    errors: list[str] = []
    spool = root / "spool"
    spool_fs = "diskfull" in faults and chaos_disk.mount_spool_fs(spool)
    try:
        await asyncio.gather(asyncio.to_thread(broker.start), asyncio.to_thread(redis.start))
        async with SimProcess(ticks_per_second=rate, instruments=base.feed.instruments_csv) as sim:
            settings = chaos_settings(base, sim, broker, redis, spool)
            tokens = SwitchableToken(sim.access_token)
            ledger = StreamLedger(
                broker.bootstrap, TopicNames.market_ticks(settings.kafka.topic_prefix)
            )
            options = {"drops": drops}
            async with asyncio.TaskGroup() as tg:
                run = _Run(tg, sim, broker, redis, ledger, tokens, settings, root, spool_fs)
                await run.start_feed()
                try:
                    ledger.start()
                    await run.until(lambda: ledger.figures().consumed > 1000, "first ticks", 120)
                    for name in faults:
                        costs.append(await _run_fault(run, name, options))
                        if on_fault is not None:
                            on_fault(costs[-1])
                    await sim.set_rate(0)
                    await asyncio.sleep(1.0)
                    stats = await sim.stats()
                    acct = run.feed.accounting
                    await run.until(
                        lambda: (
                            sum(s.accounting.received_socket for s in run.feeds)
                            >= int(stats["total_ticks_sent"])
                            or acct.in_flight == 0
                        ),
                        "feed caught up",
                        60,
                    )
                    await run.until(
                        lambda: acct.in_flight == 0 and acct.spooled == 0, "feed drained", 120
                    )
                    await run.until(
                        lambda: ledger.figures().consumed >= _published(run), "consumer", 120
                    )
                except (TimeoutError, RuntimeError) as exc:
                    errors.append(str(exc))
                    stats = await sim.stats()
                finally:
                    try:
                        await run.stop_feed()
                    except RuntimeError as exc:
                        errors.append(str(exc))
            ledger.stop()
            if ledger.error:
                errors.append(f"ledger consumer: {ledger.error}")
            dropped: dict[str, int] = {}
            for feed in run.feeds:
                for reason, count in feed.accounting.dropped.items():
                    dropped[reason] = dropped.get(reason, 0) + count
            received = sum(s.accounting.received_socket for s in run.feeds)
            return ChaosResult(
                costs=costs,
                sent=int(stats["total_ticks_sent"]),
                received=received,
                published=_published(run),
                ledger=ledger.figures(),
                missing=ledger.missing_against(stats["ticks_sent"]),
                imbalance=sum(abs(s.accounting.imbalance()) for s in run.feeds),
                errors=errors,
                dropped=dropped,
            )
    finally:
        await asyncio.gather(
            asyncio.to_thread(_quietly, broker.stop), asyncio.to_thread(_quietly, redis.stop)
        )
        if spool_fs:
            chaos_disk.unmount_spool_fs(spool)
        if own_dir:
            shutil.rmtree(root, ignore_errors=True)


def _published(run: _Run) -> int:
    return sum(s.accounting.published for s in run.feeds)


def _quietly(action: Callable[[], None]) -> None:
    try:
        action()
    except Exception:  # teardown of a private service: nothing left to protect
        pass


def _dropped(run: _Run) -> int:
    return sum(s.accounting.dropped_total for s in run.feeds)


def _spool_written(run: _Run) -> int:
    return sum(s.accounting.spool_written for s in run.feeds)


async def _run_fault(run: _Run, name: str, options: dict[str, Any]) -> FaultCost:
    await run.until(run.settled, f"the feed to settle before {name}", SETTLE_WITHIN)
    dropped, spooled = _dropped(run), _spool_written(run)
    gaps = run.ledger.figures().gaps
    started_ns = time.time_ns()
    started = time.monotonic()
    note = await _FAULT_FUNCS[name](run, options)
    seconds = time.monotonic() - started
    ended_ns = time.time_ns()
    await run.until(run.settled, f"the feed to settle after {name}", SETTLE_WITHIN)
    return FaultCost(
        fault=name,
        seconds=seconds,
        max_delay_ms=run.ledger.max_delay_ms(started_ns, ended_ns),
        dropped=_dropped(run) - dropped,
        spooled=_spool_written(run) - spooled,
        lost=run.ledger.figures().gaps - gaps,
        note=note,
    )


def summary_lines(result: ChaosResult) -> list[str]:
    lines = [
        f"simulator sent {result.sent:,}; feed received {result.received:,}, "
        f"published {result.published:,}; consumer read {result.ledger.consumed:,}",
        f"ledger: gaps {result.ledger.gaps}, duplicates/reordered "
        f"{result.ledger.duplicates_or_reordered}, instruments off {len(result.missing)}; "
        f"accounting imbalance {result.imbalance}",
        f"dropped (counted, by reason): {result.dropped or 0}",
        f"unaccounted: {result.lost}",
    ]
    if result.ledger.first_gaps:
        lines.append(f"first gaps (token, expected volume, got): {result.ledger.first_gaps}")
    lines += [f"error: {e}" for e in result.errors]
    lines.append("PASS" if result.passed else "FAIL")
    return lines
