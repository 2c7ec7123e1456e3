"""The Redis layout's rules: which samples feed which key, and how."""

from __future__ import annotations

import pytest

from alphapanda.metrics import redis_layout
from alphapanda.metrics.samples import Sample


def sample(name: str, value: float, **labels: str) -> Sample:
    return Sample(name, "counter", value, tuple(labels.items()))


def test_default_rules_map_the_names_the_components_emit() -> None:
    scalars, hashes = redis_layout.apply_rules(
        [
            sample("kite_reconnect_attempts_total", 2, reason="connect_ok"),
            sample("kite_reconnect_attempts_total", 1, reason="closed_by_server"),
            sample("kite_skipped_packets_total", 3, reason="truncated"),
            sample("ticks_malformed_total", 4, reason="bad_price"),
            sample("sends_ok_total", 10),
        ]
    )
    assert hashes[redis_layout.RECONNECTS] == {"connect_ok": 2, "closed_by_server": 1}
    assert hashes[redis_layout.MALFORMED] == {"truncated": 3, "bad_price": 4}
    # No failure was ever counted, but the producer reports: 0, not missing.
    assert scalars[redis_layout.SENDS_OK] == 10 and scalars[redis_layout.SENDS_FAILED] == 0


@pytest.mark.parametrize("present", [[], [sample("ticks_received_total", 1)]])
def test_sends_failed_is_missing_without_the_producer(present: list[Sample]) -> None:
    scalars, _ = redis_layout.apply_rules(present)
    assert redis_layout.SENDS_FAILED not in scalars


def test_sends_failed_sums_its_error_kinds() -> None:
    scalars, _ = redis_layout.apply_rules(
        [
            sample("sends_ok_total", 10),
            sample("sends_failed_total", 2, error="timeout"),
            sample("sends_failed_total", 1, error="other"),
        ]
    )
    assert scalars[redis_layout.SENDS_FAILED] == 3
