"""Every metric is declared once, in ``alphapanda.metrics.catalog``, and emitted through it.

Two ways the catalog and the components could drift apart, both checked here:

- a metric declared that nothing emits (a dashboard panel or a Redis key that stays
  empty for ever): every entry must be emitted, ``<entry>.sample(...)``, by some module
  of the package other than the catalog;
- a figure emitted that the catalog does not declare: no module but the catalog may
  build a ``Sample`` (read from the source, so a new component cannot slip past), and
  the samples real components report carry declared names, kinds and label names.
"""

from __future__ import annotations

import ast
from collections.abc import Iterable, Iterator
from datetime import UTC, datetime
from pathlib import Path
from types import SimpleNamespace

import pytest
from pydantic import SecretStr

from alphapanda.api.ratelimit import RateLimiter
from alphapanda.api.status import ConnectionFigures, connection_view
from alphapanda.assembly import Overrides, build
from alphapanda.auth import AuthService
from alphapanda.kite.protocol.ticks import Tick
from alphapanda.metrics import catalog, redis_layout
from alphapanda.metrics.samples import MetricsSource, Sample
from alphapanda.recording import RecordingWriter
from alphapanda.registry import InstrumentRegistryService
from alphapanda.settings import Settings

pytestmark = pytest.mark.unit

PACKAGE = Path(__file__).resolve().parents[2] / "src" / "alphapanda"
CATALOG = PACKAGE / "metrics" / "catalog.py"
# The modules that may build a Sample themselves: the type, the catalog (which builds
# them for every component), and the reader, which re-creates the samples a Redis
# snapshot stored (names read back, not emitted).
MAY_BUILD_SAMPLES = {PACKAGE / "metrics" / "samples.py", CATALOG, PACKAGE / "metrics" / "reader.py"}


def _modules() -> Iterator[tuple[str, ast.Module]]:
    for path in sorted(PACKAGE.rglob("*.py")):
        if path not in MAY_BUILD_SAMPLES:
            yield str(path.relative_to(PACKAGE)), ast.parse(path.read_text(), str(path))


def _name_of(node: ast.expr) -> str:
    return node.id if isinstance(node, ast.Name) else getattr(node, "attr", "")


def _hand_made() -> list[str]:
    """``path:line`` of every ``Sample(...)`` (or ``Sample._make``) and ``Metric(...)``
    outside the catalog: a metric made up on the spot escapes the catalog."""
    found = []
    for where, tree in _modules():
        for node in ast.walk(tree):
            if not isinstance(node, ast.Call):
                continue
            func = node.func
            made = isinstance(func, ast.Attribute) and func.attr == "_make"
            target = func.value if isinstance(func, ast.Attribute) and made else func
            if _name_of(target) in ("Sample", "Metric"):
                found.append(f"{where}:{node.lineno}")
    return found


def _emitted_entries() -> set[str]:
    """Catalog entries some module emits: ``catalog.X.sample(...)`` or, with ``X``
    imported from the catalog, ``X.sample(...)``."""
    emitted: set[str] = set()
    for _, tree in _modules():
        imported = {
            alias.asname or alias.name
            for node in ast.walk(tree)
            if isinstance(node, ast.ImportFrom) and node.module == "alphapanda.metrics.catalog"
            for alias in node.names
        }
        for node in ast.walk(tree):
            if not (
                isinstance(node, ast.Call)
                and isinstance(node.func, ast.Attribute)
                and node.func.attr == "sample"
            ):
                continue
            entry = node.func.value
            if (
                isinstance(entry, ast.Attribute)
                and isinstance(entry.value, ast.Name)
                and entry.value.id == "catalog"
            ):
                emitted.add(entry.attr)
            elif isinstance(entry, ast.Name) and entry.id in imported:
                emitted.add(entry.id)
    return emitted


def _declared_entries() -> dict[str, catalog.Metric]:
    return {name: v for name, v in vars(catalog).items() if isinstance(v, catalog.Metric)}


def test_the_catalog_names_each_metric_once() -> None:
    entries = _declared_entries()
    assert len(entries) > 100  # the scan below is looking at the real catalog
    assert sorted(m.name for m in entries.values()) == sorted(catalog.BY_NAME)
    for metric in entries.values():
        assert not metric.name.startswith("alphapanda_"), metric.name
        assert metric.name.endswith("_total") == (metric.kind == "counter"), metric.name
        assert metric.help, f"{metric.name} has no help text"


def test_no_component_builds_a_sample_by_hand() -> None:
    made = _hand_made()
    assert not made, f"emit through the entries of alphapanda.metrics.catalog: {made}"


def test_every_declared_metric_is_emitted_by_some_component() -> None:
    unused = sorted(set(_declared_entries()) - _emitted_entries())
    assert not unused, f"declared in the catalog but emitted by no component: {unused}"


def test_the_redis_layout_reads_only_declared_metrics() -> None:
    undeclared = sorted({rule.sample for rule in redis_layout.DEFAULT_RULES} - set(catalog.BY_NAME))
    assert not undeclared, f"DEFAULT_RULES maps names the catalog does not declare: {undeclared}"


def _settings(tmp_path: Path, **groups: object) -> Settings:
    # Nothing listens on these: the components are built and asked for samples, no more.
    return Settings(  # type: ignore[arg-type]
        _env_file=None,
        feed={"spool_dir": tmp_path / "spool", "wal_dir": tmp_path / "wal", "wal_enabled": True},
        streams={"enabled": True},
        kafka={"bootstrap_servers": "127.0.0.1:9"},
        redis={"url": "redis://127.0.0.1:9/0"},
        database={"url": "postgresql://nobody@127.0.0.1:9/none"},
        **groups,
    )


def _connection(shard: int) -> SimpleNamespace:
    return SimpleNamespace(
        shard=shard,
        state="streaming",
        since=datetime(2026, 1, 5, 4, 0, tzinfo=UTC),
        instruments=3,
        ticks_received=10,
        reconnect_count=1,
        last_frame_age=0.5,
    )


def _real_samples(sources: Iterable[MetricsSource]) -> list[Sample]:
    return [sample for source in sources for sample in source.samples()]


async def test_real_components_emit_only_declared_metrics(tmp_path: Path) -> None:
    settings = _settings(tmp_path)
    # The feed process's wiring: auth and registry figures, the registry follower, the
    # metrics collector.
    parts = build(
        settings,
        Overrides(
            auth=AuthService(settings), registry=InstrumentRegistryService(settings), metrics=True
        ),
    )
    # Families reported only once something happened: make them happen.
    parts.accounting.drop_unreceived("shutdown", 1)
    parts.producer.failed["_MSG_TIMED_OUT"] = 1
    parts.formatter.format(Tick(instrument_token=1, mode="snapquote", tradable=True, last_price=1))
    collector = parts.collector
    assert collector is not None
    collector.flush_failures["timeout"] = 1
    collector.source_errors["Accounting"] = 1
    recorder = RecordingWriter(tmp_path / "frames.rec")
    sources: list[MetricsSource] = [
        *parts.sources,
        ConnectionFigures(lambda: [_connection(0), _connection(1)], lambda: {1: "ltp", 2: "full"}),
        collector,
        RateLimiter(SecretStr(settings.redis.url.get_secret_value()), "5/second", "1/second", "t"),
        recorder,
    ]
    try:
        samples = _real_samples(sources)
    finally:
        if parts.wal is not None:
            parts.wal.close()
        parts.spool.close()

    emitted = _check_declared(samples)
    # Every metric the Redis layout reads was among them: the check saw the real thing.
    assert {rule.sample for rule in redis_layout.DEFAULT_RULES} <= emitted


def _check_declared(samples: list[Sample]) -> set[str]:
    emitted = {sample.name for sample in samples}
    undeclared = sorted(emitted - set(catalog.BY_NAME))
    assert not undeclared, f"emitted but not declared in the catalog: {undeclared}"
    for sample in samples:
        metric = catalog.BY_NAME[sample.name]
        assert sample.kind == metric.kind, sample
        assert tuple(name for name, _ in sample.labels) == metric.labels, sample
    return emitted


async def test_a_hot_standby_members_figures_are_declared(tmp_path: Path) -> None:
    parts = build(_settings(tmp_path, ha={"group": "g1"}))
    try:
        assert parts.ha is not None
        emitted = _check_declared(_real_samples(parts.sources))
    finally:
        parts.spool.close()
    assert {"ha_info", "ha_standby_held", "ha_commits_total"} <= emitted


def test_per_connection_samples_fill_the_status_connection_rows() -> None:
    figures = ConnectionFigures(lambda: [_connection(2)], dict)
    row = redis_layout.connections_from(figures.samples())["2"]
    view = connection_view(row, "2")
    assert view.state == "streaming"
    assert (view.instruments, view.ticks_received, view.reconnect_count) == (3, 10, 1)
    assert view.last_frame_age_seconds == 0.5
    assert view.since == "2026-01-05T04:00:00+00:00"
