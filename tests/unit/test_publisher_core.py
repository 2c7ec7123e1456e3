"""PublisherCore driven through every transition with a fake producer, a fake spool and
a virtual clock: no sleeps, no broker, no disk."""

from __future__ import annotations

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from alphapanda.pipeline.publisher_core import (
    LAST_WINDOW_HOLD,
    REPLAY_RETRY_DELAY,
    SPILL_AFTER,
    AppendToSpool,
    Outcome,
    ReadWindow,
)
from tests.support.fakecore import Driver, msg

pytestmark = pytest.mark.unit


def in_order_per_key(topic: list) -> bool:  # type: ignore[type-arg]
    last: dict[bytes, int] = {}
    for m in topic:
        if m.received_at_ns < last.get(m.key, -1):
            return False
        last[m.key] = m.received_at_ns
    return True


def test_direct_route_publishes_and_balances() -> None:
    d = Driver()
    d.feed([msg(i) for i in range(10)])
    assert d.acct.awaiting_ack == 10 and not d.core.spooling
    d.deliver()
    assert d.acct.published == 10 and d.topic == [msg(i) for i in range(10)]
    d.assert_balanced()
    assert d.core.not_ready_reasons() == []


def test_full_queue_spills_after_the_grace_period_and_purges() -> None:
    d = Driver(capacity=5)
    d.feed([msg(i) for i in range(8)])
    assert d.acct.awaiting_ack == 5 and d.acct.encoding == 3
    assert not d.core.wants_input  # the rest is held: the buffer backs up
    d.tick(SPILL_AFTER / 2)
    assert not d.core.spooling
    d.tick(SPILL_AFTER)
    assert d.core.spooling and d.purges == 1
    assert isinstance(d.pending_spool[0], AppendToSpool)
    d.settle_spool()
    assert d.acct.spooled == 3 and d.core.wants_input
    d.assert_balanced()


def test_a_produce_waiting_to_run_keeps_its_messages_out_of_the_spool() -> None:
    # The shell serves delivery reports (poll) and then the timer before it runs the
    # commands: an ack that queued a Produce, then the spill deadline, both in between.
    # Those messages must go one way only (they went to librdkafka and the spool).
    d = Driver(capacity=5)
    d.feed([msg(i) for i in range(8)])  # 5 accepted, 3 wait for room
    d.tick(SPILL_AFTER * 0.8)
    acked, _ = d.producer.queued.pop(0)
    d.topic.append(acked)
    d.core.on_direct_acked(1)  # room: a Produce of the 3 is queued, not run yet
    d.now = SPILL_AFTER * 1.2
    d.core.on_timer(d.now)  # the spill deadline passes before it runs
    d.run()
    d.settle_spool()
    produced = {id(m) for m, _ in d.producer.queued}
    assert not produced & {id(m) for m in d.spool.records}
    drain(d)
    assert d.topic == [msg(i) for i in range(8)]
    d.assert_balanced()


def test_outage_cycle_returns_to_direct_in_order() -> None:
    d = Driver(capacity=50, window=7)
    d.feed([msg(i) for i in range(30)])
    # The broker goes away: the first 10 are acked, the rest fail (purged/timed out).
    d.deliver(10)
    d.deliver(outcome=Outcome.RETRIABLE)
    assert d.core.spooling
    d.feed([msg(i) for i in range(30, 60)])  # newer ticks: to the spool
    d.settle_spool()
    assert d.acct.spooled == 30 and d.acct.awaiting_ack == 20
    d.tick(REPLAY_RETRY_DELAY)
    # Fence passed (nothing direct outstanding): the failed ones are re-sent first.
    assert [m for m, _ in d.producer.queued] == [msg(i) for i in range(10, 30)]
    d.deliver()
    for _ in range(20):
        d.tick(0.01)
        d.settle_spool()
        d.deliver()
    assert not d.core.spooling
    d.feed([msg(i) for i in range(60, 70)])
    d.deliver()
    assert d.topic == [msg(i) for i in range(70)]
    assert d.spool.records == []
    d.assert_balanced()


def test_back_to_direct_only_once_the_last_window_is_acked() -> None:
    # Defect 5: a window covering the whole spool must be acked before direct sends.
    d = Driver(window=100)
    d.preload(5)
    d.tick(0.0)
    d.settle_spool()
    assert len(d.producer.queued) == 5
    d.feed([msg(i) for i in range(5, 8)])
    assert d.core.spooling and not d.core.wants_input  # held, not sent behind it
    assert len(d.producer.queued) == 5
    d.deliver(2)
    d.deliver(outcome=Outcome.RETRIABLE)  # three window messages fail
    d.tick(0.0)
    d.settle_spool()
    # The held input goes to the spool behind the failed window, never direct.
    assert d.spool.records[-3:] == [msg(5), msg(6), msg(7)]
    assert d.producer.queued == []
    d.tick(REPLAY_RETRY_DELAY)
    assert [m for m, _ in d.producer.queued] == [msg(2), msg(3), msg(4)]
    d.deliver()
    for _ in range(5):
        d.tick(0.01)
        d.settle_spool()
        d.deliver()
    assert not d.core.spooling
    assert d.topic == [msg(i) for i in range(8)]
    d.assert_balanced()


def test_last_window_hold_is_bounded() -> None:
    d = Driver()
    d.preload(3)
    d.tick(0.0)
    d.settle_spool()
    d.feed([msg(3)])
    assert not d.core.wants_input
    d.tick(LAST_WINDOW_HOLD)
    d.settle_spool()
    assert d.spool.records[-1] == msg(3) and d.core.wants_input
    d.deliver()
    for _ in range(5):
        d.tick(0.01)
        d.settle_spool()
        d.deliver()
    assert d.topic == [msg(i) for i in range(4)] and not d.core.spooling
    d.assert_balanced()


@pytest.mark.parametrize("policy", ["block", "drop_oldest", "conflate"])
def test_spool_unavailable_applies_the_buffer_policy_and_recovers(policy: str) -> None:
    d = Driver(policy=policy)
    d.core.recovered(0)
    d.feed([msg(0)])
    d.deliver(outcome=Outcome.RETRIABLE)  # into spooling
    d.spool.fail_writes = "No space left on device"
    d.feed([msg(i) for i in range(1, 6)])
    d.settle_spool()
    assert any("disk spool cannot take ticks" in r for r in d.core.not_ready_reasons())
    if policy == "block":
        assert not d.core.wants_input and d.acct.encoding == 5
        d.tick(0.01)
        assert d.pending_spool == []  # backing off
    else:
        assert d.core.wants_input and d.acct.dropped == {"spool_unavailable": 5}
    d.spool.fail_writes = None
    d.tick(5.0)
    d.settle_spool()
    d.feed([msg(6)])
    for _ in range(5):
        d.tick(0.5)
        d.settle_spool()
        d.deliver()
    assert not d.core.spooling and d.core.spool_problem is None
    assert d.core.not_ready_reasons() == []
    expected = [0, 1, 2, 3, 4, 5, 6] if policy == "block" else [0, 6]
    assert d.topic == [msg(i) for i in expected]
    d.assert_balanced()


def test_damaged_spool_records_are_dropped_as_spool_corrupt() -> None:
    d = Driver()
    d.acct.recover(10)
    d.preload(10)
    d.spool.lost_next_read = 2
    d.tick(0.0)
    d.settle_spool()
    d.deliver()
    d.tick(0.0)
    d.settle_spool()
    assert d.acct.dropped == {"spool_corrupt": 2} and d.acct.published == 8
    assert not d.core.spooling
    d.assert_balanced()


def test_fatal_error_spools_everything_and_reports_once() -> None:
    d = Driver(capacity=10)
    d.feed([msg(i) for i in range(15)])
    d.producer.fatal = True
    d.core.on_fatal("fenced")
    d.run()
    d.core.on_fatal("again")
    d.run()
    assert d.fatal == ["fenced"]
    d.purge()  # librdkafka fails what it holds
    d.feed([msg(i) for i in range(15, 20)])
    for _ in range(5):
        d.settle_spool()
        d.tick(0.01)
    assert d.acct.spooled == 20 and d.acct.in_flight == 0
    assert d.producer.queued == []
    assert any("failed fatally" in r for r in d.core.not_ready_reasons())
    d.core.close(d.now + 10, d.now)
    d.run()
    d.settle_spool()
    assert d.finished is not None
    d.assert_balanced()


def test_shutdown_waits_for_acks_on_a_healthy_broker() -> None:
    d = Driver()
    d.feed([msg(i) for i in range(10)])
    d.core.close(d.now + 10, d.now)
    d.run()
    assert d.finished is None
    d.deliver()
    assert d.finished is not None and d.acct.dropped == {}
    d.assert_balanced()


def test_shutdown_waits_for_the_ticks_the_shell_still_holds() -> None:
    # Closed while idle, with ticks still in the buffer (the feed stopped while the
    # publisher waited for the topic): they are taken and published, not left behind.
    d = Driver()
    d.upstream = 10
    d.core.close(d.now + 10, d.now)
    d.tick(1.0)
    assert d.finished is None and d.core.wants_input
    d.upstream = 0
    d.feed([msg(i) for i in range(10)])
    d.deliver()
    assert d.finished is not None and d.topic == [msg(i) for i in range(10)]
    d.assert_balanced()


def test_the_shutdown_deadline_ends_the_wait_for_ticks_the_shell_holds() -> None:
    d = Driver()
    d.upstream = 10
    d.core.close(d.now + 10, d.now)
    d.tick(10.0)
    assert d.finished is not None  # the shell counts what it still holds as dropped


def test_the_shutdown_deadline_waits_for_a_produce_about_to_run() -> None:
    # The deadline passes between an ack that queued a Produce and its run: those
    # ticks must not also be counted as dropped at shutdown.
    d = Driver(capacity=5)
    d.feed([msg(i) for i in range(8)])  # 5 accepted, 3 wait for room
    d.core.close(d.now + 1, d.now)
    d.run()
    acked, _ = d.producer.queued.pop(0)
    d.topic.append(acked)
    d.core.on_direct_acked(1)  # room: a Produce is queued, not run yet
    d.now += 2
    d.core.on_timer(d.now)  # past the deadline before it runs
    d.run()
    d.deliver()
    d.tick(0.01)
    assert d.finished is not None
    d.assert_balanced()


def test_shutdown_during_an_outage_spools_what_failed_by_the_deadline() -> None:
    d = Driver(capacity=100)
    d.feed([msg(i) for i in range(20)])
    d.deliver(outcome=Outcome.RETRIABLE)  # the broker is gone
    d.feed([msg(i) for i in range(20, 30)])
    d.settle_spool()
    d.tick(REPLAY_RETRY_DELAY)  # the failed ones are re-sent (in memory) and hang
    assert len(d.producer.queued) == 20
    d.core.close(d.now + 4, d.now)
    d.run()
    d.tick(3.1)  # into the final phase: purge
    d.purge()
    d.settle_spool()
    d.tick(0.01)
    d.settle_spool()
    assert d.finished is not None and d.finished.commit_prefix is None
    assert d.acct.spooled == 30 and d.acct.in_flight == 0
    d.assert_balanced()


def test_shutdown_with_an_open_window_commits_its_acked_prefix() -> None:
    d = Driver()
    d.acct.recover(10)
    d.preload(10)
    d.tick(0.0)
    d.settle_spool()
    d.deliver(4)
    d.core.close(d.now + 2, d.now)
    d.run()
    d.tick(2.0)
    assert d.finished is not None and d.finished.commit_prefix == 4
    assert d.core.unresolved_at_shutdown == 6
    d.assert_balanced()


ACTIONS = [
    "feed",
    "ack",
    "fail",
    "failw",
    "purge",
    "purgew",
    "spool",
    "tick",
    "diskfail",
    "nocheck",
]


def play(d: Driver, steps: list[tuple[str, int]], first: int = 0) -> int:
    """Drive ``d`` through ``steps``; feed messages numbered from ``first``; return the
    next unused number."""
    sent = first
    for action, n in steps:
        if action == "feed" and d.core.wants_input:
            d.feed([msg(sent + i) for i in range(n)])
            sent += n
        elif action == "ack":
            d.deliver(n)
        elif action == "fail":
            d.deliver(n, Outcome.RETRIABLE)
        elif action == "failw":
            # The broker wrote them, then went away before answering.
            d.deliver(n, Outcome.RETRIABLE, written=True)
        elif action == "nocheck":
            d.check_error = None if d.check_error else "broker away"
        elif action == "purge":
            d.purge()
        elif action == "purgew":
            d.purge(on_the_wire=n % 7)  # the oldest few are on the wire: they fail later
        elif action == "spool":
            d.settle_spool()
        elif action == "tick":
            d.tick(n / 20)
        elif action == "diskfail":
            d.spool.fail_writes = None if d.spool.fail_writes else "EIO"
        d.assert_balanced()
    return sent


def drain(d: Driver) -> None:
    """Heal everything and run until the core publishes directly again."""
    d.spool.fail_writes = None
    d.check_error = None
    for _ in range(200):
        d.tick(0.5)
        d.settle_spool()
        d.deliver()
        if not d.core.spooling and d.core.wants_input and not d.producer.queued:
            break


STEPS = st.lists(st.tuples(st.sampled_from(ACTIONS), st.integers(1, 40)), max_size=60)


@settings(max_examples=300, deadline=None)
@given(steps=STEPS)
def test_any_interleaving_keeps_per_key_order_and_balances(steps: list[tuple[str, int]]) -> None:
    d = Driver(capacity=30, window=9)
    sent = play(d, steps)
    drain(d)
    d.assert_balanced()
    assert not d.core.spooling
    assert in_order_per_key(d.topic)
    assert sorted(m.received_at_ns for m in d.topic) == list(range(sent))  # none lost, no dupes
    assert d.acct.published == sent and d.acct.in_flight == 0


@settings(max_examples=300, deadline=None)
@given(before=STEPS, after=STEPS)
def test_a_stop_at_any_point_of_an_outage_keeps_order_into_the_next_run(
    before: list[tuple[str, int]], after: list[tuple[str, int]]
) -> None:
    # Run 1 stops in the middle of anything, the broker gone for good: whatever is not
    # in the topic must be in the spool, older failures ahead of newer ticks.
    d = Driver(capacity=30, window=9)
    sent = play(d, before)
    d.spool.fail_writes = None
    d.core.close(d.now + 4.0, d.now)
    d.run()
    for _ in range(100):
        if d.finished is not None:
            break
        d.purge()  # every delivery fails from now on
        d.settle_spool()
        d.tick(0.25)
    assert d.finished is not None
    d.settle_spool()
    d.assert_balanced()
    assert d.acct.dropped == {}
    # Run 2 on the same spool and topic.
    d2 = Driver(capacity=30, window=9)
    d2.topic = d.topic
    d2.spool.records = list(d.spool.records)
    d2.acct.recover(len(d2.spool.records))
    d2.core.recovered(len(d2.spool.records))
    sent = play(d2, after, first=sent)
    drain(d2)
    d2.assert_balanced()
    assert in_order_per_key(d2.topic)
    assert sorted(m.received_at_ns for m in d2.topic) == list(range(sent))  # none lost, no dupes


def test_read_window_is_asked_only_behind_the_fence() -> None:
    d = Driver(capacity=10)
    d.feed([msg(i) for i in range(10)])
    d.deliver(3, Outcome.RETRIABLE)
    outstanding = len(d.producer.queued)
    assert outstanding and d.core.direct_outstanding == outstanding
    d.feed([msg(i) for i in range(10, 12)])
    d.settle_spool()
    d.tick(1.0)
    d.settle_spool()
    assert not any(isinstance(c, ReadWindow) for c in d.pending_spool)
    assert len(d.producer.queued) == outstanding  # nothing re-sent behind the fence


def test_a_spool_that_cannot_take_input_is_still_replayed() -> None:
    # Under block, input held because the spool is full must not stop replay: replay
    # is what makes room (and held input is newer than everything in the spool).
    d = Driver(window=4)
    d.preload(10)
    d.spool.fail_writes = "No space left on device"
    d.tick(0.0)
    d.settle_spool()  # the first window is read
    d.feed([msg(10), msg(11)])
    d.settle_spool()
    assert not d.core.wants_input and d.core.spool_problem is not None
    for _ in range(20):
        d.tick(0.5)
        d.settle_spool()
        d.deliver()
    assert not d.core.spooling
    assert d.topic == [msg(i) for i in range(12)]
    d.assert_balanced()


def test_failed_messages_the_broker_wrote_are_not_sent_twice() -> None:
    d = Driver(capacity=50)
    d.feed([msg(i) for i in range(20)])
    d.deliver(5)
    # The broker wrote 6..9 and died before answering; the rest was purged unsent.
    d.deliver(5, Outcome.RETRIABLE, written=True)
    d.purge()
    assert d.core.held_failed == 15
    d.tick(REPLAY_RETRY_DELAY)
    [check] = d.checks
    assert [m for m in check.messages] == [msg(i) for i in range(5, 20)]
    assert [m for m, _ in d.producer.queued] == [msg(i) for i in range(10, 20)]
    d.deliver()
    d.tick(0.01)
    assert d.topic == [msg(i) for i in range(20)]
    assert d.core.already_published == 5 and not d.core.spooling
    assert d.acct.published == 20
    d.assert_balanced()


def test_a_check_the_broker_cannot_answer_is_retried_and_nothing_is_sent_meanwhile() -> None:
    d = Driver(capacity=50)
    d.feed([msg(i) for i in range(6)])
    d.deliver(3, Outcome.RETRIABLE, written=True)
    d.purge()
    d.check_error = "broker still away"
    d.tick(REPLAY_RETRY_DELAY)
    assert len(d.checks) == 1 and d.producer.queued == []
    d.tick(REPLAY_RETRY_DELAY / 2)
    assert len(d.checks) == 1  # not before the pause
    d.check_error = None
    d.tick(REPLAY_RETRY_DELAY)
    assert len(d.checks) == 2
    assert sorted(m.received_at_ns for m, _ in d.producer.queued) == [3, 4, 5]
    d.deliver()
    d.tick(0.01)
    assert sorted(m.received_at_ns for m in d.topic) == list(range(6))
    assert in_order_per_key(d.topic)
    d.assert_balanced()


def test_failed_replay_messages_are_checked_before_they_are_sent_again() -> None:
    d = Driver(window=10)
    d.preload(10)
    d.tick(0.0)
    d.settle_spool()
    assert len(d.checks) == 1  # an earlier run's spool: checked before its first replay
    d.deliver(4)
    d.deliver(3, Outcome.RETRIABLE, written=True)
    d.deliver(outcome=Outcome.RETRIABLE)
    d.tick(REPLAY_RETRY_DELAY)
    assert len(d.checks) == 2
    assert [m for m, _ in d.producer.queued] == [msg(i) for i in range(7, 10)]
    for _ in range(3):
        d.deliver()
        d.tick(0.01)
        d.settle_spool()
    assert d.topic == [msg(i) for i in range(10)] and d.spool.records == []
    d.assert_balanced()


def test_an_earlier_runs_spool_that_is_partly_in_the_topic_is_not_sent_twice() -> None:
    # The previous run stopped with an open window: its acked part is in the topic but
    # still in the spool.
    d = Driver(window=100)
    d.preload(6)
    d.topic.extend([msg(0), msg(1)])
    d.tick(0.0)
    d.settle_spool()
    assert [m for m, _ in d.producer.queued] == [msg(i) for i in range(2, 6)]
    d.deliver()
    d.tick(0.01)
    d.settle_spool()
    assert d.topic == [msg(i) for i in range(6)] and not d.core.spooling
    d.assert_balanced()


def test_shutdown_during_a_check_spools_the_failed_messages() -> None:
    d = Driver(capacity=50)
    d.feed([msg(i) for i in range(8)])
    d.deliver(outcome=Outcome.RETRIABLE)
    d.hold_checks = True
    d.tick(REPLAY_RETRY_DELAY)
    assert len(d.pending_checks) == 1
    d.core.close(d.now + 1.0, d.now)
    d.run()
    d.tick(1.0)
    d.settle_spool()
    d.tick(0.1)
    assert d.finished is not None
    assert d.spool.records == [msg(i) for i in range(8)]
    d.answer_checks()  # too late: ignored
    d.assert_balanced()


def test_a_held_spool_is_replayed_after_the_recovered_ticks_and_before_newer_ones() -> None:
    # After a crash: the spool holds 10..14; the WAL recovers 0..9 (older: they were in
    # librdkafka's queue at the crash). Order in the topic: 0..9, 10..14, then live.
    d = Driver(window=100)
    d.spool.records = [msg(i) for i in range(10, 15)]
    d.acct.recover(5)
    d.core.recovered(5, hold=True)
    d.tick(0.0)
    d.settle_spool()
    assert not d.core.spooling and d.producer.queued == []
    d.feed([msg(i) for i in range(10)])  # the recovered ticks go direct
    assert [m for m, _ in d.producer.queued] == [msg(i) for i in range(10)]
    d.core.release_replay()
    d.run()
    assert d.core.spooling
    d.feed([msg(i) for i in range(15, 18)])  # live: behind the spool
    d.settle_spool()
    assert len(d.producer.queued) == 10  # the spool waits for the fence
    d.deliver()
    for _ in range(5):
        d.tick(0.01)
        d.settle_spool()
        d.deliver()
    assert d.topic == [msg(i) for i in range(18)]
    assert not d.core.spooling
    d.assert_balanced()


def test_release_takes_no_input_until_the_recovered_ticks_in_hand_are_produced() -> None:
    d = Driver(capacity=4, window=100)
    d.spool.records = [msg(100)]
    d.acct.recover(1)
    d.core.recovered(1, hold=True)
    d.feed([msg(i) for i in range(6)])  # only 4 fit the producer's queue
    d.core.release_replay()
    d.run()
    assert not d.core.wants_input and not d.core.spooling
    d.deliver()
    d.tick(0.001)
    assert d.core.spooling  # the last two were produced: the spool is next
    assert [m for m, _ in d.producer.queued] == [msg(4), msg(5)]
    d.deliver()
    d.tick(0.01)
    d.settle_spool()
    d.deliver()
    d.tick(0.01)
    d.settle_spool()
    assert d.topic == [*[msg(i) for i in range(6)], msg(100)]
    d.assert_balanced()


def test_failed_messages_are_sent_again_in_their_original_order() -> None:
    # The purge fails what is queued at once; what was on the wire fails later (a
    # timeout). Reports arrive newest first, but they must be re-sent oldest first.
    d = Driver(capacity=50)
    d.feed([msg(i, key=1) for i in range(10)])
    d.deliver(2, Outcome.RETRIABLE)  # times out; 2..9 of its key fail with it...
    d.feed([msg(i, key=1) for i in range(10, 20)])
    d.settle_spool()
    assert d.core.spooling
    d.tick(REPLAY_RETRY_DELAY)
    d.deliver()
    for _ in range(10):
        d.tick(0.1)
        d.settle_spool()
        d.deliver()
    d.feed([msg(i, key=1) for i in range(20, 30)])
    d.deliver()
    # ...now the same with part of the queue on the wire when the purge comes.
    d.feed([msg(i, key=1) for i in range(30, 40)])
    d.purge(on_the_wire=3)  # 33..39 fail now
    d.deliver(outcome=Outcome.RETRIABLE)  # 30..32 time out afterwards
    d.settle_spool()
    for _ in range(10):
        d.tick(0.5)
        d.settle_spool()
        d.deliver()
    assert [m.received_at_ns for m in d.topic] == list(range(40))
    d.assert_balanced()


def test_a_full_spool_backing_off_its_appends_still_replays_at_full_speed() -> None:
    # The spool is at spool_max_bytes: appends are refused and retried with a growing
    # backoff (up to 2 s). Replay is what makes room: it must not wait for that backoff.
    d = Driver(window=10)
    d.preload(200)
    d.spool.room = 0
    d.feed([msg(i) for i in range(200, 210)])  # held: the spool refuses it
    for _ in range(100):
        d.tick(0.01)  # 1 s in all
        d.settle_spool()
        d.deliver()
    assert d.core.spool_full_waits >= 1
    assert len(d.topic) >= 150, len(d.topic)  # ~15 windows, not one per backoff
    d.assert_balanced()


def test_a_silent_broker_is_noticed_without_producer_timeouts_and_order_holds() -> None:
    # The producer never times messages out: no report for stall_after seconds means
    # the broker is away. What is queued is withdrawn (it fails, in order); what is on
    # the wire waits, and nothing is re-sent before it is settled.
    d = Driver(capacity=100, stall_after=1.5)
    d.feed([msg(i) for i in range(10)])
    d.tick(1.0)
    assert not d.core.spooling and d.purges == 0
    d.tick(0.6)
    assert d.core.spooling and d.purges == 1 and d.core.stalls == 1
    d.purge(on_the_wire=4)  # 4 are on the wire: they stay outstanding
    d.feed([msg(i) for i in range(10, 15)])
    d.settle_spool()
    d.tick(REPLAY_RETRY_DELAY + 0.1)
    assert len(d.producer.queued) == 4  # fenced: nothing re-sent while those wait
    d.deliver()  # the broker is back: the 4 on the wire are acked first
    for _ in range(20):
        d.tick(0.5)
        d.settle_spool()
        d.deliver()
    assert d.topic == [msg(i) for i in range(15)] and not d.core.spooling
    d.assert_balanced()


def test_no_stall_while_reports_keep_coming() -> None:
    d = Driver(capacity=100, stall_after=1.5)
    for i in range(10):
        d.feed([msg(i)])
        d.tick(0.5)
        d.deliver(1)
    d.tick(1.0)
    assert not d.core.spooling and d.core.stalls == 0


def test_steady_input_does_not_starve_the_replay() -> None:
    # Spool idle, input waiting, the spool due for replay: the read goes first (an
    # append is always ready under steady input, so the replay would never start).
    d = Driver(window=3)
    d.preload(5)
    for round_ in range(6):
        d.feed([msg(100 + 10 * round_ + i) for i in range(4)])
        if round_ == 0:
            assert isinstance(d.pending_spool[0], ReadWindow)
        d.settle_spool()
        d.deliver()
        d.tick(0.6)
    drain(d)
    assert not d.core.spooling
    assert in_order_per_key(d.topic) and len(d.topic) == 5 + 24
    d.assert_balanced()
