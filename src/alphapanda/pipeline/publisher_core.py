"""``PublisherCore``: every decision of the publisher, without I/O (events in, commands out).

Like h11's connection object, the core never touches librdkafka, the disk or the
clock. The shell (``Publisher``) tells it what happened (an encoded batch to publish,
how many messages the producer accepted, delivery reports, the outcome of a spool
write/read/commit, a timer tick carrying ``now``) and executes the commands it queues
(``Produce``, ``ProduceReplay``, ``AppendToSpool``, ``ReadWindow``, ``CommitWindow``,
``PurgeQueued``, ``CheckPublished``, ``Fatal``, ``Finish``). Every move of a tick is mirrored in
``Accounting`` in the same call, so the books balance after every event.

Routes, never both for one message:

*direct*
    ``Produce`` into librdkafka. If its queue stays full for ``SPILL_AFTER`` seconds,
    a delivery fails with a retriable error, or no delivery report at all comes for
    ``stall_after`` seconds while messages are outstanding, the core switches to
    *spooling*. (The shell's producer times a message out only much later than that:
    librdkafka's own timeout can fail an older message on the wire while it delivers a
    newer one of the same partition. Noticed here first, only what librdkafka has not
    sent yet is withdrawn, which is always the newest; messages on the wire wait for
    the broker or for that later timeout, with nothing newer behind them.)
*spooling*
    New messages are appended to the spool, behind what is already there. What
    librdkafka has not put on the wire yet is purged at once, so it comes back failed
    right away, in order. Messages of the direct route that fail are older than
    anything in the spool: they are kept in memory (bounded by librdkafka's queue,
    which held them until then) and re-sent first, as a window of their own, once
    nothing of the direct route is outstanding any more (the fence). Then the spool is
    replayed in windows: a window is read and produced; its cursor is committed once
    every message was acked. A window message that failed is re-sent after a pause,
    and only while nothing of the direct route is outstanding. When a window is the
    whole spool, new input is held for a moment (the TickBuffer absorbs it) hoping the
    window is acked; the core goes back to direct sends only once every message of the
    last window is acked, otherwise the held input is spooled behind it. So
    per-instrument order holds through any number of outages.

    A message whose delivery failed may still have been written by the broker: the
    broker wrote it and then went away before answering, or librdkafka had put a
    retry of it back in its queue when the purge withdrew it. Sent again as a new
    message it would be in the topic twice. So before failed messages are sent again,
    and before the windows of a spool left by an earlier run (which may hold messages
    that were on the wire when that run ended), the shell is asked which of them the
    topic already holds (``CheckPublished``, compared by exact position); those count
    as acked and only the others are sent. If the broker cannot answer yet, the check
    is tried again after a pause.
*after a crash*
    A spool left by an earlier run is replayed first, unless the shell holds it
    (``recovered(records, hold=True)``): crash recovery from the write-ahead log is
    about to publish ticks that are older than everything in that spool (they were in
    librdkafka's queue or in memory when the process died). While held, input goes
    direct; ``release_replay()``, called once the last recovered tick was handed over,
    takes no more input until that is produced, then switches to spooling: the old
    spool is replayed behind the fence, and newer input goes behind it.
*fatal*
    The producer is unusable (fenced idempotent producer, ...): everything in hand and
    everything still coming is spooled for the next run, and the shell is told
    (``Fatal``) so it can report unhealthy and shut down with a failure status.

When the spool cannot take a tick (a write error, ``spool_max_bytes``, too little free
disk), the buffer policy decides: under ``block`` the core holds the batch (the shell
stops taking from the buffer, so the sockets are pushed back on) and retries with a
backoff; under ``drop_oldest``/``conflate`` the batch is dropped and counted with reason
``spool_unavailable``. Messages whose delivery failed are always retried (bounded by
librdkafka's queue). ``spool_problem`` says why, until a write succeeds again.

Shutdown (``close(deadline)`` once the buffer is closed and drained): keep going until
everything is settled; near the deadline stop replaying, purge what librdkafka has not
sent (it comes back and is spooled) and spool everything held; at the deadline
``Finish`` with the acked prefix of an open window to commit. Messages already on the
wire whose fate is still unknown stay counted in ``awaiting_ack``.
"""

from __future__ import annotations

import enum
import logging
from collections import deque
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Final, Literal

from alphapanda.pipeline.accounting import (
    DROP_DELIVERY_FAILED,
    DROP_SHUTDOWN,
    DROP_SPOOL_CORRUPT,
    DROP_SPOOL_UNAVAILABLE,
    Accounting,
)
from alphapanda.pipeline.producer import EncodedMessage
from alphapanda.pipeline.wire import position_of

log = logging.getLogger(__name__)

# How long librdkafka's queue may stay full before new messages go to the spool.
SPILL_AFTER: Final = 0.5
# Records per replay window (also capped at half the producer's queue).
REPLAY_WINDOW: Final = 5000
# Pause before re-sending replay messages that failed (the broker is still away).
REPLAY_RETRY_DELAY: Final = 1.0
# Backoff between attempts to write to a spool that refused or failed.
SPOOL_RETRY_MIN: Final = 0.05
SPOOL_RETRY_MAX: Final = 2.0
# While fencing, what librdkafka re-queues (retries after a request timeout) is
# purged again this often, so the fence does not wait for message.timeout.ms.
PURGE_INTERVAL: Final = 0.25
# How long new input is held while the last window of the spool awaits its acks
# (if they come, the core goes back to direct sends without spooling the input).
LAST_WINDOW_HOLD: Final = 0.5
# Encoded messages gathered in memory while a spool write is running (one batch).
SPOOL_BATCH_MAX: Final = 5000
# Pause before offering messages again to a full producer queue.
PRODUCE_RETRY: Final = 0.001
# A check the broker cannot answer is logged once in this many attempts.
CHECK_FAILURE_LOG_EVERY: Final = 30
# Share of the shutdown deadline kept for purging and spooling at the end.
SHUTDOWN_RESERVE: Final = 1.0


def in_original_order(messages: list[EncodedMessage]) -> list[EncodedMessage]:
    """Failed messages as they were received. Their reports do not come in that order:
    the purge fails what is still queued at once, what was on the wire fails later."""
    return sorted(messages, key=_received_position)


def _received_position(message: EncodedMessage) -> tuple[int, int]:
    return message.received_at_ns, position_of(message.headers) or 0


class Outcome(enum.Enum):
    """A delivery report, as far as the core cares."""

    ACKED = "acked"
    RETRIABLE = "retriable"  # the broker may take it later: spool / retry it
    PERMANENT = "permanent"  # no retry can fix it: drop and count it


Origin = Literal["encoding", "failed"]


@dataclass(frozen=True, slots=True)
class Produce:
    """Hand ``messages[start:]`` to the producer; answer with ``on_produced(accepted)``."""

    messages: list[EncodedMessage]
    start: int


@dataclass(frozen=True, slots=True)
class ProduceReplay:
    """Produce window messages with ``(window, index)`` as their delivery context;
    answer each one the producer refuses with ``on_replay_refused``."""

    window: int
    items: list[tuple[int, EncodedMessage]]


@dataclass(frozen=True, slots=True)
class AppendToSpool:
    """Write ``messages`` to the spool (``front``: ahead of everything in it, as they
    are older); answer with ``on_spool_appended``."""

    messages: list[EncodedMessage]
    force: bool
    origin: Origin
    front: bool = False


@dataclass(frozen=True, slots=True)
class ReadWindow:
    """Read the next replay window; answer with ``on_window_read``."""

    max_records: int


@dataclass(frozen=True, slots=True)
class CommitWindow:
    """The first ``count`` records of the last window were acked; answer with
    ``on_window_committed``."""

    count: int


@dataclass(frozen=True, slots=True)
class CheckPublished:
    """Which of ``messages`` (indices ``indices`` of window ``window``) does the topic
    already hold? Answer with ``on_published_checked`` and ``window_indices(found)``."""

    window: int
    indices: list[int]
    messages: list[EncodedMessage]

    def window_indices(self, found: set[int]) -> set[int]:
        """``found`` (positions in ``messages``) as indices of the window."""
        return {self.indices[i] for i in found}


@dataclass(frozen=True, slots=True)
class PurgeQueued:
    """Withdraw what librdkafka has not put on the wire (it comes back as failed)."""


@dataclass(frozen=True, slots=True)
class Fatal:
    """The producer is unusable: report unhealthy and shut down with a failure status."""

    reason: str


@dataclass(frozen=True, slots=True)
class Finish:
    """Done: commit ``commit_prefix`` records of the open window (if not None), stop."""

    commit_prefix: int | None


Command = (
    Produce
    | ProduceReplay
    | AppendToSpool
    | ReadWindow
    | CommitWindow
    | PurgeQueued
    | CheckPublished
    | Fatal
    | Finish
)


@dataclass(slots=True)
class _Window:
    ident: int
    messages: list[EncodedMessage]
    is_last: bool
    in_memory: bool  # failed direct messages (not in the spool file)
    hold_until: float = 0.0
    acked: list[bool] = field(default_factory=list)
    settled: int = 0
    outstanding: int = 0
    failed: list[int] = field(default_factory=list)
    retry_at: float | None = None
    checking: list[int] | None = None  # indices asked about in a CheckPublished

    def acked_prefix(self) -> int:
        n = 0
        for ok in self.acked:
            if not ok:
                break
            n += 1
        return n


class PublisherCore:
    """The publisher's state machine; see the module docstring."""

    def __init__(
        self,
        accounting: Accounting,
        *,
        policy: str,
        replay_window: int = REPLAY_WINDOW,
        stall_after: float | None = None,
        upstream: Callable[[], int] = lambda: 0,
    ) -> None:
        self._acct = accounting
        # How many ticks the shell still holds for the core (the buffer, a batch in
        # hand): while any are left, closing does not finish before the deadline.
        self._upstream = upstream
        # No delivery report for this long while messages are outstanding: the broker
        # is away (None: rely on the producer's own timeouts).
        self.stall_after = stall_after
        self._progress_at = 0.0  # the last delivery report, or when waiting began
        self.policy = policy
        self.replay_window = max(1, replay_window)
        self._commands: deque[Command] = deque()
        self.spooling = False
        self.fatal_reason: str | None = None
        self.spool_records = 0  # records in the spool file, not yet committed
        # Records of a spool left by an earlier run not yet replayed: checked first.
        self._unchecked_recovered = 0
        # That spool's replay waits for crash recovery (see "after a crash").
        self._replay_held = False
        self._release_pending = False
        self.direct_outstanding = 0
        self._input: list[EncodedMessage] = []  # encoded, not yet produced/spooled
        self._input_pos = 0
        self._producing = False  # a Produce command is queued
        self._full_since: float | None = None
        # Failed direct deliveries (stage awaiting_ack), re-sent before the spool.
        self._failed: list[EncodedMessage] = []
        self._spool_busy = False
        self._in_spool: tuple[Origin, int] | None = None  # append in progress
        self._spool_retry_at = 0.0  # next append after a refused one (backoff)
        self._read_retry_at = 0.0  # next window read after a failed one
        self._spool_backoff = 0.0
        self.spool_problem: str | None = None
        self._window: _Window | None = None
        self._windows = 0
        self._commit_pending = False
        self._last_purge = -1e18
        self._deadline: float | None = None
        self._final_phase = False
        self._final_purged = False
        self._reserve = SHUTDOWN_RESERVE
        self._produce_retry_at = 0.0
        self._failed_at = 0.0
        self.finished = False
        self.now = 0.0
        # Operator figures.
        self.spill_events = 0
        self.spool_full_waits = 0
        self.unresolved_at_shutdown = 0
        self.already_published = 0  # failed messages the topic turned out to hold
        self.publish_checks = 0
        self.check_failures = 0
        self.stalls = 0  # times no delivery report came for stall_after

    # -- what the shell asks ----------------------------------------------------------

    def next_command(self) -> Command | None:
        """The next command to execute, or ``None``."""
        return self._commands.popleft() if self._commands else None

    @property
    def wants_input(self) -> bool:
        """True when the shell should take the next batch from the buffer."""
        if self.finished:
            return False
        held = len(self._input) - self._input_pos
        if self._release_pending and not self.closing:
            return False  # the recovered ticks in hand go first, alone
        if held == 0 or self.closing:
            # Closing: the (closed, bounded) buffer is emptied into the core, so what
            # cannot be published or spooled by the deadline is counted, not left.
            return True
        # While spooling, input gathers during a spool write (bounded), so the next
        # write is one big batch with one fsync instead of many small ones.
        return (
            self.spooling
            and self._spool_busy
            and self.spool_problem is None
            and held < SPOOL_BATCH_MAX
        )

    @property
    def held_failed(self) -> int:
        """Messages still ``awaiting_ack`` in the books though not in the producer: those
        whose delivery failed, held here to be produced again first, and those a
        ``CheckPublished`` is asking about."""
        held = len(self._failed)
        window = self._window
        if window is not None:
            held += len(window.checking or ())
            if window.in_memory:
                held += len(window.failed)  # a spool window's are booked back to spooled
        return held

    @property
    def closing(self) -> bool:
        return self._deadline is not None

    def not_ready_reasons(self) -> list[str]:
        """Why the publisher is not in its normal state (empty: all well)."""
        reasons = []
        if self.fatal_reason is not None:
            reasons.append(f"Kafka producer failed fatally ({self.fatal_reason}): restart")
        elif self.spooling:
            reasons.append("broker not accepting writes: ticks are going to the disk spool")
        if self.spool_problem is not None:
            reasons.append(f"the disk spool cannot take ticks: {self.spool_problem}")
        return reasons

    # -- events ---------------------------------------------------------------------------

    def recovered(self, records: int, *, hold: bool = False) -> None:
        """The spool holds ``records`` from a previous run: replay them first, or (with
        ``hold``) once ``release_replay()`` is called."""
        self.spool_records += records
        self._unchecked_recovered += records
        if records and hold:
            self._replay_held = True
        elif records:
            self.spooling = True

    def release_replay(self) -> None:
        """Every tick recovered from the write-ahead log was handed over (``on_batch``):
        once they are produced, replay the earlier run's spool before newer input."""
        if self._replay_held:
            self._release_pending = True
            self._advance()

    def on_batch(self, messages: list[EncodedMessage], now: float) -> None:
        """Encoded messages (stage ``encoding``) to publish, in order."""
        self.now = now
        if self._input_pos >= len(self._input):
            self._input, self._input_pos = list(messages), 0
        else:
            if self._input_pos:
                del self._input[: self._input_pos]
                self._input_pos = 0
            self._input.extend(messages)
        self._advance()

    def on_produced(self, accepted: int, now: float) -> None:
        """The producer took ``accepted`` messages of the last ``Produce``."""
        self.now = now
        self._producing = False
        if accepted:
            self._acct.produce(accepted)
            if not self._outstanding():
                self._progress_at = now
            self.direct_outstanding += accepted
            self._input_pos += accepted
            self._full_since = None
        else:
            # librdkafka's queue is full: try again once time has passed or acks came.
            self._produce_retry_at = now + PRODUCE_RETRY
            if self._full_since is None:
                self._full_since = now
        self._advance()

    def on_produce_paused(self, now: float) -> None:
        """The producer took nothing because it is paused on purpose (a transaction
        commit): try again shortly, without counting it as a full queue."""
        self.now = now
        self._producing = False
        self._produce_retry_at = now + PRODUCE_RETRY
        self._advance()

    def on_direct_acked(self, n: int) -> None:
        """Delivery reports said success for ``n`` direct messages."""
        self._progress_at = self.now
        self._acct.ack(n)
        self.direct_outstanding -= n
        self._produce_retry_at = 0.0  # room was freed
        self._advance()

    def on_direct_failed(self, message: EncodedMessage, outcome: Outcome) -> None:
        """A direct message's delivery failed."""
        self._progress_at = self.now
        self.direct_outstanding -= 1
        if outcome is Outcome.PERMANENT:
            self._acct.drop("awaiting_ack", DROP_DELIVERY_FAILED)
            log.error("message dropped: its delivery failed permanently")
        else:
            self._failed.append(message)
            self._failed_at = self.now
            self._enter_spooling("delivery failed")
            self._purge_after_failure()
        self._advance()

    def on_replay_report(self, window: int, index: int, outcome: Outcome) -> None:
        """A delivery report for message ``index`` of replay window ``window``."""
        w = self._window
        if w is None or w.ident != window:
            return  # cannot happen: a window ends only once it is settled
        self._progress_at = self.now
        w.outstanding -= 1
        if outcome is Outcome.ACKED:
            w.acked[index] = True
            self._acct.ack()
        elif outcome is Outcome.PERMANENT:
            w.acked[index] = True  # settled: counted as dropped, never replayed
            self._acct.drop("awaiting_ack", DROP_DELIVERY_FAILED)
        else:
            w.failed.append(index)
            if not w.in_memory:
                self._acct.replay_failed()
            w.is_last = False  # it will not be the end of the spool after all
            self._purge_after_failure()
        self._advance()

    def on_replay_refused(self, window: int, index: int) -> None:
        """The producer refused a window message (its queue was full)."""
        self.on_replay_report(window, index, Outcome.RETRIABLE)

    def on_fatal(self, reason: str) -> None:
        """The producer failed fatally: it will never send again."""
        if self.fatal_reason is not None:
            return
        self.fatal_reason = reason
        self.spooling = True
        self._commands.append(Fatal(reason))
        log.critical("producer failed fatally (%s): spooling every tick for the next run", reason)
        self._advance()

    def on_spool_appended(self, written: int, error: str | None, now: float) -> None:
        """The outcome of the last ``AppendToSpool``."""
        self.now = now
        assert self._in_spool is not None
        origin, count = self._in_spool
        self._in_spool = None
        self._spool_busy = False
        self.spool_records += written
        if origin == "encoding":
            self._acct.spool_from_encoding(written)
            self._input_pos += written
        else:
            self._acct.spool_failed(written)
            del self._failed[:written]
        if error is None:
            if self.spool_problem is not None:
                log.warning("the disk spool takes ticks again")
            self.spool_problem = None
            self._spool_backoff = 0.0
        else:
            self._spool_unavailable(error, now, origin, count - written)
        self._advance()

    def on_window_read(
        self, messages: list[EncodedMessage], lost: int, error: str | None, now: float
    ) -> None:
        """The outcome of the last ``ReadWindow``."""
        self.now = now
        self._spool_busy = False
        if lost:
            lost = min(lost, self.spool_records)
            self.spool_records -= lost
            self._acct.drop("spooled", DROP_SPOOL_CORRUPT, lost)
        if error is not None:
            self._read_retry_at = now + self._next_backoff()
            log.error("cannot read the spool: %s (retrying)", error)
            self._advance()
            return
        if not messages:
            self._advance()
            return
        self._acct.replay(len(messages))
        check = self._unchecked_recovered > 0
        self._unchecked_recovered = max(0, self._unchecked_recovered - len(messages))
        self._open_window(
            messages,
            in_memory=False,
            is_last=len(messages) >= self.spool_records,
            check=check,
        )
        self._advance()

    def on_published_checked(
        self, window: int, present: set[int] | None, error: str | None, now: float
    ) -> None:
        """The answer to ``CheckPublished``: the asked indices the topic holds."""
        self.now = now
        w = self._window
        if self.finished or w is None or w.ident != window or w.checking is None:
            return  # the check was abandoned (shutdown, fatal error)
        asked, w.checking = w.checking, None
        if error is not None or present is None:
            self.check_failures += 1
            if self.check_failures % CHECK_FAILURE_LOG_EVERY == 1:
                log.warning(
                    "cannot tell which failed ticks the topic holds: %s (retrying every %.0f s)",
                    error,
                    REPLAY_RETRY_DELAY,
                )
            w.failed.extend(asked)
            w.retry_at = now + REPLAY_RETRY_DELAY
            if not w.in_memory:
                self._acct.replay_failed(len(asked))
            self._advance()
            return
        self.publish_checks += 1
        send = []
        for i in asked:
            if i in present:
                w.acked[i] = True
            else:
                send.append(i)
        held = len(asked) - len(send)
        if held:
            self.already_published += held
            self._acct.ack(held)
            log.warning(
                "%d of %d ticks whose delivery failed were in the topic already: not sent again",
                held,
                len(asked),
            )
        if send:
            self._send(w, send)
        self._advance()

    def _open_window(
        self,
        messages: list[EncodedMessage],
        *,
        in_memory: bool,
        is_last: bool,
        check: bool = False,
    ) -> None:
        self._windows += 1
        window = _Window(
            self._windows,
            messages,
            is_last,
            in_memory,
            hold_until=self.now + LAST_WINDOW_HOLD,
            acked=[False] * len(messages),
        )
        self._window = window
        if check:
            self._check(window, list(range(len(messages))))
        else:
            self._send(window, list(range(len(messages))))

    def on_window_committed(self, error: str | None, now: float) -> None:
        """The outcome of the last ``CommitWindow``."""
        self.now = now
        self._spool_busy = False
        if error is not None:
            # Not lost: the spool retries the cursor with its next commit; a crash
            # meanwhile would replay the window once more (duplicates, never loss).
            log.error("spool cursor not persisted: %s", error)
        elif self.spool_problem is not None:
            # A replayed window made room: try the refused append again now.
            self._spool_retry_at = now
            self._spool_backoff = 0.0
        self._advance()

    def on_timer(self, now: float) -> None:
        """Time passed (``now`` from the shell's clock)."""
        self.now = now
        self._advance()

    def close(self, deadline: float, now: float) -> None:
        """No more input is coming: settle everything by ``deadline``."""
        self.now = now
        if self._deadline is None:
            self._deadline = deadline
            # Keep most of the time for flushing; a little to purge and spool at the end.
            self._reserve = min(SHUTDOWN_RESERVE, max(0.0, deadline - now) / 4)
        self._advance()

    # -- the decisions ------------------------------------------------------------------

    def _enter_spooling(self, why: str) -> None:
        if not self.spooling:
            self.spooling = True
            self.spill_events += 1
            log.warning("%s: spooling new ticks to disk", why)
        self._purge()

    def _leave_spooling(self) -> None:
        self.spooling = False
        # Not needed any more: a problem of the spool is no reason to be unready.
        self.spool_problem = None
        self._spool_backoff = 0.0

    def _purge_after_failure(self) -> None:
        # A message failed (timed out): what is queued behind it in librdkafka must
        # not be sent before it is re-sent, or a later tick of its instrument could
        # land first. Purged at once, those fail too, in order, and are re-sent after it.
        if self.fatal_reason is None and not (
            self._commands and isinstance(self._commands[-1], PurgeQueued)
        ):
            self._last_purge = self.now
            self._commands.append(PurgeQueued())

    def _purge(self) -> None:
        if self.fatal_reason is None and self.now - self._last_purge >= PURGE_INTERVAL:
            self._last_purge = self.now
            self._commands.append(PurgeQueued())

    def _next_backoff(self) -> float:
        self._spool_backoff = min(SPOOL_RETRY_MAX, max(SPOOL_RETRY_MIN, self._spool_backoff * 2))
        return self._spool_backoff

    def _spool_unavailable(self, error: str, now: float, origin: Origin, unwritten: int) -> None:
        if self.spool_problem is None:
            log.error("the disk spool cannot take ticks: %s", error)
        self.spool_problem = error
        self._spool_retry_at = now + self._next_backoff()
        self.spool_full_waits += 1
        if origin == "encoding" and unwritten and self.policy != "block" and not self.closing:
            # The buffer's policy drops rather than pushes back: so does the spool.
            self._acct.drop("encoding", DROP_SPOOL_UNAVAILABLE, unwritten)
            self._input_pos += unwritten

    def _spool_idle(self) -> bool:
        return not self._spool_busy and self.now >= self._spool_retry_at

    def _spool(self, command: AppendToSpool | ReadWindow | CommitWindow) -> None:
        self._spool_busy = True
        if isinstance(command, AppendToSpool):
            self._in_spool = (command.origin, len(command.messages))
        self._commands.append(command)

    def _send(self, window: _Window, indices: list[int]) -> None:
        if not self._outstanding():
            self._progress_at = self.now
        window.outstanding += len(indices)
        self._commands.append(
            ProduceReplay(window.ident, [(i, window.messages[i]) for i in indices])
        )

    def _check(self, window: _Window, indices: list[int]) -> None:
        window.checking = indices
        self._commands.append(
            CheckPublished(window.ident, indices, [window.messages[i] for i in indices])
        )

    def _outstanding(self) -> int:
        window = self._window
        return self.direct_outstanding + (window.outstanding if window is not None else 0)

    def _check_stall(self, now: float) -> None:
        # Where a silent broker is noticed, before librdkafka's own (later) timeout
        # could fail an older message on the wire and still deliver a newer one. What
        # librdkafka has not sent is withdrawn (it comes back as failed, in order, and
        # is re-sent or spooled); what is on the wire waits, nothing newer behind it.
        if (
            self.stall_after is None
            or self.fatal_reason is not None
            or not self._outstanding()
            or now - self._progress_at < self.stall_after
        ):
            return
        self._progress_at = now
        self.stalls += 1
        if not self.spooling:
            self._enter_spooling(f"no delivery report for {self.stall_after:.1f} s")
        self._purge_after_failure()

    def _advance(self) -> None:
        if self.finished:
            return
        now = self.now
        self._check_stall(now)
        final = self._final_phase = self._final_phase or (
            self._deadline is not None and now >= self._deadline - self._reserve
        )
        if final and not self._final_purged:
            self._final_purged = True
            if self.fatal_reason is None:
                self._commands.append(PurgeQueued())
        self._advance_window(now, final)
        if (final or self.fatal_reason is not None) and self._failed and self._spool_idle():
            self._spool_failed()
        self._advance_input(now, final)
        if self.spooling and self.fatal_reason is None and not final:
            self._maybe_replay()
        if self._deadline is not None:
            self._maybe_finish(now, final)

    def _spool_failed(self) -> None:
        # No more sending: failed messages go to the spool for the next run. They are
        # older than everything in it (newer ticks were spooled while they were being
        # retried), so they go in front, where the next run replays first.
        window = self._window
        front = True
        if window is not None and not window.in_memory:
            if window.outstanding == 0 and window.checking is None:
                # A prepend starts the spool anew: settle the open window first.
                prefix = window.acked_prefix()
                self._window = None
                self.spool_records -= prefix
                self._spool(CommitWindow(prefix))
                return
            front = False  # cannot wait for it: behind, but not lost
            log.warning(
                "%d failed ticks go to the end of the spool: the next run replays them "
                "after newer ones",
                len(self._failed),
            )
        self._failed = in_original_order(self._failed)
        self._spool(AppendToSpool(list(self._failed), True, "failed", front))

    def _fencing(self) -> bool:
        # Messages of the direct route whose fate is open: nothing older may be
        # re-sent before they are settled (a late failure is older than the spool).
        return self.direct_outstanding > 0

    def _advance_input(self, now: float, final: bool) -> None:
        if self._release_pending and self._input_pos >= len(self._input):
            self._release_pending = self._replay_held = False
            if self.spool_records > 0 and not self.spooling:
                self.spooling = True
                log.info("recovered ticks handed to the producer: replaying the spool next")
        if self._input_pos >= len(self._input) or self._producing:
            # (A Produce not executed yet holds the input from _input_pos on: until its
            # outcome is known, nothing of it may go to the spool as well.)
            return
        if not self.spooling:
            if self._full_since is not None and now - self._full_since >= SPILL_AFTER:
                self._full_since = None
                self._enter_spooling(f"producer queue full for {SPILL_AFTER:.1f} s")
            elif now >= self._produce_retry_at:
                self._producing = True
                self._commands.append(Produce(self._input[self._input_pos :], 0))
                return
        if not self.spooling:
            return
        window = self._window
        if (
            window is not None
            and window.is_last
            and now < window.hold_until
            and self.fatal_reason is None
            and not final
        ):
            return  # the last window may be acked in a moment: then straight to direct
        if window is not None:
            window.is_last = False  # the held input goes behind it
        replay_due = (
            window is None
            and self.spool_records > 0
            and not self._fencing()
            and self.fatal_reason is None
            and not final
        )
        if self.spool_problem is not None and replay_due:
            return  # the spool refused: replaying it first is what makes room
        if (
            replay_due
            and not self._failed
            and not self._replay_held
            and not self._spool_busy
            and now >= self._read_retry_at
        ):
            # The replay's turn: under steady input an append is always ready when the
            # spool goes idle, and reading the next window would wait forever. The
            # input waits for this one read (the buffer holds it).
            return
        if self._spool_idle():
            force = self.closing
            self._spool(AppendToSpool(self._input[self._input_pos :], force, "encoding"))
        elif (
            self.spool_problem is not None
            and self.policy != "block"
            and not self._spool_busy
            and not self.closing
        ):
            rest = len(self._input) - self._input_pos
            self._acct.drop("encoding", DROP_SPOOL_UNAVAILABLE, rest)
            self._input_pos = len(self._input)

    def _advance_window(self, now: float, final: bool) -> None:
        window = self._window
        if window is None or window.outstanding:
            return
        if window.checking is not None:
            if not (final or self.fatal_reason is not None):
                return  # the answer is on its way
            # No more sending: what was being checked stays where a failure would.
            asked, window.checking = window.checking, None
            window.failed.extend(asked)
            if not window.in_memory:
                self._acct.replay_failed(len(asked))
        if window.failed:
            if final or self.fatal_reason is not None:
                if window.in_memory:
                    # Back to the failed list, which goes to the spool.
                    self._failed[:0] = [window.messages[i] for i in sorted(window.failed)]
                    self._window = None
                return  # a spool window's failures stay in the spool for the next run
            if window.retry_at is None:
                window.retry_at = now + REPLAY_RETRY_DELAY
            if now < window.retry_at or self._fencing():
                return
            retry, window.failed, window.retry_at = sorted(window.failed), [], None
            if not window.in_memory:
                self._acct.replay(len(retry))
            # They may have reached the broker before failing: ask the topic first.
            self._check(window, retry)
            return
        # Every message settled and acked (or dropped as permanently failed).
        if window.in_memory:
            self._window = None
            if window.is_last and self.spool_records == 0 and not self._failed:
                self._leave_spooling()
                log.info("failed messages re-sent: publishing directly again")
            return
        if self._spool_busy:
            return
        self._window = None
        self.spool_records -= len(window.messages)
        self._spool(CommitWindow(len(window.messages)))
        if window.is_last and self.spool_records == 0 and not self._failed:
            self._leave_spooling()
            log.info("spool replayed: publishing directly again")

    def _maybe_replay(self) -> None:
        if self._window is not None or self._fencing():
            return
        if self._failed:
            # Failed direct messages are older than everything in the spool: first,
            # after a pause (the broker just failed them).
            if self.now < self._failed_at + REPLAY_RETRY_DELAY:
                return
            failed, self._failed = in_original_order(self._failed), []
            self._open_window(
                failed,
                in_memory=True,
                is_last=self.spool_records == 0 and self._input_pos >= len(self._input),
                check=True,
            )
            return
        # Not _spool_idle(): the backoff of refused appends must not slow the replay,
        # which is what makes room in a full spool.
        if self._spool_busy or self.now < self._read_retry_at:
            return
        # Held input (not yet in the spool) is newer than everything in it, so the
        # spool is replayed meanwhile: that is also how a full spool makes room.
        if self.spool_records > 0:
            self._spool(ReadWindow(self.replay_window))
        else:
            # Nothing older is left anywhere: held input (if any) may go direct.
            self._leave_spooling()
            log.info("spool drained: publishing directly again")

    def _maybe_finish(self, now: float, final: bool) -> None:
        assert self._deadline is not None
        settled = (
            self.direct_outstanding == 0
            and not self._failed
            and self._input_pos >= len(self._input)
            and not self._spool_busy
            and self._window is None
            and not self._upstream()
        )
        done = settled and (
            not self.spooling or self.spool_records == 0 or self.fatal_reason is not None or final
        )
        if final and not self._spool_busy and self._input_pos >= len(self._input):
            # Near the deadline: an open window's outstanding messages no longer count.
            done = done or (
                self.direct_outstanding == 0
                and not self._failed
                and (self._window is None or not self._window.outstanding)
                and not self._upstream()
            )
        if not done and now < self._deadline:
            return
        if self._spool_busy or self._producing:
            return  # a spool write or a Produce is under way; its outcome is booked first
        rest = len(self._input) - self._input_pos
        if rest:
            self._acct.drop(
                "encoding", DROP_SPOOL_UNAVAILABLE if self.spool_problem else DROP_SHUTDOWN, rest
            )
            self._input_pos = len(self._input)
        if self._failed:
            self._acct.drop("awaiting_ack", DROP_SPOOL_UNAVAILABLE, len(self._failed))
            self._failed.clear()
        # An open window: its acked prefix is committed; the rest stays in the spool
        # for the next run (an acked message after an unacked one is sent twice then:
        # a duplicate, never a loss).
        window = self._window
        prefix = window.acked_prefix() if window is not None else None
        self.unresolved_at_shutdown = self.direct_outstanding + (
            window.outstanding if window is not None else 0
        )
        self.finished = True
        self._commands.append(Finish(prefix))
