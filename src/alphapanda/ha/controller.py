"""One feed's part in its hot-standby group: wait for the lease, take over, keep it.

Standby: try the lease every ``poll_ms``. Takeover, in this order:

1. the lease (PostgreSQL lock) is ours: the old active is dead, paused past its lease
   or cut off;
2. ``init_transactions`` on the group's transactional id fences the old active's
   producer (its open transaction is aborted, its later writes refused);
3. the tail of ``market.ticks`` (read_committed) gives the old active's last published
   tick per instrument; it cannot move any more;
4. warm: the gate publishes the held ticks after those and opens; cold: the
   connections open now and the time without a feed is published as a ``gap``.

A step of 2. or 3. that fails for a reason that may pass (a broker slow or away for a
moment) is tried again while the lease is held; the first active of a group reads the
tail only once its own start-up created the topic.

Active: renew the lease every quarter lease. An active that cannot renew for 3/4 of the
lease, or whose transaction commit failed (fenced), is deposed: it exits at once
without publishing anything more (its restart joins as a standby). A requested
hand-over stops it gracefully: everything it received is published and committed, then
the lease is freed and the warm standby continues after its last tick.
"""

from __future__ import annotations

import asyncio
import logging
import os
import socket
import sys
import threading
import time
import uuid
from collections.abc import Awaitable, Callable, Iterator
from datetime import UTC, datetime
from typing import Any, Final, Literal, TypeVar

from confluent_kafka import KafkaException

from alphapanda.ha.gate import StandbyGate, Takeover
from alphapanda.ha.lease import PgLease, Term
from alphapanda.ha.tail import LastPublished, TailFollower, read_last_published
from alphapanda.metrics import catalog
from alphapanda.metrics.samples import Sample
from alphapanda.pipeline.producer import MessageProducer
from alphapanda.settings import Settings
from alphapanda.streams.records import GAP, GAP_POSSIBLE, HA_ACTIVE, FeedEvent, ns_to_datetime
from alphapanda.wal.tails import is_transient

log = logging.getLogger(__name__)

# The exit status of a deposed active (a supervisor restarts it; it joins as standby).
EXIT_DEPOSED: Final = 75
# Records per partition read back at a takeover to find the active's last ticks.
TAIL_WINDOW: Final = 3_000

# A takeover step that failed for a reason that may pass (a slow broker, one that is
# restarting) is tried again, still holding the lease: first after this long, then
# twice as long each time, up to TAKEOVER_RETRY_MAX.
TAKEOVER_RETRY: Final = 0.2
TAKEOVER_RETRY_MAX: Final = 2.0

Role = Literal["standby", "active", "deposed"]
T = TypeVar("T")


class _Stopped(Exception):
    """The feed began to stop during the takeover."""


def instance_name(api_port: int) -> str:
    return f"{socket.gethostname()}:{api_port}:{os.getpid()}:{uuid.uuid4().hex[:6]}"


def covers(held_since_ns: int, follower: TailFollower | None) -> bool:
    """Whether a warm standby's window (held since ``held_since_ns``, its receive time)
    reaches back to the newest tick the active has published (the follower's frontier,
    the active's receive time: the two hosts' clocks are compared, so a skew between
    them shifts the rule by as much). Holding nothing yet (a quiet market) there is
    nothing to cover."""
    if not held_since_ns:
        return True
    return follower is not None and follower.frontier_ns >= held_since_ns


def choose_standby(settings: Settings, instruments: int) -> Literal["warm", "cold"]:
    """Warm when the key's connections hold the streaming set twice (active + standby)."""
    mode = settings.ha.standby
    if mode != "auto":
        return mode
    per_connection = settings.kite.max_instruments_per_connection
    needed = max(1, -(-instruments // per_connection))
    return "warm" if 2 * needed <= settings.kite.max_connections else "cold"


class HaController:
    """A ``BackgroundService`` of the feed service when ``ha.group`` is set."""

    def __init__(
        self,
        settings: Settings,
        gate: StandbyGate,
        producer: MessageProducer,
        topic: str,
        *,
        instance: str,
        api_url: str,
        connect: Callable[[dict[int, str]], Awaitable[None]],
        streaming: Callable[[], bool],
        emit: Callable[[FeedEvent], None] | None,
        request_stop: Callable[[], None],
        topic_ready: asyncio.Event | None = None,
        exit: Callable[[int], None] = os._exit,
    ) -> None:
        """``topic_ready``: set once the feed created its topic (the first active of a
        group creates it while it takes over; the tail is read after that)."""
        ha = settings.ha
        self._settings = settings
        self.group = ha.group
        self.gate = gate
        self.producer = producer
        self.topic = topic
        self.instance = instance
        self.lease = PgLease(
            settings.database.url.get_secret_value(),
            ha.group,
            instance,
            api_url,
            ha.lease_ms / 1000,
        )
        self._connect = connect
        self._streaming = streaming
        self._emit = emit
        self._request_stop = request_stop
        self._topic_ready = topic_ready
        self._exit = exit
        self.standby: Literal["warm", "cold"] = "warm"
        self._subscriptions: dict[int, str] = {}
        self.role: Role = "standby"
        self.term: Term | None = None
        self.active_since: datetime | None = None
        self.takeover: Takeover | None = None
        self.takeover_seconds: float | None = None
        self.handover_requested = False
        self._stop = asyncio.Event()
        self._follower: TailFollower | None = None

    @property
    def active(self) -> bool:
        return self.role == "active"

    def plan(self, subscriptions: dict[int, str]) -> bool:
        """Take the streaming set before ``run()``; ``True`` when this instance connects
        now (a warm standby: its own connection, ticks held by the gate), ``False`` when
        it connects only at its takeover (cold)."""
        self._subscriptions = subscriptions
        self.standby = choose_standby(self._settings, len(subscriptions))
        log.info(
            "hot-standby group %s: %s standby until the lease is free (instance %s)",
            self.group,
            self.standby,
            self.instance,
        )
        return self.standby == "warm"

    def stop(self) -> None:
        self._stop.set()

    async def run(self) -> None:
        keeper = _LeaseKeeper(self.lease, self._settings.ha.poll_ms / 1000, self._lease_lost)
        follower = TailFollower(self._settings.kafka, self.topic, TAIL_WINDOW)
        self._follower = follower
        async with asyncio.TaskGroup() as tg:
            thread = tg.create_task(asyncio.to_thread(keeper.run), name="ha-lease")
            following = None
            if self.standby == "warm":
                following = tg.create_task(asyncio.to_thread(follower.run), name="ha-tail")
            try:
                await self._follow(keeper)
            finally:
                keeper.stop.set()
                follower.stop.set()
            await thread
            if following is not None:
                await following

    async def _follow(self, keeper: _LeaseKeeper) -> None:
        poll = self._settings.ha.poll_ms / 1000
        while keeper.term is None:
            if self._stop.is_set() or keeper.finished.is_set():
                return
            await self._sleep(min(poll, 0.05))
        try:
            await self._take_over(keeper.term, keeper.acquired_at)
        except _Stopped:
            log.warning("ha %s: the feed stops: takeover abandoned", self.group)
            return
        lease_s = self._settings.ha.lease_ms / 1000
        budget = lease_s * 0.75  # give up before the server hands the lock on
        while not self._stop.is_set():
            if self.producer.transaction_error is not None:
                self._depose(f"transaction failed: {self.producer.transaction_error}")
                return
            if keeper.lost or time.monotonic() - keeper.last_ok > budget:
                self._depose("lease not renewed in time (paused, or cut off from the database)")
                return
            if keeper.handover and not self.handover_requested:
                self.handover_requested = True
                log.warning("ha %s: hand-over requested: draining and stepping down", self.group)
                self._request_stop()
            await self._sleep(min(lease_s / 8, 0.1))

    async def _sleep(self, seconds: float) -> None:
        try:
            await asyncio.wait_for(self._stop.wait(), seconds)
        except TimeoutError:
            pass

    async def _retrying(self, what: str, step: Callable[[], Awaitable[T]]) -> T:
        # A transient failure (the broker slow or away for a moment) must not end the
        # feed: the lease is still ours, so the step is simply tried again.
        delay = TAKEOVER_RETRY
        while True:
            try:
                return await step()
            except (KafkaException, TimeoutError) as exc:
                if isinstance(exc, KafkaException) and not is_transient(exc):
                    raise
                log.warning(
                    "ha %s: takeover: %s failed (%s); trying again in %.1f s",
                    self.group,
                    what,
                    exc,
                    delay,
                )
            await self._sleep(delay)
            if self._stop.is_set():
                raise _Stopped
            delay = min(delay * 2, TAKEOVER_RETRY_MAX)

    async def _await_topic(self) -> None:
        ready = self._topic_ready
        if ready is None or ready.is_set():
            return
        log.info("ha %s: takeover: waiting for topic %s to be created", self.group, self.topic)
        stopping = asyncio.ensure_future(self._stop.wait())
        topic = asyncio.ensure_future(ready.wait())
        try:
            await asyncio.wait({stopping, topic}, return_when=asyncio.FIRST_COMPLETED)
        finally:
            stopping.cancel()
            topic.cancel()
        if not ready.is_set():
            raise _Stopped

    async def _take_over(self, term: Term, started: float) -> None:
        # ``started``: when the lease was taken (time.monotonic()).
        ha = self._settings.ha
        log.warning(
            "ha %s: lease taken (epoch %d): taking over as %s",
            self.group,
            term.epoch,
            self.instance,
        )
        if self.producer.transactional:
            # Fences the previous owner: nothing it writes from now on can be committed.
            await self._retrying(
                "fencing (init_transactions)",
                lambda: self.producer.start_transactions(ha.lease_ms / 1000 * 4),
            )
        fenced = time.monotonic()
        follower = self._follower
        caught = None
        if follower is not None and self.standby == "warm":
            caught = await asyncio.to_thread(follower.catch_up, ha.lease_ms / 1000)
            follower.stop.set()
            if caught is None:
                log.warning(
                    "ha %s: tail follower failed (%r): reading the tail afresh",
                    self.group,
                    follower.error,
                )
        if caught is None:
            await self._await_topic()
        tail: LastPublished = (
            caught
            if caught is not None
            else await self._retrying(
                "reading the tail",
                lambda: asyncio.to_thread(
                    read_last_published, self._settings.kafka, self.topic, window=TAIL_WINDOW
                ),
            )
        )
        tail_read = time.monotonic()
        now = datetime.now(UTC)
        if self.standby == "warm":
            self.takeover = await self.gate.promote(
                tail.ticks, tail.oldest_received_at_ns, tail.recent
            )
        else:
            self.gate.active = True
            await self._connect(self._subscriptions)
        self.role = "active"
        self.term = term
        self.active_since = term.since
        self.takeover_seconds = time.monotonic() - started
        report = self.takeover
        log.warning(
            "ha %s: active since %s (epoch %d, %s standby; fencing %.3f s, tail %.3f s "
            "(%d records), total %.3f s): %s",
            self.group,
            term.since.isoformat(),
            term.epoch,
            self.standby,
            fenced - started,
            tail_read - fenced,
            tail.records,
            self.takeover_seconds,
            "connecting now"
            if report is None
            else f"replayed {report.replayed} held ticks ({report.matched} instruments matched, "
            f"{report.ambiguous} of them repeated snapshots, {len(report.gap_possible)} "
            f"gap_possible, {report.not_in_topic} not in the tail)",
        )
        emit = self._emit
        if emit is None:
            return
        emit(
            FeedEvent(
                HA_ACTIVE, term.since, reason="takeover", instance=self.instance, epoch=term.epoch
            )
        )
        if report is not None and report.gap_possible:
            emit(
                FeedEvent(
                    GAP_POSSIBLE,
                    now,
                    reason="active's last tick not found in the standby's stream",
                    instruments=sorted(report.gap_possible),
                    start=ns_to_datetime(tail.newest_received_at_ns)
                    if tail.newest_received_at_ns
                    else None,
                    end=now,
                )
            )
        if self.standby == "cold" and tail.ticks:
            # The interval without a feed: from the old active's last published tick to
            # the moment this instance's connections stream.
            # A condition of another part, not an event of ours: polled briefly.
            while not self._streaming() and not self._stop.is_set():  # noqa: ASYNC110
                await asyncio.sleep(0.02)
            end = datetime.now(UTC)
            emit(
                FeedEvent(
                    GAP,
                    end,
                    reason="cold standby takeover",
                    instruments=sorted(tail.ticks),
                    start=ns_to_datetime(tail.newest_received_at_ns)
                    if tail.newest_received_at_ns
                    else now,
                    end=end,
                )
            )

    def _lease_lost(self, why: str) -> None:
        # Called from the lease's own thread: a resumed or cut-off active exits from
        # there, whatever its event loop is busy with (a backlog of frames after a
        # pause, a shutdown already under way).
        if self.role != "deposed":
            self._depose(why)

    def producer_failed(self, reason: str) -> None:
        """The producer failed fatally. A transactional one fails so when the group's new
        active fenced it: this instance was deposed while it could not notice (paused,
        cut off). Nothing it wrote since can be read committed; it exits at once instead
        of spooling for a next run that would join as a standby and discard the spool."""
        if self.producer.transactional and self.role == "active":
            self._depose(f"producer fenced or failed: {reason}")

    def _depose(self, why: str) -> None:
        self.role = "deposed"
        log.critical(
            "ha %s: deposed (%s): exiting without publishing anything more", self.group, why
        )
        for handler in logging.getLogger().handlers:
            handler.flush()
        sys.stderr.flush()
        self._exit(EXIT_DEPOSED)

    def status(self) -> dict[str, Any]:
        report = self.takeover
        return {
            "group": self.group,
            "instance": self.instance,
            "role": self.role,
            "active": self.active,
            "standby_mode": self.standby,
            "epoch": self.term.epoch if self.term else None,
            "active_since": self.active_since.isoformat() if self.active_since else None,
            "fencing": self._settings.ha.fencing,
            "takeover_seconds": self.takeover_seconds,
            "takeover": None
            if report is None
            else {
                "replayed": report.replayed,
                "matched": report.matched,
                "matched_repeated": report.ambiguous,
                "gap_possible": len(report.gap_possible),
                "not_in_topic": report.not_in_topic,
            },
            "held": self.gate.holding,
            "last_received_at_ns": self.gate.last_received_ns,
        }

    @property
    def standby_ready(self) -> bool:
        """A standby able to take over: warm, its own connection streams and what it
        holds reaches back to the active's last published tick (else a takeover now
        would miss what the active received but had not published yet); cold, the
        lease's database session is up."""
        if self.standby == "warm":
            return self._streaming() and covers(self.gate.held_since_ns, self._follower)
        return self.lease.connected

    def samples(self) -> Iterator[Sample]:
        labels = (
            ("group", self.group),
            ("instance", self.instance),
            ("role", self.role),
            ("standby_mode", self.standby),
        )
        yield catalog.HA_INFO.sample(1, labels)
        yield catalog.HA_ACTIVE.sample(int(self.active))
        yield catalog.HA_EPOCH.sample(self.term.epoch if self.term else 0)
        since = self.active_since.timestamp() if self.active_since else 0.0
        yield catalog.HA_ACTIVE_SINCE_TIMESTAMP.sample(since)
        yield catalog.HA_STANDBY_READY.sample(int(not self.active and self.standby_ready))
        yield catalog.HA_LAST_RECEIVED_TIMESTAMP.sample(self.gate.last_received_ns / 1e9)
        yield catalog.HA_TAKEOVER_SECONDS.sample(self.takeover_seconds or 0.0)
        yield from self.gate.samples()
        p50, p99 = self.producer.commit_latency.percentiles(0.5, 0.99)
        yield catalog.HA_COMMITS.sample(self.producer.commits)
        yield catalog.HA_COMMIT_P50_SECONDS.sample(p50)
        yield catalog.HA_COMMIT_P99_SECONDS.sample(p99)


class _LeaseKeeper:
    """The lease's database session, in a thread of its own (with its own event loop):
    the feed's loop may be busy for a while under load, and a renewal that waited for
    it would lose the lease of an active that is merely slow. A paused process pauses
    this thread too, so a paused active still loses it."""

    def __init__(self, lease: PgLease, poll: float, on_lost: Callable[[str], None]) -> None:
        self.lease = lease
        self.poll = poll
        # Told (from this thread) when a held lease is lost; it deposes the instance.
        self.on_lost = on_lost
        self.stop = threading.Event()
        self.finished = threading.Event()
        self.term: Term | None = None
        self.acquired_at = 0.0
        self.last_ok = 0.0
        self.lost = False
        self.handover = False

    def _lose(self, why: str) -> None:
        log.warning("ha %s: %s", self.lease.group, why)
        self.lost = True
        if not self.stop.is_set():
            self.on_lost(why)

    def run(self) -> None:
        try:
            asyncio.run(self._main())
        finally:
            self.finished.set()

    async def _main(self) -> None:
        lease_s = self.lease.lease_seconds
        logged = False
        try:
            while not self.stop.is_set():
                try:
                    term = await asyncio.wait_for(self.lease.try_acquire(), lease_s)
                except Exception as exc:
                    if not logged:
                        log.warning("ha %s: no lease session: %r", self.lease.group, exc)
                        logged = True
                    await self.lease.close()
                    term = None
                if term is not None:
                    self.acquired_at = self.last_ok = time.monotonic()
                    self.term = term
                    break
                await asyncio.sleep(self.poll)
            while not self.stop.is_set():
                if time.monotonic() - self.last_ok > lease_s * 0.75:
                    # Woken after a pause longer than the lease: another member may
                    # hold it already, whatever a renewal would say now.
                    self._lose("lease not renewed in time (paused, or cut off)")
                    return
                try:
                    self.handover = await asyncio.wait_for(self.lease.renew(), lease_s * 0.75)
                    self.last_ok = time.monotonic()
                except Exception as exc:
                    self._lose(f"lease renewal failed: {exc!r}")
                    return
                await asyncio.sleep(lease_s / 4)
        finally:
            await self.lease.close()
