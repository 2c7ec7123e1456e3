"""``build``: which parts the wiring makes for which overrides (nothing runs, nothing opens)."""

from __future__ import annotations

import json
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from alphapanda.api import ApiServer
from alphapanda.assembly import Overrides, build
from alphapanda.auth import AuthService
from alphapanda.ha.controller import EXIT_DEPOSED, HaController
from alphapanda.ha.gate import StandbyGate
from alphapanda.instruments.sources import (
    CsvInstrumentSource,
    RegistryFollower,
    RegistryInstruments,
)
from alphapanda.kite.protocol import Tick
from alphapanda.metrics.collector import PipelineMetricsCollector
from alphapanda.parts import FeedParts
from alphapanda.pipeline.hotpath import load_native
from alphapanda.registry import InstrumentRegistryService
from alphapanda.service import FeedFigures
from alphapanda.settings import Settings
from alphapanda.streams.records import FEED_STARTED, FeedEvent
from alphapanda.streams.runner import DerivedStreams
from alphapanda.testing import VirtualClock


def _settings(tmp_path: Path, **groups: Any) -> Settings:
    # Nothing listens on these addresses: the parts are built, never started.
    return Settings(
        _env_file=None,
        feed={
            "spool_dir": tmp_path / "spool",
            "wal_dir": tmp_path / "wal",
            **groups.pop("feed", {}),
        },
        kafka={"bootstrap_servers": "127.0.0.1:9"},
        redis={"url": "redis://127.0.0.1:9/0"},
        database={"url": "postgresql://nobody@127.0.0.1:9/none"},
        **groups,
    )


@pytest.fixture
def built() -> Iterator[list[FeedParts]]:
    parts: list[FeedParts] = []
    yield parts
    for p in parts:  # the WAL writer thread and the spool lock are released
        if p.wal is not None:
            p.wal.close()
        p.spool.close()


def _build(built: list[FeedParts], settings: Settings, **overrides: Any) -> FeedParts:
    parts = build(settings, Overrides(**overrides))
    built.append(parts)
    return parts


def test_the_default_wiring_streams_the_csv_and_runs_nothing_beside(
    tmp_path: Path, built: list[FeedParts]
) -> None:
    parts = _build(built, _settings(tmp_path, streams={"enabled": False}))
    assert isinstance(parts.instruments, CsvInstrumentSource)
    assert parts.instruments.limit == parts.settings.kite.capacity
    assert parts.services == [] and parts.collector is None and parts.derived is None
    # Every part that counts something reports, once.
    for part in (parts.accounting, parts.buffer, parts.publisher, parts.producer, parts.client):
        assert sum(source is part for source in parts.sources) == 1
    assert parts.topic.endswith("market.ticks")


def test_metrics_and_api_run_beside_the_pipeline_collector_first(
    tmp_path: Path, built: list[FeedParts]
) -> None:
    parts = _build(built, _settings(tmp_path, streams={"enabled": False}), metrics=True, api=True)
    kinds = [type(service) for service in parts.services]
    assert kinds == [PipelineMetricsCollector, ApiServer]
    assert parts.collector is parts.services[0]


def test_the_database_services_bring_tokens_instruments_follower_and_figures(
    tmp_path: Path, built: list[FeedParts]
) -> None:
    settings = _settings(tmp_path, streams={"enabled": False})
    auth, registry = AuthService(settings), InstrumentRegistryService(settings)
    extra = CsvInstrumentSource(None, "ltp", 1)
    parts = _build(built, settings, auth=auth, registry=registry, instruments=extra)
    # The registry wins over an instruments override; the CSV stays its fresh-install set.
    assert isinstance(parts.instruments, RegistryInstruments)
    assert parts.instruments.registry is registry
    (follower,) = parts.services
    assert isinstance(follower, RegistryFollower)
    assert auth in parts.sources and registry in parts.sources and follower in parts.sources


def test_derived_streams_run_first_and_leave_the_hot_path_to_the_setting(
    tmp_path: Path, built: list[FeedParts]
) -> None:
    marker = object()
    parts = _build(
        built,
        _settings(tmp_path, streams={"enabled": True}, feed={"hot_path": "auto"}),
        services=[marker],
    )
    assert isinstance(parts.derived, DerivedStreams)
    assert parts.services == [parts.derived, marker]
    assert parts.derived in parts.sources
    # The native path feeds them too (they format its ticks in their own loop).
    assert parts.hot_path.impl == ("python" if load_native()[0] is None else "native")
    assert parts.records.observer == parts.derived.offer


def test_the_wal_hands_its_crash_recovery_event_to_the_derived_streams(
    tmp_path: Path, built: list[FeedParts]
) -> None:
    parts = _build(built, _settings(tmp_path, streams={"enabled": True}))
    assert parts.wal is not None and parts.derived is not None
    assert parts.wal._emit == parts.derived.emit
    # Without derived streams there is nowhere to publish it.
    off = _build(built, _settings(tmp_path / "off", streams={"enabled": False}))
    assert off.wal is not None and off.wal._emit is None


def test_a_hot_standby_member_is_gated_transactional_python_and_without_a_wal(
    tmp_path: Path, built: list[FeedParts]
) -> None:
    settings = _settings(
        tmp_path,
        ha={"group": "g1"},
        streams={"enabled": True},
        feed={"hot_path": "native", "wal_enabled": True},
    )
    parts = _build(built, settings, services=[marker := object()])
    ha = parts.ha
    assert isinstance(ha, HaController) and isinstance(ha.gate, StandbyGate)
    # Its own feed events wait while it is standby; the controller runs after them.
    assert parts.services == [parts.derived, ha, marker] and ha in parts.sources
    assert parts.derived is not None and parts.derived.publishing() is False
    # The gate (matching by fields only the Python path fills) sits before the buffer.
    assert parts.hot_path.impl == "python"
    assert ha.gate._sink is parts.buffer
    assert all(shard._sink is ha.gate for shard in parts.client._shards)
    # Fenced by the group's transactional id; a standby does not republish its own log.
    assert parts.producer.transactional and parts.wal is None
    ready, reasons = parts.readiness()
    assert not ready and reasons[0] == "standby in hot-standby group g1 (not publishing)"
    assert "no Kite connection is streaming" not in reasons
    assert parts.status()["ha"]["role"] == "standby"


def test_a_fenced_active_is_deposed_at_once_not_shut_down_gracefully(
    tmp_path: Path, built: list[FeedParts]
) -> None:
    parts = _build(built, _settings(tmp_path, ha={"group": "g1"}, streams={"enabled": False}))
    ha = parts.ha
    assert ha is not None
    exits: list[int] = []
    ha._exit = exits.append
    # A standby's producer has no transaction yet: a failure is the ordinary one.
    parts.lifecycle.producer_failed("_FATAL: broken")
    assert exits == [] and parts.lifecycle.stopping
    ha.role = "active"
    parts.lifecycle.producer_failed("_FATAL: fenced by a newer instance")
    assert exits == [EXIT_DEPOSED] and ha.role == "deposed"


def test_outside_a_group_there_is_no_gate_and_no_transaction(
    tmp_path: Path, built: list[FeedParts]
) -> None:
    parts = _build(built, _settings(tmp_path, streams={"enabled": False}))
    assert parts.ha is None and not parts.producer.transactional
    assert all(shard._sink is parts.buffer for shard in parts.client._shards)
    assert parts.status()["ha"] == {"group": None}


def test_a_fatal_producer_error_makes_the_feed_unhealthy_and_stops_it(
    tmp_path: Path, built: list[FeedParts]
) -> None:
    lifecycle = _build(built, _settings(tmp_path, streams={"enabled": False})).lifecycle
    assert not lifecycle.stopping and lifecycle.unhealthy is None
    lifecycle.producer_failed("_FATAL: broker fenced the producer")
    assert lifecycle.stopping
    assert (
        lifecycle.unhealthy == "Kafka producer failed fatally: _FATAL: broker fenced the producer"
    )
    assert lifecycle.failures == ["kafka producer (fatal error)"]


def test_before_it_runs_the_feed_is_not_ready_and_says_why(
    tmp_path: Path, built: list[FeedParts]
) -> None:
    parts = _build(built, _settings(tmp_path, streams={"enabled": False}))
    ready, reasons = parts.readiness()
    assert not ready
    assert reasons[:2] == [
        "no Kite connection is streaming",
        f"topic {parts.topic} not created yet (broker unreachable?)",
    ]
    status = parts.status()
    assert status["ready"] is False and status["subscriptions"] == 0
    assert status["buffer"]["capacity"] == parts.settings.feed.buffer_capacity


async def test_every_part_reads_the_injected_clock(tmp_path: Path, built: list[FeedParts]) -> None:
    clock = VirtualClock(wall_ns=1_767_225_600_000_000_000)  # 2026-01-01 00:00 UTC
    parts = _build(built, _settings(tmp_path, streams={"enabled": False}), clock=clock)
    (record,) = parts.records.encode(
        [Tick(instrument_token=408065, mode="ltp", tradable=True, last_price=1.5)]
    )
    assert json.loads(record.value)["emitted_at"].startswith("2026-01-01T00:00:00")
    await parts.client.set_subscriptions({408065: "ltp"})
    assert [status.since for status in parts.client.statuses()] == [clock.now()]
    # The feed's own figures: the time of the last tick is read from the same clock.
    parts.accounting.accept(1)
    clock.advance(2.5)
    (figures,) = [source for source in parts.sources if isinstance(source, FeedFigures)]
    assert figures.samples()[0].value == clock.wall_ns() / 1e9


def test_the_derived_streams_and_the_wal_read_the_injected_clock(
    tmp_path: Path, built: list[FeedParts]
) -> None:
    clock = VirtualClock(wall_ns=1_767_225_600_000_000_000, monotonic=40.0)
    parts = _build(built, _settings(tmp_path, streams={"enabled": True}), clock=clock)
    assert parts.derived is not None and parts.wal is not None
    event = FeedEvent(FEED_STARTED, clock.now())
    _, value, _ = parts.derived._envelopes.feed_event(event)
    assert json.loads(value)["emitted_at"].startswith("2026-01-01T00:00:00")
    assert parts.wal.wal._clock_ns == clock.wall_ns
    assert parts.wal.wal._monotonic == clock.monotonic
