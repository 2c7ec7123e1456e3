"""A driver for ``PublisherCore`` in unit tests: a fake producer, a fake spool, a
virtual clock. No sleeps, no broker, no disk: every command is executed by hand."""

from __future__ import annotations

from dataclasses import dataclass, field

from alphapanda.pipeline.accounting import Accounting
from alphapanda.pipeline.producer import EncodedMessage
from alphapanda.pipeline.publisher_core import (
    AppendToSpool,
    CheckPublished,
    Command,
    CommitWindow,
    Fatal,
    Finish,
    Outcome,
    Produce,
    ProduceReplay,
    PublisherCore,
    PurgeQueued,
    ReadWindow,
)


def msg(i: int, key: int | None = None) -> EncodedMessage:
    return EncodedMessage(str(i % 5 if key is None else key).encode(), str(i).encode(), [], i)


@dataclass
class FakeProducer:
    """librdkafka's queue: ``capacity`` messages; each has a context until reported."""

    capacity: int = 1000
    queued: list[tuple[EncodedMessage, object]] = field(default_factory=list)
    fatal: bool = False


@dataclass
class FakeSpool:
    records: list[EncodedMessage] = field(default_factory=list)
    window: int = 0
    fail_writes: str | None = None
    room: int | None = None  # records it still takes (None: unlimited)
    lost_next_read: int = 0


class Driver:
    """Runs a core against fakes; spool operations complete only when ``settle_spool``."""

    def __init__(
        self,
        policy: str = "block",
        capacity: int = 1000,
        window: int = 100,
        stall_after: float | None = None,
    ) -> None:
        self.acct = Accounting()
        # Ticks the shell holds for the core (in its buffer), not yet fed.
        self.upstream = 0
        self.core = PublisherCore(
            self.acct,
            policy=policy,
            replay_window=window,
            stall_after=stall_after,
            upstream=lambda: self.upstream,
        )
        self.producer = FakeProducer(capacity)
        self.spool = FakeSpool()
        self.now = 0.0
        self.pending_spool: list[Command] = []
        self.fatal: list[str] = []
        self.finished: Finish | None = None
        self.topic: list[EncodedMessage] = []  # what the broker stored, in order
        self.purges = 0
        self.prepends = 0
        # CheckPublished: answered at once from ``topic`` unless ``check_error`` is set;
        # with ``hold_checks`` they wait in ``pending_checks`` for ``answer_checks``.
        self.check_error: str | None = None
        self.hold_checks = False
        self.pending_checks: list[CheckPublished] = []
        self.checks: list[CheckPublished] = []

    def preload(self, n: int) -> None:
        """A previous run left ``n`` records (msg(0..n-1)) in the spool."""
        self.spool.records = [msg(i) for i in range(n)]
        self.acct.recover(n)
        self.core.recovered(n)

    # -- feeding ticks -------------------------------------------------------------

    def feed(self, messages: list[EncodedMessage]) -> None:
        """Ticks taken from the buffer and encoded (as the shell does)."""
        self.acct.accept(len(messages))
        self.acct.take(len(messages))
        self.core.on_batch(messages, self.now)
        self.run()

    def tick(self, seconds: float = 0.0) -> None:
        self.now += seconds
        self.core.on_timer(self.now)
        self.run()

    # -- executing commands ------------------------------------------------------------

    def run(self) -> None:
        core = self.core
        while (command := core.next_command()) is not None:
            match command:
                case Produce(messages, start):
                    room = (
                        0
                        if self.producer.fatal
                        else self.producer.capacity - len(self.producer.queued)
                    )
                    batch = messages[start : start + max(0, room)]
                    self.producer.queued.extend((m, None) for m in batch)
                    core.on_produced(len(batch), self.now)
                case ProduceReplay(window, items):
                    for index, message in items:
                        if (
                            self.producer.fatal
                            or len(self.producer.queued) >= self.producer.capacity
                        ):
                            core.on_replay_refused(window, index)
                        else:
                            self.producer.queued.append((message, (window, index)))
                case AppendToSpool() | ReadWindow() | CommitWindow():
                    self.pending_spool.append(command)
                case PurgeQueued():
                    self.purges += 1
                case CheckPublished():
                    self.checks.append(command)
                    self.pending_checks.append(command)
                    if not self.hold_checks:
                        self.answer_checks()
                case Fatal(reason):
                    self.fatal.append(reason)
                case Finish():
                    self.finished = command

    def answer_checks(self) -> None:
        """Answer the CheckPublished commands waiting, from what the topic holds."""
        while self.pending_checks:
            command = self.pending_checks.pop(0)
            if self.check_error is not None:
                self.core.on_published_checked(command.window, None, self.check_error, self.now)
            else:
                # As the shell does: positions in the list asked about, then the
                # window's indices.
                found = {i for i, message in enumerate(command.messages) if message in self.topic}
                present = command.window_indices(found)
                self.core.on_published_checked(command.window, present, None, self.now)
            self.run()

    def settle_spool(self) -> None:
        """Complete every spool operation queued so far (and any they lead to)."""
        while self.pending_spool:
            command = self.pending_spool.pop(0)
            spool = self.spool
            match command:
                case AppendToSpool(messages, _, _, True):
                    # Like Spool.prepend_many: in front, not size-bounded; the window
                    # read before is dropped (read again later).
                    if spool.fail_writes is not None:
                        self.core.on_spool_appended(0, spool.fail_writes, self.now)
                    else:
                        spool.records[:0] = messages
                        spool.window = 0
                        self.prepends += 1
                        self.core.on_spool_appended(len(messages), None, self.now)
                case AppendToSpool(messages, force, _, _):
                    if spool.fail_writes is not None:
                        self.core.on_spool_appended(0, spool.fail_writes, self.now)
                    else:
                        take = len(messages)
                        if spool.room is not None and not force:
                            take = min(take, spool.room)
                            spool.room -= take
                        spool.records.extend(messages[:take])
                        error = None if take == len(messages) else "spool_max_bytes reached"
                        self.core.on_spool_appended(take, error, self.now)
                case ReadWindow(max_records):
                    lost, spool.lost_next_read = spool.lost_next_read, 0
                    del spool.records[:lost]
                    spool.window = min(max_records, len(spool.records))
                    self.core.on_window_read(spool.records[: spool.window], lost, None, self.now)
                case CommitWindow(count):
                    del spool.records[: min(count, spool.window)]
                    spool.window = 0
                    self.core.on_window_committed(None, self.now)
            self.run()

    # -- the broker (keys stand for partitions) ----------------------------------------------------------------------

    def deliver(
        self, n: int | None = None, outcome: Outcome = Outcome.ACKED, *, written: bool = False
    ) -> None:
        """The broker reports on the oldest ``n`` queued messages (all by default).
        ``written``: a failure after the broker wrote them (it went away before answering)."""
        queued = self.producer.queued
        n = len(queued) if n is None else min(n, len(queued))
        reports, self.producer.queued = queued[:n], queued[n:]
        written_ids = {id(m) for m, _ in reports} if written else set()
        if outcome is not Outcome.ACKED:
            # Like librdkafka's idempotent producer: a partition's queue fails in
            # order, so what is queued behind a failed message of its key fails too.
            keys = {m.key for m, _ in reports}
            reports += [q for q in self.producer.queued if q[0].key in keys]
            self.producer.queued = [q for q in self.producer.queued if q[0].key not in keys]
        direct_acks = 0
        for message, context in reports:
            if outcome is Outcome.ACKED or id(message) in written_ids:
                self.topic.append(message)
            if isinstance(context, tuple):
                if direct_acks:
                    self.core.on_direct_acked(direct_acks)
                    direct_acks = 0
                self.core.on_replay_report(context[0], context[1], outcome)
            elif outcome is Outcome.ACKED:
                direct_acks += 1
            else:
                self.core.on_direct_failed(message, outcome)
        if direct_acks:
            self.core.on_direct_acked(direct_acks)
        self.run()

    def purge(self, on_the_wire: int = 0) -> None:
        """What librdkafka does on PurgeQueued: queued messages fail at once, except the
        oldest ``on_the_wire`` (in flight: their reports come later, after these)."""
        wire, self.producer.queued = (
            self.producer.queued[:on_the_wire],
            self.producer.queued[on_the_wire:],
        )
        self.deliver(outcome=Outcome.RETRIABLE)
        self.producer.queued = wire + self.producer.queued

    def assert_balanced(self) -> None:
        assert self.acct.imbalance() == 0, self.acct.snapshot()
        # Awaiting an ack: in the producer, or held by the core (failed, or checked).
        held = len(self.producer.queued) + self.core.held_failed
        assert held == self.acct.awaiting_ack, (held, self.acct.snapshot())
