"""ReconnectPolicy: full-jitter exponential backoff, cap, reset, 403/429 schedules."""

from __future__ import annotations

import random

from alphapanda.kite.reconnect import ReconnectPolicy


def _policy(**overrides: float) -> ReconnectPolicy:
    values: dict[str, float] = {
        "base_delay": 0.5,
        "max_delay": 30.0,
        "healthy_reset_after": 30.0,
        "auth_retry_delay": 15.0,
        "capacity_retry_delay": 60.0,
    }
    values.update(overrides)
    return ReconnectPolicy(**values, rng=random.Random(7))  # type: ignore[arg-type]


def test_ceiling_doubles_then_caps() -> None:
    policy = _policy()
    ceilings = []
    for _ in range(10):
        ceilings.append(policy.ceiling())
        policy.next_delay()
    assert ceilings[:7] == [0.5, 1.0, 2.0, 4.0, 8.0, 16.0, 30.0]
    assert ceilings[7:] == [30.0, 30.0, 30.0]


def test_delays_are_full_jitter_within_the_ceiling() -> None:
    policy = _policy()
    delays = []
    for _ in range(200):
        ceiling = policy.ceiling()
        delay = policy.next_delay("refused")
        assert 0.0 <= delay <= ceiling
        delays.append(delay)
    capped = delays[20:]
    # Full jitter spreads delays across the whole range, not around the cap.
    assert min(capped) < 10.0
    assert max(capped) > 20.0


def test_long_outage_does_not_overflow() -> None:
    policy = _policy()
    for _ in range(5000):
        assert policy.next_delay() <= 30.0


def test_reset_only_after_a_healthy_period() -> None:
    policy = _policy(healthy_reset_after=30.0)
    for _ in range(5):
        policy.next_delay()
    assert policy.failures == 5
    # Accepted then dropped quickly: keep backing off.
    policy.connected(now=100.0)
    policy.disconnected(now=101.0)
    assert policy.failures == 5
    assert policy.ceiling() == 16.0
    # Up for longer than healthy_reset_after: start from the base delay again.
    policy.connected(now=200.0)
    policy.disconnected(now=230.0)
    assert policy.failures == 0
    assert policy.ceiling() == 0.5


def test_auth_failure_waits_the_auth_delay_and_does_not_grow() -> None:
    policy = _policy(auth_retry_delay=15.0)
    assert [policy.next_delay("auth_403") for _ in range(3)] == [15.0, 15.0, 15.0]
    assert policy.failures == 0


def test_capacity_failure_waits_at_least_the_capacity_delay() -> None:
    policy = _policy(capacity_retry_delay=60.0)
    for _ in range(50):
        assert 60.0 <= policy.next_delay("capacity_429") <= 72.0
