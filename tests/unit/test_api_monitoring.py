"""The monitoring routes over a fake Redis: the pipeline's health judged from the last
metrics flush (200 or 503 for a probe) and the flushed snapshot itself."""

from __future__ import annotations

from typing import Any

import msgspec
import pytest

from alphapanda.api import monitoring
from alphapanda.metrics.reader import HealthSummary
from alphapanda.metrics.redis_layout import SNAPSHOT, MetricsKeys
from tests.support.api import FakeFeed, FakeRedis, build_app, client_of, reader_of

pytestmark = pytest.mark.unit

NOW = 1_764_000_000.0


@pytest.fixture(autouse=True)
def frozen_wall_clock(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(monitoring, "now_epoch", lambda: NOW)


def _snapshot(*, age: float = 1.0, tick_age: float = 0.2, **extra: Any) -> dict[str, Any]:
    return {
        "updated_at": "2025-11-24T16:00:00.000+00:00",
        "updated_at_epoch": NOW - age,
        "flush_interval_seconds": 0.5,
        "count": 500,
        "ticks_per_second": 50.0,
        "last_tick_age_seconds": tick_age,
        "sends": {"ok": 490, "failed": 0},
        "rates": {},
        "samples": [{"name": "sends_ok_total", "kind": "counter", "value": 490, "labels": {}}],
        **extra,
    }


async def _get(redis: FakeRedis | None, path: str, namespace: str = "market") -> Any:
    reader = None if redis is None else reader_of(redis, namespace)
    async with client_of(build_app(FakeFeed(), reader=reader)) as http:
        return await http.get(path)


async def test_health_of_a_fresh_flush_with_ticks_is_ok() -> None:
    response = await _get(FakeRedis(_snapshot()), "/monitoring/health", "desk-7")
    assert response.status_code == 200
    body = response.json()
    assert body["status"] == "ok" and body["reasons"] == []
    assert body["namespace"] == "desk-7"
    assert body["snapshot_age_seconds"] == pytest.approx(1.0)
    assert (body["ticks_total"], body["sends_ok"]) == (500, 490)


async def test_health_answers_every_field_of_the_health_summary() -> None:
    response = await _get(FakeRedis(_snapshot()), "/monitoring/health")
    assert set(response.json()) == {f.name for f in msgspec.structs.fields(HealthSummary)}


async def test_health_reads_the_snapshot_key_of_its_own_namespace() -> None:
    redis = FakeRedis(_snapshot())
    await _get(redis, "/monitoring/health", "desk-7")
    assert redis.keys_read == [MetricsKeys("desk-7").key(SNAPSHOT)]


@pytest.mark.parametrize(
    ("snapshot", "status"),
    [
        (_snapshot(tick_age=60.0), "idle"),
        (_snapshot(rates={"sends:failed": 2.0}), "degraded"),
    ],
)
async def test_idle_and_degraded_pipelines_still_answer_200(
    snapshot: dict[str, Any], status: str
) -> None:
    response = await _get(FakeRedis(snapshot), "/monitoring/health")
    assert response.status_code == 200
    assert response.json()["status"] == status
    assert response.json()["reasons"]


async def test_a_stale_flush_is_503_with_the_reason() -> None:
    response = await _get(FakeRedis(_snapshot(age=100.0)), "/monitoring/health")
    assert response.status_code == 503
    assert response.json()["status"] == "stale"
    assert response.json()["reasons"] == ["last metrics flush 100.0s ago"]


async def test_no_snapshot_is_503_no_data() -> None:
    response = await _get(FakeRedis(None), "/monitoring/health", "desk-7")
    assert response.status_code == 503
    body = response.json()
    assert (body["status"], body["namespace"]) == ("no_data", "desk-7")
    assert body["reasons"] == ["no metrics snapshot in Redis"]


@pytest.mark.parametrize("path", ["/monitoring/health", "/monitoring/pipeline"])
async def test_an_unreachable_redis_is_503(path: str) -> None:
    response = await _get(FakeRedis(down=True), path)
    assert response.status_code == 503
    assert response.json() == {"detail": "metrics store (Redis) unreachable"}


@pytest.mark.parametrize("path", ["/monitoring/health", "/monitoring/pipeline"])
async def test_without_a_metrics_store_the_routes_are_503(path: str) -> None:
    response = await _get(None, path)
    assert response.status_code == 503
    assert response.json() == {"detail": "no metrics store configured"}


async def test_pipeline_is_the_snapshot_without_its_raw_samples() -> None:
    snapshot = _snapshot()
    response = await _get(FakeRedis(snapshot), "/monitoring/pipeline")
    assert response.status_code == 200
    expected = {k: v for k, v in snapshot.items() if k != "samples"}
    assert response.json() == expected


async def test_pipeline_without_a_snapshot_is_503_naming_the_namespace() -> None:
    response = await _get(FakeRedis(None), "/monitoring/pipeline", "desk-7")
    assert response.status_code == 503
    assert response.json() == {"detail": "no metrics snapshot in Redis for namespace 'desk-7'"}


async def test_the_monitor_role_serves_the_same_monitoring_routes() -> None:
    reader = reader_of(FakeRedis(_snapshot()))
    async with client_of(build_app(None, reader=reader)) as http:
        response = await http.get("/monitoring/health")
    assert response.status_code == 200
    assert response.json()["status"] == "ok"
