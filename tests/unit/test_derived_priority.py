"""The derived streams wait while the tick path still holds ticks, within a bound."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest

from alphapanda.settings import Settings
from alphapanda.streams.runner import MAX_DEFER, DerivedStreams

pytestmark = pytest.mark.unit


class _Feed:
    """Just enough feed state: whether the tick path is busy."""

    def __init__(self) -> None:
        self.busy = False

    def connection_statuses(self) -> list[Any]:
        return []

    def shard_instruments(self) -> dict[int, list[int]]:
        return {}

    def subscriptions(self) -> dict[int, str]:
        return {}

    def spooling(self) -> bool:
        return False

    def accounting(self) -> dict[str, Any]:
        return {}

    def tick_path_busy(self) -> bool:
        return self.busy


def _streams(tmp_path: Path) -> tuple[DerivedStreams, _Feed]:
    settings = Settings(
        _env_file=None, feed={"spool_dir": tmp_path / "spool", "wal_dir": tmp_path / "wal"}
    )
    feed = _Feed()
    return DerivedStreams(settings, feed), feed


def test_an_idle_tick_path_is_never_waited_for(tmp_path: Path) -> None:
    derived, _ = _streams(tmp_path)
    assert not derived._defer(100.0)
    assert not derived._defer(100.0 + 10 * MAX_DEFER)
    assert derived.deferrals == 0


def test_a_busy_tick_path_is_waited_for_at_most_max_defer_in_a_row(tmp_path: Path) -> None:
    derived, feed = _streams(tmp_path)
    feed.busy = True
    start = 100.0
    assert derived._defer(start)
    assert derived._defer(start + MAX_DEFER * 0.9)
    # Always busy (a sustained load): the streams go on rather than fall behind.
    assert not derived._defer(start + MAX_DEFER)
    assert not derived._defer(start + 2 * MAX_DEFER)
    assert derived.deferrals == 1


def test_the_bound_starts_again_after_the_tick_path_was_idle(tmp_path: Path) -> None:
    derived, feed = _streams(tmp_path)
    feed.busy = True
    assert derived._defer(100.0)
    assert not derived._defer(100.0 + MAX_DEFER)
    feed.busy = False
    assert not derived._defer(100.0 + MAX_DEFER + 0.01)
    feed.busy = True
    later = 100.0 + MAX_DEFER + 0.02
    assert derived._defer(later)
    assert derived._defer(later + MAX_DEFER / 2)
    assert derived.deferrals == 2


def test_the_waits_are_exported_as_a_metric(tmp_path: Path) -> None:
    derived, feed = _streams(tmp_path)
    feed.busy = True
    derived._defer(100.0)
    feed.busy = False
    derived._defer(100.1)
    feed.busy = True
    derived._defer(100.2)
    values = {s.name: s.value for s in derived.samples() if s.name == "derived_deferrals_total"}
    assert values == {"derived_deferrals_total": 2}
